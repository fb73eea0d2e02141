"""Shared fixtures: a real local Ray for the whole session, tiny rasters and TorchScript models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One real local Ray instance for all tests that run jobs (jobs reuse a connected Ray)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture()
def write_raster(tmp_path: Path) -> Callable[..., Path]:
    """Write a GeoTIFF from an array ``(bands, rows, cols)``; returns its path."""

    def _write(
        name: str,
        data: np.ndarray,
        *,
        crs: str | None = "EPSG:32633",
        transform: object = None,
        nodata: float | None = None,
        tiled: bool = True,
    ) -> Path:
        path = tmp_path / name
        profile: dict[str, object] = dict(
            driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
            dtype=data.dtype, crs=crs, transform=transform or from_origin(500000, 5200000, 10, 10),
            nodata=nodata,
        )
        if tiled and data.shape[1] >= 16 and data.shape[2] >= 16:
            profile.update(tiled=True, blockxsize=16 * max(1, min(data.shape[2] // 16, 16)),
                           blockysize=16 * max(1, min(data.shape[1] // 16, 16)))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path

    return _write


@pytest.fixture()
def conv_model(tmp_path: Path) -> Callable[..., Path]:
    """A deterministic random TorchScript conv net ``in_channels -> classes``; returns its path."""

    def _make(in_channels: int = 3, classes: int = 4, seed: int = 0, name: str = "model.pt") -> Path:
        import torch

        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, classes, 3, padding=1),
        ).eval()
        path = tmp_path / name
        torch.jit.script(net).save(str(path))
        return path

    return _make
