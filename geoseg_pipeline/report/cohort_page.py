"""``report.html`` of a volume job: a short cohort page.

The job record, the lesion summary per lesion class, the cohort table (one row per item that
has statistics, linked to the item's own ``report.html``, with a thumbnail of its largest
lesion's slice overlay taken from that report) and the failed items with their reason. All text
is HTML-escaped; links are relative to the job's output folder, so the folder can be moved.
Label 0 (background) is left out of the page's volumes; ``cohort.csv`` has it.
"""

from __future__ import annotations

import base64
import html
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..storage import atomic_write_text
from .cohort import DONE, CohortTable, lesion_summary
from .html import largest_lesion_png
from .outcome import ItemOutcome
from .png import png_bytes, png_rgb, thumbnail

COHORT_PAGE_NAME = "report.html"
#: Longest side of a lesion thumbnail (pixels).
THUMBNAIL_PX = 128

_STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:middle}td.t,th.t{text-align:left}
img{image-rendering:pixelated;display:block}"""


@dataclass(frozen=True)
class ItemLink:
    """Where an item's own report is (a URL relative to the cohort page) and its thumbnail PNG."""

    href: str | None = None
    thumbnail_png: bytes | None = None


def item_link(out_root: Path, outcome: ItemOutcome) -> ItemLink:
    """The link to ``outcome``'s ``report.html`` (one of its outputs) and a thumbnail of its largest
    lesion; empty when it has no report. A thumbnail that cannot be made is left out."""
    # outputs may be s3:// URIs (published items): the link is relative to the job's folder, the
    # thumbnail comes from the local (staged) copy when there is one
    if not any(posixpath.basename(p) == "report.html" for p in outcome.outputs):
        return ItemLink()
    href = quote(f"{outcome.item}/report.html", safe="/")
    png = largest_lesion_png(out_root / outcome.item / "report.html")
    rgb = png_rgb(png) if png is not None else None
    return ItemLink(href, png_bytes(thumbnail(rgb, THUMBNAIL_PX)) if rgb is not None else None)


def write_cohort_page(out_root: Path, table: CohortTable, outcomes: Sequence[ItemOutcome],
                      job: dict[str, Any]) -> Path:
    """Write ``out_root/report.html`` for ``table`` (built from ``outcomes``, in the same order)."""
    path = out_root / COHORT_PAGE_NAME
    atomic_write_text(path, render_cohort_page(table, job, [item_link(out_root, o) for o in outcomes]))
    return path


