"""Every statistic that consumes label blocks runs the shared block-consumer contract (``statistic_contract.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import statistic_contract as contract
from affine import Affine
from test_lesions import AFFINES, random_volume

from geoseg_pipeline.geometry import Grid
from geoseg_pipeline.statistics import ClassStats, ClassTally, ItemStats, pixel_areas
from geoseg_pipeline.statistics.classes import VolumeTally
from geoseg_pipeline.statistics.lesions import LesionTracker, label_volume_reference
from geoseg_pipeline.stitching.consumer import BlockConsumer

NAMES = ("bare", "water", "trees", "crops")
NODATA = 255


def raster_labels() -> np.ndarray:
    labels = np.random.default_rng(5).integers(0, len(NAMES), (37, 53)).astype(np.uint8)
    labels[~raster_valid()] = NODATA
    return labels


def raster_valid() -> np.ndarray:
    valid = np.ones((37, 53), dtype=bool)
    valid[10:21, 12:30] = False  # across block borders
    valid[np.random.default_rng(6).random((37, 53)) < 0.05] = False
    return valid


class _ClassTallyContract(contract.BlockConsumerContract):
    block_shapes = ((16, 16), (7, 20))
    grid: Grid

    def make_consumer(self) -> BlockConsumer[Any]:
        return ClassTally(len(NAMES), pixel_areas(self.grid), NAMES, item="scene")

    def label_map(self) -> np.ndarray:
        return raster_labels()

    def valid_map(self) -> np.ndarray | None:
        return raster_valid()

    def reference(self) -> ItemStats:
        areas = pixel_areas(self.grid)
        assert areas.row_area_m2 is not None
        labels, valid = self.label_map(), self.valid_map()
        assert valid is not None
        per_row = np.stack([np.bincount(labels[r][valid[r]], minlength=len(NAMES)) for r in range(labels.shape[0])])
        pixels = per_row.sum(axis=0)
        area = areas.row_area_m2 @ per_row
        total = float(area.sum())
        classes = tuple(
            ClassStats(k, NAMES[k], int(pixels[k]), float(area[k]), float(area[k]) / total) for k in range(len(NAMES))
        )
        return ItemStats("scene", classes, int(valid.sum()), int((~valid).sum()), total, areas.method, areas.note)


class TestClassTallyPlanar(_ClassTallyContract):
    grid = Grid((37, 53), Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000100.0), "EPSG:32633")

    def test_areas_are_planar(self) -> None:
        stats = self.feed(self.windows())
        assert stats.area_method == "planar"
        assert [c.area_m2 for c in stats.classes] == [100.0 * c.pixels for c in stats.classes]


class TestClassTallyGeographic(_ClassTallyContract):
    grid = Grid((37, 53), Affine(0.25, 0.0, 10.0, 0.0, -0.5, 70.0), "EPSG:4326")
    reference_rel = 1e-12  # the reference sums the rows' areas in another order

    def test_areas_are_geodesic_per_row(self) -> None:
        stats = self.feed(self.windows())
        assert stats.area_method == "geodesic"
        shares = np.array([c.share for c in stats.classes])
        by_pixels = np.array([c.pixels for c in stats.classes]) / stats.valid_pixels
        assert not np.allclose(shares, by_pixels, rtol=1e-3)  # rows near the pole count less


VOXEL_AFFINE = np.array([[-0.75, 0, 0, 90.0], [0, -0.75, 0, 100.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


class TestVolumeTally(contract.BlockConsumerContract):
    block_shapes = ((5, 4, 3), (4, 6, 5))
    voxel_mm3 = 0.75 * 0.75 * 2.5

    def make_consumer(self) -> BlockConsumer[Any]:
        return VolumeTally(len(NAMES), self.voxel_mm3, NAMES, item="scan")

    def label_map(self) -> np.ndarray:
        return random_volume((13, 10, 7), 8, smooth=True) % len(NAMES)

    def reference(self) -> ItemStats:
        voxels = np.bincount(self.label_map().ravel(), minlength=len(NAMES))
        total = int(voxels.sum())
        classes = tuple(
            ClassStats(k, NAMES[k], int(v), None, int(v) / total, volume_ml=int(v) * self.voxel_mm3 / 1000.0)
            for k, v in enumerate(voxels)
        )
        note = f"voxel volume {self.voxel_mm3:.6g} mm³ = |det(affine)|"
        return ItemStats("scan", classes, total, 0, None, "voxel", note, self.voxel_mm3)


class TestLesionTracker(contract.BlockConsumerContract):
    block_shapes = ((4, 5, 3), (6, 4, 4))
    shape = (15, 14, 9)
    classes = (1, 2, 3)
    affine = AFFINES["oblique"]

    def make_consumer(self) -> BlockConsumer[Any]:
        return LesionTracker(self.classes, self.affine, self.shape, connectivity=26)

    def label_map(self) -> np.ndarray:
        return random_volume(self.shape, 21, smooth=True)  # blobs of classes 0..4; 4 is no lesion class

    def reference(self) -> Any:
        return label_volume_reference(self.label_map(), self.classes, 26, self.affine)

    def test_lesions_cross_block_borders(self) -> None:
        lesions = self.reference()
        assert len(lesions) >= 5
        for block in self.block_shapes:
            crossing = [
                x for x in lesions
                if any(lo // b != hi // b for lo, hi, b in zip(x.bbox_min, x.bbox_max, block, strict=True))
            ]
            assert len(crossing) >= 3, block
