"""``evaluate``: compare a geoseg output folder with reference label maps, item by item."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import GeosegError, InputDataError, SourceError, SpecError
from .labels import LabelMap, Scale, check_same_grid, grid_scale, prediction_class_names, read_label_map
from .metrics import NEITHER, overlap, presence
from .pairs import ItemPair, find_pairs
from .report import evaluation_paths, write_evaluation
from .results import (
    FAILED,
    NO_PREDICTION,
    NO_REFERENCE,
    OK,
    ClassMetrics,
    EvaluationResult,
    ItemEvaluation,
    summarize,
)

log = logging.getLogger("geoseg")

#: Elements counted per step when listing an item's labels (bounds the temporary copies).
COUNT_CHUNK = 1 << 22

ClassNames = Sequence[str] | Mapping[int, str]


def evaluate(
    pred_dir: Path,
    ref_dir: Path,
    out: Path | None = None,
    *,
    classes: Sequence[int] | None = None,
    class_names: ClassNames | None = None,
    include_background: bool = False,
    hausdorff: bool = True,
) -> EvaluationResult:
    """Compare the label maps in ``pred_dir`` with the references in ``ref_dir``, write
    ``evaluation.csv``, ``evaluation_summary.csv`` and ``evaluation_summary.json`` to ``out``.

    Items are paired by name (:mod:`.pairs`); one that lacks a side, whose files disagree on
    the grid, or that cannot be read is reported with its reason and the others go on. Metrics
    are computed one class at a time (:mod:`.metrics`); elements that are nodata in either file
    are left out of every metric.

    Args:
        pred_dir: a geoseg output folder (``<item>/labels.tif`` or ``<item>/labels.nii.gz``).
        ref_dir: reference label maps (``<item>.tif``, ``<item>.nii.gz``, ``<item>.nii`` or
            ``<item>/labels.*``).
        out: folder for the three files (created if needed); default ``pred_dir``.
        classes: the label values to evaluate in every item, as given (``include_background``
            does not apply). Default: every label found in some item's prediction or reference.
        class_names: names by label value (a sequence indexed by label, or a mapping). Default:
            the names stored with the predictions, else ``class_<label>``.
        include_background: with ``classes`` unset, evaluate label 0 as well.
        hausdorff: compute HD95 (the costly part on large rasters); its cells are empty when off.

    Returns:
        every item's metrics and the per-class summary, with the paths written.

    Raises:
        SourceError: ``pred_dir`` or ``ref_dir`` is not a readable folder.
        SpecError: ``classes`` or ``class_names`` is invalid, or the two folders are one.
        InputDataError: neither folder holds any item.
        SinkError: the files cannot be written.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    out = pred_dir if out is None else Path(out)
    wanted = _checked_classes(classes)
    pairs = _pairs(pred_dir, ref_dir)
    items: list[ItemEvaluation] = []
    found_names: dict[int, str] = {}
    for n, pair in enumerate(pairs, start=1):
        item = _evaluate_pair(pair, wanted, include_background, hausdorff)
        if item.status == OK and pair.prediction is not None:
            for k, name in prediction_class_names(pair.prediction).items():
                found_names.setdefault(k, name)
        _log_item(item, n, len(pairs))
        items.append(item)
    evaluated = wanted if wanted is not None else _observed(items)
    names = _class_names(evaluated, class_names, found_names)
    final = tuple(_complete(i, evaluated, names) for i in items)
    result = EvaluationResult(pred_dir, ref_dir, evaluated, final, summarize(final, evaluated, names),
                              evaluation_paths(out))
    write_evaluation(out, result)
    ok = len(result.evaluated)
    log.info("evaluation: %d of %d items evaluated, %d classes; %s", ok, len(final), len(evaluated), out)
    return result


def _pairs(pred_dir: Path, ref_dir: Path) -> tuple[ItemPair, ...]:
    for name, folder in (("prediction", pred_dir), ("reference", ref_dir)):
        if not folder.is_dir():
            raise SourceError(f"{name} folder {folder} does not exist or is not a folder")
    if pred_dir.resolve() == ref_dir.resolve():
        raise SpecError(f"the prediction and reference folders are the same: {pred_dir}")
    try:
        pairs = find_pairs(pred_dir, ref_dir)
    except OSError as exc:
        raise SourceError(f"cannot list the prediction or reference folder: {exc}") from exc
    if not pairs:
        raise InputDataError(
            f"nothing to evaluate: {pred_dir} has no <item>/labels.tif or <item>/labels.nii.gz and {ref_dir} no "
            "<item>.tif, <item>.nii.gz, <item>.nii or <item>/labels.*; check the two folders"
        )
    return pairs


def _checked_classes(classes: Sequence[int] | None) -> tuple[int, ...] | None:
    if classes is None:
        return None
    values = tuple(classes)
    bad = [k for k in values if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0]
    if bad:
        raise SpecError(f"classes must be label values >= 0, got {bad}")
    if len(set(values)) != len(values):
        raise SpecError(f"classes must not repeat, got {list(values)}")
    if not values:
        raise SpecError("classes must name at least one label value, got none")
    return tuple(sorted(int(k) for k in values))


