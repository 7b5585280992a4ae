"""track_command's recorder: kept until exit, spooled, or handed to a handler.

The recorder keeps each event's fields with the time it was recorded; at exit
it spools them as one batch, and a sender validates and encodes them with the
handler's own transport.  The property test holds what a sender POSTs for a
spooled batch equal to what a handler POSTs for the same events.  The exit
paths run in real processes against a real loopback endpoint.
"""

from __future__ import annotations

import ast
import json
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.endpoints import LoopbackEndpoint
from support.helpers import REPO_ROOT, subprocess_env

from nat_telemetry import _process, config, payload, track, track_command
from nat_telemetry._rules import INT64_MAX, INT64_MIN
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.outcome import command_fields
from nat_telemetry.sender import run_sender
from nat_telemetry.spool import Spool
from nat_telemetry.transport import destination_id

# A tool that embeds the package: its own variables, version and nemoSource.
ACME = "acme-cli"
ACME_PREFIX = "ACME_CLI"


def forget(recorder: track.Recorder) -> None:
    """Close ``recorder`` for good: a timer still sleeping finds nothing to hand over,
    and a handler it made is stopped."""
    with recorder._lock:
        recorder._closed = True
        recorder._kept = []
    if recorder._handler is not None:
        recorder._handler.stop(0)


@pytest.fixture(autouse=True)
def recorders(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[Any, track.Recorder]]:
    """A registry of the test's own recorders.  The senders its spooling asks to
    start at exit are forgotten with it: this process's exit is not the test's."""
    found: dict[Any, track.Recorder] = {}
    monkeypatch.setattr(track, "_recorders", found)
    monkeypatch.setattr(_process, "_last", {})
    yield found
    for recorder in found.values():
        forget(recorder)


def fields(command: str = "tool", subcommand: str = "x", duration_ms: int = 5) -> Any:
    return command_fields(command, subcommand, "success", 0, "undefined", duration_ms)


def deadline() -> float:
    """An exit hook's deadline, far enough for a loaded machine."""
    return time.monotonic() + 5


def waiting(spool: Path) -> dict[str, tuple[int, int]]:
    """Files and events waiting per destination."""
    return {name: (files, events)
            for name, (files, events, _, _) in Spool(str(spool)).summary().items()}


# -------------------------------------- what is spooled is what a handler sends

tokens = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
error_classes = st.one_of(
    st.just("undefined"),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}(\.[A-Za-z_][A-Za-z0-9_]{0,30}){0,2}",
                  fullmatch=True))
commands = st.tuples(
    tokens, tokens, st.sampled_from(["success", "failure", "interrupted", "canceled"]),
    st.one_of(st.integers(-3, 300), st.integers(INT64_MIN, INT64_MAX)),
    error_classes, st.one_of(st.integers(-1, 10**6), st.integers(-1, INT64_MAX)))
moments = st.floats(min_value=1e9, max_value=4e9)
SENT_AT = 1.8e9  # the batch's sentTs, the same for both


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded=st.lists(st.tuples(commands, moments), min_size=1, max_size=5),
       session_id=st.sampled_from(["0123456789abcdef0123456789abcdef", "sid", "a:b.c"]),
       prefix=st.sampled_from([None, "ci-"]), kind=st.sampled_from(["nemo", "otlp"]),
       tool_name=st.sampled_from(["nat", ACME]))
