"""A seeded mutator of input files for the fuzzing tests: truncations, bit flips, and header fields
set to hostile values (sizes, offsets, types, affines, compression, huge declared sizes), for
GeoTIFF, NIfTI (plain and gzipped), Zarr stores and DICOM series. Each case is a file (or folder)
written under a given root, named after the mutation, so that a failure names what was done."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Values a header field is set to: zero, one, the type's edges, and sizes nobody has the memory for.
HOSTILE_INTS = (0, 1, 3, 255, 65535, 1_000_000, 2**31 - 1, 2**32 - 1)
HOSTILE_SIGNED = (-1, 0, 1, 3, 32767, -32768, 30000)
HOSTILE_FLOATS = (float("nan"), float("inf"), -1.0, 0.0, 1e30, -1e30, 1e-30)


def truncated(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    cut = int(rng.integers(0, len(data)))
    return f"truncated-at-{cut}", data[:cut]


def flipped(data: bytes, rng: np.random.Generator, within: int | None = None) -> tuple[str, bytes]:
    out = bytearray(data)
    span = min(len(out), within or len(out))
    count = int(rng.integers(1, 17))
    for _ in range(count):
        pos = int(rng.integers(0, span))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return f"{count}-bits-flipped{'-in-header' if within else ''}", bytes(out)


# -- TIFF -------------------------------------------------------------------------------------

#: Tags of the first IFD that describe sizes, layout and coding.
TIFF_TAGS = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression", 277: "SamplesPerPixel",
             284: "PlanarConfiguration", 322: "TileWidth", 323: "TileLength", 324: "TileOffsets",
             325: "TileByteCounts", 339: "SampleFormat"}
_TIFF_SIZES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG


def tiff_fields(data: bytes) -> list[tuple[str, int, str]]:
    """``(name, offset, struct format)`` of each value of the first IFD's :data:`TIFF_TAGS`
    (classic little-endian TIFF, as GDAL writes small files)."""
    if data[:4] != b"II*\x00":
        raise ValueError("expected a classic little-endian TIFF")
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    fields = []
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, typ, n, value = struct.unpack_from("<HHII", data, at)
        if tag not in TIFF_TAGS or typ not in _TIFF_SIZES:
            continue
        fmt, size = _TIFF_SIZES[typ]
        first = at + 8 if n * size <= 4 else value
        fields += [(f"{TIFF_TAGS[tag]}[{k}]", first + k * size, fmt) for k in range(min(n, 3))]
    return fields


def tiff_cases(source: Path, root: Path, rng: np.random.Generator, n: int) -> list[Path]:
    """``n`` mutants of the GeoTIFF ``source`` in ``root``."""
    data = source.read_bytes()
    fields = tiff_fields(data)

    def field_case(r: np.random.Generator) -> tuple[str, bytes]:
        name, at, fmt = fields[int(r.integers(0, len(fields)))]
        value = int(HOSTILE_INTS[int(r.integers(0, len(HOSTILE_INTS)))]) & (0xFFFF if fmt == "H" else 0xFFFFFFFF)
        out = bytearray(data)
        struct.pack_into("<" + fmt, out, at, value)
        return f"{name}={value}", bytes(out)

    return _write_files(root, "tif", data, rng, n, field_case)


# -- NIfTI ------------------------------------------------------------------------------------

#: NIfTI-1 header fields: name, offset, struct format, hostile values.
NIFTI_FIELDS: tuple[tuple[str, int, str, tuple[float, ...]], ...] = (
    ("dim[0]", 40, "h", (0, 1, 8, 9, -1)),
    *((f"dim[{k}]", 40 + 2 * k, "h", HOSTILE_SIGNED) for k in (1, 2, 3, 4)),
    ("datatype", 70, "h", (0, 1, 128, 999, 2048, -1)),
    ("bitpix", 72, "h", (0, 3, 64, -8)),
    *((f"pixdim[{k}]", 76 + 4 * k, "f", HOSTILE_FLOATS) for k in (1, 2, 3)),
    ("vox_offset", 108, "f", (1e9, -352.0, float("nan"), 0.0, 1e30)),
    ("scl_slope", 112, "f", (float("nan"), float("inf"), 0.0, -1e30)),
    ("scl_inter", 116, "f", (float("nan"), float("-inf"))),
    ("qform_code", 252, "h", (-1, 5, 32767)),
    ("sform_code", 254, "h", (-1, 5, 32767)),
    *((f"srow_x[{k}]", 280 + 4 * k, "f", HOSTILE_FLOATS) for k in range(4)),
)


def nifti_cases(source: Path, root: Path, rng: np.random.Generator, n: int) -> list[Path]:
    """``n`` mutants of the uncompressed NIfTI-1 ``source`` in ``root``: half written plain
    (``.nii``), half gzipped (``.nii.gz``: mutated before compression, or its bytes after)."""
    data = source.read_bytes()

    def field_case(r: np.random.Generator) -> tuple[str, bytes]:
        name, at, fmt, values = NIFTI_FIELDS[int(r.integers(0, len(NIFTI_FIELDS)))]
        value = values[int(r.integers(0, len(values)))]
        out = bytearray(data)
        struct.pack_into("<" + fmt, out, at, int(value) if fmt == "h" else value)
        return f"{name}={value}", bytes(out)

    plain = _write_files(root, "nii", data, rng, n // 2, field_case)
    gz = []
    for p in plain:
        if rng.random() < 0.5:  # the mutated header, compressed
            target, body = root / f"{p.name[:-4]}-gz.nii.gz", gzip.compress(p.read_bytes(), mtime=0)
        else:  # the gzip stream itself damaged
            name, body = (truncated if rng.random() < 0.5 else flipped)(gzip.compress(data, mtime=0), rng)
            target = root / f"{p.name[:-4]}-gz-{_safe(name)}.nii.gz"
        target.write_bytes(body)
        gz.append(target)
    return plain + gz


# -- Zarr -------------------------------------------------------------------------------------

def _zarr_json_cases(meta: dict[str, object]) -> list[tuple[str, Callable[[dict[str, object]], None]]]:
    def set_(key: str, value: object) -> Callable[[dict[str, object]], None]:
        return lambda m: m.__setitem__(key, value)

    def attr(key: str, value: object) -> Callable[[dict[str, object]], None]:
        return lambda m: m.setdefault("attributes", {}).__setitem__(key, value)  # type: ignore[union-attr]

    shape = list(meta["shape"])  # type: ignore[call-overload]
    return [
        ("shape-huge", set_("shape", [shape[0], 1_000_000, 1_000_000])),
        ("shape-negative", set_("shape", [shape[0], -5, shape[2]])),
        ("shape-zero", set_("shape", [shape[0], 0, shape[2]])),
        ("shape-rank-1", set_("shape", [shape[1]])),
        ("shape-rank-5", set_("shape", [1, 1, *shape])),
        ("dtype-unknown", set_("data_type", "float1024")),
        ("dtype-bool", set_("data_type", "bool")),
        ("dtype-complex", set_("data_type", "complex128")),
        ("chunks-zero", lambda m: m.__setitem__("chunk_grid", {"name": "regular",
                                                                "configuration": {"chunk_shape": [0, 0, 0]}})),
        ("codec-unknown", set_("codecs", [{"name": "no-such-codec"}])),
        ("fill-nan-int", set_("fill_value", "NaN")),
        ("transform-nan", attr("transform", [float("nan"), 0, 0, 0, -1, 0])),
        ("transform-zero", attr("transform", [0, 0, 0, 0, 0, 0])),
        ("transform-short", attr("transform", [1, 2])),
        ("crs-garbage", attr("crs", "EPSG:99999999")),
        ("nodata-string", attr("nodata", "lots")),
        ("not-json", lambda m: m.clear()),
    ]


def zarr_cases(source: Path, root: Path, rng: np.random.Generator, n: int) -> list[Path]:
    """Mutants of the Zarr v3 array store ``source`` (a folder) in ``root``: every metadata
    mutation of :func:`_zarr_json_cases`, then chunk files truncated or flipped, ``n`` in all."""
    meta = json.loads((source / "zarr.json").read_text(encoding="utf-8"))
    cases: list[Path] = []
    for name, mutate in _zarr_json_cases(meta)[:n]:
        target = root / f"zarr-{name}.zarr"
        shutil.copytree(source, target)
        m = json.loads(json.dumps(meta))
        mutate(m)
        (target / "zarr.json").write_text("{not json" if not m else json.dumps(m), encoding="utf-8")
        cases.append(target)
    chunks = sorted(p for p in source.rglob("*") if p.is_file() and p.name != "zarr.json")
    while len(cases) < n:
        i = len(cases)
        chunk = chunks[int(rng.integers(0, len(chunks)))]
        name, damaged = (truncated if i % 2 else flipped)(chunk.read_bytes(), rng)
        target = root / f"zarr-{i}-{chunk.relative_to(source).as_posix().replace('/', '.')}-{name}.zarr"
        shutil.copytree(source, target)
        (target / chunk.relative_to(source)).write_bytes(damaged)
        cases.append(target)
    return cases


# -- DICOM ------------------------------------------------------------------------------------

#: Attributes of one slice set to hostile values (pydicom keywords).
DICOM_FIELDS: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("Rows", (0, 1, 65535)),
    ("Columns", (0, 65535)),
    ("BitsAllocated", (1, 7, 64)),
    ("BitsStored", (0, 40)),
    ("PixelRepresentation", (5,)),
    ("SamplesPerPixel", (0, 3)),
    ("NumberOfFrames", (1000, 0)),
    ("ImagePositionPatient", (["nan", "0", "0"], ["1e308", "1e308", "1e308"], ["0"])),
    ("ImageOrientationPatient", (["0", "0", "0", "0", "0", "0"], ["1", "0", "0", "1", "0", "0"], ["nan"] * 6)),
    ("PixelSpacing", (["0", "0"], ["-1", "1"], ["nan", "nan"])),
    ("RescaleSlope", ("nan", "0", "1e308")),
    ("SliceThickness", ("-5", "0")),
)


def dicom_cases(series: list[Path], root: Path, rng: np.random.Generator, n: int) -> list[Path]:
    """``n`` mutants of the DICOM series ``series`` (its files), each a folder in ``root`` with
    one slice changed: an attribute set to a hostile value, its pixel data cut short, or the
    file truncated or flipped."""
    import pydicom

    cases: list[Path] = []
    for i in range(n):
        target = root / f"series-{i}"
        target.mkdir()
        for f in series:
            shutil.copy(f, target / f.name)
        victim = target / series[int(rng.integers(0, len(series)))].name
        kind = i % 4
        if kind in (0, 1):
            keyword, values = DICOM_FIELDS[int(rng.integers(0, len(DICOM_FIELDS)))]
            value = values[int(rng.integers(0, len(values)))]
            ds = pydicom.dcmread(victim)
            setattr(ds, keyword, value)
            ds.save_as(victim, enforce_file_format=True)
            name = f"{keyword}={value}"
        elif kind == 2:
            ds = pydicom.dcmread(victim)
            ds.PixelData = ds.PixelData[: int(rng.integers(0, len(ds.PixelData)))]
            ds.save_as(victim, enforce_file_format=True)
            name = "pixel-data-short"
        else:
            name, damaged = (truncated if rng.random() < 0.5 else flipped)(victim.read_bytes(), rng)
            victim.write_bytes(damaged)
        (target / "MUTATION.txt").write_text(f"{victim.name}: {name}\n")
        cases.append(target)
    return cases


def _write_files(root: Path, suffix: str, data: bytes, rng: np.random.Generator, n: int,
                 field_case: Callable[[np.random.Generator], tuple[str, bytes]]) -> list[Path]:
    paths = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            name, body = truncated(data, rng)
        elif kind == 1:
            name, body = flipped(data, rng)
        elif kind == 2:
            name, body = flipped(data, rng, within=512)
        else:
            name, body = field_case(rng)
        path = root / f"{suffix}-{i:03d}-{_safe(name)}.{suffix}"
        path.write_bytes(body)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-=." else "_" for c in name)[:60]
