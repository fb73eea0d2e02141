"""NIfTI label volumes, written block by block through a memory map and published atomically.

The label volume is never held in memory. The sink writes an uncompressed ``labels.nii`` in a
hidden staging folder (``out_dir/.staging-*``): the header, then a data region of the full size
that is memory-mapped (Fortran order, at ``vox_offset``) so that :meth:`NiftiLabelSink.write`
assigns one block at a time. :meth:`NiftiLabelSink.commit` gzips it in
:data:`COPY_CHUNK` pieces to ``labels.nii.gz``, writes the
viewer sidecars, and renames everything into ``out_dir``, ``labels.nii.gz`` last; a crash leaves
only the staging folder, never a ``labels.nii.gz`` that looks complete.

The header is the input's own (same class NIfTI-1/2, sform and qform codes and matrices bit for
bit, ``xyzt_units``, ``dim_info``, pixdim) with the data fields replaced: three dims, uint8 (or
uint16 beyond 255 labels), ``scl_slope`` 1 / ``scl_inter`` 0, intent ``NIFTI_INTENT_LABEL``,
``cal_min``/``cal_max`` = label range, no extensions. Without an input header (a Zarr item) it is
built from the grid's affine and codes.

Sidecars (there is no standard place for label names inside a NIfTI file):

* ``labels_ColorTable.ctbl``: a 3D Slicer colour table (``# Color table file`` header, then
  ``index name R G B A`` with 0-255 components, spaces in names replaced by ``_``). Slicer does
  not pair it with the volume by itself: load it, then pick it as the labelmap's colour table
  (Add Data > Options, or the Volumes module). The name follows Slicer's own
  ``<volume>_ColorTable.ctbl``.
* ``labels.txt``: an ITK-SNAP label description file (Segmentation > Import Label Descriptions):
  ``IDX R G B A VIS MSH "LABEL"`` with alpha in 0..1; label 0 is ITK-SNAP's "Clear Label".

In both, label 0 is transparent background and ``nodata_label`` (when it is not a class) is a
transparent, hidden ``no data`` entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from ..errors import SinkError
from ..geometry import Window
from ..sources.nifti_source import nibabel_notes_about
from ..storage import COPY_CHUNK, gzip_file
from ..volumes import VolumeGrid
from .base import SinkTarget, StagedSink
from .legend import ClassLegend
from .volume_labels import check_block, label_type

LABELS_NAME = "labels.nii.gz"
SLICER_CTBL_NAME = "labels_ColorTable.ctbl"
ITKSNAP_NAME = "labels.txt"
#: nibabel writes .nii.gz at level 1 too: label maps compress well even at the fastest level.
GZIP_LEVEL = 1


class NiftiLabelSink(StagedSink):
    """Write one volume item's label map as ``labels.nii.gz`` plus Slicer and ITK-SNAP legends.

    Args:
        out_dir: ``OUT/<item>``; created if needed.
        grid: the item's voxel grid; the output has its shape and affine.
        header_source: the input NIfTI (a path) or its nibabel header, copied (``None`` for Zarr items).
        legend: class names and colours, index = label value.
        nodata_label: label for voxels without valid input; unwritten voxels hold it
            (0 when ``None``).

    Raises:
        SinkError: the output or its staging file cannot be created, or ``header_source``
            cannot be read or does not match ``grid``.
    """

    def __init__(
        self, out_dir: Path, grid: VolumeGrid, header_source: Any, legend: ClassLegend,
        nodata_label: int | None,
    ) -> None:
        self.max_label, self.dtype = label_type(out_dir, legend, nodata_label)
        super().__init__(out_dir)
        self.grid = grid
        self.legend = legend
        self.nodata_label = nodata_label
        self._staged = self.staging / "labels.nii"
        try:
            hdr = label_header(grid, header_source, self.dtype, self.max_label)
            offset = int(hdr.get_data_offset())
            with open(self._staged, "wb") as f:
                hdr.write_to(f)
                f.write(b"\0" * (offset - f.tell()))
                f.truncate(offset + grid.voxel_count * self.dtype.itemsize)  # sparse: reads as zeros
            self._layout = (np.dtype(hdr.get_data_dtype()), offset)  # little-endian uint8 / uint16
            if nodata_label:
                _fill(self._map(), nodata_label)
        except SinkError:
            self.abort()
            raise
        except (OSError, ValueError, HeaderDataError) as exc:
            self.abort()
            raise SinkError(f"{out_dir}: cannot create the staged label volume: {exc}") from exc

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> NiftiLabelSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`)."""
        assert isinstance(target.grid, VolumeGrid)
        return cls(out_dir, target.grid, target.header_source, target.legend, target.nodata_label)

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        """One block: ``labels`` has shape ``window.size`` and values in the legend (else
        :class:`SinkError`)."""
        check_block(self.out_dir, self.grid.shape, window, labels, self.max_label)
        self._map()[window.slices()] = labels

    def _map(self) -> np.memmap:
        # Mapped per write and unmapped when the array goes: written blocks stay in the page
        # cache (and on disk), not in this process's memory.
        dtype, offset = self._layout
        return np.memmap(self._staged, dtype=dtype, mode="r+", offset=offset, shape=self.grid.shape, order="F")

    def _prepare(self) -> list[tuple[Path, Path]]:
        """Compress the staged volume and write the viewer sidecars."""
        staged_gz = self.staging / LABELS_NAME
        gzip_file(self._staged, staged_gz, name="labels.nii", level=GZIP_LEVEL)
        self._staged.unlink()
        sidecars = {
            SLICER_CTBL_NAME: slicer_color_table(self.legend, self.nodata_label),
            ITKSNAP_NAME: itksnap_label_description(self.legend, self.nodata_label),
        }
        for name, text in sidecars.items():
            (self.staging / name).write_text(text, encoding="utf-8", newline="\n")
        return [*((self.staging / n, self.out_dir / n) for n in sidecars), (staged_gz, self.out_dir / LABELS_NAME)]


