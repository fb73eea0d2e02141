"""Per-class statistics of label maps: pixel counts, areas (m², ha), shares."""

from .area import PixelAreas, pixel_areas
from .classes import ClassStats, ClassTally, ItemStats

__all__ = ["ClassStats", "ClassTally", "ItemStats", "PixelAreas", "pixel_areas"]
