"""Segmenting an ``xarray.DataArray`` through the same engine as files: ``predict_dataarray``.

How the array reaches the readers: it is registered in this process under a random token and a
small handle file (``<name>.xarray``, in a temporary folder) stands for it as the job's one item
(:func:`~geoseg_pipeline.sources.xarray_source.live_dataarray`). The job runs with the local
backend (``resources.backend: local``): worker threads of this process, which read the array
window by window through :class:`~geoseg_pipeline.sources.xarray_source.DataArraySource`, so a
dask-backed array is computed one task region at a time, never whole. Ray actors are other
processes and cannot see a live array (a numpy-backed one would have to be pickled into every
task); for Ray, write the cube to Zarr and run a workflow with ``format: xarray-zarr``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .api import model_section
from .errors import InputDataError, JobError, ignoring_warnings
from .runtime import run_job
from .sources.xarray_grid import EXTRA_HINT, import_xarray
from .sources.xarray_source import DataArraySource, live_dataarray
from .sources.xarray_volume import DataArrayVolumeSource, is_volume
from .spec import parse_workflow


def predict_dataarray(
    da: Any,
    model: str | os.PathLike[str] | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    roi_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    blend: str | None = None,
    batch_size: int | None = None,
    block_size: int | None = None,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
    nodata: float | None = None,
    formats: Sequence[str] | None = None,
    name: str = "dataarray",
    progress: bool | None = None,
    lesion_classes: Sequence[int] = (),
    orientation: str | None = None,
    spacing: Sequence[float] | None = None,
) -> Any:
    """Segment a ``(band, y, x)`` (or single-band ``(y, x)``) DataArray, or a ``(channel, z, y, x)``
    (or ``(z, y, x)``) volume, with ``model``.

    The array may be numpy- or dask-backed; it is read window region by window region, so a
    dask array is never computed whole. Its CRS and transform come from the CF / rioxarray
    conventions (``rio.write_crs``, a ``spatial_ref`` coordinate, ``GeoTransform``, regularly
    spaced x/y coordinates; see :mod:`geoseg_pipeline.sources.xarray_grid`); without a CRS the
    labels are on the same pixel grid with no CRS and the statistics count pixels, not areas.
    Volumes (``band, z, y, x``) are not supported.

    Args:
        da: the array; the leading dimension (if any) holds the model's channels in order.
        model: as ``geoseg predict --model`` takes it, a path, or a model section (a mapping, as a
            workflow's ``model``; see :func:`~geoseg_pipeline.api.model_section`).
        out: the output directory (``OUT/<name>/labels.tif`` and the item's reports); ``None``:
            a new temporary directory, which the caller owns (its path is ``attrs["output"]``'s
            folder).
        roi_size, overlap, blend, batch_size, block_size: the tiling (``None``: the workflow
            defaults; a block is what a worker reads at once, plus a window's margin).
        classes: class names (the legend and statistics).
        workers: worker threads (default: one per CPU).
        nodata: the input's nodata value (default: the array's ``_FillValue`` / ``nodata``
            attribute; else NaN for a float array, xarray's mark of missing values).
        formats: output formats (default ``cog``; ``logits`` adds ``logits.tif``).
        name: the item's name (its output folder).
        progress: force progress bars on or off (default: on a terminal only).
        lesion_classes, orientation, spacing: for a volume, as :func:`~geoseg_pipeline.api.predict`
            takes them (lesion statistics; the model's voxel orientation and spacing, the labels
            coming back on the input's voxels).

    Returns:
        The labels as a lazily read (dask-backed) DataArray ``(y, x)`` opened from the COG the
        engine wrote, with the input's y/x coordinates and CRS (a volume's: ``(z, y, x)`` from
        ``labels.zarr``, an OME-Zarr label image, with the input's coordinates); ``attrs``: ``nodata`` (the
        labels' nodata, also ``_FillValue``), ``output`` (the COG's path), ``statistics`` (the
        item's statistics as ``stats.json`` holds them: a nested dict, to drop before
        ``to_netcdf``).

    Raises:
        InputDataError: dimensions that are neither a raster's nor a volume's, irregular
            coordinates, a volume without voxel sizes or without a 3D ``roi_size``.
        JobError: the item failed (the message says why).
        SourceError: xarray or rioxarray is not installed (the ``xarray`` extra).
    """
    xarray = import_xarray()
    try:
        import rioxarray
    except ImportError as exc:
        raise JobError(f"predict_dataarray needs rioxarray: {EXTRA_HINT}") from exc
    if not isinstance(da, xarray.DataArray):
        raise InputDataError(f"predict_dataarray segments an xarray.DataArray, got {type(da).__name__} "
                             "(a Dataset: select or stack its bands, e.g. ds[[...]].to_dataarray('band'))")
    what = f"DataArray {name!r}"
    section = model_section(model)  # read once (a YAML model section is a file)
    volume = is_volume(da.dims)
    if volume:
        grid = None
        DataArrayVolumeSource(what, da)  # dimensions and voxel geometry checked, no voxel read
        roi_size = _volume_roi(what, roi_size, section)
        formats = list(dict.fromkeys([*(formats or ["nifti"]), "zarr"]))  # labels.zarr: read back lazily
    else:
        grid = DataArraySource(what, da).grid  # dimensions and georeferencing checked, no pixel read
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="geoseg-dataarray-"))
    tiling = {"roi_size": roi_size, "overlap": overlap, "blend": blend, "batch_size": batch_size,
              "block_size": block_size}
    preprocessing = {"orientation": orientation, "spacing": list(spacing) if spacing else None}
    with tempfile.TemporaryDirectory(prefix="geoseg-handle-") as folder, \
            live_dataarray(da, Path(folder), name, spatial=3 if volume else 2) as handle:
        data: dict[str, Any] = {
            "name": "predict_dataarray",
            "inputs": {"paths": [str(handle)], "format": "xarray", "nodata": nodata},
            "model": section,
            "tiling": {k: v for k, v in tiling.items() if v is not None},
            "preprocessing": {k: v for k, v in preprocessing.items() if v is not None},
            "output": {"directory": str(out_dir), "formats": list(formats) if formats else None},
            "resources": {"workers": workers, "backend": "local"},
        }
        if lesion_classes:
            data["statistics"] = {"lesion_classes": list(lesion_classes)}
        if classes:
            data["classes"] = [{"name": c} for c in classes]
        spec = parse_workflow(data, Path.cwd(), "predict_dataarray")
        result = run_job(spec, progress=progress, force=True)  # a live array has no identity for the ledger
    outcome = result.outcomes[0]
    _name_the_source(out_dir, name, str(handle), what)
    if outcome.status != "ok":  # named as the caller knows it, not by its handle file
        raise JobError(f"predict_dataarray: {outcome.error.replace(str(handle), what)}")
    if grid is None:
        labels = _open_volume_labels(xarray, da, out_dir / name / "labels.zarr")
    else:
        labels = _open_labels(rioxarray, da, out_dir / name / "labels.tif", grid.crs is None)
    if "source" in labels.attrs["statistics"]:  # the handle file, gone now
        labels.attrs["statistics"]["source"] = what
    return labels


#: The job-level files a predict_dataarray run writes that name an item's source.
_JOB_RECORDS = ("summary.json", "summary.csv", "zones_summary.csv", "cohort.json", "cohort.csv", "report.html",
                "collection.json")


def _name_the_source(out_dir: Path, item: str, handle: str, what: str) -> None:
    """The job's tables and reports name the DataArray as the caller knows it (``what``), not by
    the handle file that stood for it during the job (gone now): ``handle`` replaced in the
    strings of its JSON files, the cells of its CSV files and the text of its HTML pages. Only
    the files this run writes are read: the job's records in ``out_dir`` and the item's folder.
    The run ledger keeps the handle: it records what the engine read."""
    import csv
    import html
    import io

    from .storage import atomic_write_text

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value.replace(handle, what) if isinstance(value, str) else value

    paths = [out_dir / name for name in _JOB_RECORDS]
    if (out_dir / item).is_dir():
        paths += sorted((out_dir / item).iterdir())
    for path in paths:
        if not path.is_file() or path.suffix not in (".json", ".csv", ".html"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                doc = json.loads(text)
                renamed = swap(doc)
                if renamed != doc:
                    atomic_write_text(path, json.dumps(renamed, indent=2) + "\n")
            elif path.suffix == ".csv":
                rows = list(csv.reader(io.StringIO(text)))
                renamed_rows = [[cell.replace(handle, what) for cell in row] for row in rows]
                if renamed_rows != rows:
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="\n").writerows(renamed_rows)
                    atomic_write_text(path, buf.getvalue())
            elif html.escape(handle) in text:
                atomic_write_text(path, text.replace(html.escape(handle), html.escape(what)))
        except (OSError, ValueError):  # not one of ours after all (UnicodeDecodeError is a ValueError)
            continue


def _volume_roi(what: str, roi_size: int | Sequence[int] | None,
                section: dict[str, Any]) -> int | Sequence[int] | None:
    """A volume's ``roi_size``: three sizes (one number: a cube); ``None`` only for models that
    bring their own (nnU-Net, MONAI bundles)."""
    if roi_size is None:
        if section.get("type") in ("nnunet", "bundle"):
            return None
        raise InputDataError(f"{what} is a volume: give roi_size with three sizes (i, j, k), or one number for a cube")
    if isinstance(roi_size, int):
        return (roi_size,) * 3
    if len(roi_size) != 3:
        raise InputDataError(f"{what} is a volume: roi_size needs three sizes (i, j, k), got {list(roi_size)}")
    return roi_size


def _open_volume_labels(xarray: Any, da: Any, path: Path) -> Any:
    """``labels.zarr`` as a lazy DataArray on the input's last three dimensions and coordinates."""
    import dask.array

    array = dask.array.from_zarr(str(path), component="0")  # type: ignore[no-untyped-call]
    dims = tuple(str(d) for d in da.dims[-3:])
    labels = xarray.DataArray(array, dims=dims, coords={d: da.coords[d] for d in dims if d in da.coords},
                              name="labels")
    nodata = _nodata_label(path)
    stats = path.parent / "stats.json"
    if nodata is not None:  # without one every voxel has a class, and no attribute says otherwise
        labels.attrs["nodata"] = nodata
    labels.attrs.update(output=str(path.resolve()),
                        statistics=json.loads(stats.read_text(encoding="utf-8")) if stats.is_file() else {})
    if "affine" in da.attrs:
        labels.attrs["affine"] = da.attrs["affine"]
    return labels


def _nodata_label(path: Path) -> int | None:
    """The label image's nodata label (``None``: every voxel has a class), from its attributes."""
    attrs = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
    value = attrs.get("geoseg", {}).get("nodata_label")
    return None if value is None else int(value)


def _open_labels(rioxarray: Any, da: Any, path: Path, pixel_grid: bool) -> Any:
    """The COG as a lazy ``(y, x)`` DataArray on the input's coordinates."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    # no CRS: GDAL says the COG is not georeferenced, as asked
    with ignoring_warnings(*([(NotGeoreferencedWarning, "")] if pixel_grid else [])):
        with rasterio.open(path) as ds:
            rows, cols = ds.block_shapes[0]
        # dask chunks of 4 x 4 COG tiles: few tasks, each reading whole tiles
        chunks = {"band": 1, "y": 4 * rows, "x": 4 * cols}
        labels = rioxarray.open_rasterio(path, chunks=chunks, mask_and_scale=False).squeeze("band", drop=True)
    y, x = (str(d) for d in da.dims[-2:])
    labels = labels.rename({"y": y, "x": x}) if (y, x) != ("y", "x") else labels
    labels = labels.assign_coords({d: da.coords[d] for d in (y, x) if d in da.coords})
    labels.name = "labels"
    stats = path.parent / "stats.json"
    labels.attrs.update(nodata=labels.attrs.get("_FillValue"), output=str(path.resolve()),
                        statistics=json.loads(stats.read_text(encoding="utf-8")) if stats.is_file() else {})
    return labels


__all__ = ["predict_dataarray"]
