"""Writers of label maps, one per output format behind the :class:`LabelSink` protocol
(staged, committed all together per item); georeferencing copied from the item's grid.

The volume sinks (nibabel, zarr) are imported when first used, so that raster tools such as
``geoseg change`` start without them."""

from typing import Any

from .base import LabelSink, SinkTarget, StagedSink, commit_together, make_sinks, retract
from .cog import CogLabelSink, LogitsSink
from .legend import ClassLegend

_LAZY = {"NiftiLabelSink": "nifti", "ZarrLabelSink": "zarr_labels"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClassLegend", "CogLabelSink", "LabelSink", "LogitsSink", "NiftiLabelSink", "SinkTarget", "StagedSink",
           "ZarrLabelSink", "commit_together", "make_sinks", "retract"]