def _class_names(classes: Sequence[int], given: ClassNames | None, found: Mapping[int, str]) -> dict[int, str]:
    if given is None:
        named: Mapping[int, str] = {}
    elif isinstance(given, Mapping):
        named = given
    elif isinstance(given, str):
        raise SpecError(f"class_names must be a sequence of names or a mapping, got the string {given!r}")
    else:
        named = dict(enumerate(given))
    return {k: str(named.get(k) or found.get(k) or f"class_{k}") for k in classes}


def _observed(items: Sequence[ItemEvaluation]) -> tuple[int, ...]:
    return tuple(sorted({c.class_index for i in items for c in i.classes}))


def _complete(item: ItemEvaluation, classes: Sequence[int], names: Mapping[int, str]) -> ItemEvaluation:
    """``item`` with a ``neither`` row for every class it lacks, and the class names filled in."""
    if item.status != OK:
        return item
    have = {c.class_index: c for c in item.classes}
    empty = 0.0 if item.size_unit is not None else None
    rows = tuple(
        dataclasses.replace(have[k], class_name=names[k]) if k in have
        else ClassMetrics(k, names[k], NEITHER, None, None, None, 0, 0, empty, empty)
        for k in classes
    )
    return dataclasses.replace(item, classes=rows)


def _evaluate_pair(pair: ItemPair, classes: tuple[int, ...] | None, include_background: bool,
                   hausdorff: bool) -> ItemEvaluation:
    base = ItemEvaluation(pair.item, OK, pair.kind, pair.prediction, pair.reference)
    if pair.prediction is None or pair.reference is None or pair.problem is not None:
        status = NO_PREDICTION if pair.prediction is None else NO_REFERENCE if pair.reference is None else FAILED
        return dataclasses.replace(base, status=status, error=pair.problem)
    start = time.perf_counter()
    try:
        pred, ref = read_label_map(pair.prediction), read_label_map(pair.reference)
        check_same_grid(pred, ref)
        scale = grid_scale(pred)
    except GeosegError as exc:
        return dataclasses.replace(base, status=FAILED, error=str(exc), seconds=time.perf_counter() - start)
    rows = _class_metrics(pred, ref, scale, classes, include_background, hausdorff)
    return dataclasses.replace(base, hd95_unit=scale.distance_unit if hausdorff else None, size_unit=scale.size_unit,
                               classes=rows, seconds=time.perf_counter() - start)


def _class_metrics(pred: LabelMap, ref: LabelMap, scale: Scale, classes: tuple[int, ...] | None,
                   include_background: bool, hausdorff: bool) -> tuple[ClassMetrics, ...]:
    """Every class of one item (``classes``, else the labels present), one class at a time."""
    valid = pred.valid if ref.valid is None else ref.valid if pred.valid is None else pred.valid & ref.valid
    pred_counts, ref_counts = label_counts(pred.labels, valid), label_counts(ref.labels, valid)
    if classes is None:
        classes = tuple(sorted(k for k in pred_counts.keys() | ref_counts.keys() if include_background or k != 0))
    rows = []
    for k in classes:
        pn, rn = pred_counts.get(k, 0), ref_counts.get(k, 0)
        if not pn and not rn:
            empty = 0.0 if scale.size_unit is not None else None
            rows.append(ClassMetrics(k, "", presence(0, 0), None, None, None, 0, 0, empty, empty))
            continue
        pm, rm = _mask(pred.labels, k, valid), _mask(ref.labels, k, valid)
        o = overlap(pm, rm, scale.spacing, hausdorff=hausdorff)
        rows.append(ClassMetrics(k, "", o.presence, o.dice, o.iou, o.hd95, pn, rn, scale.size(pm, pn),
                                 scale.size(rm, rn)))
        del pm, rm
    return tuple(rows)


def _mask(labels: np.ndarray, k: int, valid: np.ndarray | None) -> np.ndarray:
    mask: np.ndarray = labels == k
    if valid is not None:
        mask &= valid
    return mask


def label_counts(labels: np.ndarray, valid: np.ndarray | None) -> dict[int, int]:
    """``{label: count}`` of the valid elements of an unsigned integer array, a slab at a time
    (temporary copies of about :data:`COUNT_CHUNK` elements, whatever the array's memory order)."""
    counts: dict[int, int] = {}
    if labels.flags.f_contiguous and not labels.flags.c_contiguous:  # NIfTI: slabs along the last axis
        labels, valid = labels.T, None if valid is None else valid.T
    step = max(1, COUNT_CHUNK // max(1, labels[:1].size))
    for start in range(0, labels.shape[0], step):
        slab = labels[start:start + step]
        chunk = slab.ravel() if valid is None else slab[valid[start:start + step]]
        if chunk.dtype.itemsize <= 2:
            per_label = np.bincount(chunk)
            values = np.flatnonzero(per_label)
            tallies = per_label[values]
        else:
            values, tallies = np.unique(chunk, return_counts=True)
        for v, t in zip(values.tolist(), tallies.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + t
    return counts


def _log_item(item: ItemEvaluation, n: int, total: int) -> None:
    if item.status != OK:
        log.warning("evaluation %d/%d %s: %s: %s", n, total, item.item, item.status, item.error)
        return
    dice = ", ".join(f"{c.class_index}: {c.dice:.3f}" for c in item.classes if c.dice is not None)
    log.info("evaluation %d/%d %s: Dice %s (%.1f s)", n, total, item.item, dice or "-", item.seconds)