def _fill(data: np.memmap, value: int) -> None:
    """Set every voxel to ``value``, one contiguous slab of k at a time (bounded memory)."""
    ni, nj, nk = data.shape
    step = max(1, COPY_CHUNK // (ni * nj * data.dtype.itemsize))
    for k in range(0, nk, step):
        data[:, :, k : k + step] = value


def _source_header(header_source: Any) -> Any:
    """The header of a NIfTI file (read without its pixels), or ``header_source`` itself when it
    is a header already (an ``s3://`` item's, read from its first bytes)."""
    if not isinstance(header_source, str):
        return header_source
    try:
        with nibabel_notes_about(header_source):
            src = nib.load(header_source)
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError) as exc:
        raise SinkError(f"{header_source}: cannot read the header to copy: {exc}") from exc
    if not isinstance(src, nib.Nifti1Image):
        raise SinkError(f"{header_source}: not a single-file NIfTI image, cannot copy its header")
    return src.header


def label_header(grid: VolumeGrid, header_source: Any, dtype: np.dtype, max_label: int) -> Any:
    """The header (``nib.Nifti1Header`` or ``Nifti2Header``) of a label volume for ``grid``.

    See the module docstring for what is copied and what is replaced.

    Raises:
        SinkError: ``header_source`` is unreadable, not NIfTI, or has another shape or affine.
    """
    if header_source is not None:
        hdr: Any = _source_header(header_source)
        name = header_source if isinstance(header_source, str) else "the input's header"
        shape = tuple(int(n) for n in hdr.get_data_shape())
        if tuple((*shape[:3], 1, 1)[:3]) != grid.shape:
            raise SinkError(f"{name}: header shape {shape} does not match the grid {grid.shape}")
        affine = hdr.get_best_affine()
        if not np.allclose(affine, grid.affine, atol=1e-4):
            raise SinkError(f"{name}: header affine differs from the grid's:\n{affine}\n{grid.affine}")
        hdr = hdr.copy()
        if hdr.endianness != "<":
            hdr = hdr.as_byteswapped("<")
    else:
        header_class: Any = nib.Nifti2Header if max(grid.shape) > np.iinfo(np.int16).max else nib.Nifti1Header
        hdr = header_class()
        hdr.set_data_shape(grid.shape)
        hdr.set_qform(grid.affine, grid.qform_code)
        hdr.set_sform(grid.affine, grid.sform_code)
        hdr.set_xyzt_units("mm", "sec")
    hdr.set_data_shape(grid.shape)
    hdr.set_data_dtype(dtype)
    hdr.set_slope_inter(1.0, 0.0)
    del hdr.extensions[:]
    hdr.set_data_offset(hdr.single_vox_offset)
    hdr.set_intent("label")
    hdr["cal_min"] = 0
    hdr["cal_max"] = max_label
    hdr["descrip"] = b"geoseg-pipeline label map"
    return hdr


def _entries(legend: ClassLegend, nodata_label: int | None) -> list[tuple[int, str, tuple[int, int, int], bool]]:
    """``(label, name, rgb, visible)`` for every class, then ``no data`` when it is not a class."""
    colours = legend.colormap()
    out = [(i, name or f"class {i}", colours[i][:3], i != 0) for i, name in enumerate(legend.names)]
    if nodata_label is not None and nodata_label >= len(legend.names):
        out.append((nodata_label, "no data", (0, 0, 0), False))
    return [(i, n, (rgb[0], rgb[1], rgb[2]), v) for i, n, rgb, v in out]


def slicer_color_table(legend: ClassLegend, nodata_label: int | None) -> str:
    """3D Slicer colour table text (``.ctbl``): ``index name R G B A``, 0-255, ``_`` for spaces."""
    entries = _entries(legend, nodata_label)
    lines = [f"# Color table file {SLICER_CTBL_NAME}", f"# {len(entries)} values"]
    for i, name, (r, g, b), visible in entries:
        lines.append(f"{i} {'_'.join(name.split()) or f'class_{i}'} {r} {g} {b} {255 if visible else 0}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(legend: ClassLegend, nodata_label: int | None) -> str:
    """ITK-SNAP label description text: ``IDX R G B A VIS MSH "LABEL"``, alpha in 0..1."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format: ",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields: ",
        "#    IDX:   Zero-based index ",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description ",
        "################################################",
    ]
    for i, name, (r, g, b), visible in _entries(legend, nodata_label):
        if i == 0:
            name, (r, g, b) = "Clear Label", (0, 0, 0)
        flag = int(visible)
        label = name.replace('"', "'")
        lines.append(f"{i:5d} {r:5d} {g:4d} {b:4d} {flag:8d} {flag:2d} {flag:2d}    \"{label}\"")
    return "\n".join(lines) + "\n"
