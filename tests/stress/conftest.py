"""Stress harness: real handlers, a real fault-injecting collector, real threads.

Size: ``NAT_STRESS_SCALE`` (default 0.05, the CI size) multiplies the number of
events each producer thread sends; ``NAT_STRESS_SCALE=1`` is the full size of
the reliability issue (16 producers x 5,000 events per run).  Set
``NAT_STRESS_REPORT=path.jsonl`` to append each run's figures to a file (the
README's "Reliability" figures come from there); they are also printed, so
``-s`` shows them.

This folder is a package (``__init__.py``) so that this conftest does not
shadow ``tests/conftest.py``, which other test modules import as ``conftest``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest
from support.helpers import SETTLED_KEYS

from nat_telemetry.collector import Collector, Fault
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

DEFAULT_SCALE = 0.05
FULL_PRODUCERS = 16
FULL_EVENTS_PER_PRODUCER = 5_000

# The mix: 30 % 503, 5 % 429 with Retry-After, 5 % dropped
# connections, 2 % slow answers (slower than usual, well inside the request
# timeout: a slow answer is not a timeout).
SLOW_MS = 100
FAULT_MIX: tuple[Fault, ...] = (
    Fault(0.30, "fail", status=503),
    Fault(0.05, "fail", status=429, retry_after=1),
    Fault(0.05, "drop"),
    Fault(0.02, "slow", delay_ms=SLOW_MS),
)
# With this seed every kind of fault in FAULT_MIX is among the collector's
# first five decisions, so even the CI size meets each of them.
FAULT_SEED = 406

# Every accepted event is in exactly one of these; support.helpers' list.
BOOK_KEYS = SETTLED_KEYS


def stress_scale() -> float:
    """``NAT_STRESS_SCALE`` as a positive float (default: the CI size)."""
    raw = os.environ.get("NAT_STRESS_SCALE", "").strip()
    if not raw:
        return DEFAULT_SCALE
    value = float(raw)
    if not value > 0:
        raise ValueError(f"NAT_STRESS_SCALE must be > 0, got {raw!r}")
    return value


def events_per_producer() -> int:
    return max(20, round(FULL_EVENTS_PER_PRODUCER * stress_scale()))


def stress_policy(max_retries: int = 3) -> RetryPolicy:
    """Short backoff (5-50 ms) and a 0.1 s cap on Retry-After, so a run takes seconds."""
    return RetryPolicy(max_retries, backoff_base=0.005, backoff_max=0.05, retry_after_max=0.1)


# ------------------------------------------------------------ identities


def identity(producer: int, index: int) -> tuple[str, int]:
    """(command, duration_ms): unique per event, readable back from a stored row."""
    return f"p{producer}", producer * 1_000_000 + index


def make_event(producer: int, index: int) -> CliCommandEvent:
    command, duration = identity(producer, index)
    return CliCommandEvent(command=command, subcommand="stress", task_status="success",
                           duration_ms=duration, exit_code=0, python_version="3.11.7")


def row_identity(row: dict[str, Any]) -> tuple[str, int]:
    parameters = row["parameters"]
    return parameters["command"], parameters["durationMs"]


# --------------------------------------------------------------- checks


def imbalance(stats: dict[str, int]) -> int:
    """``enqueued`` minus everything it must be split into (0 when the books balance)."""
    return stats["enqueued"] - sum(stats[key] for key in BOOK_KEYS)


def total_stats(handlers: Sequence[NATTelemetryHandler]) -> dict[str, int]:
    total: dict[str, int] = {}
    for handler in handlers:
        for key, value in handler.stats().items():
            total[key] = total.get(key, 0) + value
    return total


def new_threads_alive(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def wait_for_threads_to_end(before: set[threading.Thread], timeout: float = 10.0) -> list[str]:
    """Poll until every thread started since ``before`` has ended; the names left."""
    deadline = time.monotonic() + timeout
    while True:
        left = new_threads_alive(before)
        if not left or time.monotonic() >= deadline:
            return sorted(t.name for t in left)
        time.sleep(0.01)


# ------------------------------------------------------------ machinery


class Producers:
    """``count`` threads running ``body(producer_id)``; any exception is kept, not lost."""

    def __init__(self, count: int, body: Callable[[int], None]) -> None:
        self.errors: list[tuple[int, BaseException]] = []
        self._lock = threading.Lock()
        self._body = body
        self._go = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), name=f"stress-producer-{n}")
                        for n in range(count)]

    def _run(self, producer: int) -> None:
        self._go.wait()
        try:
            self._body(producer)
        except BaseException as exc:  # reported by the test
            with self._lock:
                self.errors.append((producer, exc))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        self._go.set()  # all at once, so they really contend

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        assert not stuck, f"producers still running after {timeout}s: {stuck}"


class StatsMonitor(threading.Thread):
    """Samples every handler's ``stats()`` while the run goes on, checking the books each time."""

    def __init__(self, handlers: Sequence[NATTelemetryHandler]) -> None:
        super().__init__(name="stress-monitor", daemon=True)
        self.handlers = list(handlers)
        self.samples = 0
        self.violations: list[dict[str, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for handler in self.handlers:
                stats = handler.stats()
                self.samples += 1
                if imbalance(stats) != 0 or min(stats.values()) < 0:
                    self.violations.append(stats)
            self._stop_event.wait(0.001)

    def finish(self) -> None:
        self._stop_event.set()
        self.join(10)
        assert not self.is_alive()
        assert not self.violations, f"{len(self.violations)} unbalanced samples, first: " \
                                    f"{self.violations[0]}"
        assert self.samples >= 3 * len(self.handlers), self.samples


@dataclasses.dataclass
class RunFigures:
    """What one stress run did, for the assertions and the README."""

    name: str
    producers: int
    handlers: int
    events_per_producer: int
    attempted: int
    seconds: float
    stats: dict[str, int]
    collector: dict[str, Any]
    stored_rows: int
    distinct_stored: int
    duplicates: int
    samples: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def publish(self) -> None:
        record = dataclasses.asdict(self)
        record["scale"] = stress_scale()
        line = json.dumps(record, sort_keys=True, default=str)
        print(f"\nSTRESS {line}")
        target = os.environ.get("NAT_STRESS_REPORT")
        if target:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def reconcile(
    name: str,
    handlers: Sequence[NATTelemetryHandler],
    collector: Collector,
    *,
    attempted: set[tuple[str, int]],
    session_of: dict[str, str],
    seconds: float,
    producers: int,
    samples: int = 0,
) -> RunFigures:
    """The end-of-run checks shared by every stress test; returns the figures.

    ``attempted``: the identity of every event a producer enqueued;
    ``session_of``: command (i.e. producer) -> session id of its handler.
    """
    for handler in handlers:
        stats = handler.stats()
        assert imbalance(stats) == 0, stats
        assert stats["pending"] == 0 and stats["dlq"] == 0, stats
        assert stats["dropped_disabled"] == stats["dropped_invalid"] == 0, stats
        worker = handler._worker
        assert worker is None or not worker.is_alive(), "a worker outlived stop()"
    total = total_stats(handlers)
    assert total["enqueued"] == len(attempted), (total, len(attempted))

    counts = collector.counts()
    rows = collector.rows()
    stored = [row_identity(row) for row in rows]
    distinct = set(stored)
    # Nothing but what was enqueued, each through the handler it was given to.
    assert distinct <= attempted, sorted(distinct - attempted)[:5]
    wrong_session = [row for row in rows
                     if row["session_id"] != session_of[row["parameters"]["command"]]]
    assert not wrong_session, wrong_session[:3]

    # The collector's books: one bucket per request, nothing rejected or broken.
    buckets = (counts["accepted_requests"] + sum(counts["rejected"].values())
               + sum(counts["errors"].values()) + counts["faults"]["fail"]
               + counts["faults"]["drop"] + counts["faults"]["drop_after_store"])
    assert buckets == counts["requests"], counts
    assert sum(counts["rejected"].values()) == 0, counts["rejected"]
    assert sum(counts["errors"].values()) == 0, counts["errors"]

    # At least once, never a silent loss: every event the handlers count as
    # sent was answered 2xx by the collector, and is stored; every other row is
    # from a request the collector stored and then dropped without answering.
    assert counts["accepted_events"] == total["sent"], (counts, total)
    assert len(rows) == counts["stored_events"] == total["sent"] + counts[
        "stored_then_dropped_events"], (len(rows), counts, total)
    assert total["sent"] <= len(distinct) <= len(rows)
    duplicates = len(rows) - len(distinct)
    assert duplicates <= counts["stored_then_dropped_events"]
    if counts["faults"]["drop_after_store"] == 0:
        assert counts["stored_then_dropped_events"] == 0
        assert len(rows) == len(distinct) == total["sent"]

    return RunFigures(
        name=name, producers=producers, handlers=len(handlers),
        events_per_producer=events_per_producer(), attempted=len(attempted),
        seconds=round(seconds, 3), stats=total, collector=counts, stored_rows=len(rows),
        distinct_stored=len(distinct), duplicates=duplicates, samples=samples,
    )


# ------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_thread_died() -> Iterator[None]:
    """Fails the test if any thread (a worker, a collector thread) died of an exception."""
    died: list[str] = []
    previous = threading.excepthook

    def record(args: Any) -> None:
        died.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: "
                     f"{args.exc_value}")
        previous(args)

    threading.excepthook = record
    try:
        yield
    finally:
        threading.excepthook = previous
    assert not died, died


@pytest.fixture
def threads_before() -> set[threading.Thread]:
    """The threads alive when the test began (to find the ones it left behind)."""
    return set(threading.enumerate())


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """``start_collector(**options)``: a started Collector on its own database file."""
    started: list[Collector] = []

    def factory(**options: Any) -> Collector:
        collector = Collector(tmp_path / f"stress-{len(started)}.db", **options)
        started.append(collector)
        return collector.start()

    yield factory
    for collector in started:
        collector.stop()


@pytest.fixture
def stress_handlers() -> Iterator[Callable[..., NATTelemetryHandler]]:
    """``stress_handlers(endpoint, **overrides)``: handlers tuned to run in seconds.

    Timed flush every 50 ms, threshold 50, batches of 100, a 5 s request
    timeout (far above the slow answers), a 10 s stop budget and 5-50 ms
    backoff.  Each is stopped at teardown even when the test failed.
    """
    built: list[NATTelemetryHandler] = []

    def factory(endpoint: str, **overrides: Any) -> NATTelemetryHandler:
        options: dict[str, Any] = {
            "flush_interval_seconds": 0.05,
            "max_queue_size": 50,
            "max_batch_size": 100,
            "request_timeout_seconds": 5.0,
            "shutdown_timeout_seconds": 10.0,
            "retry_policy": stress_policy(),
        }
        options.update(overrides)
        handler = NATTelemetryHandler(endpoint=endpoint, **options)
        built.append(handler)
        return handler

    yield factory
    for handler in built:
        handler.stop(timeout=2)
