"""Interpreter exit and os.fork, in real child processes.

Each scenario is a small script run with ``sys.executable``; the script prints
``EXITING <time.monotonic()>`` right before it ends, so the time its exit takes
is measured apart from interpreter start-up (CLOCK_MONOTONIC is system-wide).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint, Reply
from support.helpers import REPO_ROOT, ids, subprocess_env

MARGIN = 1.5  # allowed on top of the shutdown budget for the exit itself

PRELUDE = """\
import os, sys, time
from nat_telemetry import CliCommandEvent, NATTelemetryHandler

def ev(n, command="exit-test"):
    return CliCommandEvent(command=command, task_status="success",
                           python_version="3.11.7", duration_ms=n)

URL = sys.argv[1]
"""


def run_script(body: str, url: str, tmp_path: Path, timeout: float = 30.0) -> tuple[
    subprocess.CompletedProcess, float
]:
    """Run PRELUDE + body; return the result and how long its exit took."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body)
                      + "\nprint('EXITING', time.monotonic(), flush=True)\n")
    result = subprocess.run(
        [sys.executable, str(script), url], cwd=REPO_ROOT, env=subprocess_env(tmp_path),
        capture_output=True, text=True, timeout=timeout,
    )
    ended = time.monotonic()
    exiting = [line for line in result.stdout.splitlines() if line.startswith("EXITING ")]
    assert exiting, (result.stdout, result.stderr)
    return result, ended - float(exiting[-1].split()[1])


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception" not in result.stderr, result.stderr


def test_atexit_flushes_without_stop(loopback_endpoint: LoopbackEndpoint, tmp_path: Path) -> None:
    result, exit_took = run_script("""
        h = NATTelemetryHandler(endpoint=URL)
        h.enqueue(ev(41))
    """, loopback_endpoint.url, tmp_path)
    assert_clean(result)
    assert ids(loopback_endpoint.events) == [41]
    assert exit_took < 2.0 + MARGIN


