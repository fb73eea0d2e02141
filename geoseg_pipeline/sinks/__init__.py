"""Writers of label maps, one per format; georeferencing copied from the item's grid."""

from .cog import ClassLegend, CogLabelSink, atomic_write_text
from .zarr_labels import ZarrLabelSink

__all__ = ["ClassLegend", "CogLabelSink", "ZarrLabelSink", "atomic_write_text"]
