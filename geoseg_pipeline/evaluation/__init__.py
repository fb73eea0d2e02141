"""Evaluation: compare predicted label maps with reference label maps, per item and class.

:func:`evaluate` pairs a geoseg output folder's ``<item>/labels.*`` with reference files by item
name (:mod:`.pairs`), checks that each pair shares one grid (:mod:`.labels`), computes Dice, IoU,
HD95 and the volume or area difference of every class with MONAI's metric functions, one class
at a time (:mod:`.metrics`), and writes ``evaluation.csv``, ``evaluation_summary.csv`` and
``evaluation_summary.json`` (:mod:`.report`). See ``docs/evaluation.md``.
"""

from .metrics import HD_PERCENTILE, Overlap, overlap
from .pairs import ItemPair, find_pairs
from .report import CSV_NAME, SUMMARY_CSV_NAME, SUMMARY_JSON_NAME
from .results import ClassMetrics, ClassSummary, EvaluationResult, ItemEvaluation, MetricSummary
from .runner import evaluate

__all__ = [
    "CSV_NAME",
    "HD_PERCENTILE",
    "SUMMARY_CSV_NAME",
    "SUMMARY_JSON_NAME",
    "ClassMetrics",
    "ClassSummary",
    "EvaluationResult",
    "ItemEvaluation",
    "ItemPair",
    "MetricSummary",
    "Overlap",
    "evaluate",
    "find_pairs",
    "overlap",
]
