"""A DICOM series as a volume item (:mod:`.dicom_series` finds and checks the series).

Every slice is its own file (or frame) and many are compressed (JPEG, JPEG 2000, RLE, decoded
by pydicom with the pylibjpeg plugins), so windows that overlap would decode the same slices
again and again. Like a ``.nii.gz``, a series is therefore **staged**: a worker decodes each
slice once, in order, rescaled to float32, into a local Fortran-ordered ``.npy`` (one slice in
memory at a time), and windows are read from that file. Without a staged copy a read decodes
only the slices of its own window (the driver's report figures).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from ..geometry import Window
from ..storage import is_s3
from ..volumes import VolumeGrid
from .base import SourceOptions, check_window, checked_indices
from .dicom_series import DicomSeries, SliceRef, find_series
from .dicomweb import is_dicomweb


def decode_slice(ref: SliceRef, series: str) -> np.ndarray:
    """One slice's pixels, rescaled, as float32 ``(columns, rows)`` (the volume's ``i, j``).

    Raises:
        SourceError: the file cannot be read or its pixel data cannot be decoded (truncated,
            a transfer syntax no installed plugin decodes).
    """
    import pydicom
    from pydicom.pixels.utils import pixel_array

    where = ref.path if ref.frame is None else f"{ref.path} frame {ref.frame + 1}"
    try:
        if ref.frame is None:
            ds = pydicom.dcmread(ref.path, force=True)
            _bare_syntax(ds)
            pixels = ds.pixel_array
        else:
            pixels = pixel_array(ref.path, index=ref.frame)
    except Exception as exc:  # pydicom raises many kinds for unreadable or undecodable data
        raise SourceError(f"{series}: unreadable pixel data in {where}: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim != 2:
        raise SourceError(f"{series}: {where} holds {pixels.ndim}D pixel data, expected one greyscale plane")
    out = pixels.T.astype(np.float32)
    if ref.slope != 1.0 or ref.intercept != 0.0:
        out = out * np.float32(ref.slope) + np.float32(ref.intercept)
    return out


def _bare_syntax(ds: Any) -> None:
    """A file without its meta header (no preamble, no ``TransferSyntaxUID``) is uncompressed:
    name the syntax it was read with, so that pydicom decodes its pixels."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


