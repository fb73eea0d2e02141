"""Blend overlapping window predictions into output blocks, then into labels.

``stitching.weights`` (the blend weights, torch) is imported by the actors only.
"""

from .blocks import BlockStitcher, FinishedBlock
from .consumer import BlockConsumer, LabelBlock
from .journal import BlockJournal, journal_key

__all__ = ["BlockConsumer", "BlockJournal", "BlockStitcher", "FinishedBlock", "LabelBlock", "journal_key"]
