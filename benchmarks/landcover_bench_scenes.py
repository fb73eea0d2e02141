"""The land-cover benchmark's scenes: 4-band uint16 tiled GeoTIFFs of smooth synthetic land
cover, written block by block (a 8192² scene never sits in memory)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from bench_runs import log

BANDS = 4
CLASSES = 4
BLOCK = 512  # GeoTIFF tile size of the generated scenes
CRS = "EPSG:32633"
PIXEL = 10.0
# Reflectance x 10000 of four synthetic classes (blue, green, red, nir): water, vegetation,
# bare soil, built-up.
SPECTRA = np.array(
    [
        [600.0, 700.0, 500.0, 300.0],
        [400.0, 800.0, 450.0, 3500.0],
        [1300.0, 1600.0, 1900.0, 2600.0],
        [1600.0, 1700.0, 1800.0, 2000.0],
    ],
    dtype=np.float32,
)




def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _value_noise(nodes: np.ndarray, spacing: int, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Bilinear (smoothstep) interpolation of a lattice of random values; seamless over blocks."""
    rows = (np.arange(r0, r0 + h, dtype=np.float64) + 0.5) / spacing
    cols = (np.arange(c0, c0 + w, dtype=np.float64) + 0.5) / spacing
    ri, ci = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr = _smoothstep((rows - ri).astype(np.float32))[:, None]
    fc = _smoothstep((cols - ci).astype(np.float32))[None, :]
    a = nodes[np.ix_(ri, ci)]
    b = nodes[np.ix_(ri, ci + 1)]
    c = nodes[np.ix_(ri + 1, ci)]
    d = nodes[np.ix_(ri + 1, ci + 1)]
    top = a + (b - a) * fc
    bottom = c + (d - c) * fc
    return top + (bottom - top) * fr


class _SceneFields:
    """Random lattices (small: one value per 32 px at the finest) for one scene and seed."""

    OCTAVES = ((256, 1.0), (64, 0.5), (32, 0.25))

    def __init__(self, height: int, width: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.class_nodes = [
            [rng.standard_normal((height // s + 2, width // s + 2)).astype(np.float32)
             for s, _ in self.OCTAVES]
            for _ in range(CLASSES)
        ]
        self.bright_nodes = rng.standard_normal((height // 512 + 2, width // 512 + 2)).astype(np.float32)
        self.seed = seed

    def block(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """``(BANDS, h, w)`` uint16 values of the block at ``(r0, c0)``."""
        fields = np.stack([
            sum(a * _value_noise(n, s, r0, c0, h, w) for n, (s, a) in zip(nodes, self.OCTAVES, strict=True))
            for nodes in self.class_nodes
        ])  # (classes, h, w)
        label = np.argmax(fields, axis=0)
        spectra = SPECTRA[label]  # (h, w, bands)
        bright = 1.0 + 0.15 * _value_noise(self.bright_nodes, 512, r0, c0, h, w)
        rng = np.random.default_rng([self.seed, r0, c0])
        noise = rng.standard_normal((h, w, BANDS), dtype=np.float32) * 60.0
        values = spectra * bright[..., None] + noise
        return np.clip(values, 1, 10000).astype(np.uint16).transpose(2, 0, 1)


def write_scene(path: Path, size: int, seed: int) -> None:
    """Write a ``size x size`` 4-band uint16 tiled, deflate-compressed GeoTIFF, block by block."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    fields = _SceneFields(size, size, seed)
    tmp = path.with_name(path.name + ".tmp")
    profile = dict(
        driver="GTiff", width=size, height=size, count=BANDS, dtype="uint16", crs=CRS,
        transform=from_origin(500000.0, 5300000.0, PIXEL, PIXEL), tiled=True,
        blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, BLOCK):
            for c0 in range(0, size, BLOCK):
                h, w = min(BLOCK, size - r0), min(BLOCK, size - c0)
                dst.write(fields.block(r0, c0, h, w), window=Window(c0, r0, w, h))
    tmp.replace(path)


def ensure_scene(path: Path, size: int, seed: int) -> Path:
    """Generate the scene unless a complete one (right shape) already exists."""
    import rasterio

    if path.exists():
        try:
            with rasterio.open(path) as src:
                if (src.height, src.width, src.count, src.dtypes[0]) == (size, size, BANDS, "uint16"):
                    return path
        except Exception:  # a broken leftover: regenerate it
            pass
    t0 = time.perf_counter()
    write_scene(path, size, seed)
    log(f"generated {path.name} ({size} x {size}) in {time.perf_counter() - t0:.1f} s")
    return path
