"""Zarr label volumes (OME-Zarr, NGFF 0.4), written block by block and published atomically.

Layout of ``OUT/<item>/labels.zarr`` (Zarr format 2, as NGFF 0.4 requires; chunks in nested
``/`` directories, Blosc-zstd compressed):

* the group: a one-level multiscale label image. Its attributes hold

  - ``multiscales``: NGFF 0.4, one dataset ``0``; three ``space`` axes in millimetres, in the
    on-disk array order ``i, j, k`` (nothing is transposed, so the array matches the input
    voxel for voxel); its ``coordinateTransformations`` are a ``scale`` (the voxel sizes) and a
    ``translation`` (see below for what they can and cannot say);
  - ``image-label``: NGFF 0.4 ``colors`` (``label-value``, ``rgba`` 0-255) and ``properties``
    (``label-value``, ``class``) for every class; label 0 and a ``nodata_label`` that is not a
    class are transparent;
  - ``affine``: the input's 4x4 voxel-index -> world (mm) matrix, in full;
  - ``geoseg``: the class names and ``#rrggbb`` colours, ``nodata_label``, the NIfTI
    ``sform_code``/``qform_code``, the axis codes, and ``ngff_exact`` (below);

* the array ``0``: uint8 (uint16 beyond 255 labels), fill value ``nodata_label`` (0 when
  ``None``), so voxels no block covers read as no data. It also carries the ``affine``
  (and xarray's ``_ARRAY_DIMENSIONS``), so that ``labels.zarr/0`` alone is a plain Zarr
  volume in this project's own convention (:mod:`geoseg_pipeline.sources.zarr_volume`).

**What NGFF 0.4 can hold of the affine.** An NGFF transform scales and shifts each array
axis on its own: it can only say "array axis ``i`` runs along world axis ``x`` with spacing
``s``, starting at ``t``". So only affines that are a permutation of positive voxel sizes plus a
translation are exact in ``multiscales`` (``geoseg.ngff_exact`` is then ``true``). For any
other affine the axes are named after the world axis each voxel axis points along most
(nibabel's ``io_orientation``), ``scale`` holds the true voxel sizes and ``translation`` the
world position of voxel ``(0, 0, 0)``; what is lost is the direction of flipped axes (e.g. the
usual ``L``/``P`` axes of a RAS+ affine from LPS scanners) and any rotation or shear of an
oblique acquisition. Voxel sizes, hence volumes, are always right. The full affine is always
kept in the ``affine`` attributes: readers that know it (this project's
:class:`~geoseg_pipeline.sources.zarr_volume.ZarrVolumeSource` on ``labels.zarr/0``) get the
exact geometry; OME-Zarr viewers show the NGFF one.

Staging: everything is written into ``out_dir/.staging-*/labels.zarr`` and renamed to
``out_dir/labels.zarr`` by :meth:`ZarrLabelSink.commit`; a crash leaves only the hidden staging
folder, never a ``labels.zarr`` that looks complete. A ``labels.zarr`` from an earlier run is
replaced at commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import zarr

from ..errors import SinkError
from ..geometry import Window
from ..volumes import VolumeGrid
from .base import SinkTarget, StagedSink
from .legend import ClassLegend
from .volume_labels import check_block, label_type

LABELS_ZARR_NAME = "labels.zarr"
#: Chunk edge used when no chunk shape is given (voxels).
DEFAULT_CHUNK = 64
#: zstd level inside Blosc: label maps compress very well at low levels.
ZSTD_LEVEL = 3
NGFF_VERSION = "0.4"
#: numcodecs' Blosc with zstd and bit shuffling, by its Zarr v2 codec id.
_BLOSC_ZSTD: dict[str, Any] = {"id": "blosc", "cname": "zstd", "clevel": ZSTD_LEVEL, "shuffle": 2, "blocksize": 0}
_WORLD_AXES = ("x", "y", "z")


class ZarrLabelSink(StagedSink):
    """Write one volume item's label map as an OME-Zarr label image ``labels.zarr``.

    Blocks may arrive in any order; each is written once. With ``chunks`` equal to (or
    dividing) the block shape and blocks aligned to it, every chunk is written whole, once.

    Args:
        out_dir: ``OUT/<item>``; created if needed.
        grid: the item's voxel grid; the output has its shape, and its affine is kept.
        legend: class names and colours, index = label value.
        nodata_label: label for voxels without valid input; unwritten voxels hold it
            (0 when ``None``).
        chunks: chunk shape ``(i, j, k)``; default ``DEFAULT_CHUNK`` per axis. Clipped to the
            grid's shape.

    Attributes:
        dtype: ``uint8``, or ``uint16`` when a label above 255 is possible.
        max_label: the largest label value a block may hold.
        staging: the hidden folder written until :meth:`commit`.

    Raises:
        SinkError: labels that do not fit in uint16, a bad ``chunks``, or a staging store that
            cannot be created.
    """

    def __init__(
        self, out_dir: Path, grid: VolumeGrid, legend: ClassLegend, nodata_label: int | None, *,
        chunks: Sequence[int] | None = None,
    ) -> None:
        self.max_label, self.dtype = label_type(out_dir, legend, nodata_label)
        self.chunks = _chunk_shape(out_dir, grid.shape, chunks)
        super().__init__(out_dir)
        self.grid = grid
        self.legend = legend
        self.nodata_label = nodata_label
        self._array: Any = None
        try:
            self._array = _create(self.staging / LABELS_ZARR_NAME, grid, legend, nodata_label, self.dtype,
                                  self.chunks)
        except Exception as exc:  # zarr raises several unrelated types for a store it cannot write
            self.abort()
            raise SinkError(f"{out_dir}: cannot create the staged label store: {exc}") from exc

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> ZarrLabelSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`): chunks of the output
        block, at most 64 voxels an axis (so that a viewer reads little)."""
        assert isinstance(target.grid, VolumeGrid)
        edge = min(64, target.block_shape[0])
        return cls(out_dir, target.grid, target.legend, target.nodata_label, chunks=(edge, edge, edge))

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        """One block: ``labels`` has shape ``window.size`` and values in the legend (else
        :class:`SinkError`)."""
        check_block(self.out_dir, self.grid.shape, window, labels, self.max_label)
        try:
            self._array[window.slices()] = labels.astype(self.dtype, copy=False)
        except OSError as exc:
            raise SinkError(f"{self.out_dir}: cannot write block {window}: {exc}") from exc

    def _prepare(self) -> list[tuple[Path, Path]]:
        """Nothing left to finish: every chunk is written as its block arrives."""
        self._array = None
        return [(self.staging / LABELS_ZARR_NAME, self.out_dir / LABELS_ZARR_NAME)]

    def _close(self) -> None:
        self._array = None


