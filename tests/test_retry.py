"""What a status means (nat_telemetry.transport), Retry-After and backoff (nat_telemetry.retry)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from nat_telemetry.retry import RetryPolicy, parse_retry_after
from nat_telemetry.transport import Outcome, classify_status

NOW = datetime(2024, 5, 17, 12, 0, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------- classify_status


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_sent(status: int) -> None:
    assert classify_status(status) == Outcome.SENT


@pytest.mark.parametrize("status", [300, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 409,
                                    410, 422, 451, 499, 100, 600])
def test_other_statuses_are_rejected(status: int) -> None:
    assert classify_status(status) == Outcome.REJECTED


def test_413_is_too_large() -> None:
    assert classify_status(413) == Outcome.TOO_LARGE


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status: int) -> None:
    assert classify_status(status) == Outcome.TRANSIENT


def test_outcomes_are_plain_strings() -> None:
    assert (Outcome.SENT, Outcome.SKIPPED, Outcome.REJECTED, Outcome.TOO_LARGE,
            Outcome.TRANSIENT, Outcome.UNUSABLE) == (
        "sent", "skipped", "rejected", "too_large", "transient", "unusable")
    assert all(type(classify_status(status)) is str for status in (200, 413, 503, 404))


# -------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), (" 7 ", 7.0), ("0", 0.0), ("120", 120.0), ("", None), ("   ", None),
     (None, None), ("abc", None), ("-3", None), ("1.5", None), ("5s", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW.timestamp()) == expected


def test_parse_retry_after_http_date_ahead() -> None:
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert header.endswith("GMT")
    assert parse_retry_after(header, now=NOW.timestamp()) == pytest.approx(30.0)


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    header = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(header, now=NOW.timestamp()) == 0.0


def test_parse_retry_after_date_without_zone_is_ignored() -> None:
    assert parse_retry_after("Fri, 17 May 2024 12:00:30 -0000", now=NOW.timestamp()) is None


def test_parse_retry_after_date_defaults_to_the_clock() -> None:
    ahead = datetime.now(timezone.utc) + timedelta(seconds=60)
    seconds = parse_retry_after(format_datetime(ahead, usegmt=True))
    assert seconds is not None and 55 <= seconds <= 60


# ---------------------------------------------------------------- RetryPolicy


def _lowest(lo: float, hi: float) -> float:
    return lo


def _highest(lo: float, hi: float) -> float:
    return hi


def test_delay_grows_exponentially_within_jitter_bounds() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0, rng=random.Random(7).uniform)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.delay(failures) <= ceiling


def test_delay_bounds_are_exact_at_the_extremes() -> None:
    low = RetryPolicy(backoff_base=0.5, backoff_max=30.0, rng=_lowest)
    high = RetryPolicy(backoff_base=0.5, backoff_max=30.0, rng=_highest)
    assert [high.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [low.delay(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]


def test_delay_is_jittered() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=1.0)
    assert len({policy.delay(1) for _ in range(20)}) > 1


def test_delay_is_capped_at_backoff_max() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=3.0, rng=_highest)
    assert policy.delay(10) == 3.0
    assert policy.delay(1000) == 3.0  # no overflow for absurd failure counts
    jittered = RetryPolicy(backoff_base=0.5, backoff_max=3.0)
    assert all(1.5 <= jittered.delay(50) <= 3.0 for _ in range(50))


def test_delay_of_zeroth_failure_is_the_base() -> None:
    assert RetryPolicy(backoff_base=0.5, rng=_highest).delay(0) == 0.5


def test_retry_after_wins_when_longer() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0, rng=_highest)
    assert policy.delay(1, "10") == 10.0
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert policy.delay(1, header, now=NOW.timestamp()) == pytest.approx(30.0)


def test_backoff_wins_when_retry_after_is_shorter_or_unreadable() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0, rng=_highest)
    assert policy.delay(4, "1") == 4.0
    assert policy.delay(4, "0") == 4.0
    assert policy.delay(4, "soon") == 4.0
    assert policy.delay(4, None) == 4.0


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0, retry_after_max=60.0, rng=_highest)
    assert policy.delay(1, "86400") == 60.0
    far = format_datetime(NOW + timedelta(days=3), usegmt=True)
    assert policy.delay(1, far, now=NOW.timestamp()) == 60.0
    assert RetryPolicy(rng=_highest).delay(1, "86400") == 300.0  # default cap


def test_exhausted() -> None:
    policy = RetryPolicy(max_retries=2)
    assert [policy.exhausted(n) for n in range(5)] == [False, False, False, True, True]
    assert RetryPolicy(max_retries=0).exhausted(1)
    assert not RetryPolicy(max_retries=0).exhausted(0)


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.backoff_base, policy.backoff_max,
            policy.retry_after_max) == (3, 0.5, 30.0, 300.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"backoff_base": 0},
        {"backoff_base": -1.0},
        {"backoff_base": 2.0, "backoff_max": 1.0},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("value", ["²", "-5", "1e999", "9" * 5000, "\x00", "Tue, 99 Foo 2026",
                                   "١٢", "  ", "inf", "nan", "Wed, 21 Oct 10000 07:28:00 GMT"])
def test_retry_after_of_any_text_never_raises(value: str) -> None:
    answer = parse_retry_after(value)
    assert answer is None or answer >= 0
    policy = RetryPolicy(3)
    assert 0 <= policy.delay(1, value) <= policy.retry_after_max
