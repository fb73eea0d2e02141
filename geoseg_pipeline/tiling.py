"""The tiling plan: MONAI's sliding-window grid (or nnU-Net's), output blocks and tile tasks.
Pure, no I/O.

The window grid is the one of :func:`monai.inferers.sliding_window_inference`:

* an image smaller than the roi along an axis is padded symmetrically (``diff // 2`` before,
  the rest after) up to the roi; padded pixels are zeros *after* preprocessing;
* the scan interval is ``int(roi * (1 - overlap))`` (at least 1), or the roi itself where the
  (padded) image is exactly one roi long;
* window starts are ``k * interval``, the last one pulled back so that it ends on the image's
  last pixel.

Windows are expressed in the coordinates of the *unpadded* image, so a padded window starts at
a negative offset. Output **blocks** cut the image into a regular lattice; a **tile task** is
the set of windows whose (clamped) start falls in one block. Tasks are enumerated lazily and
the plan itself holds only one list of starts per axis, so a 100,000 × 100,000 mosaic costs a
few kilobytes to plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .geometry import Window


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """MONAI's scan interval for a (padded) image of ``image_size``."""
    out = []
    for n, r in zip(image_size, roi_size, strict=True):
        if r == n:
            out.append(r)
        else:
            out.append(max(int(r * (1 - overlap)), 1))
    return tuple(out)


def axis_starts(image: int, roi: int, interval: int) -> list[int]:
    """Window starts along one axis of a padded image (``image >= roi``), as MONAI's
    ``dense_patch_slices``."""
    num = math.ceil(image / interval)
    scan_num = next((d + 1 for d in range(num) if d * interval + roi >= image), 1)
    return [i * interval - max(i * interval + roi - image, 0) for i in range(scan_num)]


def nnunet_axis_starts(image: int, roi: int, step: float) -> list[int]:
    """Window starts along one axis of a padded image (``image >= roi``) as nnU-Net's
    ``compute_steps_for_sliding_window``: ``ceil((image - roi) / (roi * step)) + 1`` windows spread
    evenly, starts rounded; a one-voxel roi (a 2D model's slice axis) visits every slice."""
    if roi == 1:
        return list(range(image))
    num = math.ceil((image - roi) / (roi * step)) + 1
    actual = (image - roi) / (num - 1) if num > 1 else 99999999999
    return [round(actual * i) for i in range(num)]


