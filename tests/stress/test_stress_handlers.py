"""Many threads, one or many handlers, a collector that fails a third of the time.

Every run ends with the same reconciliation (``reconcile`` in this folder's
conftest): the handler's books balance, nothing is left pending or in the
dead-letter queue, every stored event is one a producer enqueued, every event
counted ``sent`` was stored, and duplicates come only from requests the
collector stored and then dropped.  A monitor thread checks the books on every
``stats()`` sample it takes while the run goes on.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest
from support.helpers import wait_until

from nat_telemetry.collector import Collector
from nat_telemetry.handler import NATTelemetryHandler

from .conftest import (
    FAULT_MIX,
    FAULT_SEED,
    FULL_PRODUCERS,
    Producers,
    StatsMonitor,
    events_per_producer,
    identity,
    imbalance,
    make_event,
    reconcile,
    stress_scale,
    wait_for_threads_to_end,
)

pytestmark = pytest.mark.stress

StartCollector = Callable[..., Collector]
MakeHandler = Callable[..., NATTelemetryHandler]


def drain_timeout() -> float:
    return max(60.0, 400.0 * stress_scale())


def nothing_left(handlers: list[NATTelemetryHandler]) -> bool:
    return all(h.stats()["pending"] == 0 and h.stats()["dlq"] == 0 for h in handlers)


def assert_every_fault_happened(counts: dict) -> None:
    faults, statuses = counts["faults"], counts["fail_statuses"]
    assert statuses.get(503, 0) > 0 and statuses.get(429, 0) > 0, counts
    assert faults["drop"] + faults["drop_after_store"] > 0, counts
    assert faults["delay"] > 0, counts  # the slow answers


@pytest.mark.parametrize("drop_after_store", [False, True],
                         ids=["drops-store-nothing", "drops-after-store"])
def test_sixteen_producers_one_handler(
    start_collector: StartCollector, stress_handlers: MakeHandler,
    threads_before: set[threading.Thread], drop_after_store: bool,
) -> None:
    per = events_per_producer()
    collector = start_collector(faults=FAULT_MIX, drop_after_store=drop_after_store,
                                seed=FAULT_SEED)
    # The buffer holds a whole run: this run is about delivery under faults.
    handler = stress_handlers(collector.url, session_id="stress-one",
                              max_buffer_size=FULL_PRODUCERS * per)
    attempted = {identity(p, i) for p in range(FULL_PRODUCERS) for i in range(per)}

    def produce(producer: int) -> None:
        for i in range(per):
            handler.enqueue(make_event(producer, i))

    producers = Producers(FULL_PRODUCERS, produce)
    monitor = StatsMonitor([handler])
    started = time.monotonic()
    monitor.start()
    producers.start()
    producers.join(timeout=drain_timeout())
    assert wait_until(lambda: nothing_left([handler]), timeout=drain_timeout(), interval=0.01)
    handler.stop()
    seconds = time.monotonic() - started
    monitor.finish()
    assert not producers.errors, producers.errors

    figures = reconcile(
        "one-handler" + ("-drop-after-store" if drop_after_store else ""), [handler], collector,
        attempted=attempted, session_of={f"p{p}": "stress-one" for p in range(FULL_PRODUCERS)},
        seconds=seconds, producers=FULL_PRODUCERS, samples=monitor.samples,
    )
    collector.stop()
    assert wait_for_threads_to_end(threads_before) == []

    stats = figures.stats
    assert_every_fault_happened(figures.collector)
    assert stats["retries"] > 0
    # Nothing is dropped for room here; what is not sent gave up after its retries.
    assert stats["dropped_buffer_full"] == stats["dropped_dlq_full"] == 0, stats
    assert stats["dropped_rejected"] == stats["dropped_too_large"] == 0, stats
    assert stats["dropped_shutdown"] == 0, stats  # drained before stop
    assert stats["sent"] + stats["dropped_retries_exhausted"] == len(attempted), stats
    if drop_after_store:
        assert figures.collector["faults"]["drop_after_store"] > 0
        assert figures.collector["faults"]["drop"] == 0
    else:
        assert figures.collector["faults"]["drop_after_store"] == 0
        assert figures.duplicates == 0
    figures.publish()


def test_sixteen_producers_eight_handlers(
    start_collector: StartCollector, stress_handlers: MakeHandler,
    threads_before: set[threading.Thread],
) -> None:
    per = events_per_producer()
    handler_count = 8
    collector = start_collector(faults=FAULT_MIX, drop_after_store=True, seed=FAULT_SEED)
    # Small caps, so that the buffer and the dead-letter queue overflow under
    # concurrency too: half of what each handler receives fits its buffer, and
    # a failed batch (50) does not fit the dead-letter queue (40).
    handlers = [stress_handlers(collector.url, session_id=f"stress-h{n}", max_batch_size=50,
                                max_buffer_size=per, max_dlq_size=40)
                for n in range(handler_count)]
    attempted = {identity(p, i) for p in range(FULL_PRODUCERS) for i in range(per)}

    def produce(producer: int) -> None:
        handler = handlers[producer % handler_count]
        for i in range(per):
            handler.enqueue(make_event(producer, i))

    producers = Producers(FULL_PRODUCERS, produce)
    monitor = StatsMonitor(handlers)
    started = time.monotonic()
    monitor.start()
    producers.start()
    producers.join(timeout=drain_timeout())
    assert wait_until(lambda: nothing_left(handlers), timeout=drain_timeout(), interval=0.01)
    # All eight stop at once, from eight threads.
    stoppers = [threading.Thread(target=h.stop, name=f"stress-stopper-{n}")
                for n, h in enumerate(handlers)]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(30)
    assert not any(thread.is_alive() for thread in stoppers)
    seconds = time.monotonic() - started
    monitor.finish()
    assert not producers.errors, producers.errors

    figures = reconcile(
        "eight-handlers", handlers, collector, attempted=attempted,
        session_of={f"p{p}": f"stress-h{p % handler_count}" for p in range(FULL_PRODUCERS)},
        seconds=seconds, producers=FULL_PRODUCERS, samples=monitor.samples,
    )
    collector.stop()
    assert wait_for_threads_to_end(threads_before) == []

    stats = figures.stats
    assert_every_fault_happened(figures.collector)
    assert stats["sent"] > 0 and stats["retries"] > 0
    # Each handler's books, not just the sum: every one of them sent something.
    assert all(h.stats()["sent"] > 0 for h in handlers)
    assert stats["dropped_shutdown"] == stats["dropped_rejected"] == 0, stats
    figures.publish()


def test_flush_and_stop_from_other_threads_while_producing(
    start_collector: StartCollector, stress_handlers: MakeHandler,
    threads_before: set[threading.Thread],
) -> None:
    """Producers in three phases: before stop(), during it, and after it returned.

    Two threads call flush() in a loop the whole time; two threads call
    stop() at the same moment, once half the events are in and some were
    delivered.  Events enqueued after stop() returned are all counted
    ``dropped_shutdown``; after it, ``sent`` never moves again.
    """
    per = events_per_producer()
    tail = max(5, per // 10)  # enqueued once stop() has returned
    before_stop = (per - tail) // 2
    collector = start_collector(faults=FAULT_MIX, seed=FAULT_SEED)
    # A buffer smaller than the run: buffer-full drops happen under contention.
    handler = stress_handlers(collector.url, session_id="stress-stop",
                              max_buffer_size=FULL_PRODUCERS * per // 4)
    attempted = {identity(p, i) for p in range(FULL_PRODUCERS) for i in range(per)}
    halfway = threading.Barrier(FULL_PRODUCERS + 2)
    stop_together = threading.Barrier(2)
    stopped = threading.Event()
    stop_returned: list[float] = []
    snapshots: dict[str, dict[str, int]] = {}
    flush_results: list[bool] = []
    helpers_errors: list[BaseException] = []
    after_stop_calls = [0] * FULL_PRODUCERS

    def produce(producer: int) -> None:
        for i in range(before_stop):
            handler.enqueue(make_event(producer, i))
        halfway.wait(timeout=60)
        for i in range(before_stop, per - tail):
            handler.enqueue(make_event(producer, i))
        assert stopped.wait(timeout=60)
        for i in range(per - tail, per):
            handler.enqueue(make_event(producer, i))
            after_stop_calls[producer] += 1

    def stopper(first: bool) -> None:
        try:
            halfway.wait(timeout=60)
            # Let the worker and the flushers deliver some first.
            assert wait_until(lambda: handler.stats()["sent"] > 0, timeout=30)
            stop_together.wait(timeout=60)
            handler.stop()
            stop_returned.append(time.monotonic())
            if stop_together.wait(timeout=60) == 0:  # both have returned
                snapshots["after_stop"] = handler.stats()
                stopped.set()
        except BaseException as exc:  # reported by the test
            helpers_errors.append(exc)
            stopped.set()

    def flusher() -> None:
        try:
            while not stopped.is_set():
                flush_results.append(handler.flush(timeout=0.5))
                stopped.wait(0.001)  # while stop() runs, flush() returns at once
            for _ in range(3):  # flush() after stop(): answers at once
                began = time.monotonic()
                handler.flush(timeout=5)
                assert time.monotonic() - began < 1.0
        except BaseException as exc:  # reported by the test
            helpers_errors.append(exc)

    helpers = ([threading.Thread(target=stopper, args=(n == 0,), name=f"stress-stop-{n}")
                for n in range(2)]
               + [threading.Thread(target=flusher, name=f"stress-flush-{n}") for n in range(2)])
    producers = Producers(FULL_PRODUCERS, produce)
    monitor = StatsMonitor([handler])
    started = time.monotonic()
    monitor.start()
    for thread in helpers:
        thread.start()
    producers.start()
    producers.join(timeout=drain_timeout())
    for thread in helpers:
        thread.join(30)
    assert not any(thread.is_alive() for thread in helpers)
    seconds = time.monotonic() - started
    monitor.finish()
    assert not producers.errors, producers.errors
    assert not helpers_errors, helpers_errors
    assert len(stop_returned) == 2 and len(flush_results) > 0

    final = handler.stats()
    after_stop = snapshots["after_stop"]
    # stop() settled everything: only events that a producer was putting in at
    # that very moment can still show as pending, one per producer at most.
    assert after_stop["dlq"] == 0 and after_stop["pending"] <= FULL_PRODUCERS, after_stop
    assert imbalance(after_stop) == 0
    for key in final:
        if key not in ("enqueued", "dropped_shutdown", "pending"):
            assert final[key] == after_stop[key], (key, after_stop, final)
    late = final["enqueued"] - after_stop["enqueued"]
    assert late >= sum(after_stop_calls) == FULL_PRODUCERS * tail
    assert final["dropped_shutdown"] - after_stop["dropped_shutdown"] == late + after_stop[
        "pending"]

    figures = reconcile(
        "flush-stop-concurrently", [handler], collector, attempted=attempted,
        session_of={f"p{p}": "stress-stop" for p in range(FULL_PRODUCERS)},
        seconds=seconds, producers=FULL_PRODUCERS, samples=monitor.samples,
    )
    collector.stop()
    assert wait_for_threads_to_end(threads_before) == []
    assert figures.duplicates == 0
    figures.extra.update(flush_calls=len(flush_results),
                         flushes_that_emptied=sum(flush_results),
                         enqueued_after_stop=late)
    figures.publish()
