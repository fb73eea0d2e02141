"""The input and output formats: one record each, the only place that knows them.

A record says what a format is called in a workflow (``inputs.format``), which kind of item it
holds (a 2D ``raster`` or a 3D ``volume``), how its items are recognised (file suffixes, or a
directory store's marker files), which reader class opens it, and whether that reader works
from a local copy that the item's owner stages first (:attr:`InputFormat.staged`).

Discovery (what a folder expands to), the workflow schema (the ``format`` choices), the items
(which reader, which staging) and the actors (which reader) all read this table. Readers are
named by import path and imported when first used, so this module stays at the bottom of the
package (the spec imports it) and imports no reader library.

Adding a format: one reader class under :mod:`geoseg_pipeline.sources` implementing
:class:`~geoseg_pipeline.sources.base.RasterSource` or
:class:`~geoseg_pipeline.sources.base.VolumeSource` with the ``open`` (and, when staged,
``stage``) class methods; one record in :data:`FORMATS`; the reader's subclass of the shared
contract tests (``tests/sources/source_contract.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .errors import SourceError
from .storage.uri import is_uri

Kind = Literal["raster", "volume"]

#: Separates the folder from the series UID in a DICOM series item's path.
SERIES_MARK = "#series="

#: Files that mark a folder as a Zarr store (v3, v2 array, v2 group).
ZARR_MARKERS = frozenset({"zarr.json", ".zarray", ".zgroup"})


@dataclass(frozen=True)
class InputFormat:
    """One input format of one kind.

    Attributes:
        name: the workflow's ``inputs.format`` value.
        kind: ``raster`` (2D, bands) or ``volume`` (3D, channels).
        suffixes: lower-case name endings of its items (a folder expands to these).
        markers: for a directory store, the files whose presence makes a folder one item.
        reader: ``module:Class`` of the reader, the module relative to ``geoseg_pipeline.sources``.
        staged: the reader reads a local, uncompressed copy that the item's owner makes first
            with the reader's ``stage`` class method (a ``.nii.gz`` inflated, an object fetched).
        fallback: the format a name with no known suffix is opened as, for its kind.
        explicit: used only when ``inputs.format`` names it: never found by ``auto`` detection
            or folder expansion.
        series: items are DICOM series, ``<folder>#series=<SeriesInstanceUID>``, found by
            reading the headers of a folder's files (any names).
        description: what users see in ``geoseg formats`` and the docs.
    """

    name: str
    kind: Kind
    suffixes: tuple[str, ...]
    reader: str
    description: str
    markers: frozenset[str] = frozenset()
    staged: bool = False
    fallback: bool = False
    series: bool = False
    explicit: bool = False

    @property
    def store(self) -> bool:
        """Items are directory stores (never looked into by discovery)."""
        return bool(self.markers)

    def matches(self, path: str) -> bool:
        """Whether ``path`` names an item of this format: by suffix, or (a store) by its markers."""
        if self.series:
            return SERIES_MARK in path
        name = path.rstrip("/").lower()
        if name.endswith(self.suffixes):
            return True
        return self.store and not is_uri(path) and os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, m)) for m in self.markers
        )


#: Every input format. Detection tries them in order; a name matching none gets its kind's fallback.
FORMATS: tuple[InputFormat, ...] = (
    InputFormat("geotiff", "raster", (".tif", ".tiff"), "rasterio_source:RasterioSource",
                "GeoTIFF / COG (and any other raster GDAL reads)", fallback=True),
    InputFormat("zarr", "raster", (".zarr",), "zarr_source:ZarrRasterSource",
                "a (bands, rows, cols) Zarr array with crs/transform attributes", markers=ZARR_MARKERS),
    InputFormat("xarray-zarr", "raster", (".zarr",), "xarray_source:XarrayZarrSource",
                "a Zarr datacube written by xarray (Dataset.to_zarr): its variables on the (y, x) grid as "
                "bands (inputs.variables), CRS and transform by the CF / rioxarray conventions",
                markers=ZARR_MARKERS),
    InputFormat("xarray", "raster", (".xarray",), "xarray_source:DataArraySource",
                "a live xarray.DataArray of this process, named by the handle predict_dataarray writes "
                "(resources.backend: local)", explicit=True),
    InputFormat("stac", "raster", (), "stac_source:StacRasterSource",
                "STAC items (inputs.stac): listed assets as bands, brought onto one grid window by window"),
    InputFormat("nifti", "volume", (".nii", ".nii.gz"), "nifti_source:NiftiSource",
                "NIfTI-1/2, plain or gzip-compressed (a worker inflates it once per machine)",
                staged=True),
    InputFormat("xarray", "volume", (".xarray",), "xarray_volume:DataArrayVolumeSource",
                "a live (channel, z, y, x) xarray.DataArray of this process, named by the handle "
                "predict_dataarray writes (resources.backend: local)", explicit=True),
    InputFormat("zarr", "volume", (".zarr",), "zarr_volume:ZarrVolumeSource",
                "a Zarr array with affine/spacing attributes, or an OME-Zarr image", markers=ZARR_MARKERS),
    InputFormat("dicom", "volume", (), "dicom_source:DicomSeriesSource",
                "DICOM image series in a folder (any file names; one item per SeriesInstanceUID; "
                "decoded once per worker into a local copy)", staged=True, series=True),
)

#: The values ``inputs.format`` takes besides ``auto``.
FORMAT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f.name for f in FORMATS))


def formats_for(kind: Kind | None = None, name: str = "auto") -> tuple[InputFormat, ...]:
    """The records of ``kind`` (every kind when ``None``): those called ``name``, or with ``auto`` every
    one but the :attr:`~InputFormat.explicit` ones."""
    return tuple(f for f in FORMATS if (kind is None or f.kind == kind)
                 and (name == f.name or (name == "auto" and not f.explicit)))


def folder_suffixes(name: str = "auto", kind: Kind | None = None) -> tuple[str, ...]:
    """Suffixes a folder expands to: those of the format ``name`` (``inputs.format``), or with
    ``auto`` those of every format of the job's ``kind``."""
    chosen = formats_for(None, name) if name != "auto" else formats_for(kind)
    return tuple(dict.fromkeys(s for f in chosen for s in f.suffixes))


