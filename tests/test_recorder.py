"""track_command's shared recorder: kept until exit, spooled, or handed to a handler.

The recorder writes the NeMo envelope itself, without the event classes: the
property tests hold its rules and its bytes equal to the handler's.  The exit
paths run in real processes against a real loopback endpoint.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.endpoints import LoopbackEndpoint
from support.helpers import REPO_ROOT, subprocess_env

from nat_telemetry import (
    ValidationError,
    __version__,
    _recorder,
    config,
    otlp,
    payload,
    track_command,
)
from nat_telemetry import _spoolfile as sf
from nat_telemetry.payload import QueuedEvent, format_epoch, format_timestamp
from nat_telemetry.spool import Spool
from nat_telemetry.transport import HttpTransport, OtlpTransport

PROPERTY = settings(max_examples=300, deadline=None)


@pytest.fixture(autouse=True)
def _fresh_recorders(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[Any, _recorder.Recorder]]:
    recorders: dict[Any, _recorder.Recorder] = {}
    monkeypatch.setattr(_recorder, "_recorders", recorders)
    monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", True)
    yield recorders
    for recorder in recorders.values():
        with recorder._lock:
            recorder._closed = True  # a timer still sleeping must not hand over later
        if recorder._handler is not None:
            recorder._handler.stop(0)


def fields(command: str = "tool", subcommand: str = "x", exc: BaseException | None = None,
           duration_ms: int = 5) -> Any:
    return _recorder.command_fields(command, subcommand, exc, duration_ms)


# ------------------------------------------------------ the same rules, the same bytes

names = st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True))
integers = st.one_of(st.integers(-3, 10**6), st.integers(-(2**64), 2**64),
                     st.sampled_from([-(2**63), 2**63 - 1, 2**63, -(2**63) - 1, -1, -2]))
statuses = st.sampled_from(["success", "failure", "interrupted", "undefined"])
error_classes = st.one_of(st.sampled_from(["undefined", "ValueError", "a.b.C", "x" * 128,
                                            "x" * 129, "1abc", "a..b", "é"]),
                          st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True))
versions = st.sampled_from(["3.11.7", "3.13.0rc1", "3.9", "3.12.1+", "3", "3.11.7.1", "x"])
any_fields = st.tuples(names, names, statuses, integers, integers, error_classes, versions)


@PROPERTY
@given(any_fields)
def test_kept_exactly_when_the_event_class_accepts(candidate: Any) -> None:
    try:
        _recorder.cli_event(candidate)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert _recorder._valid(candidate) is accepted


@PROPERTY
@given(st.floats(min_value=0, max_value=2**34, allow_nan=False))
def test_epoch_text_equals_the_datetime_text(seconds: float) -> None:
    assert format_epoch(seconds) == format_timestamp(datetime.fromtimestamp(seconds, timezone.utc))


@settings(max_examples=120, deadline=None)  # each example builds both bodies
@given(st.lists(st.tuples(any_fields, st.floats(min_value=1e9, max_value=4e9)),
                min_size=1, max_size=5),
       st.sampled_from(["0123456789abcdef0123456789abcdef", "sid", "a:b.c"]))
def test_spooled_body_is_what_the_handler_would_post(
        kept: list[Any], session_id: str) -> None:
    kept = [(f, at) for f, at in kept if _recorder._valid(f)]
    if not kept:
        return
    recorder = _recorder.Recorder(session_id)
    queued = [QueuedEvent(_recorder.cli_event(f), datetime.fromtimestamp(at, timezone.utc))
              for f, at in kept]
    transports = {"nemo": HttpTransport("http://127.0.0.1:9/"),
                  "otlp": OtlpTransport("otlp+http://127.0.0.1:9")}
    for kind, transport in transports.items():
        with pytest.MonkeyPatch.context() as patch:  # one sentTs for both
            patch.setattr(payload, "time", types.SimpleNamespace(time=lambda: 1.8e9,
                                                                 gmtime=time.gmtime))
            ours = recorder.body(kept, kind)
            theirs = transport.encode(queued, source_client_version=__version__,
                                      session_id=recorder.session_id)
        assert ours == theirs, kind


@PROPERTY
@given(st.floats(min_value=0, max_value=2**34, allow_nan=False))
def test_epoch_nanoseconds_equal_the_datetime_ones(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    assert otlp.epoch_unix_nano(seconds) == otlp._unix_nano(moment)


# ------------------------------------------------------------ handing over


def test_a_batch_worth_hands_over_with_the_times_recorded(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", loopback_endpoint.url)
    recorder = _recorder.recorder_for(None)
    before = time.time()
    for _ in range(config.DEFAULT_MAX_QUEUE_SIZE - 1):
        recorder.record(fields())
    assert recorder._handler is None
    assert recorder.stats()["kept"] == config.DEFAULT_MAX_QUEUE_SIZE - 1
    recorder.record(fields())
    handler = recorder._handler
    assert handler is not None and recorder.stats()["kept"] == 0
    assert handler.flush(timeout=10)
    assert handler.stats()["sent"] == config.DEFAULT_MAX_QUEUE_SIZE
    events = [e for env in loopback_endpoint.envelopes for e in env["events"]]
    assert len(events) == config.DEFAULT_MAX_QUEUE_SIZE
    assert {env["sessionId"] for env in loopback_endpoint.envelopes} == {recorder.session_id}
    stamps = {e["ts"] for e in events}
    assert min(stamps) >= format_epoch(before - 0.001)
    # Later events go straight to the handler.
    recorder.record(fields(subcommand="later"))
    assert handler.stats()["enqueued"] == config.DEFAULT_MAX_QUEUE_SIZE + 1
    assert recorder.stats() == {"kept": 0, "handed_over": config.DEFAULT_MAX_QUEUE_SIZE,
                                "spooled": 0, "dropped_disabled": 0, "dropped_shutdown": 0}


def test_a_process_still_running_a_flush_interval_later_hands_over_and_sends(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", loopback_endpoint.url)
    monkeypatch.setattr(config, "DEFAULT_FLUSH_INTERVAL_SECONDS", 0.2)
    with track_command("tool", "slow"):
        pass
    recorder = _recorder._recorders[None]
    assert recorder.stats()["kept"] == 1
    deadline = time.monotonic() + 10
    while loopback_endpoint.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    (envelope,) = loopback_endpoint.envelopes
    assert envelope["events"][0]["parameters"]["subcommand"] == "slow"
    assert recorder._handler is not None and recorder.stats()["kept"] == 0


def test_an_invalid_event_is_neither_kept_nor_handed_over() -> None:
    recorder = _recorder.recorder_for(None)
    with pytest.raises(ValidationError):
        recorder.record(fields(exc=SystemExit(2**70)))  # an exit code beyond 64 bits
    assert recorder.stats()["kept"] == 0 and recorder._handler is None


def test_after_the_exit_hook_an_event_is_counted_as_dropped(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "http://127.0.0.1:9/ingest")
    monkeypatch.setattr("nat_telemetry.sender.start_detached_sender", lambda *a, **k: True)
    recorder = _recorder.recorder_for(None)
    recorder.record(fields())
    recorder.close_at_exit()
    assert recorder.stats()["kept"] == 0
    assert Spool(str(tmp_path / "spool")).summary()[0] == 1
    recorder.record(fields())
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 1,
                                "dropped_disabled": 0, "dropped_shutdown": 1}
    assert recorder._handler is None


def test_a_hand_over_during_the_exit_spool_takes_nothing_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _recorder.recorder_for(None)
    for _ in range(3):
        recorder.record(fields())
    spooling, release = threading.Event(), threading.Event()

    def slow_spool(kept: list[Any]) -> bool:
        spooling.set()
        assert release.wait(10)
        return True

    monkeypatch.setattr(recorder, "_spool", slow_spool)
    closer = threading.Thread(target=recorder.close_at_exit)
    closer.start()
    assert spooling.wait(10)
    assert recorder.stats()["kept"] == 3  # on their way to the spool: still counted
    handler = recorder.handler()  # a timer waking at this moment
    release.set()
    closer.join(10)
    assert handler.stats()["enqueued"] == 0
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 3, "dropped_disabled": 0,
                                "dropped_shutdown": 0}


def test_turned_off_before_exit_nothing_is_spooled_nor_handed_over(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "http://127.0.0.1:9/ingest")
    recorder = _recorder.recorder_for(None)
    recorder.record(fields())
    recorder.record(fields())
    monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", False)
    recorder.close_at_exit()
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 0,
                                "dropped_disabled": 2, "dropped_shutdown": 0}
    assert recorder._handler is None and not (tmp_path / "spool").exists()


# -------------------------------------------------------- exit, in real processes

# An exit hook registered before the package is imported runs after the
# package's own: it sees what the exit imported.
TOOL = """\
import atexit, sys
def report():
    print(" ".join(sorted(m for m in sys.modules if m in WATCHED)))
    from nat_telemetry._recorder import _recorders
    print(repr(_recorders[None].stats()), flush=True)