def test_exit_against_a_black_hole_honours_shutdown_timeout(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    result, exit_took = run_script("""
        h = NATTelemetryHandler(endpoint=URL, shutdown_timeout_seconds=0.5)
        h.enqueue(ev(1))
    """, black_hole.url, tmp_path)
    assert_clean(result)
    assert len(black_hole.connections) >= 1
    assert exit_took < 0.5 + MARGIN


def test_exit_with_a_post_already_stuck_is_bounded(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    # The worker is mid-POST with a 10 s request timeout when the script ends.
    result, exit_took = run_script("""
        h = NATTelemetryHandler(endpoint=URL, max_queue_size=1, request_timeout_seconds=10,
                                shutdown_timeout_seconds=0.5)
        h.enqueue(ev(1))
        deadline = time.monotonic() + 5
        while not h._box.in_flight and time.monotonic() < deadline:  # taken by the worker
            time.sleep(0.005)
        time.sleep(0.1)
    """, black_hole.url, tmp_path)
    assert_clean(result)
    assert exit_took < 0.5 + MARGIN


def test_two_handlers_share_one_exit_budget(black_hole: BlackHole, tmp_path: Path) -> None:
    # Timed from the moment the exit hooks start (a hook registered after the
    # library's runs right before it), so the budgets can be short and still
    # tell "the longest budget" from "their sum".
    result, _ = run_script("""
        import atexit
        first = NATTelemetryHandler(endpoint=URL, shutdown_timeout_seconds=0.8)
        second = NATTelemetryHandler(endpoint=URL, shutdown_timeout_seconds=0.8)
        first.enqueue(ev(1))
        second.enqueue(ev(2))
        atexit.register(lambda: print("HOOKS", time.monotonic(), flush=True))
    """, black_hole.url, tmp_path)
    ended = time.monotonic()
    assert_clean(result)
    hooks = [line for line in result.stdout.splitlines() if line.startswith("HOOKS ")]
    exit_took = ended - float(hooks[-1].split()[1])
    assert len(black_hole.connections) >= 2  # both flushed, side by side
    assert 0.6 <= exit_took < 0.8 + 0.6, exit_took  # the longest budget, not the sum (1.6 s)


def test_exit_against_a_refused_port(refused_url: str, tmp_path: Path) -> None:
    result, exit_took = run_script("""
        h = NATTelemetryHandler(endpoint=URL)
        h.enqueue(ev(1))
    """, refused_url, tmp_path)
    assert_clean(result)
    assert exit_took < 2.0 + MARGIN


def test_exit_after_explicit_stop_adds_nothing(
    loopback_endpoint: LoopbackEndpoint, tmp_path: Path
) -> None:
    result, exit_took = run_script("""
        h = NATTelemetryHandler(endpoint=URL)
        h.enqueue(ev(5))
        h.stop()
        print("STATS", h.stats()["sent"], flush=True)
    """, loopback_endpoint.url, tmp_path)
    assert_clean(result)
    assert "STATS 1" in result.stdout
    assert ids(loopback_endpoint.events) == [5]
    assert exit_took < MARGIN


FORK_SCRIPT = """
h = NATTelemetryHandler(endpoint=URL, session_id="parent", max_queue_size=3)
for i in range(3):
    h.enqueue(ev(i, "a"))  # the third one wakes the worker: A goes out, answered slowly
deadline = time.monotonic() + 5
while h._box.in_flight < 3 and time.monotonic() < deadline:
    time.sleep(0.002)
stats = h.stats()
print("BEFORE_FORK", stats["pending"], stats["sent"], time.monotonic(), flush=True)
pid = os.fork()
if pid == 0:
    h.session_id = "child"
    print("CHILD_STATS", h.stats()["enqueued"], h.stats()["pending"], flush=True)
    h.enqueue(ev(100, "b"))
    sys.exit(0)  # a normal exit: atexit runs in the child too
h.enqueue(ev(200, "c"))
deadline = time.monotonic() + 15
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("CHILD_HUNG", flush=True)
        sys.exit(3)
    time.sleep(0.01)
print("CHILD_EXIT", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("preload", [False, True], ids=["first-send", "requests-loaded"])
def test_fork_while_sending(
    loopback_endpoint: LoopbackEndpoint, tmp_path: Path, preload: bool
) -> None:
    # first-send: the worker may still be importing requests (lazily, on its
    # first POST) at the fork; requests-loaded: it is waiting for the answer.
    delay = 1.0
    # A (command "a") is the send in progress at fork time: answered slowly.
    loopback_endpoint.responder = lambda envelope: (
        Reply(200, delay=delay) if envelope["events"][0]["parameters"]["command"] == "a" else 200
    )
    script = ("import requests\n" if preload else "") + FORK_SCRIPT
    result, exit_took = run_script(script, loopback_endpoint.url, tmp_path, timeout=40)
    assert_clean(result)
    lines: dict[str, list[str]] = {line.split()[0]: line.split()[1:]
                                   for line in result.stdout.splitlines() if line.strip()}
    assert "CHILD_HUNG" not in lines
    assert lines["CHILD_EXIT"] == ["0"]
    pending, sent, fork_at = lines["BEFORE_FORK"]
    assert (pending, sent) == ("3", "0")  # A was in flight when the process forked
    assert lines["CHILD_STATS"] == ["0", "0"]  # the child inherited none of it
    assert exit_took < 2.0 + MARGIN

    # A's answer was still outstanding at the fork.
    [sending_a] = [r for r in loopback_endpoint.records if ids(r.envelope["events"]) == [0, 1, 2]]
    assert sending_a.reply.delay == delay
    assert float(fork_at) < sending_a.at + delay

    by_session: dict[str, list[int]] = collections.defaultdict(list)
    for record in loopback_endpoint.records:
        by_session[record.envelope["sessionId"]] += ids(record.envelope["events"])
    assert sorted(by_session["parent"]) == [0, 1, 2, 200]
    assert by_session["child"] == [100]
    assert set(by_session) == {"parent", "child"}
    everything = ids(loopback_endpoint.all_events)
    assert sorted(everything) == [0, 1, 2, 100, 200]  # nothing twice, nothing lost
    assert all(record.reply.ok for record in loopback_endpoint.records)
