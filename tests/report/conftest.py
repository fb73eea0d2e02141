"""Outcomes of a small CT job, built directly: two finished items (one with two tumours, one
without) and one failed item. Values are binary fractions, so sums and CSV text are exact."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from geoseg_pipeline.report import ItemOutcome
from geoseg_pipeline.statistics import ClassStats, ItemStats, Lesion

NAMES = ("background", "liver", "tumour")


def _volume_stats(item: str, volumes_ml: tuple[float, ...], lesions: tuple[Lesion, ...] = (),
                  names: tuple[str, ...] = NAMES, voxel_mm3: float = 2.0) -> ItemStats:
    """Volume statistics as :class:`VolumeTally` gives them (voxels = mL / voxel volume)."""
    voxels = [round(v * 1000 / voxel_mm3) for v in volumes_ml]
    total = sum(voxels)
    classes = tuple(ClassStats(k, n, v, None, v / total, volume_ml=ml)
                    for k, (n, v, ml) in enumerate(zip(names, voxels, volumes_ml, strict=True)))
    return ItemStats(item, classes, total, 0, None, "voxel", f"voxel volume {voxel_mm3} mm³", voxel_mm3, lesions)


def _lesion(id_: int, class_index: int, volume_ml: float, diameter_mm: float) -> Lesion:
    return Lesion(id_, class_index, round(volume_ml * 500), volume_ml, (1.0, 2.0, 3.0), (1, 2, 3), (4, 5, 6),
                  diameter_mm)


@pytest.fixture()
def volume_stats() -> Callable[..., ItemStats]:
    """``volume_stats(item, volumes_ml, lesions=(), names=NAMES, voxel_mm3=2.0)``."""
    return _volume_stats


@pytest.fixture()
def make_lesion() -> Callable[[int, int, float, float], Lesion]:
    """``make_lesion(id, class_index, volume_ml, longest_axial_diameter_mm)``."""
    return _lesion


@pytest.fixture()
def ct_outcomes() -> list[ItemOutcome]:
    return [
        ItemOutcome("p01", "/data/p01.nii.gz", "ok",
                    stats=_volume_stats("p01", (100.5, 20.25, 3.5),
                                       (_lesion(1, 2, 2.0, 18.5), _lesion(2, 2, 1.5, 21.0))),
                    outputs=("/out/p01/labels.nii.gz", "/out/p01/report.html"), seconds=3.0, windows=8),
        ItemOutcome("p02", "/data/p02.nii.gz", "ok", stats=_volume_stats("p02", (120.0, 25.0, 0.0)),
                    outputs=("/out/p02/labels.nii.gz", "/out/p02/report.html"), seconds=2.0, windows=8),
        ItemOutcome("p03", "/data/p03.nii.gz", "failed", error="/data/p03.nii.gz: cannot open: truncated"),
    ]
