"""geoseg-pipeline: distributed batch segmentation of satellite rasters and 3D volumes on Ray.

The library API::

    from geoseg_pipeline import run_workflow, predict
    result = run_workflow("workflows/landcover-demo.yaml")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import predict, run_workflow


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import geoseg_pipeline`` (and ``geoseg --help``) does not start Ray.
    if name in ("run_workflow", "predict"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["__version__", "predict", "run_workflow"]
