"""The cohort page: parses, lists every item, links the item reports, embeds their lesion thumbnails, escapes."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.report import ItemOutcome, write_summary
from geoseg_pipeline.report.cohort import cohort_table
from geoseg_pipeline.report.cohort_page import ItemLink, item_link, render_cohort_page
from geoseg_pipeline.report.html import largest_lesion_png, write_volume_report
from geoseg_pipeline.report.png import png_rgb
from geoseg_pipeline.sources import open_volume_source
from geoseg_pipeline.statistics import ItemStats
from geoseg_pipeline.volumes import VolumeGrid

JOB = {"workflow": "ct-liver", "items_total": 3, "seconds": 12.5, "lesion_classes": [2]}
COLOURS = ("#000000", "#00a000", "#ff0000")


class _Page(HTMLParser):
    """Text, links, images and the tag nesting of a page (fails on a closing tag that does not match)."""

    def __init__(self, doc: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.title = ""
        self._open: list[str] = []
        self.feed(doc)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs)["href"] or "")
        elif tag == "img":
            self.images.append(dict(attrs))
        if tag not in ("img", "meta"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self._open and self._open[-1] == tag, (tag, self._open)
        self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] == "title":
            self.title += data
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


class _Source:
    """A volume source on an array (what write_volume_report reads)."""

    def __init__(self, data: np.ndarray, affine: np.ndarray) -> None:
        self.grid = VolumeGrid(data.shape, affine)
        self._data = data

    def read(self, window: Window, channels: list[int]) -> np.ndarray:
        return self._data[window.slices()][None].astype(np.float32)


def _item_report(out: Path, stats: ItemStats) -> Path:
    """What a volume item leaves in OUT/<item>: labels.nii.gz and its report.html (the labels read
    back through the volume reader, as a job does)."""
    shape, affine = (256, 192, 5), np.diag([0.8, 0.8, 2.5, 1.0])
    image = np.tile(np.linspace(-100, 300, shape[0], dtype=np.float32)[:, None, None], (1, *shape[1:]))
    labels = np.zeros(shape, np.uint8)
    labels[40:200, 30:150] = 1
    labels[60:90, 50:80, 3:7] = 2
    out.mkdir(parents=True)
    img: Any = nib.Nifti1Image
    nib.save(img(labels, affine), out / "labels.nii.gz")
    written = open_volume_source(str(out / "labels.nii.gz"))
    return write_volume_report(out, _Source(image, affine), written, stats, COLOURS)


def _with_reports(tmp_path: Path, outcomes: list[ItemOutcome]) -> list[ItemOutcome]:
    out = []
    for o in outcomes:
        if o.stats is not None:
            report = _item_report(tmp_path / o.item, o.stats)
            o = dataclasses.replace(o, outputs=(str(tmp_path / o.item / "labels.nii.gz"), str(report)))
        out.append(o)
    return out


def test_cohort_page(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    outcomes = _with_reports(tmp_path, ct_outcomes)
    write_summary(tmp_path, outcomes, JOB)
    page = _Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert page.title == "ct-liver: cohort report"
    text = page.all_text
    for words in ("p01", "p02", "p03", "/data/p03.nii.gz: cannot open: truncated", "3 item(s): 2 ok, 1 failed.",
                  "tumour lesions", "tumour burden (mL)", "3.500", "21.0", "1 of 2", "1.750", "12.5", "2"):
        assert words in text, words
    assert "background" not in text  # label 0's volume stays in cohort.csv
    assert page.links == ["cohort.csv", "cohort.json", "p01/report.html", "p01/report.html", "p02/report.html"]
    (img,) = page.images  # p02 has no lesion, p03 no report
    assert img["alt"] == "largest lesion of p01"
    src = img["src"] or ""
    assert src.startswith("data:image/png;base64,")
    thumb = png_rgb(base64.b64decode(src.split(",", 1)[1]))
    assert thumb is not None and thumb.shape == (96, 128, 3)  # the 192 x 256 axial slice, halved
    assert (thumb[..., 0] > thumb[..., 1] + 40).any()  # the red tumour overlay shows


def test_links_follow_the_reports_and_escape(tmp_path: Path, volume_stats: Callable[..., ItemStats]) -> None:
    names = ("background", "liver", "<b>tumour</b> & co")
    stats = volume_stats("a b#1", (1.0, 2.0, 3.0), names=names)
    outcome = ItemOutcome("a b#1", "/d/a&b.nii", "ok", stats=stats,
                          outputs=(str(tmp_path / "a b#1" / "report.html"),))
    assert item_link(tmp_path, outcome) == ItemLink("a%20b%231/report.html", None)  # the report is not there
    assert item_link(tmp_path, dataclasses.replace(outcome, outputs=())) == ItemLink()
    failed = ItemOutcome("<script>x</script>", "/d/<x>.nii", "failed", error="bad <header> & worse")
    outcomes = [outcome, failed]
    doc = render_cohort_page(cohort_table(outcomes, [2]), {"workflow": "<w>", "note": ["a", "<b>"]},
                             [item_link(tmp_path, o) for o in outcomes])
    assert "<script>" not in doc and "<b>" not in doc and "<w>" not in doc
    page = _Page(doc)
    assert page.title == "<w>: cohort report"
    for words in ("a b#1", "<script>x</script>", "/d/<x>.nii", "bad <header> & worse", "<b>tumour</b> & co (mL)",
                  "a, <b>"):
        assert words in page.all_text, words
    assert "a%20b%231/report.html" in page.links


def test_links_of_items_published_to_an_object_store(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    """With an s3:// output directory the outputs are URIs: the link stays relative to the job's
    folder (never a mangled ``s3:/`` path) and the thumbnail comes from the staged copy."""
    local = [o for o in _with_reports(tmp_path, ct_outcomes) if o.stats is not None]
    links = []
    for o in local:
        published = dataclasses.replace(o, outputs=tuple(f"s3://results/night/{o.item}/{Path(p).name}"
                                                          for p in o.outputs))
        link = item_link(tmp_path, published)
        assert link == item_link(tmp_path, o)
        assert link.href == f"{o.item}/report.html"
        links.append(link)
    assert any(link.thumbnail_png is not None for link in links)  # items with lesions have one


def test_page_without_finished_items_or_failures(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    table = cohort_table(ct_outcomes[:2], [2])
    page = _Page(render_cohort_page(table, {}, [ItemLink(), ItemLink()]))
    assert page.title == "job: cohort report"
    assert "None." in page.all_text  # no failed item
    assert page.images == []
    page = _Page(render_cohort_page(cohort_table(ct_outcomes[2:], [2]), {}, [ItemLink()]))
    assert "No item finished." in page.all_text


def test_largest_lesion_png(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    stats: Any = ct_outcomes[0].stats
    report = _item_report(tmp_path / "p01", stats)
    png = largest_lesion_png(report)
    assert png is not None
    image = png_rgb(png)
    assert image is not None and image.shape == (192, 256, 3)
    assert largest_lesion_png(tmp_path / "missing.html") is None
    none: Any = ct_outcomes[1].stats
    assert largest_lesion_png(_item_report(tmp_path / "p02", none)) is None