class DicomSeriesSource:
    """One DICOM series, read as float32 ``(1, i, j, k)`` windows (one channel).

    Args:
        path: the series item (``<folder>#series=<uid>``).
        data_path: the staged ``.npy`` copy (:meth:`stage`); ``None``: decode the window's own
            slices from the files.

    Raises:
        SourceError: no such folder or series; the staged copy does not match the series.
        InputDataError: the series is not one clean volume (the reason says why).
    """

    def __init__(self, path: str, *, data_path: str | None = None, dicomweb: Any = None) -> None:
        self.path = path
        self.data_path = data_path
        if is_s3(path):
            raise SourceError(f"{path}: DICOM series are read from a folder or a DICOMweb server, not s3://")
        self._remote = is_dicomweb(path)
        self.series: DicomSeries = find_series(path, dicomweb)
        self._grid = VolumeGrid(self.series.shape, self.series.affine_array, 1, 1)
        self._staged: str | None = None
        if data_path is not None:
            try:
                staged = np.load(data_path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise SourceError(f"{path}: cannot read its staged copy {data_path}: {exc}") from exc
            if staged.shape != self.series.shape or staged.dtype != np.float32:
                raise SourceError(f"{path}: staged copy {data_path} is {staged.shape} {staged.dtype}, "
                                  f"the series {self.series.shape}")
            self._staged = data_path
            del staged  # mapped per read (see read): pages read stay in the page cache, not in this process
        self._closed = False

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> DicomSeriesSource:
        """The registry's way in: ``options.data_path`` is the staged copy when there is one."""
        return cls(path, data_path=options.data_path, dicomweb=options.dicomweb)

    @classmethod
    def metadata(cls, path: str, options: SourceOptions) -> DicomSeriesSource:
        """The series from its headers (no pixel decoded until a window is read)."""
        return cls(path, dicomweb=options.dicomweb)

    @staticmethod
    def stage(path: str, folder: Path, options: SourceOptions) -> str:
        """Decode every slice once, in order, into ``folder`` (a float32 Fortran-ordered
        ``.npy``, written to a temporary name and renamed when complete); its path. A DICOMweb
        series is fetched first (WADO-RS, into ``folder``; the instances are removed once decoded).

        Raises:
            SourceError: a slice cannot be fetched or decoded, or the copy cannot be written.
        """
        if is_dicomweb(path):
            from .dicom_series import scan_folder, split_series_path
            from .dicomweb import fetch_series, required

            fetched = fetch_series(path, required(path, options.dicomweb), folder / "instances")
            try:
                _, uid = split_series_path(path)
                local = [s for s in scan_folder(str(fetched)).series if s.uid == uid]
                if not local:
                    raise SourceError(f"{path}: the fetched instances are not one clean series")
                return DicomSeriesSource._decode(path, local[0], folder)
            finally:
                shutil.rmtree(fetched, ignore_errors=True)
        return DicomSeriesSource._decode(path, find_series(path), folder)

    @staticmethod
    def _decode(path: str, series: DicomSeries, folder: Path) -> str:
        """Every slice of ``series`` decoded into ``folder``'s ``.npy`` (see :meth:`stage`)."""
        tag = hashlib.sha1(path.encode()).hexdigest()[:12]
        target = folder / f"dicom-{tag}.npy"
        part = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Fortran order: slice k is one contiguous run of bytes, written as it is decoded
            # (a plain sequential write: no mapping of the whole volume in this process)
            with open(part, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": True,
                          "shape": series.shape}
                np.lib.format.write_array_header_2_0(f, header)
                for ref in series.slices:
                    f.write(np.asarray(decode_slice(ref, path), dtype="<f4").tobytes(order="F"))
            os.replace(part, target)
        except SourceError:
            part.unlink(missing_ok=True)
            raise
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise SourceError(f"{path}: cannot write its staged copy in {folder}: {exc}") from exc
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return str(target)

    @staticmethod
    def probe_channels(path: str, options: SourceOptions) -> int:
        """One channel: a series is one greyscale volume."""
        return 1

    @property
    def grid(self) -> VolumeGrid:
        """Shape ``(columns, rows, slices)`` and the RAS affine (sform and qform code 1, scanner)."""
        return self._grid

    @property
    def channel_count(self) -> int:
        """Always 1."""
        return 1

    @property
    def dtype(self) -> np.dtype:
        """Type of what :meth:`read` returns: float32 (rescaled)."""
        return np.dtype(np.float32)

    @property
    def stored_dtype(self) -> np.dtype:
        """The pixels' stored type (before the rescale)."""
        return np.dtype(self.series.stored_dtype)

    @property
    def ndim_effective(self) -> int:
        """Spatial axes longer than one voxel (a series has two slices at least)."""
        return sum(1 for n in self._grid.shape if n > 1)

    @property
    def info(self) -> dict[str, Any]:
        """Patient, study and series attributes for the reports."""
        return dict(self.series.info)

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """``window`` as float32 ``(len(channels), i, j, k)``; channel 0 is the only one.

        Raises:
            SourceError: a slice cannot be decoded.
        """
        if self._closed:
            raise SourceError(f"{self.path}: read after close()")
        check_window(self.path, window, self._grid.shape)
        chans = checked_indices(self.path, channels, 1, first=0, what="channels")
        (i0, j0, k0), (ni, nj, nk) = window.start, window.size
        if self._staged is not None:
            try:
                staged = np.load(self._staged, mmap_mode="r")
                data = np.array(staged[i0:i0 + ni, j0:j0 + nj, k0:k0 + nk], dtype=np.float32)
                del staged
            except (OSError, ValueError) as exc:
                raise SourceError(f"{self.path}: cannot read its staged copy {self._staged}: {exc}") from exc
        elif self._remote:
            raise SourceError(f"{self.path}: a DICOMweb series is read from its staged copy (fetched by a worker)")
        else:
            data = np.empty((ni, nj, nk), np.float32)
            for n, ref in enumerate(self.series.slices[k0:k0 + nk]):
                data[:, :, n] = decode_slice(ref, self.path)[i0:i0 + ni, j0:j0 + nj]
        return np.ascontiguousarray(np.broadcast_to(data, (len(chans), ni, nj, nk)))

    def close(self) -> None:
        """Forget the staged copy's mapping; may be called again."""
        self._staged = None
        self._closed = True


__all__ = ["DicomSeriesSource", "decode_slice"]
