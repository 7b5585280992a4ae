"""Every drop path: counted in ``stats()`` and logged once, at debug level, with its reason.

Each scenario makes events take exactly one drop path, against a real
loopback endpoint, and checks that (a) the counter moved by the number of
events dropped, (b) the events are accounted for by log records on the
``nat_telemetry`` logger that name the reason - one record per drop, whose
count adds up to the counter - and name no other drop reason, and (c) nothing
was logged above debug.  The last tests cover failures the review found: a
worker that died on a very long wait, and a batch stranded by a retry policy
that raises.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint, Reply
from support.helpers import event, wait_until

from nat_telemetry import config
from nat_telemetry.events import TelemetryEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

MakeHandler = Callable[..., NATTelemetryHandler]

DROP_REASONS = (
    "dropped_disabled", "dropped_invalid", "dropped_buffer_full", "dropped_rejected",
    "dropped_too_large", "dropped_retries_exhausted", "dropped_dlq_full", "dropped_shutdown",
)
_COUNT = re.compile(r"^(\d+) telemetry event\(s\) dropped: (\w+)$")
_SINGLE = re.compile(r"^telemetry event dropped: (\w+)$")


class Records:
    """The ``nat_telemetry`` logger's records of the test's call phase (debug and up)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __iter__(self) -> Iterator[logging.LogRecord]:
        # caplog.records is read anew each time: it is a new list per test phase.
        return iter(list(self._caplog.records))


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Records]:
    with caplog.at_level(logging.DEBUG, logger="nat_telemetry"):
        yield Records(caplog)


def drop_log(records: Records) -> dict[str, list[int]]:
    """reason -> the number of events each drop record accounts for."""
    found: dict[str, list[int]] = {}
    for record in records:
        if record.name != "nat_telemetry":
            continue
        message = record.getMessage()
        named = [reason for reason in DROP_REASONS if reason in message]
        if not named:
            continue
        assert len(named) == 1, message  # one reason per record
        counted, single = _COUNT.match(message), _SINGLE.match(message)
        assert counted or single, f"unexpected wording: {message!r}"
        number = int(counted.group(1)) if counted else 1
        found.setdefault(named[0], []).append(number)
    return found


def assert_logged_once(records: Records, handler: NATTelemetryHandler,
                       reason: str, *, events: int = 1, log_records: int = 1) -> None:
    stats = handler.stats()
    assert stats[reason] == events, stats
    log = drop_log(records)
    assert set(log) == {reason}, log  # and no other drop reason
    assert sum(log[reason]) == events and len(log[reason]) == log_records, log
    above_debug = [r for r in records if r.name == "nat_telemetry" and r.levelno > logging.DEBUG]
    assert not above_debug, [r.getMessage() for r in above_debug]


