"""flush(timeout) keeps delivering until nothing is left or the deadline passes.

Against real loopback endpoints: a collector answering a fault mix, and one
that asks for patience with ``429 Retry-After: 1``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from support.endpoints import LoopbackEndpoint, Reply
from support.helpers import assert_balanced, event, ids

from nat_telemetry.collector import Collector, Fault
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

MakeHandler = Callable[..., NATTelemetryHandler]


def test_flush_waits_out_retry_after_and_delivers(make_handler: MakeHandler,
                                                  loopback_endpoint: LoopbackEndpoint) -> None:
    loopback_endpoint.script(Reply(429, headers={"Retry-After": "1"}), 200)
    handler = make_handler(endpoint=loopback_endpoint.url,
                           retry_policy=RetryPolicy(3, backoff_base=0.01, backoff_max=0.05))
    handler.enqueue(event(duration_ms=7))
    started = time.monotonic()
    assert handler.flush(timeout=5) is True
    assert time.monotonic() - started >= 0.9  # it did not retry before the peer allowed
    assert ids(loopback_endpoint.events) == [7]
    assert handler.stats()["sent"] == 1


def test_flush_gives_up_at_its_deadline_when_the_peer_asks_for_longer(
    make_handler: MakeHandler, loopback_endpoint: LoopbackEndpoint
) -> None:
    loopback_endpoint.set_default(Reply(503, headers={"Retry-After": "30"}))
    handler = make_handler(endpoint=loopback_endpoint.url)
    handler.enqueue(event())
    started = time.monotonic()
    assert handler.flush(timeout=2) is False
    assert time.monotonic() - started < 1.5  # no pointless wait for what cannot fit
    stats = handler.stats()
    assert stats["dlq"] == 1
    assert_balanced(stats)


def test_flush_without_timeout_is_one_attempt(make_handler: MakeHandler,
                                              loopback_endpoint: LoopbackEndpoint) -> None:
    loopback_endpoint.set_default(503)
    handler = make_handler(endpoint=loopback_endpoint.url,
                           retry_policy=RetryPolicy(3, backoff_base=5.0, backoff_max=5.0))
    handler.enqueue(event())
    assert handler.flush() is False
    assert len(loopback_endpoint.records) == 1 and handler.stats()["dlq"] == 1


def test_flush_delivers_through_a_fault_mix(tmp_path: Path) -> None:
    """Many threads against 30 % 503, 5 % 429 and 5 % dropped connections."""
    faults = [Fault(0.30, "fail", 503), Fault(0.05, "fail", 429), Fault(0.05, "drop")]
    threads, per_thread = 8, 250
    with Collector(tmp_path / "mix.db", faults=faults, seed=11) as ingest:
        handler = NATTelemetryHandler(
            endpoint=ingest.url, max_batch_size=50, max_buffer_size=threads * per_thread,
            retry_policy=RetryPolicy(8, backoff_base=0.02, backoff_max=0.2), spool_dir=None,
        )

        def produce(base: int) -> None:
            for n in range(per_thread):
                handler.enqueue(event(duration_ms=base + n))

        workers = [threading.Thread(target=produce, args=(i * per_thread,))
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        handler.flush(timeout=60)
        stats = handler.stats()
        handler.stop(timeout=1)
        total = threads * per_thread
        assert_balanced(stats)
        assert stats["enqueued"] == total
        assert stats["sent"] >= 0.99 * total, stats
        # What the collector stored is what the client counts as sent, give or
        # take the batches whose answer was dropped after storing (none here).
        assert ingest.stored_count() == stats["sent"]
