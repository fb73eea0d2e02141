"""Calls to remote services (object stores, DICOMweb servers) tried again when the failure may
pass: exponential backoff with jitter, a bounded number of tries, and a tally of the retries that
the job reports per item and in total (``summary.json``).

The delay before retry *k* (1-based) is drawn uniformly from ``[d/2, d]`` with
``d = min(first × 2^(k-1), cap)`` ("equal jitter"): never shorter than half the backoff, so a
throttling server gets its pause, and spread so that many workers do not come back in step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from ..errors import first_line

log = logging.getLogger("geoseg")

_T = TypeVar("_T")

#: Seconds before the first retry, and the most any one wait takes.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0

#: The kinds of calls that are tallied.
KINDS = ("read", "upload", "dicomweb")


def backoff(retry: int, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S,
            rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): equal jitter on an exponential."""
    if retry < 1:
        raise ValueError(f"retry counts from 1, got {retry}")
    full = min(first * 2 ** (retry - 1), cap)
    return (rng or random).uniform(full / 2, full)


class RetryTally:
    """Retries done in this process, by kind and by key (an item's path or name); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}

    def add(self, kind: str, key: str) -> None:
        """Count one retry of a ``kind`` call made for ``key``."""
        if kind not in KINDS:
            raise ValueError(f"unknown retry kind {kind!r}; one of {', '.join(KINDS)}")
        with self._lock:
            self._counts.setdefault(key, Counter())[kind] += 1

    def take(self, *keys: str) -> Counter[str]:
        """The retries counted for ``keys`` (summed), forgotten here."""
        out: Counter[str] = Counter()
        with self._lock:
            for key in keys:
                out.update(self._counts.pop(key, Counter()))
        return out


#: This process's tally (each Ray actor has its own; what it counted travels back with its results).
TALLY = RetryTally()


def retrying(fn: Callable[[], _T], *, what: str, kind: str, key: str, attempts: int,
             transient: Callable[[BaseException], bool], sleep: Callable[[float], None] = time.sleep) -> _T:
    """``fn()``, tried up to ``attempts`` times while it fails in a way ``transient`` says may
    pass, with :func:`backoff` between tries; each retry is logged and counted in :data:`TALLY`.

    Raises:
        whatever ``fn`` raised last, or at once when ``transient`` says it will not pass.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not transient(exc):
                raise
            delay = backoff(attempt)
            log.warning("%s failed (%s); try %d of %d in %.1f s", what, first_line(exc)[:200], attempt + 1, attempts,
                        delay)
            TALLY.add(kind, key)
            sleep(delay)
    raise AssertionError("unreachable")


__all__ = ["FIRST_DELAY_S", "KINDS", "MAX_DELAY_S", "TALLY", "RetryTally", "backoff", "retrying"]
