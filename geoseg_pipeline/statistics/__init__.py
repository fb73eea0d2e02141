"""Per-class statistics of label maps: pixel counts, areas (m², ha), shares; lesions in volumes."""

from .area import PixelAreas, pixel_areas
from .classes import ClassStats, ClassTally, ItemStats
from .lesions import ClassBurden, Lesion, LesionTracker, label_volume_reference, summarize
from .zones import Footprint, ItemZones, ZoneLayer, ZoneStats, ZoneTally, read_zones

__all__ = [
    "ClassBurden",
    "ClassStats",
    "ClassTally",
    "Footprint",
    "ItemStats",
    "ItemZones",
    "Lesion",
    "LesionTracker",
    "PixelAreas",
    "ZoneLayer",
    "ZoneStats",
    "ZoneTally",
    "label_volume_reference",
    "pixel_areas",
    "read_zones",
    "summarize",
]