def lookup(name: str, kind: Kind) -> InputFormat:
    """The record called ``name`` for ``kind``.

    Raises:
        SourceError: no such format for that kind.
    """
    for fmt in FORMATS:
        if fmt.name == name and fmt.kind == kind:
            return fmt
    raise SourceError(f"no {kind} format called {name!r}; known: {', '.join(f.name for f in formats_for(kind))}")


def detect(path: str, kind: Kind, name: str = "auto") -> InputFormat:
    """The format of the item ``path`` in a job of ``kind``.

    ``name`` (``inputs.format``) forces a format; ``auto`` picks by suffix or store markers, and
    otherwise the kind's fallback (GDAL reads many raster formats without a known suffix).

    Raises:
        SourceError: ``name`` has no reader for ``kind``, or nothing matches a volume.
    """
    candidates = formats_for(kind, name)
    if not candidates:
        kinds = sorted({f.kind for f in formats_for(None, name)})
        raise SourceError(f"{path}: inputs.format {name!r} is a {' or '.join(kinds) or 'unknown'} format, "
                          f"not a {kind} format; use one of {', '.join(f.name for f in formats_for(kind))} or auto")
    if len(candidates) == 1 and name != "auto":
        return candidates[0]
    for fmt in candidates:
        if fmt.matches(path):
            return fmt
    other: Kind = "volume" if kind == "raster" else "raster"
    if name == "auto" and any(f.suffixes and f.matches(path) for f in formats_for(other)):
        # the other kind's file by its suffix (a NIfTI in a job whose roi_size has two numbers)
        hint = ("give roi_size three numbers (--roi-size 96,96,96) for a volume job" if other == "volume"
                else "give roi_size two numbers for a raster job")
        raise SourceError(f"{path}: is a {other} file but this is a {kind} job (roi_size has "
                          f"{2 if kind == 'raster' else 3} numbers): {hint}")
    for fmt in candidates:
        if fmt.fallback:
            return fmt
    wanted = ", ".join(s for f in candidates for s in f.suffixes)
    raise SourceError(f"{path}: not a {kind} format: expected {wanted} (or a Zarr store)")


@dataclass(frozen=True)
class OutputFormat:
    """One output format (``output.formats``): the sink class that writes it.

    Attributes:
        name: the workflow's ``output.formats`` value.
        kind: the items it is written for.
        sink: ``module:Class`` of the sink, the module relative to ``geoseg_pipeline.sinks``;
            the class has a ``for_item(out_dir, target)`` class method.
        default: written when the workflow lists no format.
        description: what users see in the docs.
    """

    name: str
    kind: Kind
    sink: str
    description: str
    default: bool = False


#: Every output format. An item's sinks commit together (all or none).
OUTPUTS: tuple[OutputFormat, ...] = (
    OutputFormat("cog", "raster", "cog:CogLabelSink", "labels.tif, a Cloud-Optimized GeoTIFF with legend",
                 default=True),
    OutputFormat("logits", "raster", "cog:LogitsSink", "logits.tif, the blended float32 logits per class"),
    OutputFormat("geoparquet", "raster", "vector:GeoParquetSink",
                 "labels.parquet, GeoParquet 1.1: one polygon per connected region, with class and area"),
    OutputFormat("gpkg", "raster", "vector:GpkgSink",
                 "labels.gpkg, a GeoPackage layer: one polygon per connected region, with class and area"),
    OutputFormat("nifti", "volume", "nifti:NiftiLabelSink",
                 "labels.nii.gz with the input's header, 3D Slicer and ITK-SNAP colour tables", default=True),
    OutputFormat("zarr", "volume", "zarr_labels:ZarrLabelSink", "labels.zarr, an OME-Zarr label image"),
    OutputFormat("dicom-seg", "volume", "dicom_seg:DicomSegSink",
                 "labels.dcm, a DICOM Segmentation over the source series (DICOM inputs)"),
)

#: The values ``output.formats`` takes.
OUTPUT_NAMES: tuple[str, ...] = tuple(o.name for o in OUTPUTS)


def outputs_for(kind: Kind, names: tuple[str, ...] | None = None) -> tuple[OutputFormat, ...]:
    """The output records of ``kind`` named in ``names`` (in that order), or its defaults."""
    if names is None:
        return tuple(o for o in OUTPUTS if o.kind == kind and o.default)
    return tuple(o for n in names for o in OUTPUTS if o.name == n and o.kind == kind)


__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "OUTPUTS",
    "OUTPUT_NAMES",
    "SERIES_MARK",
    "ZARR_MARKERS",
    "InputFormat",
    "Kind",
    "OutputFormat",
    "detect",
    "folder_suffixes",
    "formats_for",
    "lookup",
    "outputs_for",
]
