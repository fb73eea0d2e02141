"""A short human-readable report per volume item: class volumes, the lesion table, and slice
overlays through the largest lesions (axial slice at each lesion's centroid). Self-contained
HTML: images are PNGs embedded as base64. Reads only the slices it shows."""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..geometry import Window
from ..statistics import ItemStats, Lesion
from ..storage import atomic_write_text
from .png import png_bytes

#: The first lesion figure of a report written by :func:`write_volume_report`: the largest lesion.
_FIRST_FIGURE = re.compile(r'<figure><img alt="lesion \d+" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def overlay(image: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]],
            window: tuple[float, float] | None = None, alpha: float = 0.45) -> np.ndarray:
    """Grey image (windowed, or 1st-99th percentile) with coloured labels blended on top."""
    lo, hi = window if window is not None else (float(np.percentile(image, 1)), float(np.percentile(image, 99)))
    grey = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for k, colour in colours.items():
        mask = labels == k
        if k and mask.any():
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return rgb.astype(np.uint8)


def _slice_png(source: object, labels: object, axis: int, index: int,
               colours: dict[int, tuple[int, int, int]]) -> str:
    shape = source.grid.shape  # type: ignore[attr-defined]
    start = [0, 0, 0]
    size = list(shape)
    start[axis], size[axis] = index, 1
    window = Window(tuple(start), tuple(size))
    image = np.squeeze(source.read(window, [0])[0], axis=axis)  # type: ignore[attr-defined]
    lab = np.squeeze(labels.read(window, [0])[0], axis=axis).astype(np.int64)  # type: ignore[attr-defined]
    # rows of the picture = the second in-plane axis, as viewers show axial slices
    rgb = overlay(image.T[::-1], lab.T[::-1], colours)
    return base64.b64encode(png_bytes(rgb)).decode("ascii")


def _axial_axis(affine: np.ndarray) -> int:
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3])))


def write_volume_report(out_dir: Path, source: object, labels: object, stats: ItemStats, colours: Sequence[str],
                        largest: int = 3) -> Path:
    """``report.html`` for one volume item: ``source`` is its open volume source and ``labels``
    its label map, opened as a volume source too (whatever format the job wrote)."""
    rgb = {k: (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for k, c in enumerate(colours)}
    axis = _axial_axis(source.grid.affine)  # type: ignore[attr-defined]
    rows = "".join(
        f"<tr><td>{c.index}</td><td>{html.escape(c.name)}</td><td>{c.pixels}</td>"
        f"<td>{(c.volume_ml or 0):.3f}</td></tr>" for c in stats.classes
    )
    lesion_rows = "".join(
        f"<tr><td>{x.id}</td><td>{html.escape(stats.classes[x.class_index].name)}</td><td>{x.voxels}</td>"
        f"<td>{x.volume_ml:.3f}</td><td>{', '.join(f'{v:.1f}' for v in x.centroid_mm)}</td>"
        f"<td>{x.longest_axial_diameter_mm:.1f}</td></tr>" for x in stats.lesions
    )
    figures = "".join(_figure(source, labels, axis, x, rgb) for x in stats.lesions[:largest])
    study = "".join(f"<br>{html.escape(k)}: {html.escape(v)}" for k, v in stats.study)
    study = f"<p>{study[4:]}</p>" if study else ""
    burden = sum(x.volume_ml for x in stats.lesions)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(stats.item)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:0 1em 1em 0}}img{{image-rendering:pixelated;
width:320px}}</style></head><body>
<h1>{html.escape(stats.item)}</h1>{study}
<p>Voxel volume {stats.voxel_volume_mm3 or 0:.4g} mm³. {len(stats.lesions)} lesion(s), total burden
{burden:.3f} mL.</p>
<h2>Classes</h2><table><tr><th>#</th><th>class</th><th>voxels</th><th>volume (mL)</th></tr>{rows}</table>
<h2>Lesions</h2><table><tr><th>id</th><th>class</th><th>voxels</th><th>volume (mL)</th>
<th>centroid (mm, scanner)</th><th>longest axial diameter (mm)</th></tr>{lesion_rows}</table>
<h2>Largest lesions</h2>{figures or "<p>No lesion.</p>"}
</body></html>
"""
    path = out_dir / "report.html"
    atomic_write_text(path, doc)
    return path


def _figure(source: object, labels: object, axis: int, lesion: Lesion, colours: dict[int, tuple[int, int, int]]) -> str:
    centre = (lesion.bbox_min[axis] + lesion.bbox_max[axis]) // 2
    png = _slice_png(source, labels, axis, centre, colours)
    return (f'<figure><img alt="lesion {lesion.id}" src="data:image/png;base64,{png}">'
            f"<figcaption>lesion {lesion.id}: {lesion.volume_ml:.2f} mL, slice {centre}</figcaption></figure>")


def largest_lesion_png(report: Path) -> bytes | None:
    """The PNG of the largest lesion's slice overlay in a ``report.html`` written by
    :func:`write_volume_report`; ``None`` when the report is missing, unreadable or shows no lesion."""
    try:
        text = report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = _FIRST_FIGURE.search(text)
    if match is None:
        return None
    try:
        return base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        return None