def test_a_spooled_batch_is_sent_as_a_handler_sends_the_same_events(
        recorded: list[Any], session_id: str, prefix: str | None, kind: str, tool_name: str,
        loopback_endpoint: LoopbackEndpoint, recorders: dict[Any, track.Recorder],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded, spooled at exit, then delivered by a sender: the body it POSTs is the
    body a handler POSTs for the same events, recorded at the same times."""
    spool = tmp_path / "spool"
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(spool))
    monkeypatch.setenv(f"{ACME_PREFIX}_TELEMETRY_SPOOL_DIR", str(spool))
    monkeypatch.setenv(f"{ACME_PREFIX}_TELEMETRY_CONSENT_FILE", str(tmp_path / "acme.toml"))
    url = (loopback_endpoint.url if kind == "nemo"
           else f"otlp+http://127.0.0.1:{loopback_endpoint.port}")
    for recorder in recorders.values():  # each example records afresh
        forget(recorder)
    recorders.clear()
    times = [at for _, at in recorded]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(track, "time", types.SimpleNamespace(
            time=iter(times).__next__, perf_counter=time.perf_counter, sleep=time.sleep))
        patch.setattr(payload, "time", types.SimpleNamespace(time=lambda: SENT_AT,
                                                             gmtime=time.gmtime))
        if tool_name == "nat":
            patch.setattr(config, "NAT_TELEMETRY_ENDPOINT", url)
            patch.setattr(config, "SESSION_PREFIX", prefix)
            tool = sender_tool = config.NAT
        else:
            if prefix is not None:
                patch.setenv(f"{ACME_PREFIX}_SESSION_PREFIX", prefix)
            tool = config.Tool(ACME, endpoint=url, version="2.0.1", nemo_source="evaluator")
            tool.enabled = True
            # A detached sender knows the tool by its name only; the batch says the rest.
            sender_tool = config.Tool(ACME, env_prefix=ACME_PREFIX)
        nemo_source = None if tool is config.NAT else tool.nemo_source
        for command, _ in recorded:
            track.record_command(*command, session_id=session_id, tool=tool)
        recorder = track.recorder_for(session_id, tool)
        recorder.close_at_exit(deadline())
        assert recorder.stats()["spooled"] == len(recorded)

        first = loopback_endpoint.requests
        result = run_sender(str(spool), url, tool=sender_tool, linger_seconds=0)
        assert (result["batches_sent"], result["events_sent"]) == (1, len(recorded)), result

        handler = NATTelemetryHandler(session_id=session_id, tool=tool, spool_dir=None,
                                      flush_interval_seconds=3600)
        try:
            for command, at in recorded:  # as a hand-over gives them: with their times
                handler._offer(CliCommandEvent(**command_fields(*command, nemo_source)), at)
            assert handler.flush(timeout=10)
        finally:
            handler.stop(1)
    by_sender, by_handler = loopback_endpoint.records[first:]
    assert by_sender.path == by_handler.path
    assert by_sender.envelope is not None
    # Compared as written, keys in order.
    assert json.dumps(by_sender.envelope) == json.dumps(by_handler.envelope)
    assert waiting(spool) == {}


def test_an_event_the_class_refuses_is_dropped_by_the_sender_never_sent(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(spool))
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", loopback_endpoint.url)
    with pytest.raises(SystemExit), track_command("tool", "huge"):
        raise SystemExit(2**70)  # an exit code beyond 64 bits
    with track_command("tool", "fine"):
        pass
    recorder = track.recorder_for(None)
    assert recorder.stats()["kept"] == 2  # the names were checked, not the outcome
    recorder.close_at_exit(deadline())
    assert recorder.stats()["spooled"] == 2
    result = run_sender(str(spool), loopback_endpoint.url, linger_seconds=0)
    assert (result["events_invalid"], result["events_sent"]) == (1, 1), result
    assert [e["parameters"]["subcommand"] for e in loopback_endpoint.all_events] == ["fine"]
    assert waiting(spool) == {}


def test_an_event_the_class_refuses_is_dropped_at_hand_over_never_sent(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", loopback_endpoint.url)
    with pytest.raises(SystemExit), track_command("tool", "huge"):
        raise SystemExit(2**70)
    recorder = track.recorder_for(None)
    assert recorder.stats()["kept"] == 1 and recorder._handler is None
    handler = recorder.handler()
    assert handler.stats()["enqueued"] == 0
    with track_command("tool", "fine"):
        pass
    assert handler.flush(timeout=10)
    assert [e["parameters"]["subcommand"] for e in loopback_endpoint.all_events] == ["fine"]


# ------------------------------------------------------------ handing over


def test_a_batch_worth_hands_over_with_the_times_recorded(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", loopback_endpoint.url)
    recorder = track.recorder_for(None)
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
    earliest = payload.format_timestamp(datetime.fromtimestamp(before - 0.001, timezone.utc))
    assert min(stamps) >= earliest
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
    recorder = track._recorders[("nat", None)]
    assert recorder.stats()["kept"] == 1
    until = time.monotonic() + 10
    while loopback_endpoint.requests == 0 and time.monotonic() < until:
        time.sleep(0.02)
    (envelope,) = loopback_endpoint.envelopes
    assert envelope["events"][0]["parameters"]["subcommand"] == "slow"
    assert recorder._handler is not None and recorder.stats()["kept"] == 0


def test_after_the_exit_hook_an_event_is_counted_as_dropped(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    url = "http://127.0.0.1:9/ingest"
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", url)
    recorder = track.recorder_for(None)
    recorder.record(fields())
    recorder.close_at_exit(deadline())
    assert recorder.stats()["kept"] == 0
    assert waiting(tmp_path / "spool") == {destination_id(url, ""): (1, 1)}
    # A sender for that destination is started once every party is closed.
    assert [key[:3] for key in _process._last] == [("sender", str(tmp_path / "spool"), url)]
    recorder.record(fields())
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 1,
                                "dropped_disabled": 0, "dropped_shutdown": 1}
    assert recorder._handler is None


def test_a_hand_over_during_the_exit_spool_takes_nothing_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = track.recorder_for(None)
    for _ in range(3):
        recorder.record(fields())
    spooling, release = threading.Event(), threading.Event()

    def slow_spool(kept: list[Any]) -> bool:
        spooling.set()
        assert release.wait(10)
        return True

    monkeypatch.setattr(recorder, "_spool", slow_spool)
    closer = threading.Thread(target=recorder.close_at_exit, args=(deadline(),))
    closer.start()
    assert spooling.wait(10)
    assert recorder.stats()["kept"] == 3  # on their way to the spool: still counted
    handler = recorder.handler()  # a timer waking at this moment
    release.set()
    closer.join(10)
    assert handler.stats()["enqueued"] == 0
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 3, "dropped_disabled": 0,
                                "dropped_shutdown": 0}


@pytest.mark.parametrize("how", ["turned off here", "a no saved by another process"])
def test_turned_off_before_exit_nothing_is_spooled_nor_handed_over(
        how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "http://127.0.0.1:9/ingest")
    recorder = track.recorder_for(None)
    recorder.record(fields())
    recorder.record(fields())
    if how == "turned off here":
        monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", False)
    else:
        consent_file = Path(config.NAT.consent_file())
        consent_file.parent.mkdir(parents=True, exist_ok=True)
        consent_file.write_text('[telemetry]\nconsent = "disabled"\n'
                                f'prompt_version = "{config.PROMPT_VERSION}"\n')
    recorder.close_at_exit(deadline())
    assert recorder.stats() == {"kept": 0, "handed_over": 0, "spooled": 0,
                                "dropped_disabled": 2, "dropped_shutdown": 0}
    assert recorder._handler is None and not (tmp_path / "spool").exists()
    assert _process._last == {}  # no sender either


# -------------------------------------------------------- exit, in real processes

# An exit hook registered before the package is imported runs after the
# package's own: it sees what the exit imported.
TOOL = """\
import atexit, sys
def report():
    print(" ".join(sorted(m for m in sys.modules if m in WATCHED)))
    from nat_telemetry.track import _recorders
    print(repr(_recorders[("nat", None)].stats()), flush=True)
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
    assert waiting(spool) == {destination_id(refused_url, ""): (1, 1)}


def test_an_otlp_endpoint_is_spooled_for_its_own_destination_without_a_handler(
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # A port nothing listens on: the batch stays for a later sender.
    url = "otlp+http://127.0.0.1:9"
    result = run_tool(tmp_path, "otlp", NAT_TELEMETRY_ENDPOINT=url,
                      NAT_TELEMETRY_SPOOL_DIR=str(spool))
    modules, stats = result.stdout.splitlines()
    assert modules == ""
    assert ast.literal_eval(stats) == {"kept": 0, "handed_over": 0, "spooled": 1,
                                       "dropped_disabled": 0, "dropped_shutdown": 0}
    assert waiting(spool) == {destination_id(url, ""): (1, 1)}


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


def test_a_spool_that_cannot_be_written_is_delivered_from_here_at_exit(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_tool(tmp_path, "unwritable", NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                      NAT_TELEMETRY_SPOOL_DIR=str(blocker / "spool"))
    _, stats = result.stdout.splitlines()
    assert ast.literal_eval(stats) == {"kept": 0, "handed_over": 1, "spooled": 0,
                                       "dropped_disabled": 0, "dropped_shutdown": 0}
    (envelope,) = loopback_endpoint.envelopes
    assert envelope["events"][0]["parameters"]["subcommand"] == "unwritable"


def test_the_stdout_sink_still_prints_at_exit(tmp_path: Path) -> None:
    result = run_tool(tmp_path, "printed", NAT_TELEMETRY_ENDPOINT="stdout",
                      NAT_TELEMETRY_SPOOL_DIR=str(tmp_path / "spool"))
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert json.loads(line)["events"][0]["parameters"]["subcommand"] == "printed"
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").glob("*.nsp"))
