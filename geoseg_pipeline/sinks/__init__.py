"""Writers of label maps, one per format; georeferencing copied from the item's grid."""

from .cog import ClassLegend, CogLabelSink, atomic_write_text

__all__ = ["ClassLegend", "CogLabelSink", "atomic_write_text"]