def test_dropped_disabled(make_handler: MakeHandler, records: Records,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    handler = make_handler()
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", False)
    handler.enqueue(event())
    assert_logged_once(records, handler, "dropped_disabled")
    assert handler.stats()["enqueued"] == 0


def test_dropped_invalid(make_handler: MakeHandler, records: Records) -> None:
    handler = make_handler()
    bogus: Any = {"command": "run"}
    handler.enqueue(bogus)
    assert_logged_once(records, handler, "dropped_invalid")
    assert handler.stats()["enqueued"] == 0


def test_dropped_buffer_full(make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
                             records: Records) -> None:
    handler = make_handler(endpoint=loopback_endpoint.url, max_buffer_size=2, max_queue_size=10)
    for n in range(5):
        handler.enqueue(event(duration_ms=n))
    # One record per event turned away (each was its own enqueue call).
    assert_logged_once(records, handler, "dropped_buffer_full", events=3, log_records=3)
    assert handler.stats()["pending"] == 2


@pytest.mark.parametrize(("status", "reason"), [(400, "dropped_rejected"),
                                                (422, "dropped_rejected"),
                                                (413, "dropped_too_large")])
def test_answers_that_drop(make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
                           records: Records, status: int, reason: str) -> None:
    loopback_endpoint.set_default(status)
    handler = make_handler(endpoint=loopback_endpoint.url)
    handler.enqueue(event())
    assert handler.flush(timeout=5)
    assert_logged_once(records, handler, reason)


def test_413_drops_each_event_once(make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
                                   records: Records) -> None:
    loopback_endpoint.set_default(413)
    handler = make_handler(endpoint=loopback_endpoint.url)
    for n in range(4):
        handler.enqueue(event(duration_ms=n))
    assert handler.flush(timeout=5)
    # Split down to single events, each of them dropped (and logged) once.
    assert_logged_once(records, handler, "dropped_too_large", events=4, log_records=4)
    assert loopback_endpoint.requests == 1 + 2 + 4


def test_dropped_retries_exhausted(make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
                                   records: Records) -> None:
    loopback_endpoint.set_default(503)
    handler = make_handler(endpoint=loopback_endpoint.url, max_retries=1)
    for n in range(3):
        handler.enqueue(event(duration_ms=n))
    # A failure, one retry after the backoff, a second failure: given up, together.
    assert handler.flush(timeout=5)
    assert handler.stats()["dlq"] == 0 and handler.stats()["retries"] == 3
    assert_logged_once(records, handler, "dropped_retries_exhausted", events=3)


def test_dropped_dlq_full(make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
                          records: Records) -> None:
    loopback_endpoint.set_default(503)
    slow = RetryPolicy(3, backoff_base=5.0, backoff_max=5.0)
    handler = make_handler(endpoint=loopback_endpoint.url, max_dlq_size=1, retry_policy=slow)
    for n in range(3):
        handler.enqueue(event(duration_ms=n))
    handler.flush(timeout=1)  # the backoff ends past the deadline: one attempt
    stats = handler.stats()
    assert stats["dlq"] == 1 and stats["retries"] == 3
    assert_logged_once(records, handler, "dropped_dlq_full", events=2)


def test_dropped_shutdown_after_stop(make_handler: MakeHandler,
                                     records: Records) -> None:
    handler = make_handler()
    handler.start()
    handler.stop()
    handler.enqueue(event())
    assert_logged_once(records, handler, "dropped_shutdown")
    assert handler.stats()["enqueued"] == 1


def test_dropped_shutdown_when_the_final_flush_fails(
    make_handler: MakeHandler, refused_url: str, records: Records
) -> None:
    handler = make_handler(endpoint=refused_url)
    for n in range(3):
        handler.enqueue(event(duration_ms=n))
    handler.stop(timeout=5)
    assert_logged_once(records, handler, "dropped_shutdown", events=3)


def test_dropped_shutdown_when_stop_abandons_a_post(
    make_handler: MakeHandler, black_hole: BlackHole, records: Records
) -> None:
    # stop() gives up on a POST still waiting for its answer; the events are
    # counted (and logged) once that POST times out.
    handler = make_handler(endpoint=black_hole.url, max_queue_size=2,
                           request_timeout_seconds=1.0)
    handler.enqueue(event(duration_ms=1))
    handler.enqueue(event(duration_ms=2))
    assert wait_until(lambda: handler._box.in_flight == 2)
    handler.stop(timeout=0.05)
    assert handler.stats()["pending"] == 2  # still in flight: not yet known
    assert wait_until(lambda: handler.stats()["dropped_shutdown"] == 2, timeout=5)
    assert_logged_once(records, handler, "dropped_shutdown", events=2)
    assert handler.stats()["pending"] == 0


def test_a_payload_that_cannot_be_built_is_dropped_rejected(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint, records: Records
) -> None:
    class Broken(TelemetryEvent):
        _event_name = "broken_for_test"
        name: str

        def model_dump(self, by_alias: bool = False) -> dict[str, Any]:
            raise RuntimeError("cannot dump")

    handler = make_handler(endpoint=loopback_endpoint.url)
    handler.enqueue(Broken(name="x"))
    assert handler.flush(timeout=5)
    assert_logged_once(records, handler, "dropped_rejected")
    assert loopback_endpoint.requests == 0


# ------------------------------------------------------ found by the review


def test_an_unbounded_flush_interval_keeps_the_worker_alive(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    """"Never flush on a timer": the worker used to die on an overflowing wait."""
    died: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)  # type: ignore[assignment]
    try:
        for interval in (float("inf"), 1e300):
            handler = make_handler(endpoint=loopback_endpoint.url, flush_interval_seconds=interval)
            handler.enqueue(event(duration_ms=7))
            worker = handler._worker
            assert worker is not None
            assert not wait_until(lambda w=worker: not w.is_alive(), timeout=0.3)
            assert handler.flush(timeout=5)  # would wait forever with a dead worker
            handler.stop(timeout=float("inf"))
            assert handler.stats()["sent"] == 1
    finally:
        threading.excepthook = previous
    assert died == []


def test_a_huge_retry_after_parks_the_worker_without_killing_it(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    loopback_endpoint.script(Reply(429, {"Retry-After": "9" * 400}))  # float() of it is inf
    policy = RetryPolicy(3, backoff_base=0.01, backoff_max=0.05, retry_after_max=float("inf"))
    handler = make_handler(endpoint=loopback_endpoint.url, retry_policy=policy)
    handler.enqueue(event(duration_ms=1))
    handler.flush(timeout=5)
    assert handler.stats()["dlq"] == 1
    worker = handler._worker
    assert worker is not None
    assert not wait_until(lambda: not worker.is_alive(), timeout=0.3)
    assert handler.flush(timeout=5)  # flush() ignores the backoff
    assert handler.stats()["sent"] == 1


def test_a_retry_policy_that_raises_does_not_strand_the_batch(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint, records: Records
) -> None:
    class Broken(RetryPolicy):
        def exhausted(self, retry_count: int) -> bool:
            raise RuntimeError("policy bug")

    loopback_endpoint.set_default(503)
    handler = make_handler(endpoint=loopback_endpoint.url,
                           retry_policy=Broken(3, backoff_base=0.01, backoff_max=0.05))
    handler.enqueue(event())
    handler.flush(timeout=5)
    # Given up (it cannot be retried safely) rather than left "pending" forever.
    assert handler.stats()["pending"] == 0
    assert_logged_once(records, handler, "dropped_retries_exhausted")
    handler.stop()
    assert handler.stats()["pending"] == 0
