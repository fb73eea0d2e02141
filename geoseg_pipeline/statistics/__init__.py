"""Per-class statistics of label maps: pixel counts, areas (m², ha), shares; lesions in volumes."""

from .area import PixelAreas, pixel_areas
from .classes import ClassStats, ClassTally, ItemStats
from .lesions import ClassBurden, Lesion, LesionTracker, label_volume_reference, summarize

__all__ = [
    "ClassBurden",
    "ClassStats",
    "ClassTally",
    "ItemStats",
    "Lesion",
    "LesionTracker",
    "PixelAreas",
    "label_volume_reference",
    "pixel_areas",
    "summarize",
]
