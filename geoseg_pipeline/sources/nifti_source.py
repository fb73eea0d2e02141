"""NIfTI-1 and NIfTI-2 volumes (``.nii``, ``.nii.gz``) through nibabel, read slab by slab.

Windows are in on-disk voxel order (nibabel's ``dataobj`` axes ``i, j, k``); nothing is
reoriented, the affine says where each voxel lies. Values are returned as float32 *after* the
header's ``scl_slope`` / ``scl_inter`` scaling, whatever the stored type and byte order.

Cost of ``.nii.gz``:
    gzip has no random access: to reach byte *n* a reader must inflate bytes ``0..n``, so
    nibabel reading a slab of a ``.nii.gz`` decompresses from the start of the file each time,
    and a sliding-window job over ``W`` windows would inflate the volume ``O(W)`` times.
    :func:`prepare_volume` therefore inflates a ``.nii.gz`` once, sequentially, into an
    uncompressed ``.nii`` in a staging folder: one pass over the file, disk = the uncompressed
    size, memory = one copy buffer (:data:`COPY_CHUNK`). Every window is then a cheap seek and
    read. A ``.nii.gz`` opened directly (no staging folder) still works, slowly, and its
    truncation is only found when a read reaches the missing bytes.

:func:`~geoseg_pipeline.sources.base.open_volume_source` picks NIfTI or Zarr by the format registry.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from ..errors import InputDataError, SourceError
from ..geometry import Window
from ..storage import GZIP_ERRORS, S3Config, fetch_to, is_gzip_name, is_s3, require_s3, staged_copy, store_call
from ..storage.transient import read_error
from ..volumes import VolumeGrid
from .base import SourceOptions, check_window, checked_indices

_READING = threading.local()
_NOTED: set[str] = set()
_NOTED_LOCK = threading.Lock()


class _NameTheFile(logging.Filter):
    """nibabel's header notes ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1") name no
    file and come again each time the header is read: while :func:`nibabel_notes_about` names
    a file, they are prefixed with it and said once per process."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = getattr(_READING, "path", None)
        if path is None:
            return True
        message = f"{path}: {record.getMessage()}"
        with _NOTED_LOCK:
            if message in _NOTED:
                return False
            _NOTED.add(message)
        record.msg, record.args = message, None
        return True


_NIBABEL_NOTES = logging.getLogger("nibabel.global")
_NIBABEL_NOTES.addFilter(_NameTheFile())
# nibabel prints its notes through a handler of its own (added when it is imported) and again
# through the application's: each came twice. Without one of the application's, Python's last
# resort still prints warnings.
for _handler in list(_NIBABEL_NOTES.handlers):
    _NIBABEL_NOTES.removeHandler(_handler)


@contextmanager
def nibabel_notes_about(path: str | Path) -> Iterator[None]:
    """Within: nibabel's notes on a header are about ``path`` (see :class:`_NameTheFile`)."""
    before = getattr(_READING, "path", None)
    _READING.path = str(path)
    try:
        yield
    finally:
        _READING.path = before


def nifti_header(uri: str, config: S3Config) -> Any:
    """The NIfTI-1/2 header of an object (``.nii`` or ``.nii.gz``), from its first bytes only:
    shape, voxel type, affine, without copying the volume (``header.get_data_shape()``).

    Raises:
        SourceError: unreachable, missing, access denied, corrupt gzip, or not a NIfTI-1/2 header.
    """
    fs = config.filesystem()

    def head() -> bytes:
        with fs.open(uri, "rb", block_size=1 << 16) as obj:
            if uri.lower().endswith(".gz"):
                with gzip.GzipFile(fileobj=obj, mode="rb") as src:
                    data: bytes = src.read(540)
                    return data
            data = obj.read(540)
            return data

    try:
        block: bytes = store_call(uri, "read the header", config, head)
    except SourceError as exc:
        if isinstance(exc.__cause__, GZIP_ERRORS):
            raise SourceError(f"{uri}: truncated or corrupt gzip ({exc.__cause__})") from exc.__cause__
        raise
    sizes = {int.from_bytes(block[:4], order) for order in ("little", "big")} if len(block) >= 4 else set()
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if size in sizes and len(block) >= size:
            return klass(binaryblock=block[:size], check=False)  # type: ignore[no-untyped-call]
    raise SourceError(f"{uri}: not a NIfTI-1/2 file (no 348- or 540-byte header)")


def prepare_volume(path: str, staging_dir: Path) -> str:
    """Make ``path`` cheap to read window by window; returns the path to read from.

    A ``.nii.gz`` is inflated once, in :data:`COPY_CHUNK` pieces, into an uncompressed ``.nii``
    inside ``staging_dir`` (to a temporary name, then renamed, so a crash never leaves a partial
    file under the final name). Anything else is returned unchanged.

    Raises:
        SourceError: the gzip stream is truncated or corrupt, or the copy cannot be written.
    """
    if not is_gzip_name(path):
        return path
    stem = Path(path).name[: -len(".gz")]
    tag = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]  # same name, other folder
    return str(staged_copy(lambda: open(path, "rb"), staging_dir / f"{tag}-{stem}", inflate=True, what=path))


