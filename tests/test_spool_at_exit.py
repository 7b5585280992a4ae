"""The exit path with a spool: hand over, detach, deliver later.

Real processes against the real collector: a script records one event and
exits; what was pending goes to the spool and a detached sender delivers it.
Nothing here times the exit for a figure (see benchmarks/cli_cost.py): the
bounds asserted are far below the in-process budget the spool replaces, so
they only fail when the exit waits for the endpoint or a pipe is held open.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.endpoints import BlackHole, refusing_port
from support.helpers import REPO_ROOT, assert_balanced, event, subprocess_env

from nat_telemetry.collector import Collector
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.spool import Spool, encode_batch
from nat_telemetry.transport import destination_id

TOOL = """\
import json, sys
from nat_telemetry import track_command
with track_command("tool", sys.argv[1]):
    print("output of the tool")
"""
# The exit must not wait for the endpoint: well under the 2 s in-process budget.
PROMPT_EXIT = 1.5


def run_tool(tmp_path: Path, endpoint: str, spool: Path, subcommand: str = "x",
             shell_suffix: str = "") -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=endpoint,
                         NAT_TELEMETRY_SPOOL_DIR=str(spool))
    command = f"{sys.executable} {script} {subcommand}{shell_suffix}"
    started = time.monotonic()
    result = subprocess.run(command, shell=True, env=env, cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - started


def wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def waiting(spool: Path) -> int:
    """Events waiting in the spool, for every destination."""
    return sum(events for _, events, _, _ in Spool(str(spool)).summary().values())


def subcommands(collector: Collector) -> list[str]:
    return sorted(row["parameters"]["subcommand"] for row in collector.rows())


@pytest.fixture
def real_collector(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Collector(tmp_path / "events.db") as running:
        yield running


def test_event_arrives_after_the_process_exited(tmp_path: Path,
                                                real_collector: Collector) -> None:
    spool = tmp_path / "spool"
    result, _ = run_tool(tmp_path, real_collector.url, spool)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "output of the tool\n" and result.stderr == ""
    assert wait_for(lambda: real_collector.stored_count() == 1)
    assert subcommands(real_collector) == ["x"]
    assert wait_for(lambda: Spool(str(spool)).summary() == {})  # delivered, then deleted


def test_silent_endpoint_holds_neither_the_exit_nor_the_pipe(tmp_path: Path) -> None:
    hole = BlackHole()
    try:
        spool = tmp_path / "spool"
        # `tool | head -1`: the pipe closes when the tool exits, not when a sender does.
        result, took = run_tool(tmp_path, hole.url, spool, shell_suffix=" | head -1")
        assert result.returncode == 0 and result.stdout == "output of the tool\n"
        assert took < PROMPT_EXIT, took
        # $(tool): capture_output reads to EOF, so an inherited descriptor would hold it.
        result, took = run_tool(tmp_path, hole.url, spool)
        assert result.returncode == 0 and result.stdout == "output of the tool\n"
        assert took < PROMPT_EXIT, took
        assert waiting(spool) >= 1  # waiting for a later sender
    finally:
        hole.close()


def test_offline_then_online_delivers_both(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/v1.1/events/json"
        result, took = run_tool(tmp_path, url, spool, subcommand="offline")  # refused
        assert result.returncode == 0 and took < PROMPT_EXIT
        assert wait_for(lambda: waiting(spool) == 1, timeout=5)
    with Collector(tmp_path / "events.db", port=port) as online:
        result, _ = run_tool(tmp_path, url, spool, subcommand="online")
        assert result.returncode == 0
        # The earlier run's sender may still hold the spool, backing off; either
        # it or the next one delivers, each batch once.
        assert wait_for(lambda: online.stored_count() == 2, timeout=30)
        assert subcommands(online) == ["offline", "online"]
        time.sleep(0.5)
        assert online.stored_count() == 2


def test_disabled_telemetry_neither_reads_nor_writes_the_spool(tmp_path: Path,
                                                             real_collector: Collector) -> None:
    spool = tmp_path / "spool"
    body = encode_batch({"session_id": "earlier", "client_version": "0.1.0", "product": None},
                        [["nat_cli_command", None, time.time(), 0, event().model_dump()]])
    assert Spool(str(spool)).write(body, 1, destination_id(real_collector.url, "")).written
    before = sorted(os.listdir(spool))
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=real_collector.url,
                         NAT_TELEMETRY_SPOOL_DIR=str(spool), NAT_TELEMETRY_ENABLED="0")
    subprocess.run([sys.executable, str(script), "x"], env=env, cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=30)
    time.sleep(0.3)
    assert sorted(os.listdir(spool)) == before
    assert real_collector.stored_count() == 0


# ----------------------------------------------------------- in-process


def test_stop_spools_what_it_could_not_deliver(tmp_path: Path, refused_url: str) -> None:
    spool = tmp_path / "spool"
    handler = NATTelemetryHandler(endpoint=refused_url, spool_dir=str(spool))
    for n in range(5):
        handler.enqueue(event(duration_ms=n))
    handler.stop(timeout=1.0)
    stats = handler.stats()
    assert_balanced(stats)
    assert stats["spooled"] == 5 and stats["dropped_shutdown"] == 0
    assert waiting(spool) == 5
    assert list(Spool(str(spool)).summary()) == [destination_id(refused_url, "")]


def test_spool_refusal_is_counted_by_reason(tmp_path: Path, refused_url: str) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    handler = NATTelemetryHandler(endpoint=refused_url, spool_dir=str(not_a_folder / "spool"))
    handler.enqueue(event())
    handler.stop(timeout=0.5)
    stats = handler.stats()
    assert_balanced(stats)
    assert stats["dropped_spool_error"] == 1 and stats["spooled"] == 0


def test_no_endpoint_is_never_spooled(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    handler = NATTelemetryHandler(endpoint="", spool_dir=str(spool))
    handler.enqueue(event())
    handler.stop(timeout=1.0)
    assert handler.stats()["skipped"] == 1
    assert not spool.exists()
