"""Synthetic Sentinel-2-like land-cover scenes, written block by block.

Generative model
----------------
Every quantity below is a pure function of ``(seed, row, col)`` (and of the scene shape for the
nodata corner), so a scene is seamless across blocks and identical for any ``block`` size.

1. **Smooth fields.** A field is fractal value noise: for each octave (a lattice spacing in
   pixels and an amplitude) a counter-based hash of ``(seed, field, octave, lattice row,
   lattice col)`` gives a value in ``[-1, 1)`` at each lattice node; nodes are blended with the
   smoothstep-weighted bilinear rule and the octaves are summed. The sum is evaluated exactly
   on a fine lattice (every ``8`` pixels) and bilinearly interpolated to the pixels, which keeps
   the cost per pixel to a few multiply-adds however many octaves a field has.
2. **Land cover.** One field per class (plus a per-class prior bias); the label of a pixel is
   the argmax over the four class fields, which gives irregular patches from about 30 to
   several hundred pixels across.
3. **Mixed borders.** Near a border the pixel spectrum is a linear mixture of the competing
   classes: class ``k`` gets the weight ``max(0, f_k - max_j f_j + tau)``, normalised, so
   pixels whose fields are within ``tau`` of each other are spectral mixtures (a border zone of
   one to three pixels), while the label stays the dominant class.
4. **Spectra.** Each class interpolates between two end-members (clear and turbid water,
   forest and cropland, dry and moist soil, bright concrete and dark roofs/asphalt) following
   its own smooth field, in surface reflectance x 10000 for the bands blue, green, red and NIR.
   A broad brightness field (illumination, haze) multiplies all bands.
5. **Rivers and roads.** Lines are the zero level sets of two large-scale fields. The distance
   to the line is approximated by ``|f| / |grad f|`` (the gradient of the interpolated field
   is exact and local). A pixel's line fraction is
   ``clip(min(half_width + 0.5 - distance, 2 * half_width), 0, 1)``; it mixes the river (water)
   or road (asphalt) spectrum in and sets the label where it is at least one half. Half-widths
   follow further fields, so rivers (4 to 14 pixels wide) taper out at their ends and roads
   (3 pixels wide) stop; roads are drawn last, so they bridge rivers.
6. **Noise.** Per-pixel Gaussian noise, per band (additive plus a reflectance-proportional
   part) and one shared multiplicative speckle term, drawn from a NumPy generator seeded by
   ``(seed, noise tile)`` over a fixed ``256 x 256`` noise tiling independent of ``block``.
7. **Nodata.** Optionally the top-right triangle, where ``col / width - row / height > 0.6``
   (8 % of the pixels, like the edge of a satellite swath), has all bands ``0`` (the nodata
   value) and label ``255``. Valid pixels are never ``0`` in any band.

All per-pixel arithmetic is IEEE add, multiply, divide, square root and min/max, evaluated in
a fixed order, so the bits do not depend on how the scene is cut into blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

__all__ = [
    "LABEL_NODATA",
    "LANDCOVER_BANDS",
    "LANDCOVER_CLASS_COLOURS",
    "LANDCOVER_CLASS_NAMES",
    "SCENE_NODATA",
    "Change",
    "write_landcover_scene",
]

LANDCOVER_CLASS_NAMES: tuple[str, ...] = ("water", "vegetation", "bare_soil", "built_up")
"""Class names, indexed by label value."""

LANDCOVER_CLASS_COLOURS: tuple[str, ...] = ("#1f78b4", "#33a02c", "#d8b365", "#e31a1c")
"""Display colours (``#rrggbb``), one per class in :data:`LANDCOVER_CLASS_NAMES`."""

LANDCOVER_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Band names of a scene, in band order (Sentinel-2 B02, B03, B04, B08)."""

SCENE_NODATA: Final = 0
"""Nodata value of the scene bands."""

LABEL_NODATA: Final = 255
"""Nodata value of the reference label raster."""

Float32Array = npt.NDArray[np.float32]
_IntArray = npt.NDArray[np.int64]

_LATTICE: Final = 8
"""Fine-lattice spacing in pixels on which fields are evaluated exactly."""

_NOISE_TILE: Final = 256
"""Side of the fixed tiling over which per-pixel noise is drawn."""

_MASK64: Final = (1 << 64) - 1

_RENDER_THREADS: Final = 2
"""Blocks rendered concurrently (and so also the most blocks held ahead of the writer)."""


@dataclass(frozen=True)
class Change:
    """Land cover that has changed by a later date of a scene: inside a disc (centre ``row``,
    ``col`` and ``radius`` in pixels) the field of class ``klass`` is raised by ``strength``,
    fully within 0.8 of the radius and fading to nothing at its edge, so that class takes over
    most of the disc (rivers and roads stay where they are)."""

    row: float
    col: float
    radius: float
    klass: int
    strength: float = 1.0


@dataclass(frozen=True)
class _Field:
    """A smooth random field: value-noise octaves ``(spacing_px, amplitude)`` plus a bias."""

    octaves: tuple[tuple[int, float], ...]
    bias: float = 0.0


_CLASS_OCTAVES: Final = ((256, 1.0), (64, 0.45), (16, 0.15))
_FIELDS: Final = (
    # 0-3: class fields (water, vegetation, bare soil, built-up); biases set the class mix.
    _Field(_CLASS_OCTAVES, -0.12),
    _Field(_CLASS_OCTAVES, 0.10),
    _Field(_CLASS_OCTAVES, 0.0),
    _Field(_CLASS_OCTAVES, -0.04),
    # 4-7: end-member mixing fields, one per class.
    _Field(((256, 1.0), (64, 0.4))),
    _Field(((256, 1.0), (64, 0.4))),
    _Field(((256, 1.0), (64, 0.4))),
    _Field(((256, 1.0), (64, 0.4))),
    # 8: brightness (illumination, thin haze).
    _Field(((1024, 1.0), (128, 0.3))),
    # 9, 10: river course and river half-width.
    _Field(((512, 1.0), (128, 0.25), (32, 0.03))),
    _Field(((1024, 1.0),)),
    # 11, 12: road course and road presence.
    _Field(((512, 1.0), (128, 0.05))),
    _Field(((512, 1.0),)),
)
_RIVER: Final = 9
_ROAD: Final = 11

_MIX_TAU: Final = 0.03
"""Field margin within which neighbouring classes mix spectrally."""

# End-members in surface reflectance x 10000, shape (class, member, band).
_ENDMEMBERS: Final = np.array(
    [
        [[700, 600, 350, 180], [1000, 1150, 950, 600]],  # water: clear, turbid
        [[280, 520, 280, 2600], [500, 850, 600, 4000]],  # vegetation: forest, cropland
        [[1250, 1650, 2200, 3000], [700, 950, 1250, 1700]],  # bare soil: dry, moist
        [[1650, 1700, 1750, 2000], [900, 950, 1000, 1150]],  # built-up: concrete, dark roofs
    ],
    dtype=np.float32,
)


def write_landcover_scene(
    path: Path,
    height: int,
    width: int,
    seed: int,
    *,
    labels_path: Path | None = None,
    nodata_corner: bool = True,
    crs: str = "EPSG:32633",
    pixel_size: float = 10.0,
    origin: tuple[float, float] = (500000.0, 5200000.0),
    block: int = 512,
    changes: Sequence[Change] = (),
) -> None:
    """Write a synthetic 4-band land-cover scene (and optionally its reference labels).

    The scene is a tiled, DEFLATE-compressed uint16 GeoTIFF with bands
    :data:`LANDCOVER_BANDS` in reflectance x 10000, nodata ``0``, and a north-up transform
    whose upper-left corner is ``origin``. It is generated and written one ``block x block``
    window at a time, so memory stays bounded for scenes of any size; the pixels depend only on
    ``seed`` and the pixel coordinates (see the module docstring), never on ``block``.

    Args:
        path: Output GeoTIFF of the scene.
        height: Rows of the scene.
        width: Columns of the scene.
        seed: Non-negative seed; equal seeds give equal scenes.
        labels_path: If given, also write the reference label map here (uint8 class indices
            into :data:`LANDCOVER_CLASS_NAMES`, nodata ``255``, same grid, with a colour map).
        nodata_corner: Make the top-right triangle (8 % of the pixels) nodata.
        crs: Coordinate reference system of the grid, anything rasterio accepts.
        pixel_size: Pixel side in CRS units.
        origin: ``(x, y)`` of the upper-left corner of the grid in CRS units.
        block: Internal GeoTIFF tile side and generation window side; a positive multiple of
            16.
        changes: Changes of land cover (a later date of the same scene: same ``seed``).

    Raises:
        ValueError: If a shape, the seed, the pixel size or the block size is invalid; the
            message names ``path``.
    """
    _check_arguments(path, height, width, seed, pixel_size, block)
    transform = from_origin(origin[0], origin[1], pixel_size, pixel_size)
    common = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 1,
        "num_threads": "ALL_CPUS",
    }
    scene_profile = {**common, "count": len(LANDCOVER_BANDS), "dtype": "uint16", "nodata": SCENE_NODATA}
    label_profile = {**common, "count": 1, "dtype": "uint8", "nodata": LABEL_NODATA}
    with ExitStack() as files:
        scene_dst = files.enter_context(rasterio.open(path, "w", **scene_profile))
        scene_dst.descriptions = LANDCOVER_BANDS
        label_dst = None
        if labels_path is not None:
            label_dst = files.enter_context(rasterio.open(labels_path, "w", **label_profile))
            label_dst.write_colormap(1, _colour_map())
            label_dst.update_tags(1, class_names=",".join(LANDCOVER_CLASS_NAMES))
        for window, bands, labels in _rendered_blocks(seed, height, width, block, nodata_corner, tuple(changes)):
            scene_dst.write(bands, window=window)
            if label_dst is not None:
                label_dst.write(labels, 1, window=window)


def _rendered_blocks(
    seed: int, height: int, width: int, block: int, nodata_corner: bool, changes: tuple[Change, ...] = ()
) -> Iterator[tuple[Window, npt.NDArray[np.uint16], npt.NDArray[np.uint8]]]:
    """Render the blocks in row-major order on worker threads, at most a few ahead of the writer.

    NumPy releases the GIL in the heavy array operations, so rendering overlaps itself and the
    (GDAL-side) compression of the blocks already written; memory stays bounded by the
    number of blocks in flight.
    """
    with ThreadPoolExecutor(max_workers=_RENDER_THREADS, thread_name_prefix="landcover-scene") as pool:
        pending: deque[tuple[Window, Future[tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]]]] = deque()
        for window in _block_windows(height, width, block):
            pending.append((window, pool.submit(_render_window, seed, height, width, window, nodata_corner, changes)))
            if len(pending) > _RENDER_THREADS:
                done, rendered = pending.popleft()
                yield done, *rendered.result()
        while pending:
            done, rendered = pending.popleft()
            yield done, *rendered.result()


def _check_arguments(path: Path, height: int, width: int, seed: int, pixel_size: float, block: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"scene shape must be positive, got {height} x {width} for {path}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed} for {path}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be > 0, got {pixel_size} for {path}")
    if block < 16 or block % 16:
        raise ValueError(f"block must be a positive multiple of 16 (GeoTIFF tiles), got {block} for {path}")


def _block_windows(height: int, width: int, block: int) -> list[Window]:
    return [
        Window(col, row, min(block, width - col), min(block, height - row))
        for row in range(0, height, block)
        for col in range(0, width, block)
    ]


def _colour_map() -> dict[int, tuple[int, int, int, int]]:
    return {
        index: (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), 255)
        for index, colour in enumerate(LANDCOVER_CLASS_COLOURS)
    }


def _render_window(
    seed: int, height: int, width: int, window: Window, nodata_corner: bool, changes: tuple[Change, ...] = ()
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    """Render the bands ``(4, h, w)`` and labels ``(h, w)`` of one window of a scene."""
    row0, col0 = int(window.row_off), int(window.col_off)
    rows, cols = int(window.height), int(window.width)
    fields, d_row, d_col = _interpolated_fields(seed, row0, col0, rows, cols)

    class_fields = fields[0:4]
    for change in changes:
        rr = np.arange(row0, row0 + rows, dtype=np.float32)[:, None] + np.float32(0.5)
        cc = np.arange(col0, col0 + cols, dtype=np.float32)[None, :] + np.float32(0.5)
        d = np.hypot(rr - np.float32(change.row), cc - np.float32(change.col)) / np.float32(change.radius)
        class_fields[change.klass] += np.float32(change.strength) * np.clip((1 - d) / np.float32(0.2), 0, 1)
    labels = np.argmax(class_fields, axis=0).astype(np.uint8)
    weights = np.maximum(class_fields - (class_fields.max(axis=0) - np.float32(_MIX_TAU)), np.float32(0))
    weights /= weights.sum(axis=0)
    members = np.clip(fields[4:8] + np.float32(0.5), np.float32(0), np.float32(1))

    spectrum = np.zeros((4, rows, cols), dtype=np.float32)
    for klass in range(4):
        weighted_member = weights[klass] * members[klass]
        for band in range(4):
            low, high = _ENDMEMBERS[klass, :, band]
            spectrum[band] += weights[klass] * low + weighted_member * (high - low)

    # Rivers: half-width 2..7 px where present, tapering to nothing over a short stretch.
    river_presence = fields[_RIVER + 1] + np.float32(0.2)
    river_half_width = np.clip(np.float32(8) * river_presence, 0, 1) * (
        np.float32(2) + np.float32(5) * np.clip(river_presence, 0, 1)
    )
    river = _line_fraction(fields[_RIVER], d_row[0], d_col[0], river_half_width)
    # Roads: half-width 1.5 px where present.
    road_half_width = np.float32(1.5) * np.clip(np.float32(4) * fields[_ROAD + 1] + np.float32(1), 0, 1)
    road = _line_fraction(fields[_ROAD], d_row[1], d_col[1], road_half_width)
    for fraction, klass in ((river, 0), (road, 3)):
        low, high = _ENDMEMBERS[klass, 0], _ENDMEMBERS[klass, 1]
        for band in range(4):
            line = low[band] + members[klass] * (high[band] - low[band])
            spectrum[band] += fraction * (line - spectrum[band])
        labels[fraction >= np.float32(0.5)] = klass

    bands = _add_noise(seed, spectrum, fields[8], row0, col0)
    if nodata_corner:
        corner = _nodata_corner(height, width, row0, col0, rows, cols)
        bands[:, corner] = SCENE_NODATA
        labels[corner] = LABEL_NODATA
    return bands, labels


def _line_fraction(
    field: Float32Array, d_row: Float32Array, d_col: Float32Array, half_width: Float32Array
) -> Float32Array:
    """Fraction of each pixel covered by the zero level set of ``field``, widened to a line."""
    gradient = np.sqrt(d_row * d_row + d_col * d_col)
    distance = np.abs(field) / np.maximum(gradient, np.float32(1e-7))
    coverage = np.minimum(half_width + np.float32(0.5) - distance, np.float32(2) * half_width)
    fraction: Float32Array = np.clip(coverage, np.float32(0), np.float32(1))
    return fraction


def _add_noise(
    seed: int, spectrum: Float32Array, brightness: Float32Array, row0: int, col0: int
) -> npt.NDArray[np.uint16]:
    noise = _noise(seed, row0, col0, spectrum.shape[1], spectrum.shape[2])
    gain = (np.float32(1) + np.float32(0.1) * brightness) * (np.float32(1) + np.float32(0.04) * noise[4])
    out = np.empty(spectrum.shape, dtype=np.uint16)
    for band in range(4):
        value = spectrum[band] * gain + noise[band] * (np.float32(40) + np.float32(0.03) * spectrum[band])
        out[band] = np.clip(np.rint(value), 1, 65535)
    return out


def _noise(seed: int, row0: int, col0: int, rows: int, cols: int) -> Float32Array:
    """Standard normal noise ``(5, rows, cols)`` drawn per fixed ``_NOISE_TILE`` tile."""
    out = np.empty((5, rows, cols), dtype=np.float32)
    tile = _NOISE_TILE
    for tile_row in range(row0 // tile, (row0 + rows - 1) // tile + 1):
        for tile_col in range(col0 // tile, (col0 + cols - 1) // tile + 1):
            generator = np.random.default_rng([seed, 0x6E6F697365, tile_row, tile_col])
            values = generator.standard_normal((5, tile, tile), dtype=np.float32)
            r0, c0 = max(row0, tile_row * tile), max(col0, tile_col * tile)
            r1, c1 = min(row0 + rows, (tile_row + 1) * tile), min(col0 + cols, (tile_col + 1) * tile)
            out[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = values[
                :, r0 - tile_row * tile : r1 - tile_row * tile, c0 - tile_col * tile : c1 - tile_col * tile
            ]
    return out


def _nodata_corner(height: int, width: int, row0: int, col0: int, rows: int, cols: int) -> npt.NDArray[np.bool_]:
    """``col / width - row / height > 0.6`` in exact integer arithmetic."""
    row = np.arange(row0, row0 + rows, dtype=np.int64)[:, None]
    col = np.arange(col0, col0 + cols, dtype=np.int64)[None, :]
    return np.asarray(5 * (col * height - row * width) > 3 * width * height)


def _interpolated_fields(
    seed: int, row0: int, col0: int, rows: int, cols: int
) -> tuple[Float32Array, Float32Array, Float32Array]:
    """All fields at the pixels of a window, plus row/col derivatives of the line fields.

    Returns:
        ``(fields, d_row, d_col)``: ``fields`` is ``(n_fields, rows, cols)``; ``d_row`` and
        ``d_col`` are ``(2, rows, cols)`` for the river and road fields.
    """
    step = _LATTICE
    lat_row0, lat_col0 = row0 // step, col0 // step
    lat_row1, lat_col1 = -(-(row0 + rows) // step), -(-(col0 + cols) // step)
    lattice = _lattice_fields(
        seed,
        np.arange(lat_row0, lat_row1 + 1, dtype=np.int64) * step,
        np.arange(lat_col0, lat_col1 + 1, dtype=np.int64) * step,
    )
    col = np.arange(col0, col0 + cols, dtype=np.int64)
    left = col // step - lat_col0
    u = ((col % step) / step).astype(np.float32)
    lattice_left = lattice[:, :, left]
    lattice_step = lattice[:, :, left + 1] - lattice_left
    by_col = lattice_left + u * lattice_step  # (n_fields, lattice rows, cols)

    t = (np.arange(step, dtype=np.float32) / np.float32(step))[None, None, :, None]
    top, bottom = by_col[:, :-1, None, :], by_col[:, 1:, None, :]
    skip = row0 - lat_row0 * step
    n_fields = lattice.shape[0]
    fields = (top + t * (bottom - top)).reshape(n_fields, -1, cols)[:, skip : skip + rows]

    lines = [_RIVER, _ROAD]
    d_row = np.broadcast_to((bottom[lines] - top[lines]) / np.float32(step), (2, top.shape[1], step, cols))
    d_row = d_row.reshape(2, -1, cols)[:, skip : skip + rows]
    slope = lattice_step[lines] / np.float32(step)
    slope_top, slope_bottom = slope[:, :-1, None, :], slope[:, 1:, None, :]
    d_col = (slope_top + t * (slope_bottom - slope_top)).reshape(2, -1, cols)[:, skip : skip + rows]
    return fields, d_row, d_col


def _lattice_fields(seed: int, rows_px: _IntArray, cols_px: _IntArray) -> Float32Array:
    """Exact field values ``(n_fields, len(rows_px), len(cols_px))`` at the given pixel rows/cols."""
    out = np.empty((len(_FIELDS), len(rows_px), len(cols_px)), dtype=np.float32)
    for index, field in enumerate(_FIELDS):
        total = np.full((len(rows_px), len(cols_px)), field.bias, dtype=np.float64)
        for octave, (spacing, amplitude) in enumerate(field.octaves):
            key = _mix_int(_mix_int(_mix_int(seed) ^ index) ^ octave)
            # A per-octave lattice offset keeps the octaves' lattice lines from lining up.
            row_shift, col_shift = key % spacing, (key >> 32) % spacing
            total += amplitude * _value_noise(key, rows_px + row_shift, cols_px + col_shift, spacing)
        out[index] = total
    return out


def _value_noise(key: int, rows_px: _IntArray, cols_px: _IntArray, spacing: int) -> npt.NDArray[np.float64]:
    """Smoothstep-bilinear value noise with lattice ``spacing`` at a grid of pixel positions."""
    cell_row, cell_col = rows_px // spacing, cols_px // spacing
    t_row = _smoothstep((rows_px % spacing) / spacing)[:, None]
    t_col = _smoothstep((cols_px % spacing) / spacing)[None, :]
    first_row, first_col = int(cell_row.min()), int(cell_col.min())
    nodes = _hash_uniform(
        key,
        np.arange(first_row, int(cell_row.max()) + 2, dtype=np.int64),
        np.arange(first_col, int(cell_col.max()) + 2, dtype=np.int64),
    )
    upper = nodes[cell_row - first_row]
    by_row = upper + t_row * (nodes[cell_row - first_row + 1] - upper)
    left = by_row[:, cell_col - first_col]
    result: npt.NDArray[np.float64] = left + t_col * (by_row[:, cell_col - first_col + 1] - left)
    return result


def _smoothstep(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = t * t * (3.0 - 2.0 * t)
    return result


def _hash_uniform(key: int, rows: _IntArray, cols: _IntArray) -> npt.NDArray[np.float64]:
    """Uniform values in ``[-1, 1)`` hashed from ``(key, row, col)`` for a lattice of nodes."""
    with np.errstate(over="ignore"):
        row_hash = _mix_array(rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(key))
        col_term = cols.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        node_hash = _mix_array(row_hash[:, None] ^ col_term[None, :])
    result: npt.NDArray[np.float64] = (node_hash >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
    return result


def _mix_array(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser on an array (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """SplitMix64 step on a Python int (the scalar twin of :func:`_mix_array`)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)
