"""RGB images as PNG with the standard library only: encode, decode our own, shrink to a thumbnail."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: IHDR fields after width and height: 8-bit, truecolour (RGB), deflate, adaptive filtering, no interlace.
_RGB8 = (8, 2, 0, 0, 0)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``(rows, cols, 3)`` uint8 image as PNG (every row with filter type 0, "None")."""
    rows, cols, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", cols, rows, *_RGB8)
    return _SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def png_rgb(data: bytes) -> np.ndarray | None:
    """Decode a PNG as :func:`png_bytes` writes it (8-bit RGB, filter type 0 on every row).

    Returns:
        the ``(rows, cols, 3)`` uint8 image, or ``None`` for anything else (another colour type,
        bit depth, interlacing or row filter, or a damaged file): this is not a general decoder.
    """
    if not data.startswith(_SIGNATURE):
        return None
    pos, header, idat = len(_SIGNATURE), b"", []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            return None
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if len(header) != 13 or struct.unpack(">IIBBBBB", header)[2:] != _RGB8:
        return None
    cols, rows = struct.unpack(">II", header[:8])
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        return None
    if rows == 0 or cols == 0 or len(raw) != rows * (1 + 3 * cols):
        return None
    lines = np.frombuffer(raw, dtype=np.uint8).reshape(rows, 1 + 3 * cols)
    if lines[:, 0].any():
        return None
    return lines[:, 1:].reshape(rows, cols, 3).copy()


def thumbnail(rgb: np.ndarray, max_px: int) -> np.ndarray:
    """Shrink an ``(rows, cols, 3)`` image by an integer factor until both sides are at most
    ``max_px``, averaging each ``factor x factor`` square (trailing rows/columns that do not
    fill a square are dropped; the factor never exceeds the shorter side). An image already small
    enough is returned unchanged."""
    rows, cols, _ = rgb.shape
    factor = min(max(1, -(-max(rows, cols) // max_px)), rows, cols)
    if factor == 1:
        return rgb
    r, c = rows // factor, cols // factor
    squares = rgb[: r * factor, : c * factor].reshape(r, factor, c, factor, 3).astype(np.float32)
    out: np.ndarray = np.rint(squares.mean(axis=(1, 3))).astype(np.uint8)
    return out
