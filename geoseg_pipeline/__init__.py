"""geoseg-pipeline: distributed batch segmentation of satellite rasters and 3D volumes on Ray.

The library API::

    from geoseg_pipeline import run_workflow, predict, predict_dataarray
    result = run_workflow("workflows/landcover-demo.yaml")
    labels = predict_dataarray(cube, "landcover-demo")   # an xarray.DataArray (band, y, x)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import predict, run_workflow
    from .xarray_api import predict_dataarray


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import geoseg_pipeline`` (and ``geoseg --help``) does not start Ray.
    if name in ("run_workflow", "predict"):
        from . import api

        return getattr(api, name)
    if name == "predict_dataarray":
        from . import xarray_api

        return xarray_api.predict_dataarray
    raise AttributeError(name)


__all__ = ["__version__", "predict", "predict_dataarray", "run_workflow"]
