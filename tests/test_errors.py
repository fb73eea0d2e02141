"""geoseg's warning filters from several threads (``errors.ignoring_warnings``).

``warnings.catch_warnings`` saves and restores the one process-wide filter list, so two threads
inside it at once undo each other's filters. A CI run lost the filter of a Zarr cube's open that
way: a local job's two inference threads opened the cube together and one of them got the
warning as an error (warnings are errors in the tests).
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geoseg_pipeline.errors import ignoring_warnings
from geoseg_pipeline.sources.xarray_source import XarrayZarrSource


class OwnWarning(UserWarning):
    """Stands for a library's warning that geoseg handles itself."""


def test_a_filter_holds_while_another_thread_enters_and_leaves_its_own() -> None:
    inside, leave = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with ignoring_warnings((DeprecationWarning, "other")):
                pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            leave.set()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ignoring_warnings((OwnWarning, "mine")):
            inside.set()
            thread = threading.Thread(target=other)
            thread.start()
            # the other thread waits for this one (with catch_warnings alone it would enter now,
            # leave, and put back the list it found: this one's filter included, harmless); this
            # one leaves only after a pause in which the other could have entered
            assert not leave.wait(0.3)
            warnings.warn("mine", OwnWarning, stacklevel=1)  # still ignored
        thread.join(5)
        assert leave.is_set() and not errors
        with pytest.raises(OwnWarning):  # and gone after the block
            warnings.warn("mine", OwnWarning, stacklevel=1)


def test_filters_from_many_threads_at_once_never_let_one_through() -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(i: int) -> None:
        start.wait()
        try:
            for _ in range(200):
                with ignoring_warnings((OwnWarning, f"thread {i}")):
                    time.sleep(0)  # let another thread run while this one is inside
                    warnings.warn(f"thread {i}", OwnWarning, stacklevel=1)
        except BaseException as exc:
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        with pytest.raises(OwnWarning):  # none of the threads' filters leaked out
            warnings.warn("thread 0", OwnWarning, stacklevel=1)


@pytest.mark.parametrize("consolidated", [True, False])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_cube_opens_from_threads_with_or_without_consolidated_metadata(
    tmp_path: Path, consolidated: bool, zarr_format: int
) -> None:
    cube = xr.Dataset({n: (("y", "x"), np.full((8, 8), i, np.uint16)) for i, n in enumerate(["B04", "B03"])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing Zarr v3 consolidated metadata warns; not ours
        cube.to_zarr(tmp_path / "cube.zarr", consolidated=consolidated, zarr_format=zarr_format)
    errors: list[BaseException] = []

    def open_and_read() -> None:
        try:
            for _ in range(5):
                source = XarrayZarrSource(str(tmp_path / "cube.zarr"))
                source.close()
        except BaseException as exc:
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # xarray's "Failed to open Zarr store with consolidated" included
        threads = [threading.Thread(target=open_and_read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]


def test_first_line_skips_blank_lines_and_names_a_silent_error() -> None:
    from geoseg_pipeline.errors import first_line

    assert first_line(RuntimeError("\n  header too large  \nat byte 8")) == "header too large"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  \n\n")) == "OSError"


def test_chained_reason_shows_what_rasterio_hides_in_the_cause() -> None:
    from geoseg_pipeline.errors import chained_reason

    try:
        try:
            raise ValueError("trunc.tif, band 1: IReadBlock failed: TIFFReadEncodedStrip() failed.")
        except ValueError as inner:
            raise OSError("Read failed. See previous exception for details.") from inner
    except OSError as exc:
        assert chained_reason(exc) == ("Read failed. (trunc.tif, band 1: IReadBlock failed: "
                                       "TIFFReadEncodedStrip() failed.)")
    assert chained_reason(OSError("disk full")) == "disk full"


def test_a_torchscript_error_gives_its_last_line() -> None:
    import torch

    from geoseg_pipeline.errors import first_line

    model = torch.jit.script(torch.nn.Conv2d(4, 3, 1))
    try:
        model(torch.zeros(1, 4, 8, 8, 8))
    except RuntimeError as exc:
        assert "TorchScript interpreter" in str(exc).splitlines()[0]
        line = first_line(exc)
    assert line.startswith("RuntimeError: ") and "4, 8, 8, 8" in line
