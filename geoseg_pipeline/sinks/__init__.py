"""Writers of label maps, one per output format behind the :class:`LabelSink` protocol
(staged, committed all together per item); georeferencing copied from the item's grid."""

from .base import LabelSink, SinkTarget, StagedSink, commit_together, make_sinks, retract
from .cog import CogLabelSink, LogitsSink
from .legend import ClassLegend
from .nifti import NiftiLabelSink
from .zarr_labels import ZarrLabelSink

__all__ = ["ClassLegend", "CogLabelSink", "LabelSink", "LogitsSink", "NiftiLabelSink", "SinkTarget", "StagedSink",
           "ZarrLabelSink", "commit_together", "make_sinks", "retract"]
