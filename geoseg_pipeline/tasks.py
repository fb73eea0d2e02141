"""What is sent to an inference actor with each tile task, and what comes back. Torch-free,
so that the driver process never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .geometry import Window
from .nnunet.case import CaseGeometry
from .nnunet.folder import NnunetModel
from .preprocess import Preprocessing
from .resampling import SpacingMap
from .tiling import TilePlan


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model takes and gives: channels in, classes out, spatial dims."""

    in_channels: int
    num_classes: int
    spatial_dims: int


@dataclass(frozen=True)
class RegionSettings:
    """How a worker cuts each finished raster block into its connected regions of one class for
    the polygon outputs (:func:`geoseg_pipeline.sinks.regions.block_regions`): 4- or
    8-connectivity, the label that is no region, and the ground area of one pixel per row of the
    image (``None``: no areas)."""

    connectivity: int
    ignore: int | None
    row_area_m2: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StitchSettings:
    """How a worker finishes an item's blocks: the model's classes, the label written where no
    input is valid (``None``: every voxel is valid), the label type, whether the blended logits
    come back too (``output.formats: [..., logits]``), and whether each block's connected regions
    do (polygon outputs)."""

    num_classes: int
    nodata_label: int | None
    label_dtype: str
    keep_logits: bool = False
    regions: RegionSettings | None = None


@dataclass(frozen=True)
class BlockRegions:
    """One block's connected regions of one class, numbered 1..n within the block, as a worker
    found them: each region's class, pixels and ground area (``None``: no areas), the region
    numbers along the block's four edges (top row, bottom row, left column, right column; 0: no
    region), and GDAL's polygons in pixel space relative to the block's corner as ragged arrays
    (shapely's layout: vertices, ring ends, polygon ends), ``keys`` the region of each polygon."""

    classes: np.ndarray
    pixels: np.ndarray
    areas: np.ndarray | None
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    keys: np.ndarray
    coords: np.ndarray
    ring_ends: np.ndarray
    polygon_ends: np.ndarray

    @property
    def count(self) -> int:
        """How many regions the block holds."""
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        arrays = (self.classes, self.pixels, self.areas, *self.edges, self.keys, self.coords, self.ring_ends,
                  self.polygon_ends)
        return sum(a.nbytes for a in arrays if a is not None)


@dataclass(frozen=True)
class ItemJob:
    """Everything an actor needs to know about one item (small; sent with every task)."""

    name: str
    path: str
    format: str
    preprocessing: Preprocessing
    roi_size: tuple[int, ...]
    blend: str
    sigma_scale: float
    batch_size: int | None  # None: the worker's own choice (see Predictor.batch_size)
    kind: str = "raster"  # or "volume"
    data_path: str | None = None  # a volume's inflated copy (for .nii.gz), read by the actors
    channel_axis: int | None = None
    axcodes: str | None = None  # volumes: the model's orientation (windows are reoriented)
    image_shape: tuple[int, ...] | None = None  # the planned (model-space) shape
    resample: SpacingMap | None = None  # volumes: from the reoriented grid to the model's spacing
    read_retries: int = 3  # retries of a failed window read (I/O errors only)
    plan: TilePlan | None = None  # the item's plan: bands are finished by the workers
    stitch: StitchSettings | None = None
    dicomweb: Any = None  # the DICOMweb server (URL, credentials) of a dicomweb+ series item
    staged: bool = False  # the format reads a local copy (a .nii.gz inflated, an s3:// object fetched)
    zscore_nonzero: bool = False  # mean/std of the nonzero voxels still to compute (by a worker)
    nnunet: NnunetModel | None = None  # an nnU-Net model: a worker preprocesses the case as nnU-Net does
    case: CaseGeometry | None = None  # ... and finds where its preprocessed array lies
    stac: Any = None  # a STAC item's assets, resolved by discovery (sources.stac_items.StacItemRef)

    @property
    def needs_preparation(self) -> bool:
        """A worker must prepare the item before its bands run (``TileExecutor.prepare_item``):
        make its staged copy once, compute its intensity statistics."""
        return self.staged or self.zscore_nonzero or (self.nnunet is not None and self.case is None)

    def prepared(self, facts: ItemFacts) -> ItemJob:
        """This job with what a worker found when it prepared the item."""
        prep = self.preprocessing
        if self.zscore_nonzero:
            if facts.mean is None or facts.std is None:
                raise ValueError(f"{self.path}: the worker returned no z-score statistics")
            prep = replace(prep, mean=facts.mean, std=facts.std, nonzero_only=True)
        if self.nnunet is not None:
            if facts.case is None:
                raise ValueError(f"{self.path}: the worker returned no nnU-Net case geometry")
            return replace(self, data_path=facts.data_path, staged=False, case=facts.case,
                           image_shape=facts.case.preprocessed_shape)
        return replace(self, preprocessing=prep, data_path=facts.data_path or self.data_path, zscore_nonzero=False,
                       staged=False)


@dataclass(frozen=True)
class ItemFacts:
    """What a worker found when it prepared an item: the path of the staged copy it made (which
    other workers on its machine read too), the per-channel mean and standard deviation of the
    nonzero voxels when the job asked for them, and for an nnU-Net model where the preprocessed
    array (then at ``data_path``) lies in the case."""

    data_path: str | None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    case: CaseGeometry | None = None  # nnU-Net: the preprocessed array (at data_path) in the case
    retries: tuple[tuple[str, int], ...] = ()  # remote calls retried while preparing, by kind


@dataclass(frozen=True)
class TileResult:
    """The blended partial sums of one task over ``region`` (clipped to the image).

    ``logits``: ``(classes, *region)`` sum of weight × logits (zero classes when every window
    was skipped); ``weights``: sum of weights; ``valid``: input validity. ``windows_run``
    windows went through the model and ``windows_skipped`` lay entirely in nodata.
    """

    task_index: int
    region: Window
    logits: np.ndarray
    weights: np.ndarray
    valid: np.ndarray
    windows_run: int
    windows_skipped: int


@dataclass(frozen=True)
class FinishedLabels:
    """One block a worker finished: its labels (the nodata label where no input is valid, so
    that the valid mask needs no bytes of its own), when asked for its blended logits, and for a
    raster its valid pixels per (row, class) when they are small (the class tally's input) and,
    for polygon outputs, its connected regions (:class:`BlockRegions`)."""

    index: tuple[int, ...]
    labels: np.ndarray
    logits: np.ndarray | None = None
    row_counts: np.ndarray | None = None
    regions: BlockRegions | None = None


@dataclass(frozen=True)
class BandResult:
    """One part of what a worker streams back for a band: the blocks it finished since the
    last part, and how many windows it ran meanwhile (``windows_run`` of the band's own tasks,
    ``halo_windows`` of earlier rows run again) and skipped (entirely nodata)."""

    band_index: int
    blocks: tuple[FinishedLabels, ...]
    windows_run: int
    windows_skipped: int
    halo_windows: int
    retries: tuple[tuple[str, int], ...] = ()  # remote calls retried since the last part, by kind

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data returned (labels, logits and counts)."""
        return sum(b.labels.nbytes + sum(a.nbytes for a in (b.logits, b.row_counts, b.regions) if a is not None)
                   for b in self.blocks)
