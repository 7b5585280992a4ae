"""How long telemetry can hold up interpreter exit, against the four endpoints of the issue.

A script enqueues events and ends without calling ``stop()``; the ``atexit``
hook gets ``shutdown_timeout_seconds`` for its final flush.  Against (a) the
real loopback collector, (b) a refused port, (c) a socket that accepts and
never answers and (d) a collector that answers after 10 s, the exit must take
at most that budget plus a margin for the interpreter itself, print nothing on
stderr, and leave the handler's books balanced.

The script registers its own ``atexit`` reporter *before* importing
``nat_telemetry``; exit hooks run last-in first-out, so the reporter runs
after the telemetry hook and prints the final ``stats()``.  Exit time is
measured from the script's last statement to the process end, as seen by
this process (``CLOCK_MONOTONIC`` is system-wide).

(tests/test_exit_and_fork.py covers the black hole with other budgets, two
handlers sharing one budget and a POST already stuck at exit.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import BlackHole, refusing_port
from support.helpers import REPO_ROOT, subprocess_env

from nat_telemetry.collector import Collector

# On top of the shutdown budget: interpreter teardown on a loaded 2-core machine.
MARGIN = 1.5
DEFAULT_BUDGET = 2.0
EVENTS = 1_200  # three POSTs at the default batch size of 500

SCRIPT = """\
import atexit, json, sys, time

def report():  # registered first, so it runs after nat_telemetry's exit hook
    print("AT_EXIT", time.monotonic(), json.dumps(h.stats()), flush=True)

atexit.register(report)

from nat_telemetry import CliCommandEvent, NATTelemetryHandler

URL, EVENTS, OPTIONS = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
h = NATTelemetryHandler(endpoint=URL, **OPTIONS)
for i in range(EVENTS):
    h.enqueue(CliCommandEvent(command="exit-bound", task_status="success",
                              python_version="3.11.7", duration_ms=i))
{wait}
print("EXITING", time.monotonic(), flush=True)
"""

# Wait (bounded) until the worker has a POST in flight, so the exit meets it mid-send.
WAIT_FOR_SEND = """\
deadline = time.monotonic() + 5
while not h._box.in_flight and time.monotonic() < deadline:
    time.sleep(0.002)
"""


class Endpoint:
    """One of the four endpoints, started; ``close()`` releases it."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.collector: Collector | None = None
        self.hole: BlackHole | None = None
        self.held = contextlib.ExitStack()
        if kind in ("collector", "answers-after-10s"):
            delay = 10_000 if kind == "answers-after-10s" else 0
            self.collector = Collector(tmp_path / f"{kind}.db", delay_ms=delay).start()
            self.url = self.collector.url
        elif kind == "black-hole":
            self.hole = BlackHole()
            self.url = self.hole.url
        elif kind == "refused":
            port = self.held.enter_context(refusing_port())
            self.url = f"http://127.0.0.1:{port}/v1.1/events/json"
        else:  # pragma: no cover - a typo in a parametrize list
            raise ValueError(kind)

    def close(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self.hole is not None:
            self.hole.close()
        self.held.close()


@pytest.fixture
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Endpoint]:
    started = Endpoint(request.param, tmp_path)
    yield started
    started.close()


