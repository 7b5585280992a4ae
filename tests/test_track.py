"""Tests for track_command and resolve_subcommand.

Events are checked the way a collector would see them: a real handler POSTs
to a URL mocked with ``responses``, and the JSON bodies are inspected.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from nat_telemetry import (
    NATTelemetryHandler,
    ValidationError,
    config,
    outcome,
    resolve_subcommand,
    track,
    track_command,
)
from nat_telemetry.events import CliCommandEvent

URL = "https://telemetry.test/v1/events"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Telemetry on, no real consent file, and no shared handler left behind."""
    monkeypatch.setenv("NAT_TELEMETRY_CONSENT_FILE", str(tmp_path / "telemetry.toml"))
    monkeypatch.delenv("NAT_TELEMETRY_ENABLED", raising=False)
    monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", True)
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "")
    recorders: dict[Any, track.Recorder] = {}
    monkeypatch.setattr(track, "_recorders", recorders)
    yield
    for recorder in list(recorders.values()):
        with recorder._lock:  # a timer still sleeping must not hand over later
            recorder._closed, recorder._kept = True, []
        if recorder._handler is not None:
            recorder._handler.stop(0)


class Sink:
    """A handler whose POSTs land in ``responses``; ``events()`` flushes and parses."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.handler = NATTelemetryHandler(endpoint=URL, flush_interval_seconds=60)

    def payloads(self) -> list[dict[str, Any]]:
        assert self.handler.flush(timeout=5)
        return [json.loads(call.request.body) for call in self.mock.calls]

    def bodies(self) -> str:
        self.payloads()
        return "".join(call.request.body.decode("utf-8") for call in self.mock.calls)

    def events(self) -> list[dict[str, Any]]:
        return [event["parameters"] for p in self.payloads() for event in p["events"]]

    def only_event(self) -> dict[str, Any]:
        events = self.events()
        assert len(events) == 1, events
        return events[0]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, URL, status=200)
        result = Sink(mock)
        try:
            yield result
        finally:
            result.handler.stop(1)


# ----------------------------------------------------------- context manager


def test_success_records_every_field(sink: Sink) -> None:
    with track_command("convert", "csv", handler=sink.handler):
        time.sleep(0.02)
    event = sink.only_event()
    assert event == {
        "nemoSource": "agent_toolkit",
        "command": "convert",
        "subcommand": "csv",
        "taskStatus": "success",
        "durationMs": event["durationMs"],
        "exitCode": 0,
        "errorClass": "undefined",
        "pythonVersion": platform.python_version(),
    }
    assert 15 <= event["durationMs"] < 5000


def test_subcommand_defaults_to_undefined(sink: Sink) -> None:
    with track_command("convert", handler=sink.handler):
        pass
    assert sink.only_event()["subcommand"] == "undefined"


def test_exception_is_reraised_unchanged_and_recorded_as_failure(sink: Sink) -> None:
    original = ValueError("/home/alice/secret.txt is not valid")
    with pytest.raises(ValueError) as caught, track_command("convert", handler=sink.handler):
        raise original
    assert caught.value is original
    event = sink.only_event()
    assert (event["taskStatus"], event["exitCode"], event["errorClass"]) == (
        "failure", 1, "ValueError")
    assert "alice" not in sink.bodies()


@pytest.mark.parametrize(
    ("code", "status", "exit_code", "error_class"),
    [
        (0, "success", 0, "undefined"),
        (None, "success", 0, "undefined"),
        (3, "failure", 3, "SystemExit"),
        ("could not open /home/alice/x", "failure", 1, "SystemExit"),
    ],
)
def test_system_exit(sink: Sink, code: Any, status: str, exit_code: int,
                     error_class: str) -> None:
    original = SystemExit(code)
    with pytest.raises(SystemExit) as caught, track_command("convert", handler=sink.handler):
        raise original
    assert caught.value is original
    event = sink.only_event()
    assert (event["taskStatus"], event["exitCode"], event["errorClass"]) == (
        status, exit_code, error_class)
    assert "alice" not in sink.bodies()


def test_keyboard_interrupt_is_interrupted_130(sink: Sink) -> None:
    original = KeyboardInterrupt()
    tracker = track_command("convert", handler=sink.handler)
    with pytest.raises(KeyboardInterrupt) as caught, tracker:
        raise original
    assert caught.value is original
    event = sink.only_event()
    assert (event["taskStatus"], event["exitCode"]) == ("interrupted", 130)


def test_exception_class_with_an_unsendable_name_is_still_recorded(sink: Sink) -> None:
    weird = type("not an identifier", (Exception,), {})
    with pytest.raises(weird), track_command("convert", handler=sink.handler):
        raise weird()
    assert sink.only_event()["errorClass"] == "undefined"


def test_one_tracker_nested_times_each_block(sink: Sink) -> None:
    tracker = track_command("convert", handler=sink.handler)
    with tracker:
        time.sleep(0.03)
        with tracker:
            pass
    inner, outer = sink.events()
    assert inner["durationMs"] < 25 <= outer["durationMs"]


def test_one_tracker_shared_by_threads(sink: Sink) -> None:
    tracker = track_command("convert", handler=sink.handler)
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        with tracker:
            barrier.wait()
            time.sleep(0.001 * index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = sink.events()
    assert len(events) == 8
    assert all(e["durationMs"] >= 0 and e["taskStatus"] == "success" for e in events)


# ----------------------------------------------------------------- decorator


def test_decorator_times_each_call_and_keeps_the_function(sink: Sink) -> None:
    @track_command("convert", "csv", handler=sink.handler)
    def convert(delay: float, *, result: str) -> str:
        """Convert something."""
        time.sleep(delay)
        return result

    assert convert(0.03, result="a") == "a"
    assert convert(0, result="b") == "b"
    assert convert.__name__ == "convert"
    assert convert.__doc__ == "Convert something."
    slow, fast = sink.events()
    assert fast["durationMs"] < 25 <= slow["durationMs"]


def test_decorator_reraises_and_records_failures(sink: Sink) -> None:
    original = OSError("disk full at /srv")

    @track_command("convert", handler=sink.handler)
    def convert() -> None:
        raise original

    with pytest.raises(OSError) as caught:
        convert()
    assert caught.value is original
    assert sink.only_event()["errorClass"] == "OSError"


def test_decorator_on_a_coroutine_function_times_the_await(sink: Sink) -> None:
    @track_command("serve", handler=sink.handler)
    async def serve() -> int:
        await asyncio.sleep(0.03)
        return 7

    assert asyncio.run(serve()) == 7
    event = sink.only_event()
    assert event["durationMs"] >= 25 and event["taskStatus"] == "success"


# -------------------------------------------------------- validation, errors


@pytest.mark.parametrize(
    ("command", "subcommand"),
    [("bad/name", None), ("/usr/bin/tool", None), ("two words", None), ("", None),
     ("x" * 65, None), ("ok", "C:\\Users\\alice"), ("ok", "--config=secret.yml x"),
     (123, None)],
)
def test_invalid_names_fail_at_construction(command: Any, subcommand: Any) -> None:
    with pytest.raises(ValidationError):
        track_command(command, subcommand)


def test_handler_and_session_id_together_are_rejected(sink: Sink) -> None:
    with pytest.raises(ValueError, match="not both"):
        track_command("convert", handler=sink.handler, session_id="abc")


def test_telemetry_errors_never_escape(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(NATTelemetryHandler):
        def enqueue(self, event: Any) -> None:
            raise RuntimeError("handler exploded")

    broken = Broken()
    original = LookupError("mine")
    with caplog.at_level("DEBUG", logger="nat_telemetry"):
        with track_command("convert", handler=broken):
            pass
        with pytest.raises(LookupError) as caught, track_command("convert", handler=broken):
            raise original
    assert caught.value is original
    assert "handler exploded" in caplog.text


def test_exit_without_enter_records_unknown_duration(sink: Sink) -> None:
    tracker = track_command("convert", handler=sink.handler)
    assert tracker.__exit__(None, None, None) is False
    assert sink.only_event()["durationMs"] == -1


def test_disabled_telemetry_records_nothing_and_creates_no_handler(
        monkeypatch: pytest.MonkeyPatch, sink: Sink) -> None:
    monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", False)
    with track_command("convert"):
        pass
    assert track._recorders == {}
    with track_command("convert", handler=sink.handler):
        pass
    assert sink.events() == []
    assert sink.handler.stats()["dropped_disabled"] == 1


# ------------------------------------------------------------ shared handler


def test_shared_recorder_is_created_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[track.Recorder] = []
    real = track.Recorder

    def counting(session_id: str, tool: config.Tool) -> track.Recorder:
        time.sleep(0.01)  # widen the window in which a second creation could race
        recorder = real(session_id, tool)
        created.append(recorder)
        return recorder

    monkeypatch.setattr(track, "Recorder", counting)
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        with track_command("convert"):
            pass

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1
    (recorder,) = created
    assert recorder is track._recorders[("nat", None)]
    assert recorder.stats()["kept"] == 16
    handler = recorder.handler()
    assert recorder.stats()["kept"] == 0
    assert handler.stats()["enqueued"] == handler.stats()["pending"] == 16
    assert handler.session_id == recorder.session_id
    assert len(handler.session_id) == 32
    int(handler.session_id, 16)


def test_shared_session_id_has_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "SESSION_PREFIX", "ci-")
    with track_command("convert"):
        pass
    recorder = track._recorders[("nat", None)]
    session_id = recorder.session_id
    assert session_id.startswith("ci-") and len(session_id) == 3 + 32
    assert recorder.handler().session_id == session_id  # the prefix is added once


def test_session_id_selects_its_own_shared_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    with track_command("convert", session_id="parent-session"):
        pass
    with track_command("convert", session_id="parent-session"):
        pass
    with track_command("convert"):
        pass
    assert track._recorders[("nat", "parent-session")].session_id == "parent-session"
    assert track._recorders[("nat", "parent-session")].handler().stats()["enqueued"] == 2
    assert track._recorders[("nat", None)].handler().stats()["enqueued"] == 1


def test_a_tool_has_a_recorder_of_its_own(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_CLI_TELEMETRY_SPOOL_DIR", "off")
    acme = config.Tool("acme-cli", endpoint=URL, version="3.1", nemo_source="evaluator")
    acme.enabled = True
    with track_command("convert", tool=acme):
        pass
    with track_command("convert"):
        pass
    assert set(track._recorders) == {("acme-cli", None), ("nat", None)}
    handler = track._recorders[("acme-cli", None)].handler()
    assert handler.tool is acme
    assert handler.flush(timeout=5)
    (body,) = [json.loads(call.request.body) for call in sink.mock.calls]
    assert (body["productName"], body["productVersion"]) == ("acme-cli", "3.1")
    (event,) = body["events"]
    assert (event["parameters"]["nemoSource"], event["parameters"]["command"]) == (
        "evaluator", "convert")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_a_new_session_id(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, sys, warnings
        warnings.simplefilter("ignore")
        from nat_telemetry import track, track_command
        with track_command("parent"):
            pass
        parent = track._recorders[("nat", None)]
        pid = os.fork()
        if pid == 0:
            with track_command("child"):
                pass
            child = track._recorders[("nat", None)]
            print("child", child.session_id, child is parent, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", track._recorders[("nat", None)].session_id, flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
    env.update(NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_CONSENT_FILE=str(tmp_path / "c.toml"),
               PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout.split()
    assert out[0] == "child" and out[3] == "parent"
    child_id, child_is_parent, parent_id = out[1], out[2], out[4]
    assert child_is_parent == "False"
    assert len(child_id) == len(parent_id) == 32 and child_id != parent_id


# ------------------------------------------------------------ python_version


@pytest.mark.parametrize(
    ("info", "expected"),
    [((3, 11, 7, "final", 0), "3.11.7"), ((3, 13, 0, "candidate", 1), "3.13.0rc1"),
     ((3, 14, 0, "alpha", 4), "3.14.0a4"), ((3, 12, 0, "beta", 2), "3.12.0b2")],
)
def test_python_version_format(monkeypatch: pytest.MonkeyPatch, info: tuple[Any, ...],
                               expected: str) -> None:
    fields = ("major", "minor", "micro", "releaselevel", "serial")
    fake = types.SimpleNamespace(**dict(zip(fields, info)))
    monkeypatch.setattr(outcome, "sys", types.SimpleNamespace(version_info=fake))
    assert outcome.python_version() == expected
    CliCommandEvent(command="x", task_status="success", python_version=expected)


def test_python_version_matches_platform() -> None:
    assert outcome.python_version() == platform.python_version().rstrip("+")


# -------------------------------------------------------- resolve_subcommand

REGISTERED = {
    "workflow": {"create", "delete", "reinstall"},
    "info": ("list-components", "list-channels"),
    "run": (),
}


@pytest.mark.parametrize(
    ("top_level", "argv", "expected"),
    [
        # the happy paths
        ("workflow", ["workflow", "create", "my_agent"], "create"),
        ("info", ["info", "list-components"], "list-components"),
        # flags before and after the top level are skipped
        ("workflow", ["--log-level", "-v", "workflow", "--force", "-q", "delete"], "delete"),
        # a positional argument where a subcommand would be: never returned
        ("run", ["run", "my-secret-config.yml"], None),
        ("workflow", ["workflow", "my_private_project"], None),
        # an unknown token under a group
        ("workflow", ["workflow", "frobnicate"], None),
        # a later matching token is not taken
        ("workflow", ["workflow", "alice-notes.txt", "create"], None),
        # an option's value is the first non-flag token: None, documented
        ("workflow", ["workflow", "--config", "c.yml", "create"], None),
        # the top level missing from argv
        ("workflow", ["create"], None),
        ("workflow", [], None),
        # nothing after the top level
        ("workflow", ["workflow", "--help"], None),
        # the top level not registered
        ("eval", ["eval", "create"], None),
        # a subcommand of another group is not one of this group's
        ("info", ["info", "create"], None),
        # the first occurrence of the top level counts
        ("workflow", ["workflow", "x", "workflow", "create"], None),
    ],
)
def test_resolve_subcommand(top_level: str, argv: list[str], expected: Any) -> None:
    assert resolve_subcommand(REGISTERED, top_level, argv) == expected


def test_resolve_subcommand_treats_a_string_as_one_name() -> None:
    assert resolve_subcommand({"x": "create"}, "x", ["x", "rea"]) is None
    assert resolve_subcommand({"x": "create"}, "x", ["x", "create"]) == "create"


def test_resolve_subcommand_never_returns_an_unregistered_token() -> None:
    rng = random.Random(1234)
    vocabulary = ["workflow", "info", "create", "list-components", "-v", "--x", "secret",
                  "/etc/passwd", "", "workflow2", "CREATE"]
    allowed = {name for names in REGISTERED.values() for name in names}
    for _ in range(2000):
        argv = [rng.choice(vocabulary) for _ in range(rng.randint(0, 6))]
        top = rng.choice(["workflow", "info", "run", "eval"])
        found = resolve_subcommand(REGISTERED, top, argv)
        assert found is None or (found in REGISTERED[top] and found in allowed)


def test_resolve_subcommand_result_feeds_track_command(sink: Sink) -> None:
    argv = ["workflow", "create", "my_agent"]
    sub = resolve_subcommand(REGISTERED, "workflow", argv)
    with track_command("workflow", sub, handler=sink.handler):
        pass
    assert sink.only_event()["subcommand"] == "create"
    assert "my_agent" not in sink.bodies()


def test_telemetry_off_imports_nothing_of_ours_but_config_and_the_name_rules() -> None:
    """The disabled path of a command line: config and the name check, nothing else."""
    code = ("import sys\n"
            "from nat_telemetry import track_command\n"
            "with track_command('tool', 'x'):\n"
            "    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('nat_telemetry')"
            " or m in ('threading', 'enum', 'logging', 'typing', 'inspect'))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
    env.update(NAT_TELEMETRY_ENABLED="0", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.split() == ["nat_telemetry", "nat_telemetry._rules",
                                     "nat_telemetry.config", "nat_telemetry.track"]


def test_a_bad_name_fails_at_the_call_site_with_telemetry_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", False)
    with pytest.raises(ValidationError, match="command"):
        track_command("/home/alice/bin/tool")
    with pytest.raises(ValidationError, match="subcommand"):
        track_command("tool", "two words")
