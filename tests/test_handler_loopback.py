"""NATTelemetryHandler against real sockets: a loopback endpoint, a black hole
that never answers, a refused port; thresholds, timers, timeouts and threads."""

from __future__ import annotations

import threading
import time
import types
from typing import Callable

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint, Reply
from support.helpers import assert_balanced, event, ids, wait_until

from nat_telemetry import handler as handler_module
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

# Every test runs twice: with requests, and with urllib (requests hidden).
pytestmark = pytest.mark.usefixtures("dependency_mode")

MakeHandler = Callable[..., NATTelemetryHandler]


def _highest(lo: float, hi: float) -> float:
    return hi


def slow_policy(max_retries: int = 3, seconds: float = 5.0) -> RetryPolicy:
    return RetryPolicy(max_retries, backoff_base=seconds, backoff_max=seconds, rng=_highest)


def test_early_flush_at_exactly_max_queue_size(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    h = make_handler(endpoint=loopback_endpoint.url, flush_interval_seconds=60, max_queue_size=50)
    for i in range(49):
        h.enqueue(event(duration_ms=i))
    time.sleep(0.3)
    assert loopback_endpoint.requests == 0
    h.enqueue(event(duration_ms=49))
    assert wait_until(lambda: loopback_endpoint.requests >= 1, timeout=2.0)
    assert loopback_endpoint.batch_sizes() == [50]
    assert ids(loopback_endpoint.events) == list(range(50))
    assert wait_until(lambda: h.stats()["sent"] == 50)
    assert_balanced(h.stats())


def test_timed_flush_sends_without_flush_call(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    h = make_handler(endpoint=loopback_endpoint.url, flush_interval_seconds=0.2)
    started = time.monotonic()
    h.enqueue(event(duration_ms=1))
    assert wait_until(lambda: loopback_endpoint.requests >= 1, timeout=3.0)
    assert time.monotonic() - started >= 0.15  # the timer, not the threshold
    assert ids(loopback_endpoint.events) == [1]
    assert wait_until(lambda: h.stats()["sent"] == 1)
    h.enqueue(event(duration_ms=2))  # and again on the next tick
    assert wait_until(lambda: loopback_endpoint.requests >= 2, timeout=3.0)
    assert ids(loopback_endpoint.events) == [1, 2]


def test_many_threads_enqueue_concurrently_with_exact_counts(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    threads_count, per_thread = 16, 500
    total = threads_count * per_thread
    h = make_handler(endpoint=loopback_endpoint.url, request_timeout_seconds=5.0,
                     shutdown_timeout_seconds=5.0)
    batches: list[list[object]] = [
        [event(duration_ms=t * 1000 + i) for i in range(per_thread)] for t in range(threads_count)
    ]
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []
    snapshots: list[dict] = []

    def produce(batch: list[object]) -> None:
        try:
            barrier.wait(10)
            for n, item in enumerate(batch):
                h.enqueue(item)  # type: ignore[arg-type]
                if n % 100 == 0:
                    snapshots.append(h.stats())
        except BaseException as exc:
            failures.append(exc)

    producers = [threading.Thread(target=produce, args=(b,)) for b in batches]
    for t in producers:
        t.start()
    for t in producers:
        t.join(30)
    assert not failures
    assert not any(t.is_alive() for t in producers)
    for snapshot in snapshots:  # balanced at every instant, not just at the end
        assert_balanced(snapshot)
    assert h.flush(timeout=20) is True
    stats = h.stats()
    assert_balanced(stats)
    assert stats["enqueued"] == total
    assert stats["sent"] == total
    assert stats["dropped_buffer_full"] == 0
    received = ids(loopback_endpoint.events)
    assert len(received) == stats["sent"]
    assert sorted(received) == sorted(t * 1000 + i for t in range(threads_count)
                                      for i in range(per_thread))
    assert max(loopback_endpoint.batch_sizes()) <= h.max_batch_size
    # Per producer, events arrive in the order they were enqueued.
    for t in range(threads_count):
        own = [r for r in received if r // 1000 == t]
        assert own == sorted(own)


def test_stop_against_a_black_hole_is_bounded(
    make_handler: MakeHandler, black_hole: BlackHole
) -> None:
    h = make_handler(endpoint=black_hole.url, request_timeout_seconds=2.0)
    h.enqueue(event())
    started = time.monotonic()
    h.stop(timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 0.5 + 0.5
    stats = h.stats()
    assert_balanced(stats)
    assert stats["sent"] == 0
    assert stats["dropped_shutdown"] + stats["pending"] == 1
    # Whatever was in flight is settled once the worker's POST gives up.
    assert wait_until(lambda: h.stats()["pending"] == 0, timeout=3.0)
    stats = h.stats()
    assert_balanced(stats)
    assert stats["dropped_shutdown"] == 1


def test_stop_while_a_post_is_stuck_in_a_black_hole(
    make_handler: MakeHandler, black_hole: BlackHole
) -> None:
    # The worker is already waiting (up to 1 s) for an answer when stop() is called.
    h = make_handler(endpoint=black_hole.url, request_timeout_seconds=1.0, max_queue_size=1)
    h.enqueue(event())
    assert wait_until(lambda: len(black_hole.connections) >= 1)
    started = time.monotonic()
    h.stop(timeout=0.5)
    assert time.monotonic() - started < 0.5 + 0.5
    stats = h.stats()
    assert_balanced(stats)
    assert stats["pending"] == 1  # in flight, neither sent nor lost
    h.enqueue(event())
    assert_balanced(h.stats())
    assert wait_until(lambda: h.stats()["pending"] == 0, timeout=4.0)
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["enqueued"], stats["dropped_shutdown"], stats["sent"]) == (2, 2, 0)


def test_flush_timeout_against_a_black_hole(
    make_handler: MakeHandler, black_hole: BlackHole
) -> None:
    h = make_handler(endpoint=black_hole.url, request_timeout_seconds=2.0)
    h.enqueue(event())
    started = time.monotonic()
    assert h.flush(timeout=0.3) is False
    assert 0.25 <= time.monotonic() - started < 0.3 + 0.5
    assert_balanced(h.stats())


def test_black_hole_request_timeout_is_transient(
    make_handler: MakeHandler, black_hole: BlackHole
) -> None:
    h = make_handler(endpoint=black_hole.url, request_timeout_seconds=0.3,
                     retry_policy=slow_policy())
    h.enqueue(event())
    started = time.monotonic()
    assert h.flush() is False
    assert 0.25 <= time.monotonic() - started < 0.3 + 1.0
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["dlq"], stats["retries"]) == (1, 1)


def test_refused_port_goes_to_dlq(make_handler: MakeHandler, refused_url: str) -> None:
    h = make_handler(endpoint=refused_url, retry_policy=slow_policy())
    h.enqueue(event())
    h.enqueue(event())
    started = time.monotonic()
    assert h.flush() is False
    assert time.monotonic() - started < 1.0  # refused at once, no timeout involved
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["dlq"], stats["retries"], stats["sent"]) == (2, 2, 0)


def test_refused_then_listening_endpoint_recovers(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint, refused_url: str
) -> None:
    # The same handler, pointed first at a dead port, then at a live one.
    h = make_handler(endpoint=refused_url, retry_policy=slow_policy())
    h.enqueue(event(duration_ms=1))
    assert h.flush() is False
    assert h.stats()["dlq"] == 1
    h.endpoint = loopback_endpoint.url
    h.enqueue(event(duration_ms=2))
    assert h.flush() is True
    assert ids(loopback_endpoint.events) == [1, 2]
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["sent"], stats["retries"]) == (2, 1)


def test_connection_closed_without_answer_goes_to_dlq_then_recovers(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    loopback_endpoint.script("drop", "drop")
    h = make_handler(endpoint=loopback_endpoint.url, max_queue_size=2)  # fast backoff, auto retry
    h.enqueue(event(duration_ms=1))
    h.enqueue(event(duration_ms=2))
    assert wait_until(lambda: h.stats()["sent"] == 2, timeout=3.0)
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["retries"], stats["dlq"], stats["pending"]) == (4, 0, 0)
    assert loopback_endpoint.requests == 3
    assert ids(loopback_endpoint.events) == [1, 2]
    assert ids(loopback_endpoint.all_events) == [1, 2] * 3


def test_slow_server_is_a_transient_failure(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    loopback_endpoint.script(Reply(200, delay=1.5))
    h = make_handler(endpoint=loopback_endpoint.url, request_timeout_seconds=0.3,
                     retry_policy=slow_policy())
    h.enqueue(event(duration_ms=1))
    started = time.monotonic()
    assert h.flush() is False
    assert time.monotonic() - started < 1.2  # gave up at the request timeout
    stats = h.stats()
    assert_balanced(stats)
    assert (stats["dlq"], stats["retries"], stats["sent"]) == (1, 1, 0)
    assert h.flush() is True  # the next answer is prompt
    assert h.stats()["sent"] == 1
    assert_balanced(h.stats())


def test_retry_after_from_a_real_server(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    loopback_endpoint.script(Reply(503, {"Retry-After": "1"}))
    h = make_handler(endpoint=loopback_endpoint.url, max_queue_size=1)
    h.enqueue(event(duration_ms=1))
    assert wait_until(lambda: h.stats()["sent"] == 1, timeout=4.0)
    first, second = loopback_endpoint.times()
    assert second - first >= 1.0
    assert_balanced(h.stats())


def test_connections_are_reused(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint, dependency_mode: str
) -> None:
    if dependency_mode == "stdlib":
        pytest.skip("urllib has no connection pool: one connection per POST")
    h = make_handler(endpoint=loopback_endpoint.url, max_batch_size=1)
    for i in range(5):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    assert ids(loopback_endpoint.events) == list(range(5))
    assert len({r.peer for r in loopback_endpoint.records}) == 1  # one keep-alive connection
    assert_balanced(h.stats())


def test_without_a_worker_flush_and_stop_send_from_the_caller(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an exit hook meets on Python 3.12, or a process out of threads;
    # only the handler's own thread is refused (the endpoint's are not).
    class RefusedThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    refusing = types.ModuleType("threading")
    refusing.__dict__.update(vars(threading))
    refusing.Thread = RefusedThread  # type: ignore[attr-defined]
    monkeypatch.setattr(handler_module, "threading", refusing)
    h = make_handler(endpoint=loopback_endpoint.url, flush_interval_seconds=60)
    h.enqueue(event(duration_ms=1))
    assert h.stats()["pending"] == 1  # accepted, not dropped
    assert h.flush(timeout=5)
    assert ids(loopback_endpoint.events) == [1]
    h.enqueue(event(duration_ms=2))
    h.stop(timeout=5)
    assert ids(loopback_endpoint.events) == [1, 2]
    assert h.stats()["sent"] == 2
    assert_balanced(h.stats())