def render_cohort_page(table: CohortTable, job: dict[str, Any], links: Sequence[ItemLink]) -> str:
    """The page's HTML; ``links[i]`` belongs to ``table.rows[i]``."""
    e = html.escape
    workflow = str(job.get("workflow", "job"))
    ok = [(r, link) for r, link in zip(table.rows, links, strict=True) if r["status"] in DONE]
    failed = [r for r in table.rows if r["status"] not in DONE]
    skipped = sum(1 for r, _ in ok if r["status"] == "skipped")
    counts = f"{len(table.rows)} item(s): {len(ok)} ok, {len(failed)} failed."
    if skipped:
        counts += f" {skipped} of the ok ones were done by an earlier run (unchanged input, model and settings)."
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(workflow)}: cohort report</title>
<style>{_STYLE}</style></head><body>
<h1>Cohort report: {e(workflow)}</h1>
<p>{counts} Per-item tables: <a href="cohort.csv">cohort.csv</a>, <a href="cohort.json">cohort.json</a>.</p>
<h2>Job</h2>{_job_table(job)}
{_lesion_section(table)}
<h2>Items</h2>{_item_table(table, ok)}
<h2>Failed items</h2>{_failed_table(failed)}
<p>Volumes in mL (1 mL = 1000 mm³). A lesion is one connected component of a lesion class; burden is the
total volume of a class's lesions; the diameter is the longest axial diameter of any of its lesions.</p>
</body></html>
"""


def _cell(value: Any, fmt: str = "") -> str:
    if value is None:
        return "<td></td>"
    text = format(value, fmt) if fmt and isinstance(value, int | float) else str(value)
    return f"<td>{html.escape(text)}</td>"


def _job_table(job: dict[str, Any]) -> str:
    rows = []
    for key, value in job.items():
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            continue
        rows.append(f'<tr><th class="t">{html.escape(str(key))}</th><td class="t">{html.escape(str(value))}</td></tr>')
    return f"<table>{''.join(rows)}</table>"


def _lesion_section(table: CohortTable) -> str:
    summary = lesion_summary(table)
    if not summary:
        return ""
    rows = "".join(
        f'<tr><td class="t">{html.escape(s["class_name"])}</td><td>{s["items_with_lesions"]} of {s["items"]}</td>'
        f'<td>{s["lesions"]}</td>{_cell(s["median_burden_ml"], ".3f")}{_cell(s["max_burden_ml"], ".3f")}</tr>'
        for s in summary
    )
    return ('<h2>Lesions</h2><table><tr><th class="t">class</th><th>items with lesions</th><th>lesions</th>'
            f"<th>median burden (mL)</th><th>largest burden (mL)</th></tr>{rows}</table>")


def _item_table(table: CohortTable, ok: Sequence[tuple[dict[str, Any], ItemLink]]) -> str:
    if not ok:
        return "<p>No item finished.</p>"
    shown = [c for c in table.classes if c.index != 0]
    head = ['<th class="t">largest lesion</th><th class="t">item</th><th>voxel (mm³)</th>']
    for c in shown:
        name = html.escape(c.name)
        head.append(f"<th>{name} (mL)</th>")
        if c.lesion_class:
            head.append(f"<th>{name} lesions</th><th>{name} burden (mL)</th><th>{name} largest (mL)</th>"
                        f"<th>{name} max axial diameter (mm)</th>")
    body = []
    for row, link in ok:
        cells = [_thumbnail_cell(row["item"], link), _name_cell(row["item"], link),
                 _cell(row["voxel_volume_mm3"], ".4g")]
        for c in shown:
            cells.append(_cell(row[f"{c.key}_volume_ml"], ".3f"))
            if c.lesion_class:
                cells += [_cell(row[f"{c.key}_lesions"]), _cell(row[f"{c.key}_burden_ml"], ".3f"),
                          _cell(row[f"{c.key}_largest_ml"], ".3f"), _cell(row[f"{c.key}_max_axial_diameter_mm"], ".1f")]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{''.join(head)}</tr>{''.join(body)}</table>"


def _name_cell(item: str, link: ItemLink) -> str:
    name = html.escape(item)
    if link.href is None:
        return f'<td class="t">{name}</td>'
    return f'<td class="t"><a href="{html.escape(link.href)}">{name}</a></td>'


def _thumbnail_cell(item: str, link: ItemLink) -> str:
    if link.thumbnail_png is None:
        return "<td></td>"
    img = (f'<img alt="largest lesion of {html.escape(item)}" '
           f'src="data:image/png;base64,{base64.b64encode(link.thumbnail_png).decode("ascii")}">')
    if link.href is not None:
        img = f'<a href="{html.escape(link.href)}">{img}</a>'
    return f'<td class="t">{img}</td>'


def _failed_table(failed: Sequence[dict[str, Any]]) -> str:
    if not failed:
        return "<p>None.</p>"
    rows = "".join(
        f'<tr><td class="t">{html.escape(r["item"])}</td><td class="t">{html.escape(r["source"])}</td>'
        f'<td class="t">{html.escape(r["error"] or r["status"])}</td></tr>'
        for r in failed
    )
    return f'<table><tr><th class="t">item</th><th class="t">source</th><th class="t">reason</th></tr>{rows}</table>'
