"""With the endpoint down, memory stays bounded by the buffer and DLQ caps.

A child process (so nothing else in the test run shares its heap) points a
handler at a refused port and enqueues N events - 1,000,000 at
``NAT_STRESS_SCALE=1``, 200,000 at the CI size - while the worker keeps
failing and retrying.  The process's resident memory (``VmRSS`` from
``/proc/self/status``) may grow by what the caps can hold - ``max_buffer_size``
queued events, plus ``max_dlq_size`` in the dead-letter queue and one batch
in flight - and a fixed margin; everything beyond the caps must be counted
``dropped_buffer_full`` (or given up by the retry rules), never kept.

The cost of one held event is measured in the child with ``tracemalloc``,
in the very shapes the handler keeps: ``(event, time)`` tuples in the
buffer, ``QueuedEvent`` objects (with their serialized-parameters cache) in
the dead-letter queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from stress.conftest import stress_scale
from support.helpers import REPO_ROOT, SETTLED_KEYS, subprocess_env

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)"),
]

MiB = 1024 * 1024
# Interpreter, allocator and transport slack that does not grow with N: the
# JSON of one 500-event batch, requests' buffers, arena rounding.
MARGIN_BYTES = 16 * MiB

SCRIPT = r"""
import gc, json, socket, sys, time, tracemalloc
from datetime import datetime, timezone

import requests  # noqa: F401 - imported before the baseline: not what is measured

from nat_telemetry import CliCommandEvent, NATTelemetryHandler
from nat_telemetry.payload import QueuedEvent
from nat_telemetry.retry import RetryPolicy

URL, N = sys.argv[1], int(sys.argv[2])


def rss(field="VmRSS"):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def ev(i):
    return CliCommandEvent(command="mem", subcommand="bound", task_status="failure",
                           duration_ms=i, exit_code=1, error_class="OSError",
                           python_version="3.11.7")


def cost_per_item(make, count=20_000):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [make(1_000_000_000 + i) for i in range(count)]
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del held
    return size / count


def queued(i):
    item = QueuedEvent(ev(i), datetime.now(timezone.utc), retry_count=1)
    item.event.model_dump(by_alias=True)  # the cache a serialized event carries
    return item


h = NATTelemetryHandler(endpoint=URL, request_timeout_seconds=0.5,
                        retry_policy=RetryPolicy(3, backoff_base=0.01, backoff_max=0.05))
# Warm up: the worker started, the transport built, one POST refused.
h.enqueue(ev(-1))
deadline = time.monotonic() + 10
while not h.stats()["retries"] and time.monotonic() < deadline:
    h.flush(timeout=1)
gc.collect()
base = rss()
peak = base
started = time.monotonic()
for i in range(N):
    h.enqueue(ev(i))
    if i % 5_000 == 0:
        peak = max(peak, rss())
took = time.monotonic() - started
peak = max(peak, rss())
stats = h.stats()
h.stop(timeout=2)
# Measured last, so that the memory it uses is not part of the baseline above.
per_pending = cost_per_item(lambda i: (ev(i), time.time()))
per_dlq = cost_per_item(queued)
print("RESULT", json.dumps({
    "n": N, "base": base, "peak": peak, "hwm": rss("VmHWM"), "seconds": took,
    "per_pending": per_pending, "per_dlq": per_dlq, "stats": stats, "final": h.stats(),
    "caps": [h.max_buffer_size, h.max_dlq_size, h.max_batch_size],
}), flush=True)
"""


def events_to_enqueue() -> int:
    return round(1_000_000 * max(stress_scale(), 0.2))


def test_memory_is_bounded_by_the_caps_when_the_endpoint_is_down(
    refused_url: str, tmp_path: Path
) -> None:
    count = events_to_enqueue()
    script = tmp_path / "memory_bound.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), refused_url, str(count)], cwd=REPO_ROOT,
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    found = json.loads(line.split(" ", 1)[1])
    stats, final = found["stats"], found["final"]
    buffer_cap, dlq_cap, batch_cap = found["caps"]

    # What the caps can hold, at the measured cost of each held event.
    held_bound = buffer_cap * found["per_pending"] + (dlq_cap + batch_cap) * found["per_dlq"]
    growth = found["peak"] - found["base"]
    unbounded = count * found["per_pending"]  # what keeping every event would cost
    print(f"\nMEMORY {count} events in {found['seconds']:.2f}s: RSS +{growth / MiB:.1f} MiB "
          f"(peak {found['peak'] / MiB:.1f} MiB, VmHWM {found['hwm'] / MiB:.1f} MiB); caps hold "
          f"<= {held_bound / MiB:.1f} MiB ({found['per_pending']:.0f} B/queued event, "
          f"{found['per_dlq']:.0f} B/DLQ event); keeping all would be {unbounded / MiB:.0f} MiB; "
          f"stats {stats}")
    assert growth <= held_bound + MARGIN_BYTES, (growth, held_bound)
    assert unbounded > 2 * (held_bound + MARGIN_BYTES)  # the test can tell the difference

    # Every event is accounted for; what the caps could not hold was dropped for room.
    assert stats["enqueued"] == count + 1  # + the warm-up event
    assert stats["sent"] == stats["skipped"] == 0
    assert stats["pending"] <= buffer_cap + batch_cap and stats["dlq"] <= dlq_cap, stats
    held = stats["pending"] + stats["dlq"]
    given_up = stats["dropped_retries_exhausted"] + stats["dropped_dlq_full"]
    assert stats["dropped_buffer_full"] == stats["enqueued"] - held - given_up, stats
    assert stats["dropped_buffer_full"] >= count - buffer_cap - dlq_cap - batch_cap - given_up
    assert final["pending"] == final["dlq"] == 0, final
    assert final["enqueued"] == sum(final[key] for key in SETTLED_KEYS), final
