"""Pair each prediction of a geoseg output folder with its reference label file, by item name.

Predictions are geoseg outputs, ``PRED_DIR/<item>/labels.tif`` (rasters) or
``PRED_DIR/<item>/labels.nii.gz`` (volumes; ``labels.nii`` is accepted too). References are
named by item, either as a file, ``REF_DIR/<item>.tif`` (``.tiff``), ``<item>.nii.gz`` or
``<item>.nii``, or as a folder laid out like a prediction, ``REF_DIR/<item>/labels.*`` (so that
another geoseg output folder can serve as the reference). The item name of a reference file is
its name without those extensions, as for job inputs
(:func:`~geoseg_pipeline.sources.discovery.item_name`). Names starting with ``.`` are ignored
(staging folders, hidden files).

Pure discovery: nothing is opened. Every item found on either side becomes one
:class:`ItemPair`, in item-name order; an item lacking one side, or with two candidate files on
one side, carries a ``problem`` saying so, instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sources.discovery import item_name

#: File names of a geoseg label map inside ``<item>/``, in the order they are looked for.
LABEL_FILE_NAMES = ("labels.tif", "labels.nii.gz", "labels.nii")
#: Extensions of a reference file named by item (compared case-insensitively).
REFERENCE_SUFFIXES = (".tif", ".tiff", ".nii.gz", ".nii")

RASTER = "raster"
VOLUME = "volume"


def label_kind(path: Path) -> str:
    """``"raster"`` for a GeoTIFF, ``"volume"`` for a NIfTI file (by extension)."""
    return VOLUME if path.name.lower().endswith((".nii", ".nii.gz")) else RASTER


@dataclass(frozen=True)
class ItemPair:
    """One item: its prediction and reference label files (``None`` when missing).

    ``problem`` is ``None`` when both files are there and unambiguous, else the reason the item
    cannot be evaluated, naming the folder or files.
    """

    item: str
    prediction: Path | None
    reference: Path | None
    problem: str | None = None

    @property
    def kind(self) -> str:
        """``"raster"`` or ``"volume"``, from the prediction's extension (else the reference's)."""
        path = self.prediction or self.reference
        if path is None:  # pragma: no cover - find_pairs never builds such a pair
            raise ValueError(f"item {self.item!r} has neither a prediction nor a reference")
        return label_kind(path)


def _label_files(folder: Path) -> list[Path]:
    return [folder / name for name in LABEL_FILE_NAMES if (folder / name).is_file()]


def prediction_files(pred_dir: Path) -> dict[str, list[Path]]:
    """``{item: [label files]}`` for every non-hidden folder of ``pred_dir`` holding a label map."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(pred_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = _label_files(entry)
        if files:
            found[entry.name] = files
    return found


def reference_files(ref_dir: Path) -> dict[str, list[Path]]:
    """``{item: [label files]}`` for the reference files and reference folders in ``ref_dir``."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(ref_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for path in _label_files(entry):
                found.setdefault(entry.name, []).append(path)
        elif entry.is_file() and entry.name.lower().endswith(REFERENCE_SUFFIXES):
            found.setdefault(item_name(str(entry)), []).append(entry)
    return found


def find_pairs(pred_dir: Path, ref_dir: Path) -> tuple[ItemPair, ...]:
    """Every item with a prediction or a reference, in name order (see the module doc).

    Raises:
        OSError: a folder cannot be listed.
    """
    preds, refs = prediction_files(pred_dir), reference_files(ref_dir)
    pairs = []
    for item in sorted(preds.keys() | refs.keys()):
        pred_files, ref_files = preds.get(item, []), refs.get(item, [])
        pred = pred_files[0] if pred_files else None
        ref = ref_files[0] if ref_files else None
        problem = None
        if pred is None:
            problem = f"no prediction: {pred_dir / item} has no {' or '.join(LABEL_FILE_NAMES)}"
        elif ref is None:
            names = ", ".join(f"{item}{s}" for s in REFERENCE_SUFFIXES)
            problem = f"no reference: {ref_dir} has none of {names} or {item}/labels.*"
        elif len(pred_files) > 1:
            problem = f"ambiguous prediction: {' and '.join(map(str, pred_files))}; keep one"
        elif len(ref_files) > 1:
            problem = f"ambiguous reference: {' and '.join(map(str, ref_files))}; keep one"
        pairs.append(ItemPair(item, pred, ref, problem))
    return tuple(pairs)
