"""Archive inputs on local disk: folders, Zarr stores inside them, manifests (CSV and text) with
metadata and bad lines, the input section of the spec, and an empty archive."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from geoseg_pipeline.errors import GeosegError, JobError, SpecError
from geoseg_pipeline.ledger import fingerprint
from geoseg_pipeline.sources.discovery import (
    Item,
    Metadata,
    discover,
    expand_inputs,
    folder_suffixes,
    read_manifest,
)
from geoseg_pipeline.spec import InputSpec


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """archive/ with scenes in sub-folders, a Zarr store by suffix and one by metadata only,
    volumes, hidden entries and files of no supported type."""
    root = tmp_path / "archive"
    _touch(
        root / "2024" / "06" / "b.tif", root / "2024" / "a.TIF", root / "c.tiff", root / "notes.txt",
        root / "m.zarr" / "zarr.json", root / "m.zarr" / "c" / "0" / "0",
        root / "plain" / "zarr.json", root / "plain" / "c" / "0",
        root / "vol" / "ct.nii.gz", root / "vol" / "t1.nii",
        root / ".scratch-1" / "x.tif", root / ".hidden.tif",
        root / "m.zarr" / "inner.tif",  # inside a store: never an item
    )
    return root


def _names(items: list[Item]) -> list[str]:
    return [i.name for i in items]


# --- folders -------------------------------------------------------------------------------------


def test_a_folder_expands_to_supported_files_and_stores_sorted(archive: Path) -> None:
    items, unmatched = expand_inputs([str(archive)])
    assert unmatched == []
    rel = [str(Path(i.path).relative_to(archive)) for i in items]
    assert rel == ["2024/06/b.tif", "2024/a.TIF", "c.tiff", "m.zarr", "plain", "vol/ct.nii.gz", "vol/t1.nii"]
    assert _names(items) == ["b", "a", "c", "m", "plain", "ct", "t1"]
    assert all(i.error is None and not i.metadata for i in items)


def test_folder_suffixes_follow_format_and_kind(archive: Path) -> None:
    assert folder_suffixes("auto", "raster") == (".tif", ".tiff", ".zarr")
    assert folder_suffixes("auto", "volume") == (".nii", ".nii.gz", ".zarr")
    assert folder_suffixes("nifti", "raster") == (".nii", ".nii.gz")
    rasters, _ = expand_inputs([str(archive)], suffixes=folder_suffixes("auto", "raster"))
    assert _names(rasters) == ["b", "a", "c", "m", "plain"]
    volumes, _ = expand_inputs([str(archive)], suffixes=folder_suffixes("nifti"))
    assert _names(volumes) == ["ct", "t1"]


@pytest.mark.parametrize("store", ["m.zarr", "plain"])
def test_a_zarr_store_is_one_item_even_without_the_suffix(archive: Path, store: str) -> None:
    items, unmatched = expand_inputs([str(archive / store)])
    assert items == [Item(store.removesuffix(".zarr"), str(archive / store))]
    assert unmatched == []


def test_a_glob_matching_folders_expands_them(archive: Path) -> None:
    items, unmatched = expand_inputs([str(archive / "20*"), str(archive / "vol")])
    assert _names(items) == ["b", "a", "ct", "t1"]
    assert unmatched == []


def test_a_glob_matching_only_unsupported_files_is_reported(archive: Path) -> None:
    items, unmatched = expand_inputs([str(archive / "*.txt*"), str(archive / "notes*")])
    # a file a glob names is an item whatever its type (as before); a folder of nothing is not
    assert _names(items) == ["notes"]
    items, unmatched = expand_inputs([str(archive / "2024" / "0*" / "*.jp2")])
    assert items == [] and unmatched == [f"{archive}/2024/0*/*.jp2: matches no file"]


def test_an_empty_archive_is_a_clear_job_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    _touch(tmp_path / "empty" / "readme.md")
    items, unmatched = expand_inputs([str(tmp_path / "empty")])
    assert items == []
    assert unmatched == [f"{tmp_path / 'empty'}: the folder holds no .tif, .tiff, .zarr, .nii, .nii.gz file or "
                         "Zarr store"]
    with pytest.raises(JobError, match=r"no input items: .*empty: the folder holds no \.tif, \.tiff, \.zarr file"):
        discover(InputSpec(paths=(str(tmp_path / "empty"),)), kind="raster")


def test_an_unknown_scheme_becomes_a_failed_item(tmp_path: Path) -> None:
    items, unmatched = expand_inputs(["gs://bucket/a.tif", "ftp://host/b.tif"])
    assert [(i.name, i.error) for i in items] == [
        ("a", "gs://bucket/a.tif: unsupported URI scheme gs://; use a local path or s3://bucket/key"),
        ("b", "ftp://host/b.tif: unsupported URI scheme ftp://; use a local path or s3://bucket/key"),
    ]
    assert unmatched == []


def test_file_uris_are_local_paths(archive: Path) -> None:
    items, _ = expand_inputs([f"file://{archive}/c.tiff"])
    assert items == [Item("c", f"{archive}/c.tiff")]


# --- manifests -----------------------------------------------------------------------------------


def test_text_manifest_comments_blanks_and_relative_paths(archive: Path, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "scenes.txt"
    manifest.write_text(
        "# scenes of June\n\n"
        "../archive/2024/06/b.tif\n"
        f"   {archive}/c.tiff   \n"
        "  # indented comment\n"
        f"file://{archive}/m.zarr\n"
        "s3://bucket/remote/x.tif\n",
        encoding="utf-8",
    )
    items = read_manifest(str(manifest))
    assert items == [
        Item("b", str(archive / "2024" / "06" / "b.tif")),
        Item("c", str(archive / "c.tiff")),
        Item("m", str(archive / "m.zarr")),
        Item("x", "s3://bucket/remote/x.tif"),
    ]


def test_csv_manifest_with_names_and_metadata(archive: Path) -> None:
    manifest = archive / "list.csv"
    manifest.write_text(
        "\ufeffURI,item,site,date\n"  # a BOM, as spreadsheets write it; column names are case-insensitive
        "2024/06/b.tif,june_b,Lyon,2024-06-01\n"
        "\n"
        "c.tiff,,\"Saint-Étienne, FR\",2024-06-02\n",
        encoding="utf-8",
    )
    items = read_manifest(str(manifest))
    assert items == [
        Item("june_b", str(archive / "2024" / "06" / "b.tif"), Metadata({"site": "Lyon", "date": "2024-06-01"})),
        Item("c", str(archive / "c.tiff"), Metadata({"site": "Saint-Étienne, FR", "date": "2024-06-02"})),
    ]
    assert items[0].metadata["site"] == "Lyon"
    assert dict(items[1].metadata) == {"site": "Saint-Étienne, FR", "date": "2024-06-02"}


def test_csv_manifest_with_a_path_column(archive: Path) -> None:
    manifest = archive / "list.csv"
    manifest.write_text("path\nc.tiff\n", encoding="utf-8")
    assert read_manifest(str(manifest)) == [Item("c", str(archive / "c.tiff"))]


def test_bad_manifest_lines_become_failed_items_naming_the_line(archive: Path) -> None:
    manifest = archive / "list.csv"
    manifest.write_text(
        "uri,item,site\n"
        "c.tiff,,ok\n"                      # line 2: fine
        ",,empty uri\n"                     # line 3
        "\"bad\x07path.tif\",,bell\n"      # line 4: a control character
        "ftp://host/scene.tif,,ftp\n"       # line 5
        "gs://bucket/scene2.tif,,gcs\n"     # line 6
        "missing.tif,,gone\n"               # line 7
        "c.tiff,../escape,bad name\n"       # line 8
        "c.tiff,too,many,fields\n"          # line 9
        "s3://bucket/prefix/,,a prefix\n"   # line 10
        "2024/a.TIF,,ok too\n",             # line 11
        encoding="utf-8",
    )
    items = read_manifest(str(manifest))
    ok = [i for i in items if i.error is None]
    assert [i.name for i in ok] == ["c", "a"]
    failed = {i.error.split(": ", 1)[0]: (i.name, i.error.split(": ", 1)[1]) for i in items if i.error}
    m = str(manifest)
    assert failed == {
        f"{m}, line 3": ("list:3", "no path or URI"),
        f"{m}, line 4": ("list:4", "'bad\\x07path.tif' is not a path or URI (control characters)"),
        f"{m}, line 5": ("scene", "ftp://host/scene.tif: unsupported URI scheme ftp://; use a local path or "
                                  "s3://bucket/key"),
        f"{m}, line 6": ("scene2", "gs://bucket/scene2.tif: unsupported URI scheme gs://; use a local path or "
                                   "s3://bucket/key"),
        f"{m}, line 7": ("missing", f"{archive / 'missing.tif'}: no such file or directory"),
        f"{m}, line 8": ("c", "item name '../escape' cannot be a folder name (no '/', '\\', '.', '..' or control "
                              "characters)"),
        f"{m}, line 9": ("list:9", "4 fields where the header has 3"),
        f"{m}, line 10": ("prefix", "s3://bucket/prefix/: names a bucket or prefix, not an object or a store"),
    }
    assert next(i for i in items if i.name == "scene").metadata == Metadata({"site": "ftp"})


def test_bad_lines_do_not_stop_the_rest(archive: Path) -> None:
    manifest = archive / "list.txt"
    manifest.write_text("c.tiff\nnope.tif\nm.zarr\n", encoding="utf-8")
    found = discover(InputSpec(manifest=str(manifest)))
    assert [i.name for i in found.items] == ["c", "nope", "m"]
    assert [i.name for i in found.failed] == ["nope"]
    assert found.failed[0].error == f"{manifest}, line 2: {archive / 'nope.tif'}: no such file or directory"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,item\na.tif,a\n", r"must name each column once, with one location column, 'uri' or 'path'"),
        ("uri,path\na.tif,a.tif\n", r"must name each column once"),
        ("uri,site,Site\na.tif,x,y\n", r"must name each column once"),
        ("uri\n\"a.tif\n", r"line \d: not valid CSV"),
    ],
)
def test_a_malformed_csv_manifest_is_a_spec_error(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError, match=message) as info:
        read_manifest(str(manifest))
    assert info.value.problems[0][0] == "inputs.manifest"
    assert str(manifest) in str(info.value)


def test_an_unreadable_manifest_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"gone\.csv: cannot read the manifest: No such file"):
        read_manifest(str(tmp_path / "gone.csv"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café.tif\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin\.txt: not UTF-8 text \(byte 3\); save it as UTF-8"):
        read_manifest(str(latin))


def test_an_empty_manifest_is_a_clear_job_error(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("# nothing yet\n\n", encoding="utf-8")
    assert read_manifest(str(manifest)) == []
    with pytest.raises(JobError, match=r"no input items: .*list\.txt: the manifest lists no item"):
        discover(InputSpec(manifest=str(manifest)))
    header_only = tmp_path / "list.csv"
    header_only.write_text("uri,item\n", encoding="utf-8")
    with pytest.raises(GeosegError, match="the manifest lists no item"):
        discover(InputSpec(manifest=str(header_only)))


def test_a_manifest_of_bad_lines_only_gives_failed_items_not_a_job_error(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("gs://b/a.tif\n", encoding="utf-8")
    found = discover(InputSpec(manifest=str(manifest)))
    assert found.items == found.failed and len(found.failed) == 1


def test_paths_then_manifest_without_duplicates_keeping_metadata(archive: Path) -> None:
    manifest = archive / "list.csv"
    manifest.write_text("uri,site\nc.tiff,Lyon\nvol/t1.nii,Nancy\n", encoding="utf-8")
    found = discover(InputSpec(paths=(str(archive / "*.tiff"), str(archive / "m.zarr")), manifest=str(manifest)))
    assert [(i.name, dict(i.metadata)) for i in found.items] == [
        ("c", {"site": "Lyon"}), ("m", {}), ("t1", {"site": "Nancy"}),
    ]
    assert found.unmatched == ()


# --- values and the spec -------------------------------------------------------------------------


def test_metadata_is_a_frozen_hashable_picklable_mapping() -> None:
    meta = Metadata({"site": "Lyon"})
    with pytest.raises(TypeError):
        meta["site"] = "Paris"  # type: ignore[index]
    item = Item("a", "/x/a.tif", meta)
    assert hash(item) == hash(Item("a", "/x/a.tif", Metadata({"site": "Lyon"})))
    assert pickle.loads(pickle.dumps(item)) == item
    assert Item("a", "/x/a.tif") == Item("a", "/x/a.tif", Metadata())
    assert repr(meta) == "Metadata({'site': 'Lyon'})"


def test_input_spec_takes_paths_a_manifest_or_both() -> None:
    assert InputSpec(paths=("a.tif",)).manifest is None
    assert InputSpec(manifest="list.csv").paths == ()
    assert InputSpec(paths=("s3://bucket/x/*.tif", "file:///data/a.tif")).paths[0] == "s3://bucket/x/*.tif"
    with pytest.raises(ValidationError,
                       match=r"paths\n.*needs at least 1 entry .* unless a manifest, a dicomweb server or a STAC "
                             r"catalog is given"):
        InputSpec()
    with pytest.raises(ValidationError, match="needs at least 1 entry"):
        InputSpec(paths=(), manifest=None)
    with pytest.raises(ValidationError, match=r"\['gs://b/a.tif'\]: each entry must be a path, a glob or a URI "
                                              r"with scheme file://, s3://"):
        InputSpec(paths=("a.tif", "gs://b/a.tif"))
    with pytest.raises(ValidationError, match="manifest must be one file"):
        InputSpec(manifest="lists/*.csv")
    with pytest.raises(ValidationError, match="manifest must be one file"):
        InputSpec(manifest="http://host/list.csv")


def test_local_fingerprints_are_unchanged(archive: Path) -> None:
    assert fingerprint(str(archive / "c.tiff")).startswith("file:1:")
    assert fingerprint(str(archive / "m.zarr")).startswith("dir:3:")


def test_a_dicomweb_input_is_dicom_series() -> None:
    spec = InputSpec(dicomweb={"url": "http://pacs:8042/dicom-web/", "query": {"Modality": "CT"}})
    assert spec.paths == () and spec.dicomweb is not None and spec.dicomweb.url == "http://pacs:8042/dicom-web"
    with pytest.raises(ValidationError, match="dicomweb gives DICOM series: format must be auto or dicom"):
        InputSpec(dicomweb={"url": "http://pacs:8042/dicom-web"}, format="nifti")
    with pytest.raises(ValidationError, match="url must be an http:// or https:// DICOMweb root"):
        InputSpec(dicomweb={"url": "pacs:8042"})


# --- what is never an item -------------------------------------------------------------------------


def test_a_named_pipe_is_a_failed_item_and_never_read(archive: Path, tmp_path: Path) -> None:
    """Reading a pipe waits for a writer that may never come: the job would hang."""
    os.mkfifo(archive / "pipe.tif")
    items, _ = expand_inputs([str(archive)])
    pipe = [i for i in items if i.name == "pipe"]
    assert len(pipe) == 1 and pipe[0].error is not None
    assert str(archive / "pipe.tif") in pipe[0].error and "named pipe" in pipe[0].error
    assert all(i.error is None for i in items if i.name != "pipe")
    listed, _ = expand_inputs([str(archive / "pipe.tif")])
    assert listed[0].error is not None and "named pipe" in listed[0].error
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{archive / 'pipe.tif'}\n", encoding="utf-8")
    [line] = read_manifest(str(manifest))
    assert line.error is not None and "named pipe" in line.error


def test_the_output_directory_inside_the_inputs_gives_no_items(archive: Path) -> None:
    """An output folder inside the input folder: the last run's label maps are not inputs."""
    out = archive / "out"
    _touch(out / "c" / "labels.tif", out / "b" / "labels.tif")
    found = discover(InputSpec(paths=[str(archive)]), "raster", output=out)
    assert not any(Path(i.path).is_relative_to(out) for i in found.items)
    assert "c" in _names(list(found.items)) and any("output directory" in m for m in found.unmatched)
    everything = discover(InputSpec(paths=[str(archive)]), "raster")  # no output named: all files
    assert sum(Path(i.path).is_relative_to(out) for i in everything.items) == 2
    with pytest.raises(JobError, match="no input items"):
        discover(InputSpec(paths=[str(out)]), "raster", output=out)


