"""Per-class statistics of label maps: pixel counts, areas (m², ha), shares; lesions in volumes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .area import PixelAreas, pixel_areas
    from .classes import ClassStats, ClassTally, ItemStats
    from .lesions import ClassBurden, Lesion, LesionTracker, label_volume_reference, summarize
    from .zones import Footprint, ItemZones, ZoneLayer, ZoneStats, ZoneTally, read_zones

_EXPORTS = {
    "PixelAreas": ".area",
    "pixel_areas": ".area",
    "ClassStats": ".classes",
    "ClassTally": ".classes",
    "ItemStats": ".classes",
    "ClassBurden": ".lesions",
    "Lesion": ".lesions",
    "LesionTracker": ".lesions",
    "label_volume_reference": ".lesions",
    "summarize": ".lesions",
    "Footprint": ".zones",
    "ItemZones": ".zones",
    "ZoneLayer": ".zones",
    "ZoneStats": ".zones",
    "ZoneTally": ".zones",
    "read_zones": ".zones",
}
__getattr__ = lazy_exports(__name__, _EXPORTS, globals())

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
