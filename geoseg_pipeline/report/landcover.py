"""Land-cover reports: ``OUT/<item>/report.html`` per raster item and ``OUT/report.html`` per job, and
the page of a ``geoseg change`` run.

Self-contained pages that open offline: no script, no stylesheet or font from elsewhere; quicklooks
are PNGs embedded as base64, read from a COG's overviews (never its full-resolution raster when an
overview is small enough), capped at :data:`QUICKLOOK_PX` (item) or :data:`THUMBNAIL_PX` (job)
pixels a side; charts are inline SVG.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio

from ..storage import atomic_write_text
from .png import png_bytes

if TYPE_CHECKING:
    from ..statistics import ItemStats
    from .outcome import ItemOutcome

QUICKLOOK_PX = 1024
THUMBNAIL_PX = 256
REPORT_NAME = "report.html"
_DONE = ("ok", "skipped")
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th.t,td.t{text-align:left}.sw{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:middle}
img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}figure{margin:0 0 1em}
.note{color:#666;font-size:.9em}"""


def quicklook(path: Path, max_px: int = QUICKLOOK_PX) -> tuple[np.ndarray, dict[int, tuple[int, int, int]], int]:
    """An RGB picture of a label COG at most ``max_px`` a side, from the smallest-needed overview
    (the first whose both sides fit; the full raster only when it fits itself or has no
    overview); returns it, the colour table and the overview level read (-1: full resolution).
    Nodata pixels are white."""
    with rasterio.open(path) as ds:
        factors = ds.overviews(1)
        colormap = {k: v[:3] for k, v in ds.colormap(1).items()} if _has_colormap(ds) else {}
        nodata = ds.nodata
        level = -1
        if max(ds.height, ds.width) > max_px:
            for i, f in enumerate(factors):
                level = i
                if max(-(-ds.height // f), -(-ds.width // f)) <= max_px:
                    break
    with rasterio.open(path, overview_level=level) if level >= 0 else rasterio.open(path) as ds:
        labels = ds.read(1)
    rgb = _paint(labels, colormap, nodata)
    step = -(-max(rgb.shape[:2]) // max_px)  # no overview small enough: thin the smallest one
    return rgb[::step, ::step], colormap, level


def _has_colormap(ds: Any) -> bool:
    try:
        ds.colormap(1)
    except ValueError:
        return False
    return True


def _paint(labels: np.ndarray, colormap: dict[int, tuple[int, int, int]], nodata: float | None) -> np.ndarray:
    lut = np.full((65536, 3), 128, np.uint8)
    for k, colour in colormap.items():
        lut[k] = colour
    if nodata is not None:
        lut[int(nodata)] = (255, 255, 255)
    return lut[labels.astype(np.int64)]


def _png(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(np.ascontiguousarray(rgb))).decode("ascii")


def _hex(colour: tuple[int, int, int] | None) -> str:
    return "#888888" if colour is None else "#{:02x}{:02x}{:02x}".format(*colour)


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def class_table(rows: Sequence[tuple[str, tuple[int, int, int] | None, int, float | None, float]]) -> str:
    """A table and a bar chart (inline SVG) of ``(name, colour, pixels, area_m2, share)`` rows."""
    e = html.escape
    body = "".join(
        f'<tr><td class="t"><span class="sw" style="background:{_hex(c)}"></span> {e(name)}</td>'
        f"<td>{pixels:,}</td><td>{_number(None if a is None else a / 10_000)}</td><td>{100 * share:.2f}</td></tr>"
        for name, c, pixels, a, share in rows)
    table = f"<table><tr><th class=t>class</th><th>pixels</th><th>area (ha)</th><th>share (%)</th></tr>{body}</table>"
    bar_h, width = 18, 420
    bars = []
    for i, (name, colour, _, _, share) in enumerate(rows):
        y = i * (bar_h + 4)
        bars.append(f'<rect x="160" y="{y}" width="{max(share, 0) * width:.1f}" height="{bar_h}" '
                    f'fill="{_hex(colour)}" stroke="#555" stroke-width=".5"/>'
                    f'<text x="155" y="{y + 13}" text-anchor="end" font-size="12">{e(name)}</text>'
                    f'<text x="{165 + max(share, 0) * width:.1f}" y="{y + 13}" font-size="12">'
                    f"{100 * share:.1f}%</text>")
    height = max(len(rows), 1) * (bar_h + 4)
    chart = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{160 + width + 60}" height="{height}" role="img" '
             f'aria-label="class shares">{"".join(bars)}</svg>')
    return table + chart


def _stats_rows(stats: ItemStats, colormap: dict[int, tuple[int, int, int]]
                ) -> list[tuple[str, tuple[int, int, int] | None, int, float | None, float]]:
    return [(c.name, colormap.get(c.index), c.pixels, c.area_m2, c.share) for c in stats.classes]


def zone_table(zones: Sequence[Any], limit: int = 500) -> str:
    """Zones as rows, classes as columns (area in ha, or pixels without areas); the first
    ``limit`` zones."""
    if not zones:
        return ""
    e = html.escape
    classes = sorted({(z.class_index, z.class_name) for z in zones})
    by_zone: dict[str, dict[int, Any]] = {}
    for z in zones:
        by_zone.setdefault(z.zone, {})[z.class_index] = z
    areas = all(z.area_m2 is not None for z in zones)
    head = "".join(f"<th>{e(name)}</th>" for _, name in classes)
    rows = []
    for zone in list(by_zone)[:limit]:
        cells = []
        for k, _ in classes:
            z = by_zone[zone].get(k)
            cells.append("<td></td>" if z is None else
                         f"<td>{_number(z.area_m2 / 10_000) if areas else f'{z.pixels:,}'}</td>")
        rows.append(f'<tr><td class="t">{e(zone)}</td>{"".join(cells)}</tr>')
    more = f'<p class="note">{len(by_zone) - limit} more zone(s) in the CSV.</p>' if len(by_zone) > limit else ""
    unit = "ha" if areas else "pixels"
    return (f"<h2>Zones ({unit})</h2><table><tr><th class=t>zone</th>{head}</tr>{''.join(rows)}</table>{more}")


def write_item_report(out_dir: Path, stats: ItemStats, labels_tif: Path | None, meta: dict[str, Any]) -> Path:
    """``report.html`` for one raster item: the map's quicklook and legend (when a COG was
    written), the class areas as a table and a chart, the zones."""
    e = html.escape
    colormap: dict[int, tuple[int, int, int]] = {}
    figure = ""
    if labels_tif is not None and labels_tif.exists():
        rgb, colormap, level = quicklook(labels_tif)
        source = "full resolution" if level < 0 else f"overview {level}"
        figure = (f'<figure><img alt="label map" src="{_png(rgb)}"><figcaption class="note">{e(labels_tif.name)}, '
                  f"{rgb.shape[1]} × {rgb.shape[0]} px from its {source}; white: no data</figcaption></figure>")
    area = "" if stats.valid_area_m2 is None else f", {stats.valid_area_m2 / 10_000:,.2f} ha"
    shape = meta.get("shape")
    grid = f"; grid {shape[1]} × {shape[0]}" if shape else ""
    tables = '<a href="stats.csv">stats.csv</a>' + (' and <a href="zones.csv">zones.csv</a>' if stats.zones else "")
    return _write(out_dir / REPORT_NAME, f"{stats.item}: land cover", f"""
<p>{stats.valid_pixels:,} valid pixels{area} ({e(stats.area_method)} areas: {e(stats.area_note)});
{stats.nodata_pixels:,} nodata pixels{grid}. Tables: {tables}.</p>
{figure}<h2>Classes</h2>{class_table(_stats_rows(stats, colormap))}{zone_table(stats.zones)}""")


def write_job_report(out_root: Path, outcomes: Sequence[ItemOutcome], job: dict[str, Any],
                     zone_rows: Sequence[dict[str, Any]] = ()) -> Path:
    """``OUT/report.html`` for a raster job: every item with a thumbnail and its classes, the
    classes over the job, the zones summary, the failed items."""
    e = html.escape
    done = [o for o in outcomes if o.status in _DONE and o.stats is not None]
    failed = [o for o in outcomes if o.status not in _DONE]
    colormap: dict[int, tuple[int, int, int]] = {}
    items = []
    for o in done:
        assert o.stats is not None
        thumb = ""
        cog = out_root / o.item / "labels.tif"
        if cog.exists():
            rgb, cmap, _ = quicklook(cog, THUMBNAIL_PX)
            colormap = colormap or cmap
            thumb = f'<img alt="{e(o.item)}" src="{_png(rgb)}">'
        link = f'<a href="{e(o.item)}/{REPORT_NAME}">{e(o.item)}</a>' if (out_root / o.item / REPORT_NAME).exists() \
            else e(o.item)
        area = "" if o.stats.valid_area_m2 is None else _number(o.stats.valid_area_m2 / 10_000)
        shares = ", ".join(f"{c.name} {100 * c.share:.1f}%" for c in o.stats.classes if c.pixels)
        items.append(f'<tr><td class="t">{link}<br>{e(o.status)}</td><td>{thumb}</td><td>{area}</td>'
                     f'<td class="t">{e(shares)}</td></tr>')
    totals = _job_classes(done, colormap)
    zones = ""
    if zone_rows:
        body = "".join(f'<tr><td class="t">{e(str(r["zone"]))}</td><td class="t">{e(str(r["class_name"]))}</td>'
                       f'<td>{r["pixels"]:,}</td><td>{_number(r["area_ha"])}</td><td>{100 * r["share"]:.2f}</td></tr>'
                       for r in zone_rows[:2000])
        zones = ("<h2>Zones over the job</h2><p class=note>Each ground pixel once (see "
                 '<a href="zones_summary.csv">zones_summary.csv</a>).</p><table><tr><th class=t>zone</th>'
                 f"<th class=t>class</th><th>pixels</th><th>area (ha)</th><th>share (%)</th></tr>{body}</table>")
    fails = "".join(f'<tr><td class="t">{e(o.item)}</td><td class="t">{e(o.source)}</td><td class="t">{e(o.error)}</td>'
                    f"</tr>" for o in failed)
    failed_html = (f"<table><tr><th class=t>item</th><th class=t>source</th><th class=t>reason</th></tr>{fails}</table>"
                   if failed else "<p>None.</p>")
    return _write(out_root / REPORT_NAME, f"{job.get('workflow', 'job')}: land cover", f"""
<p>{len(outcomes)} item(s): {len(done)} done, {len(failed)} failed. Tables: <a href="summary.csv">summary.csv</a>.</p>
<h2>Classes over the job</h2>{totals}{zones}
<h2>Items</h2><table><tr><th class=t>item</th><th>map</th><th>valid area (ha)</th><th class=t>classes</th></tr>
{''.join(items)}</table><h2>Failed items</h2>{failed_html}""")


def _job_classes(done: Sequence[ItemOutcome], colormap: dict[int, tuple[int, int, int]]) -> str:
    if not done:
        return "<p>No item done.</p>"
    sums: dict[int, list[Any]] = {}
    for o in done:
        assert o.stats is not None
        for c in o.stats.classes:
            row = sums.setdefault(c.index, [c.name, 0, 0.0, True])
            row[1] += c.pixels
            row[2] += c.area_m2 or 0.0
            row[3] = row[3] and c.area_m2 is not None
    total_area = sum(r[2] for r in sums.values())
    total_pixels = sum(r[1] for r in sums.values())
    areas = all(r[3] for r in sums.values())
    rows = [(r[0], colormap.get(k), r[1], r[2] if areas else None,
             (r[2] / total_area if areas and total_area else (r[1] / total_pixels if total_pixels else 0.0)))
            for k, r in sorted(sums.items())]
    note = ('<p class="note">Summed over the items: ground that two scenes cover is counted in both '
            "(the zones summary counts it once).</p>")
    return class_table(rows) + note


def write_change_report(out_dir: Path, change_tif: Path, names: Sequence[str], transitions: np.ndarray,
                        area_m2: np.ndarray | None, title: str) -> Path:
    """``report.html`` of a ``geoseg change`` run: the change map's quicklook and the change
    matrix (``transitions[from, to]`` pixels; ``area_m2`` the same in m², when known)."""
    e = html.escape
    rgb, _, level = quicklook(change_tif)
    source = "full resolution" if level < 0 else f"overview {level}"
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    rows = []
    for i, name in enumerate(names):
        cells = "".join(
            f"<td>{_number(area_m2[i, j] / 10_000) if area_m2 is not None else f'{int(transitions[i, j]):,}'}</td>"
            for j in range(len(names)))
        rows.append(f'<tr><th class="t">{e(name)}</th>{cells}</tr>')
    unit = "ha" if area_m2 is not None else "pixels"
    return _write(out_dir / REPORT_NAME, title, f"""
<figure><img alt="change map" src="{_png(rgb)}"><figcaption class="note">{e(change_tif.name)}, {rgb.shape[1]} ×
{rgb.shape[0]} px from its {source}; grey: unchanged; white: no data</figcaption></figure>
<h2>Change matrix ({unit}): rows before, columns after</h2>
<table><tr><th class=t>from \\ to</th>{head}</tr>{''.join(rows)}</table>
<p>Tables: <a href="transitions.csv">transitions.csv</a>, <a href="net_change.csv">net_change.csv</a>.</p>""")


def _write(path: Path, title: str, body: str) -> Path:
    e = html.escape
    atomic_write_text(path, f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_STYLE}</style></head><body><h1>{e(title)}</h1>{body}
</body></html>
""")
    return path


__all__ = ["QUICKLOOK_PX", "THUMBNAIL_PX", "class_table", "quicklook", "write_change_report", "write_item_report",
           "write_job_report", "zone_table"]