class NiftiSource:
    """A NIfTI-1/2 volume; every read is a slab of ``dataobj``, scaled to float32.

    Args:
        path: the item as the user named it (used in messages and as ``path``).
        channel_axis: the on-disk axis (>= 3) holding channels, e.g. ``3`` for a 4D
            ``(i, j, k, c)`` file; ``None`` refuses a volume with a 4th dimension > 1.
        data_path: the file actually read when it differs from ``path`` (the uncompressed
            copy made by :func:`prepare_volume`).
        header: a nibabel NIfTI header read elsewhere (:meth:`metadata`): the source gives the
            item's metadata and refuses to read pixels.

    Raises:
        SourceError: missing, unreadable or not a single-file NIfTI; voxel type not real
            numbers; singular affine; file shorter than its header says.
        InputDataError: more dimensions than 3 spatial + 1 channel axis.
    """

    def __init__(self, path: str, channel_axis: int | None = None, *, data_path: str | None = None,
                 header: Any = None) -> None:
        self.path = path
        self.data_path = data_path or path
        self._closed = False
        self._img: Any = None
        if header is None:
            img = _load(path, self.data_path)
            self._img = img
            hdr: Any = img.header
            affine = img.affine
        else:  # the header alone (an object's first bytes): metadata, no pixels
            hdr = header
            affine = hdr.get_best_affine()  # what nibabel's image takes as its affine
        #: the nibabel header (a NIfTI label output copies it)
        self.header: Any = hdr
        self._disk_shape = tuple(int(n) for n in hdr.get_data_shape())
        self._stored_dtype: np.dtype = np.dtype(hdr.get_data_dtype())
        if self._stored_dtype.kind not in "uif":
            raise SourceError(f"{path}: unsupported voxel type {self._stored_dtype} (need real numbers)")
        self._channel_axis, self._channels = _channel_layout(path, self._disk_shape, channel_axis)
        spatial = (*self._disk_shape[:3], 1, 1)[:3]
        if len(self._disk_shape) < 2:
            raise InputDataError(f"{path}: {len(self._disk_shape)}D NIfTI (shape {self._disk_shape}) is not an image")
        if self._img is not None and not is_gzip_name(self.data_path):
            proxy: Any = self._img.dataobj  # the loaded header's vox_offset is reset; the proxy keeps the file's
            _check_file_size(path, self.data_path, self._disk_shape, self._stored_dtype, int(proxy.offset))
        try:
            self._grid = VolumeGrid(
                (spatial[0], spatial[1], spatial[2]), affine,
                int(hdr["sform_code"]), int(hdr["qform_code"]),
            )
        except ValueError as exc:
            raise SourceError(f"{path}: unusable voxel-to-world affine (sform/qform): {exc}") from exc

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> NiftiSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`): ``options.data_path`` is the
        staged copy when there is one."""
        return cls(path, options.channel_axis, data_path=options.data_path)

    @classmethod
    def metadata(cls, path: str, options: SourceOptions) -> NiftiSource:
        """The item's header alone, unstaged (:func:`~geoseg_pipeline.sources.base.open_metadata`):
        a local ``.nii.gz`` is not inflated (nibabel reads its header only), an ``s3://`` object
        gives its first bytes; reading pixels from an ``s3://`` one raises :class:`SourceError`."""
        if is_s3(path):
            return cls(path, options.channel_axis, header=nifti_header(path, require_s3(path, options.s3)))
        return cls(path, options.channel_axis)

    @staticmethod
    def stage(path: str, folder: Path, options: SourceOptions) -> str:
        """The local copy to read: a ``.nii.gz`` inflated once into ``folder``
        (:func:`prepare_volume`), an ``s3://`` object fetched (and inflated) into it; a local
        ``.nii`` as it is.

        Raises:
            SourceError: unreadable, truncated or corrupt, or the copy cannot be written.
        """
        if is_s3(path):
            return str(fetch_to(path, folder, require_s3(path, options.s3)))
        return prepare_volume(path, folder)

    @staticmethod
    def probe_channels(path: str, options: SourceOptions) -> int:
        """Channels from the header alone (an ``s3://`` object's first bytes: no copy)."""
        if is_s3(path) and options.data_path is None:
            shape = nifti_header(path, require_s3(path, options.s3)).get_data_shape()
            axis = options.channel_axis
            return int(shape[axis]) if axis is not None and axis < len(shape) else 1
        return NiftiSource(path, options.channel_axis, data_path=options.data_path).channel_count

    @property
    def grid(self) -> VolumeGrid:
        """Shape ``(i, j, k)``, affine (nibabel's best affine) and sform/qform codes."""
        return self._grid

    @property
    def channel_count(self) -> int:
        """Channels: 1, or the size of ``channel_axis``."""
        return self._channels

    @property
    def dtype(self) -> np.dtype:
        """Type of what :meth:`read` returns: always float32 (values are scaled)."""
        return np.dtype(np.float32)

    @property
    def stored_dtype(self) -> np.dtype:
        """On-disk voxel type (before scaling), with its byte order."""
        return self._stored_dtype

    @property
    def ndim_effective(self) -> int:
        """Spatial axes longer than one voxel: 3 for a volume, 2 for a single slice."""
        return sum(1 for n in self._grid.shape if n > 1)

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read ``channels`` (0-based; all when ``None``) in ``window``, which must lie inside the grid.

        Returns:
            float32 ``(len(channels), i, j, k)``, C-contiguous.
        """
        if self._closed:
            raise SourceError(f"{self.path}: read after close()")
        check_window(self.path, window, self._grid.shape)
        chans = checked_indices(self.path, channels, self._channels, first=0, what="channels")
        spatial = window.slices()[: len(self._disk_shape)]
        try:
            if self._channel_axis is None or self._channel_axis >= len(self._disk_shape):
                parts = [self._slab(spatial, None, len(chans))]
            elif chans == list(range(chans[0], chans[-1] + 1)):
                parts = [self._slab(spatial, slice(chans[0], chans[-1] + 1))]
            else:
                parts = [self._slab(spatial, slice(c, c + 1)) for c in chans]
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            # data_path is the file actually read: always local (an s3:// item reads its staged copy)
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.data_path) from exc
        return np.ascontiguousarray(np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])

    def _slab(self, spatial: tuple[slice, ...], chan: slice | None, count: int = 1) -> np.ndarray:
        """One slab as float32 ``(c, i, j, k)``; extra size-1 axes are indexed away.

        Without a channel axis the one channel is repeated ``count`` times.
        """
        if self._img is None:
            raise SourceError(f"{self.path}: opened for its header only; the workers read its staged copy")
        slicer: list[slice | int] = list(spatial)
        for axis in range(3, len(self._disk_shape)):
            slicer.append(chan if axis == self._channel_axis and chan is not None else 0)
        data = np.asarray(self._img.dataobj[tuple(slicer)], dtype=np.float32)
        if data.ndim == 2:  # a 2D file: the grid's k axis has one voxel
            data = data[:, :, None]
        if data.ndim == 4:
            return np.moveaxis(data, 3, 0)
        return data[None] if count == 1 else np.broadcast_to(data, (count, *data.shape))

    def close(self) -> None:
        """Forget the image (nibabel keeps no file open between reads); may be called again."""
        self._closed = True


def _load(path: str, data_path: str) -> Any:
    """nibabel's image of a single-file NIfTI (header read, pixels not).

    Raises:
        SourceError: missing, unreadable, or not a single-file NIfTI-1/2 image.
    """
    if not Path(data_path).is_file():
        raise SourceError(f"{path}: no such file")
    try:
        with nibabel_notes_about(path):
            img = nib.load(data_path)
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise SourceError(f"{path}: cannot open as NIfTI: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it; pairs do not
        raise SourceError(f"{path}: not a single-file NIfTI-1/2 image (.nii, .nii.gz) but {type(img).__name__}")
    return img


def _channel_layout(path: str, shape: tuple[int, ...], channel_axis: int | None) -> tuple[int | None, int]:
    """Validate the non-spatial axes; returns ``(channel_axis, channel_count)``."""
    if channel_axis is not None and channel_axis < 3:
        raise InputDataError(f"{path}: channel_axis must be >= 3 (axes 0-2 are spatial), got {channel_axis}")
    channels = shape[channel_axis] if channel_axis is not None and channel_axis < len(shape) else 1
    extra = [(ax, n) for ax, n in enumerate(shape) if ax >= 3 and ax != channel_axis and n > 1]
    if extra:
        if channel_axis is None and len(shape) == 4:
            raise InputDataError(
                f"{path}: 4D NIfTI (shape {shape}): set a channel axis (channel_axis=3) to read the 4th "
                "dimension as channels, or split the series into 3D volumes"
            )
        raise InputDataError(
            f"{path}: {len(shape)}D NIfTI (shape {shape}): axes {[ax for ax, _ in extra]} are longer than 1 "
            f"and are not the channel axis ({channel_axis}); only 3 spatial axes and one channel axis are read"
        )
    return channel_axis, int(channels)


def _check_file_size(path: str, data_path: str, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    """Refuse an uncompressed file whose size is not its header's dims x voxel size (truncated or
    wrong dims)."""
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = os.path.getsize(data_path)
    # a .nii.gz is checked through its inflated copy: say so, its size on disk is another number
    what = "its uncompressed data" if is_gzip_name(path) else "the file"
    if actual < expected:
        raise SourceError(
            f"{path}: header says {shape} voxels of {dtype} from byte {offset} ({expected} bytes) but {what} "
            f"has {actual} bytes: truncated, or the header's dimensions are wrong"
        )
    if actual > expected:
        # NIfTI has nothing after the voxels: more bytes means dims that undercount the data
        raise SourceError(
            f"{path}: header says {shape} voxels of {dtype} from byte {offset} ({expected} bytes) but {what} "
            f"has {actual} bytes, {actual - expected} more: the header's dimensions disagree with the data"
        )