def pad_before(image_size: Sequence[int], roi_size: Sequence[int]) -> tuple[int, ...]:
    """Padding MONAI adds before each axis of an image smaller than the roi."""
    return tuple(max(r - n, 0) // 2 for n, r in zip(image_size, roi_size, strict=True))


@dataclass(frozen=True)
class TileTask:
    """The windows whose clamped start lies in block ``block``; processed by one actor call."""

    index: int
    block: tuple[int, ...]
    windows: tuple[Window, ...]

    @property
    def region(self) -> Window:
        """The box covering all the task's windows (may reach into padding)."""
        start = tuple(min(w.start[i] for w in self.windows) for i in range(self.windows[0].ndim))
        stop = tuple(max(w.stop[i] for w in self.windows) for i in range(self.windows[0].ndim))
        return Window(start, tuple(e - s for s, e in zip(start, stop, strict=True)))


@dataclass(frozen=True)
class BandTask:
    """Block rows ``rows[0]`` to ``rows[1] - 1`` (along the first axis) of one item, finished by
    one worker: it runs the tile tasks of the band's blocks and, again, the windows of earlier
    block rows that reach into the band (its halo), so that it blends every pixel of the band
    exactly as the global blend does without another worker's partial sums."""

    index: int
    rows: tuple[int, int]
    #: blocks of the band an earlier run committed: tasks that add only to these are not run
    done: frozenset[tuple[int, ...]] = frozenset()


@dataclass(frozen=True)
class TilePlan:
    """Where every window and block of one item lies.

    Build it with :func:`plan_tiles`. ``starts[i]`` are window starts along axis ``i`` in image
    coordinates; ``block_shape`` is the output block size.
    """

    image_shape: tuple[int, ...]
    roi_size: tuple[int, ...]
    block_shape: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    # per axis: for each block index, the window starts whose clamped start lies in it
    _starts_by_block: tuple[tuple[tuple[int, ...], ...], ...] = field(repr=False, compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.image_shape)

    @property
    def window_count(self) -> int:
        """Total number of windows."""
        return math.prod(len(s) for s in self.starts)

    @property
    def block_grid(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return tuple(math.ceil(n / b) for n, b in zip(self.image_shape, self.block_shape, strict=True))

    def windows(self) -> Iterator[Window]:
        """All windows in MONAI's order (row-major over starts)."""
        for start in itertools.product(*self.starts):
            yield Window(tuple(start), self.roi_size)

    def block_window(self, block: Sequence[int]) -> Window:
        """The pixels of block ``block`` (clipped at the image's edge)."""
        start = tuple(i * b for i, b in zip(block, self.block_shape, strict=True))
        size = tuple(
            min(b, n - s) for s, b, n in zip(start, self.block_shape, self.image_shape, strict=True)
        )
        return Window(start, size)

    def blocks(self) -> Iterator[tuple[int, ...]]:
        """All block indices, row-major."""
        return itertools.product(*(range(n) for n in self.block_grid))

    def tasks(self) -> Iterator[TileTask]:
        """The non-empty tile tasks, row-major over blocks."""
        index = 0
        for block in self.blocks():
            per_axis = [self._starts_by_block[i][j] for i, j in enumerate(block)]
            if not all(per_axis):
                continue
            windows = tuple(Window(tuple(s), self.roi_size) for s in itertools.product(*per_axis))
            yield TileTask(index, tuple(block), windows)
            index += 1

    @property
    def task_count(self) -> int:
        """Number of non-empty tile tasks."""
        return math.prod(sum(1 for s in axis if s) for axis in self._starts_by_block)

    def bands(self, count: int, done: Iterable[tuple[int, ...]] = ()) -> list[BandTask]:
        """The item cut into ``count`` bands of whole block rows (at most one per block row),
        of about equal height, top to bottom; ``done``: blocks committed by an earlier run."""
        rows = self.block_grid[0]
        count = max(1, min(count, rows))
        edges = [round(i * rows / count) for i in range(count + 1)]
        finished = frozenset(done)
        return [BandTask(i, (edges[i], edges[i + 1]),
                         frozenset(b for b in finished if edges[i] <= b[0] < edges[i + 1])) for i in range(count)]

    def band_needed(self, band: BandTask) -> bool:
        """Whether ``band`` holds a block not committed yet."""
        return any(ix not in band.done for ix in self.band_blocks(band))

    def band_blocks(self, band: BandTask) -> list[tuple[int, ...]]:
        """The blocks of ``band``, row-major."""
        return [b for b in self.blocks() if band.rows[0] <= b[0] < band.rows[1]]

    def band_tasks(self, band: BandTask) -> Iterator[TileTask]:
        """What a worker runs for ``band``, in order: the halo first (the windows of earlier
        block rows that reach into the band, grouped by their task), then the band's own tasks."""
        top = band.rows[0] * self.block_shape[0]
        for task in self.tasks():
            row = task.block[0]
            if row >= band.rows[1]:
                return
            if row < band.rows[0]:
                if task.region.stop[0] <= top:
                    continue
                task = TileTask(task.index, task.block, tuple(w for w in task.windows if w.stop[0] > top))
            if band.done and all(b in band.done or not band.rows[0] <= b[0] < band.rows[1]
                                 for b in self.blocks_touched(task)):
                continue  # adds only to committed blocks (or to other bands')
            yield task

    def band_window_count(self, band: BandTask) -> tuple[int, int]:
        """Windows ``band`` runs: ``(its own, its halo's)``."""
        own = halo = 0
        for task in self.band_tasks(band):
            if task.block[0] >= band.rows[0]:
                own += len(task.windows)
            else:
                halo += len(task.windows)
        return own, halo

    def blocks_touched(self, task: TileTask) -> list[tuple[int, ...]]:
        """Blocks that ``task``'s region overlaps inside the image."""
        region = task.region
        ranges = []
        for i in range(self.ndim):
            lo = max(region.start[i], 0) // self.block_shape[i]
            hi = (min(region.stop[i], self.image_shape[i]) - 1) // self.block_shape[i]
            ranges.append(range(lo, hi + 1))
        return [tuple(b) for b in itertools.product(*ranges)]

    def contributions(self) -> dict[tuple[int, ...], int]:
        """For each block, how many tasks add to it; a block is final once all have."""
        # The count is separable: along each axis, count the task indices whose region
        # touches the block index, then multiply across axes.
        per_axis: list[list[int]] = []
        for i in range(self.ndim):
            counts = [0] * self.block_grid[i]
            for starts in self._starts_by_block[i]:
                if not starts:
                    continue
                lo = max(min(starts), 0) // self.block_shape[i]
                hi = (min(max(starts) + self.roi_size[i], self.image_shape[i]) - 1) // self.block_shape[i]
                for j in range(lo, hi + 1):
                    counts[j] += 1
            per_axis.append(counts)
        return {
            tuple(block): math.prod(per_axis[i][j] for i, j in enumerate(block)) for block in self.blocks()
        }


def plan_tiles(
    image_shape: Sequence[int],
    roi_size: Sequence[int],
    overlap: float,
    block_shape: Sequence[int],
    grid: str = "monai",
) -> TilePlan:
    """Plan the windows and blocks of one item.

    Args:
        image_shape: spatial shape of the item (rows, cols[, ...]).
        roi_size: the model's window size, one entry per axis.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
        block_shape: output block size, one entry per axis.
        grid: ``monai`` (``sliding_window_inference``'s window starts) or ``nnunet``
            (nnU-Net's, with tile step ``1 - overlap``); both pad a small image alike.

    Raises:
        ValueError: on inconsistent dimensions or out-of-range values.
    """
    image = tuple(int(n) for n in image_shape)
    roi = tuple(int(r) for r in roi_size)
    blocks = tuple(int(b) for b in block_shape)
    if not len(image) == len(roi) == len(blocks):
        raise ValueError(f"image {image}, roi {roi} and block {blocks} differ in dimensions")
    if any(n < 1 for n in image):
        raise ValueError(f"image shape must be positive, got {image}")
    if any(r < 1 for r in roi):
        raise ValueError(f"roi size must be positive, got {roi}")
    if any(b < 1 for b in blocks):
        raise ValueError(f"block shape must be positive, got {blocks}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded = tuple(max(n, r) for n, r in zip(image, roi, strict=True))
    before = pad_before(image, roi)
    if grid == "nnunet":
        starts = tuple(
            tuple(s - p for s in nnunet_axis_starts(n, r, 1.0 - overlap))
            for n, r, p in zip(padded, roi, before, strict=True)
        )
    elif grid == "monai":
        interval = scan_interval(padded, roi, overlap)
        starts = tuple(
            tuple(s - p for s in axis_starts(n, r, iv))
            for n, r, iv, p in zip(padded, roi, interval, before, strict=True)
        )
    else:
        raise ValueError(f"grid must be 'monai' or 'nnunet', got {grid!r}")
    by_block = []
    for axis_s, n, b in zip(starts, image, blocks, strict=True):
        groups: list[list[int]] = [[] for _ in range(math.ceil(n / b))]
        for s in axis_s:
            groups[max(s, 0) // b].append(s)
        by_block.append(tuple(tuple(g) for g in groups))
    return TilePlan(image, roi, blocks, starts, tuple(by_block))