def _chunk_shape(out_dir: Path, shape: tuple[int, int, int], chunks: Sequence[int] | None) -> tuple[int, int, int]:
    """``chunks`` (default ``DEFAULT_CHUNK``³) checked and clipped to ``shape``."""
    wanted = tuple(int(c) for c in chunks) if chunks is not None else (DEFAULT_CHUNK,) * 3
    if len(wanted) != 3 or any(c < 1 for c in wanted):
        raise SinkError(f"{out_dir}: chunks must be three sizes >= 1, got {chunks!r}")
    return (min(wanted[0], shape[0]), min(wanted[1], shape[1]), min(wanted[2], shape[2]))


def _create(path: Path, grid: VolumeGrid, legend: ClassLegend, nodata_label: int | None, dtype: np.dtype,
            chunks: tuple[int, int, int]) -> Any:
    """The group with its attributes and the empty level-0 array."""
    axes = ngff_axes(grid.affine)
    names = [a["name"] for a in axes["axes"]]
    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    array = group.create_array(
        "0", shape=grid.shape, chunks=chunks, dtype=dtype, fill_value=int(nodata_label or 0),
        compressors=_BLOSC_ZSTD,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    affine = [[float(v) for v in row] for row in grid.affine]
    array.attrs.update({"affine": affine, "_ARRAY_DIMENSIONS": names})
    group.attrs.update({
        "multiscales": [{
            "version": NGFF_VERSION,
            "name": "labels",
            "axes": axes["axes"],
            "datasets": [{"path": "0", "coordinateTransformations": axes["transforms"]}],
        }],
        "image-label": image_label(legend, nodata_label),
        "affine": affine,
        "geoseg": {
            "classes": [{"label": i, "name": n, "colour": c}
                        for i, (n, c) in enumerate(zip(legend.names, legend.colours, strict=True))],
            "nodata_label": nodata_label,
            "sform_code": grid.sform_code,
            "qform_code": grid.qform_code,
            "axcodes": "".join(grid.axcodes),
            "ngff_exact": axes["exact"],
        },
    })
    return array


def ngff_axes(affine: np.ndarray) -> dict[str, Any]:
    """NGFF ``axes`` and level-0 ``coordinateTransformations`` for a voxel -> world (mm) ``affine``.

    Returns:
        ``{"axes": [...], "transforms": [scale, translation], "exact": bool}``; ``exact`` tells
        whether the NGFF transform reproduces ``affine`` (see the module docstring).
    """
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(affine)  # type: ignore[no-untyped-call]
    rows = [int(r) for r in ornt[:, 0]]
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    scale = [float(z) for z in zooms]
    translation = [float(affine[row, 3]) for row in rows]
    rebuilt = np.eye(4)
    rebuilt[:3, :3] = 0.0
    for col, row in enumerate(rows):
        rebuilt[row, col] = scale[col]
        rebuilt[row, 3] = translation[col]
    exact = bool(np.allclose(rebuilt, affine, rtol=0.0, atol=1e-6 * max(1.0, float(np.max(np.abs(affine))))))
    return {
        "axes": [{"name": _WORLD_AXES[row], "type": "space", "unit": "millimeter"} for row in rows],
        "transforms": [{"type": "scale", "scale": scale}, {"type": "translation", "translation": translation}],
        "exact": exact,
    }


def image_label(legend: ClassLegend, nodata_label: int | None) -> dict[str, Any]:
    """NGFF 0.4 ``image-label`` metadata: a colour and a class name per label value."""
    colours = legend.colormap()
    entries = [(i, name or f"class {i}", colours[i][:3], i != 0) for i, name in enumerate(legend.names)]
    if nodata_label is not None and nodata_label >= len(legend.names):
        entries.append((nodata_label, "no data", (0, 0, 0), False))
    return {
        "version": NGFF_VERSION,
        "colors": [{"label-value": i, "rgba": [*rgb, 255 if visible else 0]} for i, _, rgb, visible in entries],
        "properties": [{"label-value": i, "class": name} for i, name, _, _ in entries],
    }


__all__ = ["DEFAULT_CHUNK", "LABELS_ZARR_NAME", "ZarrLabelSink", "image_label", "ngff_axes"]