WATCHED = {"threading", "datetime", "enum", "logging", "typing", "collections",
           "nat_telemetry.handler", "nat_telemetry.events", "requests", "urllib.request"}
atexit.register(report)
from nat_telemetry import track_command
with track_command("tool", sys.argv[1]):
    pass
"""


def run_tool(tmp_path: Path, subcommand: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    return subprocess.run([sys.executable, "-S", str(script), subcommand], cwd=REPO_ROOT,
                          env=subprocess_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, check=True)


def test_a_command_line_spools_at_exit_without_a_handler(tmp_path: Path,
                                                         refused_url: str) -> None:
    spool = tmp_path / "spool"
    result = run_tool(tmp_path, "offline", NAT_TELEMETRY_ENDPOINT=refused_url,
                      NAT_TELEMETRY_SPOOL_DIR=str(spool))
    modules, stats = result.stdout.splitlines()
    assert modules == ""  # none of the watched modules, at any point
    assert ast.literal_eval(stats) == {"kept": 0, "handed_over": 0, "spooled": 1,
                                       "dropped_disabled": 0, "dropped_shutdown": 0}
    # Its detached sender may hold the batch (claimed, renamed) while it tries: it is there.
    assert Spool(str(spool)).summary()[:2] == (1, 1)


def test_an_otlp_endpoint_is_spooled_as_otlp_without_a_handler(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # A port nothing listens on: the batch stays for a later sender.
    result = run_tool(tmp_path, "otlp", NAT_TELEMETRY_ENDPOINT="otlp+http://127.0.0.1:9",
                      NAT_TELEMETRY_SPOOL_DIR=str(spool))
    modules, stats = result.stdout.splitlines()
    assert modules == ""
    assert ast.literal_eval(stats) == {"kept": 0, "handed_over": 0, "spooled": 1,
                                       "dropped_disabled": 0, "dropped_shutdown": 0}
    entries = [sf.parse_name(name) for name in os.listdir(spool)]
    assert [entry.kind for entry in entries if entry is not None] == ["otlp"]


def test_without_a_spool_a_handler_delivers_at_exit(tmp_path: Path,
                                                    loopback_endpoint: LoopbackEndpoint) -> None:
    result = run_tool(tmp_path, "nospool", NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                      NAT_TELEMETRY_SPOOL_DIR="off")
    modules, stats = result.stdout.splitlines()
    assert "nat_telemetry.handler" in modules.split()
    assert ast.literal_eval(stats) == {"kept": 0, "handed_over": 1, "spooled": 0,
                                       "dropped_disabled": 0, "dropped_shutdown": 0}
    (envelope,) = loopback_endpoint.envelopes
    assert envelope["events"][0]["parameters"]["subcommand"] == "nospool"


def test_the_stdout_sink_still_prints_at_exit(tmp_path: Path) -> None:
    result = run_tool(tmp_path, "printed", NAT_TELEMETRY_ENDPOINT="stdout",
                      NAT_TELEMETRY_SPOOL_DIR=str(tmp_path / "spool"))
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert json.loads(line)["events"][0]["parameters"]["subcommand"] == "printed"
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").glob("*.nsp"))
