"""Retries of remote calls: backoff with jitter within its bounds, tries bounded, only transient
failures tried again, and each retry counted for its item."""

from __future__ import annotations

import random

import pytest

from geoseg_pipeline.storage.retry import MAX_DELAY_S, TALLY, RetryTally, backoff, retrying


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(0)
    for retry in range(1, 12):
        full = min(0.5 * 2 ** (retry - 1), MAX_DELAY_S)
        draws = [backoff(retry, rng=rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in draws)
        assert max(draws) - min(draws) > full / 4  # spread: workers do not come back in step
    with pytest.raises(ValueError, match="from 1"):
        backoff(0)


def test_transient_failures_are_retried_and_counted() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("dropped")
        return "ok"

    TALLY.take("item-a")
    assert retrying(flaky, what="upload x", kind="upload", key="item-a", attempts=4,
                    transient=lambda e: isinstance(e, ConnectionError), sleep=slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2 and slept[1] >= 0.5  # the second wait is the longer one
    assert TALLY.take("item-a") == {"upload": 2}
    assert TALLY.take("item-a") == {}  # taken once


def test_a_permanent_failure_is_raised_after_the_last_try() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        retrying(down, what="x", kind="read", key="k", attempts=3, transient=lambda e: True, sleep=lambda s: None)
    assert len(calls) == 3
    TALLY.take("k")


def test_a_failure_that_will_not_pass_is_raised_at_once() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise PermissionError("access denied")

    with pytest.raises(PermissionError):
        retrying(denied, what="x", kind="read", key="k2", attempts=5, transient=lambda e: False,
                 sleep=lambda s: None)
    assert len(calls) == 1 and TALLY.take("k2") == {}


def test_tally_sums_keys_and_refuses_unknown_kinds() -> None:
    tally = RetryTally()
    tally.add("read", "a")
    tally.add("read", "b")
    tally.add("dicomweb", "b")
    assert tally.take("a", "b") == {"read": 2, "dicomweb": 1}
    with pytest.raises(ValueError, match="unknown retry kind"):
        tally.add("nap", "a")
