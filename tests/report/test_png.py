"""Our PNG encoder, the decoder of its own output, and thumbnails."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from geoseg_pipeline.report.png import png_bytes, png_rgb, thumbnail


def _image(rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(rows * 1000 + cols)
    image: np.ndarray = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return image


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (7, 13), (64, 3)])
def test_round_trip(rows: int, cols: int) -> None:
    image = _image(rows, cols)
    decoded = png_rgb(png_bytes(image))
    assert decoded is not None
    np.testing.assert_array_equal(decoded, image)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_other_pngs_are_not_decoded() -> None:
    sig = b"\x89PNG\r\n\x1a\n"
    grey = sig + _chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)) + _chunk(
        b"IDAT", zlib.compress(b"\x00\x01\x02\x00\x03\x04")) + _chunk(b"IEND", b"")
    filtered = sig + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + _chunk(
        b"IDAT", zlib.compress(b"\x01\x01\x02\x03")) + _chunk(b"IEND", b"")
    good = png_bytes(_image(4, 4))
    for data in (b"", b"GIF89a", grey, filtered, good[:40], good.replace(b"IDAT", b"IDAX")):
        assert png_rgb(data) is None


def test_thumbnail_averages_squares() -> None:
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    image[:3, :3] = 90  # the top-left 3x3 square: mean 90
    image[3:6, :3, 0] = 10
    thumb = thumbnail(image, 128)
    assert thumb.shape == (100, 66, 3)  # factor 3; the last two columns do not fill a square
    assert thumb[0, 0].tolist() == [90, 90, 90]
    assert thumb[1, 0].tolist() == [10, 0, 0]
    small = _image(10, 20)
    assert thumbnail(small, 128) is small
    assert thumbnail(_image(1000, 2), 128).shape == (500, 1, 3)  # never below one pixel