def run_exit_script(url: str, options: dict[str, Any], tmp_path: Path, *,
                    wait_for_send: bool = False) -> tuple[float, float, dict[str, int]]:
    """Run the script; (seconds its exit took, seconds the exit hook took, final stats)."""
    script = tmp_path / "exit_bound.py"
    script.write_text(SCRIPT.replace("{wait}", WAIT_FOR_SEND if wait_for_send else ""))
    result = subprocess.run(
        [sys.executable, str(script), url, str(EVENTS), json.dumps(options)],
        cwd=REPO_ROOT, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no traceback, no warning, nothing
    lines = {line.split()[0]: line.split(maxsplit=2)[1:] for line in result.stdout.splitlines()}
    exiting = float(lines["EXITING"][0])
    at_exit, stats_json = float(lines["AT_EXIT"][0]), lines["AT_EXIT"][1]
    return ended - exiting, at_exit - exiting, json.loads(stats_json)


def balanced(stats: dict[str, int]) -> bool:
    settled = ("sent", "skipped", "pending", "dlq", "dropped_buffer_full", "dropped_rejected",
               "dropped_too_large", "dropped_retries_exhausted", "dropped_dlq_full",
               "dropped_shutdown")
    return stats["enqueued"] == sum(stats[key] for key in settled)


KINDS = ("collector", "refused", "black-hole", "answers-after-10s")


def test_exit_is_bounded_by_the_default_budget(tmp_path: Path) -> None:
    # The four scripts run side by side: each waits on its own endpoint, and
    # the suite pays for the slowest once instead of for all four in a row.
    endpoints = {kind: Endpoint(kind, tmp_path) for kind in KINDS}
    folders = {kind: tmp_path / kind for kind in KINDS}
    for folder in folders.values():
        folder.mkdir()
    try:
        with concurrent.futures.ThreadPoolExecutor(len(KINDS)) as pool:
            runs = {kind: pool.submit(run_exit_script, endpoints[kind].url, {}, folders[kind])
                    for kind in KINDS}
            results = {kind: run.result() for kind, run in runs.items()}
        for kind in KINDS:
            check_default_budget_exit(endpoints[kind], *results[kind])
    finally:
        for endpoint in endpoints.values():
            endpoint.close()


def check_default_budget_exit(endpoint: Endpoint, exit_took: float, hook_took: float,
                              stats: dict[str, int]) -> None:
    print(f"\nEXIT {endpoint.kind}: exit {exit_took:.3f}s, hook {hook_took:.3f}s, {stats}")
    assert exit_took < DEFAULT_BUDGET + MARGIN, (endpoint.kind, exit_took)
    assert hook_took <= exit_took
    assert balanced(stats), stats
    assert stats["enqueued"] == EVENTS and stats["dlq"] == 0, stats
    if endpoint.kind == "collector":
        assert stats["sent"] == EVENTS, stats
        assert endpoint.collector is not None
        assert endpoint.collector.stored_count() == EVENTS
        assert hook_took < DEFAULT_BUDGET  # a live endpoint does not use the whole budget
    elif endpoint.kind == "refused":
        # One attempt, refused at once: everything is dropped, nothing waited for.
        assert stats["sent"] == 0 and stats["dropped_shutdown"] == EVENTS, stats
        assert hook_took < DEFAULT_BUDGET / 2
    else:
        # No answer: the hook used its budget, then gave up on the POST in flight.
        assert stats["sent"] == 0, stats
        assert hook_took >= DEFAULT_BUDGET * 0.75, (endpoint.kind, hook_took)
        assert stats["dropped_shutdown"] + stats["pending"] == EVENTS, stats


@pytest.mark.parametrize("endpoint", ["answers-after-10s"], indirect=True)
def test_exit_mid_send_with_a_long_request_timeout(endpoint: Endpoint, tmp_path: Path) -> None:
    # The worker is already waiting on a 30 s request when the script ends:
    # the exit budget (0.5 s) still wins over the request timeout.
    options = {"max_queue_size": 1, "request_timeout_seconds": 30,
               "shutdown_timeout_seconds": 0.5}
    exit_took, hook_took, stats = run_exit_script(endpoint.url, options, tmp_path,
                                                  wait_for_send=True)
    print(f"\nEXIT {endpoint.kind} mid-send: exit {exit_took:.3f}s, hook {hook_took:.3f}s, "
          f"{stats}")
    assert exit_took < 0.5 + MARGIN, exit_took
    assert hook_took < 0.5 + 0.5, hook_took
    assert balanced(stats), stats
    assert stats["sent"] == 0 and stats["dlq"] == 0, stats
    # The collector stored what it received (it answers late, after storing):
    # the client cannot know, and counts those events as not delivered.
    assert endpoint.collector is not None
    assert endpoint.collector.counts()["requests"] >= 1