@pytest.mark.parametrize("name", ["IM0001", "slice_001.dcm"])
def test_a_folder_of_dicom_files_read_without_format_dicom_says_to_add_it(tmp_path: Path, name: str) -> None:
    """DICOM files carry any name; the DICM mark after the preamble tells them apart."""
    series = tmp_path / "series"
    series.mkdir()
    (series / name).write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64 if name == "IM0001" else b"not read")
    (series / "notes.txt").write_text("a scan", encoding="utf-8")
    with pytest.raises(JobError, match=r"series: the folder holds no .* it holds DICOM files: read them as series "
                                       r"with --format dicom \(inputs.format: dicom\)"):
        discover(InputSpec(paths=(str(series),)), kind="volume")
    (series / name).write_bytes(b"\0" * 200)
    if name == "IM0001":
        with pytest.raises(JobError) as err:
            discover(InputSpec(paths=(str(series),)), kind="volume")
        assert "DICOM" not in str(err.value)


def test_dicom_files_without_the_preamble_are_recognised_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series written without the preamble and ``DICM`` mark (which the series reader takes)
    gets the same hint; without pydicom (the ``dicom`` extra) no hint and no crash; a file that
    only starts like one gets none."""
    import sys

    from geoseg_pipeline.demo.dicom_export import write_series

    series = tmp_path / "series"
    write_series(series, np.zeros((8, 8, 2), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]), preamble=False)
    assert all(p.read_bytes()[128:132] != b"DICM" for p in series.iterdir())
    with pytest.raises(JobError, match=r"it holds DICOM files: read them as series with --format dicom"):
        discover(InputSpec(paths=(str(series),)), kind="volume")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
        with pytest.raises(JobError) as err:
            discover(InputSpec(paths=(str(series),)), kind="volume")
        assert "DICOM" not in str(err.value)
    for p in series.iterdir():
        p.write_bytes(b"\x08\x00\x05\x00CS" + b"\0" * 100)  # a DICOM-like start, not a data set
    with pytest.raises(JobError) as err:
        discover(InputSpec(paths=(str(series),)), kind="volume")
    assert "DICOM" not in str(err.value)
