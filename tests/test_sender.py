"""The detached sender, against real loopback endpoints, in real processes.

Batches are spooled as a handler spools them (records of real events, for one
destination); the sender validates them again and sends them through the same
transports.  Detached senders started by a test are waited for (or killed)
before the test ends, by pid; the spool folders are temporary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint, QuietHTTPServer, Reply
from support.helpers import REPO_ROOT, event, ids, renames, subprocess_env, wait_until
from support.otlp_receiver import Answer, OTLPReceiver, attributes_of

from nat_telemetry import config, consent, sender
from nat_telemetry.payload import QueuedEvent, format_timestamp
from nat_telemetry.retry import RetryPolicy
from nat_telemetry.spool import Spool, encode_batch
from nat_telemetry.transport import destination_id, redact

FAST_RETRIES = RetryPolicy(3, backoff_base=0.01, backoff_max=0.05)
IDENTITY = {"session_id": "spooled", "client_version": "1.0", "product": None}


@pytest.fixture(autouse=True)
def no_sender_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No token from the caller's environment; every sender a test started and did
    not wait for is killed and reaped."""
    monkeypatch.delenv(config.TOKEN_ENV_VAR, raising=False)
    yield
    for child in list(sender._children):
        if isinstance(child, NotStarted):
            sender._children.remove(child)
            continue
        pid = child_pid(child)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        sender._children.remove(child)


def child_pid(child: Any) -> int:
    return child if isinstance(child, int) else int(child.pid)


def wait_for_sender(timeout: float) -> int:
    """The exit code of the last sender started, waiting at most ``timeout`` seconds."""
    child = sender._children[-1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(child, int):
            pid, status = os.waitpid(child, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if pid else None
        else:
            code = child.poll()
        if code is not None:
            sender._children.remove(child)
            return code
        time.sleep(0.01)
    raise AssertionError(f"the sender is still running after {timeout} s")


def records(*durations: int) -> list[list[Any]]:
    """Spool records of events whose ``duration_ms`` are ``durations``."""
    now = datetime.now(timezone.utc)
    return [sender.record_of(QueuedEvent(event(duration_ms=d), now)) for d in durations]


def spool_batches(folder: Path, endpoint: str, count: int, token: str = "",
                  first: int = 0) -> list[int]:
    """``count`` batches of one event each for ``endpoint`` (ids ``first``...)."""
    spool = Spool(str(folder))
    for n in range(first, first + count):
        assert spool.write(encode_batch(IDENTITY, records(n)), 1,
                           destination_id(endpoint, token)).written
    return list(range(first, first + count))


def spool_records(folder: Path, endpoint: str, batch: Sequence[Any], events: int | None = None,
                  identity: dict[str, Any] | None = None, token: str = "") -> None:
    body = encode_batch(IDENTITY if identity is None else identity, batch)
    assert Spool(str(folder)).write(body, len(batch) if events is None else events,
                                    destination_id(endpoint, token)).written


def received(endpoint: LoopbackEndpoint) -> list[int]:
    """The ids of every event POSTed, whatever the answer."""
    return sorted(ids(endpoint.all_events))


def ready_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".nsp"))


def waiting(folder: Path) -> dict[str, tuple[int, int]]:
    """Files and events waiting, per destination."""
    return {d: s[:2] for d, s in Spool(str(folder)).summary().items()}


def run(folder: Path, endpoint: str, **kwargs: Any) -> dict[str, int]:
    """An in-process run that does not linger (unless told) and retries fast."""
    kwargs.setdefault("lifetime_seconds", 10)
    kwargs.setdefault("linger_seconds", 0.0)
    kwargs.setdefault("policy", FAST_RETRIES)
    kwargs.setdefault("token", "")
    return sender.run_sender(str(folder), endpoint, **kwargs)


def lock_rounds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time a sender takes its destination's lock, from now on."""
    rounds: list[int] = []
    real_acquire = sender.acquire_lock

    def counting(directory: str, destination: str, **kwargs: Any) -> Any:
        rounds.append(1)
        return real_acquire(directory, destination, **kwargs)

    monkeypatch.setattr(sender, "acquire_lock", counting)
    return rounds


class NotStarted:
    """Stands for a sender that was planned, not started (no process, no pid)."""

    def poll(self) -> int:
        return 0


def planned_start(folder: Path, endpoint: str, lifetime: float = 20.0,
                  **kwargs: Any) -> tuple[list[str], dict[str, str]]:
    """The command line and environment ``start_detached_sender`` starts a sender with."""
    planned: list[tuple[list[str], dict[str, str]]] = []
    stand_in = NotStarted()

    def record(argv: list[str], env: dict[str, str], keep: int | None = None) -> NotStarted:
        planned.append((argv, env))
        return stand_in

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sender, "_HAVE_POSIX_SPAWN", False)
        patch.setattr(sender, "_spawn_subprocess", record)
        assert sender.start_detached_sender(str(folder), endpoint, lifetime_seconds=lifetime,
                                            **kwargs)
    sender._children.remove(stand_in)
    ((argv, env),) = planned
    return argv, env


# ------------------------------------------------------------------ delivery


@pytest.mark.parametrize("spawn", ["posix_spawn", "subprocess"])
def test_a_detached_sender_delivers_the_spool_and_empties_it(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch,
        spawn: str) -> None:
    if spawn == "subprocess":
        monkeypatch.setattr(sender, "_HAVE_POSIX_SPAWN", False)
    folder = tmp_path / "spool"
    expected = spool_batches(folder, loopback_endpoint.url, 4)
    assert sender.start_detached_sender(str(folder), loopback_endpoint.url, lifetime_seconds=20)
    assert wait_for_sender(20) == 0
    assert received(loopback_endpoint) == expected  # each once
    assert Spool(str(folder)).summary() == {}
    assert {r.path for r in loopback_endpoint.records} == {"/ingest"}
    state = Spool(str(folder)).states()[destination_id(loopback_endpoint.url, "")]
    assert state["endpoint"] == loopback_endpoint.url and "delivered_at" in state


def test_senders_started_together_deliver_each_batch_once(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "spool"
    expected = spool_batches(folder, loopback_endpoint.url, 30)
    # Each start reaps the senders already done: this test waits for all three itself.
    monkeypatch.setattr(sender, "_reap", lambda: None)
    for _ in range(3):
        assert sender.start_detached_sender(str(folder), loopback_endpoint.url, lifetime_seconds=20)
    codes = sorted(wait_for_sender(20) for _ in range(3))
    assert codes[0] == 0 and set(codes) <= {0, 1}  # 1: found the lock taken
    assert received(loopback_endpoint) == expected


def test_the_envelope_is_built_from_what_was_recorded(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    stamp = 1_700_000_000.25
    record = sender.record_of(QueuedEvent(event(duration_ms=4, exit_code=3),
                                          datetime.fromtimestamp(stamp, timezone.utc), 2))
    identity = {"session_id": "run-42", "client_version": "9.9", "product": ["mytool", "2.0"]}
    spool_records(folder, loopback_endpoint.url, [record], identity=identity)
    assert run(folder, loopback_endpoint.url)["events_sent"] == 1
    (envelope,) = loopback_endpoint.envelopes
    assert (envelope["sessionId"], envelope["clientVer"], envelope["productName"],
            envelope["productVersion"]) == ("run-42", "9.9", "mytool", "2.0")
    (sent,) = envelope["events"]
    assert sent["name"] == "nat_cli_command"
    assert sent["ts"] == format_timestamp(datetime.fromtimestamp(stamp, timezone.utc))
    assert sent["parameters"] == event(duration_ms=4, exit_code=3).model_dump(by_alias=True)


def test_every_record_is_validated_again_and_bad_ones_are_never_sent(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    (good,) = records(1)
    name, _schema, stamp, _retries, parameters = good
    batch = [
        good,
        [name, None, stamp, 0, {**parameters, "exitCode": 2**70}],  # the class refuses it
        [name, None, stamp, 0, {**parameters, "hostname": "mine"}],  # an unknown field
        ["my_tool_event", "2.1", stamp, 0, {"colour": "red"}],  # a class of another program
        ["my_tool_event", None, stamp, 0, {"colour": "red"}],  # ... without its version
        [123, "2.1", stamp, 0, {"colour": "red"}],  # a name that is not one
        [None, "2.1", stamp, 0, {"colour": "red"}],
        [name, None, "yesterday", 0, parameters],
        [name, None, 1e300, 0, parameters],
        ["too", "short"],
        "not a record",
    ]
    spool_records(folder, loopback_endpoint.url, batch)
    spool_records(folder, loopback_endpoint.url, [good], events=1)
    assert Spool(str(folder)).write(b"not a batch", 3,
                                    destination_id(loopback_endpoint.url, "")).written
    result = run(folder, loopback_endpoint.url)
    assert (result["events_sent"], result["events_invalid"], result["batches_sent"]) == (
        3, 9 + 3, 2)
    first, second = loopback_endpoint.envelopes
    assert [(e["name"], e["parameters"]) for e in first["events"]] == [
        ("nat_cli_command", parameters), ("my_tool_event", {"colour": "red"})]
    assert ids(second["events"]) == [1]
    assert Spool(str(folder)).summary() == {}  # the invalid ones deleted, not kept for later


def test_a_batch_spooled_just_before_the_lock_is_let_go_is_not_left_behind(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another run spools a batch after this sender's last look at the folder,
    # while it still holds the lock; that run's own sender finds it busy.
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    spool_batches(folder, url, 1)
    real_release = sender._Lock.release
    late: list[int] = []

    def release_after_a_late_batch(lock: Any) -> None:
        if not late:
            late.append(1)
            spool_batches(folder, url, 1, first=1)
            assert run(folder, url)["busy"] == 1
        real_release(lock)

    monkeypatch.setattr(sender._Lock, "release", release_after_a_late_batch)
    result = run(folder, url)
    assert received(loopback_endpoint) == [0, 1]
    assert result["batches_sent"] == 2
    assert Spool(str(folder)).summary() == {}


@pytest.mark.parametrize("dated", ["earlier", "ahead"])
def test_a_batch_it_cannot_take_does_not_keep_it_going_round(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch, dated: str) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    destination = destination_id(url, "")
    spool_batches(folder, url, 1)
    # A batch of a newer format (claimed, put back, never sent here), dated
    # before this run, or ahead of it as by a clock that was set back since.
    created = time.time_ns() + (10**10 if dated == "ahead" else -(10**9))
    future = folder / f"{created:020d}.0.0.0badf00d.{destination}.1.30.nsp"
    future.write_bytes(b"NATSPOOL 3 %s 1 1 2 extra\n{}" % destination.encode())
    rounds = lock_rounds(monkeypatch)
    result = run(folder, url)
    assert received(loopback_endpoint) == [0] and result["batches_sent"] == 1
    assert len(rounds) == (1 if dated == "earlier" else 1 + sender._LATE_LOOKS)
    assert future.exists()


def test_an_idle_sender_lingers_for_batches_of_runs_still_finishing(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    spool_batches(folder, url, 1)
    now = [1000.0]  # the run's clock, moved by its own sleeps only
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if not slept:  # a run finishing while this sender waits
            spool_batches(folder, url, 1, first=1)
        slept.append(seconds)
        now[0] += seconds

    rounds = lock_rounds(monkeypatch)
    result = run(folder, url, linger_seconds=0.5, sleep=sleep, clock=lambda: now[0])
    assert (result["batches_sent"], received(loopback_endpoint), len(rounds)) == (2, [0, 1], 1)
    # It looked again once before the late batch came, then waited the whole
    # linger after it, looking every POLL_SECONDS.
    assert slept[0] == sender.POLL_SECONDS
    assert sum(slept[1:]) == pytest.approx(0.5) and max(slept) <= sender.POLL_SECONDS


def test_rejected_and_too_large_batches_are_dropped_from_the_spool(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, loopback_endpoint.url, 3)
    loopback_endpoint.script(400, 413, 200)
    result = run(folder, loopback_endpoint.url)
    assert (result["events_rejected"], result["events_too_large"], result["events_sent"],
            result["batches_sent"], result["transient_failures"]) == (1, 1, 1, 1, 0)
    assert Spool(str(folder)).summary() == {}


def test_a_batch_too_large_for_the_endpoint_is_sent_in_halves(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_records(folder, loopback_endpoint.url, records(0, 1, 2, 3))
    loopback_endpoint.script(413)
    result = run(folder, loopback_endpoint.url)
    assert (result["events_sent"], result["events_too_large"]) == (4, 0)
    assert loopback_endpoint.batch_sizes() == [4, 2, 2]
    assert ids(loopback_endpoint.events) == [0, 1, 2, 3]
    assert Spool(str(folder)).summary() == {}


def test_only_what_failed_goes_back_to_the_spool(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    spool_records(folder, url, records(0, 1, 2, 3))
    loopback_endpoint.script(413, 200, 503)  # the first half goes, the second fails
    first = run(folder, url, policy=RetryPolicy(0, backoff_base=0.01, backoff_max=0.05))
    assert (first["events_sent"], first["transient_failures"]) == (2, 1)
    assert waiting(folder) == {destination_id(url, ""): (1, 2)}
    second = run(folder, url)
    assert second["events_sent"] == 2
    assert ids(loopback_endpoint.events) == [0, 1, 2, 3]  # each sent once
    assert Spool(str(folder)).summary() == {}


@pytest.mark.parametrize("how", ["consent file", "DO_NOT_TRACK", "variable"])
def test_a_no_given_meanwhile_deletes_what_waits(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch,
        how: str) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, loopback_endpoint.url, 3)
    monkeypatch.delenv(config.TELEMETRY_ENV_VAR, raising=False)
    if how == "consent file":
        assert consent.write_persisted_consent(consent.ConsentState.DISABLED)
    elif how == "DO_NOT_TRACK":
        monkeypatch.setenv(config.DO_NOT_TRACK_ENV_VAR, "yes")
    else:
        monkeypatch.setenv(config.TELEMETRY_ENV_VAR, "0")
    result = run(folder, loopback_endpoint.url)
    assert (result["events_revoked"], result["events_sent"]) == (3, 0)
    assert loopback_endpoint.requests == 0 and Spool(str(folder)).summary() == {}


# --------------------------------------------------- endpoint down or silent


def test_a_refusing_endpoint_leaves_the_spool_for_later(tmp_path: Path, refused_url: str) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, refused_url, 3)
    before = ready_names(folder)
    started = time.monotonic()
    assert sender.start_detached_sender(str(folder), refused_url, lifetime_seconds=2.0)
    assert wait_for_sender(10) == 0
    assert time.monotonic() - started < 2.0 + 2.0  # its lifetime, plus an interpreter start
    assert ready_names(folder) == before  # released, not left claimed
    state = Spool(str(folder)).states()[destination_id(refused_url, "")]
    assert (state["failure"], "delivered_at" in state) == ("refused", False)


def test_a_silent_endpoint_cannot_hold_the_sender_past_its_lifetime(
        tmp_path: Path, black_hole: BlackHole) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, black_hole.url, 2)
    started = time.monotonic()
    assert sender.start_detached_sender(str(folder), black_hole.url, lifetime_seconds=1.5)
    assert wait_for_sender(10) == 0
    assert time.monotonic() - started < 1.5 + 2.0
    assert black_hole.connections  # it did try
    assert len(ready_names(folder)) == 2
    assert Spool(str(folder)).states()[destination_id(black_hole.url, "")]["failure"] == (
        "timeout")


def test_failures_are_noted_for_status_with_the_endpoint_redacted(
        tmp_path: Path, refused_url: str) -> None:
    folder = tmp_path / "spool"
    endpoint = refused_url.replace("://", "://user:pa55word@") + "?key=s3cret"
    spool_batches(folder, endpoint, 1)
    result = run(folder, endpoint)
    assert result["transient_failures"] == 1 + FAST_RETRIES.max_retries
    (state,) = Spool(str(folder)).states().values()
    assert state["endpoint"] == redact(endpoint)
    assert "pa55word" not in state["endpoint"] and "s3cret" not in state["endpoint"]
    assert state["failure"] == "refused"
    for path in folder.iterdir():
        assert b"pa55word" not in path.read_bytes() and "pa55word" not in path.name


def test_a_certificate_failure_ends_the_run_at_once(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    # https:// to a plain HTTP server: the TLS handshake fails, as with an
    # untrusted certificate; retrying now cannot help.
    folder = tmp_path / "spool"
    endpoint = loopback_endpoint.url.replace("http://", "https://")
    spool_batches(folder, endpoint, 2)
    result = run(folder, endpoint)
    assert (result["transient_failures"], result["events_sent"]) == (1, 0)
    assert Spool(str(folder)).states()[destination_id(endpoint, "")]["failure"] == "tls"
    assert len(ready_names(folder)) == 2


def test_transient_failures_back_off_then_deliver(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    expected = spool_batches(folder, url, 2)
    loopback_endpoint.script(Reply(503, {"Retry-After": "1"}), 500)
    started = time.monotonic()
    result = run(folder, url)
    assert time.monotonic() - started >= 1.0  # the Retry-After was honoured
    assert result["transient_failures"] == 2 and result["events_sent"] == 2
    assert received(loopback_endpoint) == [0, 0, *expected]  # batch 0 was tried three times
    assert ids(loopback_endpoint.events) == [0, 1]
    assert not (folder / f"{destination_id(url, '')}.backoff").exists()  # cleared by success


def test_a_retry_after_past_the_lifetime_defers_the_next_senders(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    spool_batches(folder, url, 2)
    loopback_endpoint.set_default(Reply(429, {"Retry-After": "60"}))
    started = time.monotonic()
    first = run(folder, url, lifetime_seconds=5)
    assert time.monotonic() - started < 3  # did not sit out the 60 s
    assert (first["transient_failures"], first["deferred"]) == (1, 0)
    assert (folder / f"{destination_id(url, '')}.backoff").exists()
    assert len(ready_names(folder)) == 2
    second = run(folder, url, lifetime_seconds=5)
    assert (second["locked"], second["deferred"]) == (1, 1)
    # Another process honours it too.
    assert sender.start_detached_sender(str(folder), url, lifetime_seconds=5)
    assert wait_for_sender(10) == 0
    assert loopback_endpoint.requests == 1 and len(ready_names(folder)) == 2


def test_consecutive_transient_failures_end_the_run(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, loopback_endpoint.url, 2)
    loopback_endpoint.set_default(503)
    result = run(folder, loopback_endpoint.url)
    assert result["transient_failures"] == 4 == loopback_endpoint.requests  # 1 + max_retries
    assert len(ready_names(folder)) == 2


def test_an_endpoint_that_can_never_be_sent_to_leaves_the_spool_alone(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    endpoint = "http://bad host/x"
    spool_batches(folder, endpoint, 1)
    result = run(folder, endpoint)
    assert set(result.values()) == {0}
    assert len(ready_names(folder)) == 1


# --------------------------------------------- destinations, token, OTLP


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as server:
        yield server


def otlp_durations(receiver: OTLPReceiver) -> list[int]:
    return [attributes_of(r)["durationMs"] for r in receiver.accepted_records]


def test_a_sender_takes_only_the_batches_of_its_destination(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, receiver: OTLPReceiver) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    spool_records(folder, receiver.endpoint, records(5, 6))
    expected = spool_batches(folder, url, 2)
    spool_batches(folder, url, 1, token="other-token", first=7)  # same URL, other credentials
    others = {destination_id(receiver.endpoint, ""): (1, 2),
              destination_id(url, "other-token"): (1, 1)}
    before = ready_names(folder)
    with renames() as renamed:
        nemo = run(folder, url)
    assert (nemo["events_sent"], received(loopback_endpoint)) == (2, expected)
    assert waiting(folder) == others
    assert set(ready_names(folder)) < set(before)  # the others never even claimed
    mine = destination_id(url, "")
    assert renamed and all(f".{mine}." in name for name in renamed)

    otlp = run(folder, receiver.endpoint)
    assert (otlp["batches_sent"], otlp["events_sent"]) == (1, 2)
    (export,) = receiver.exports
    assert (export.path, export.content_type, export.error) == ("/v1/logs", "application/json",
                                                                None)
    assert otlp_durations(receiver) == [5, 6]
    assert waiting(folder) == {destination_id(url, "other-token"): (1, 1)}
    assert run(folder, url, token="other-token")["events_sent"] == 1
    assert received(loopback_endpoint) == [0, 1, 7]
    assert Spool(str(folder)).summary() == {}


def test_a_lock_held_for_one_destination_never_holds_back_another(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    stuck = "http://127.0.0.1:9/stuck"
    spool_batches(folder, stuck, 2)
    spool_batches(folder, url, 2)
    lock = sender.acquire_lock(str(folder), destination_id(stuck, ""))
    assert lock is not None  # as a sender stuck on a dead endpoint holds it
    try:
        assert run(folder, url)["events_sent"] == 2
        busy = run(folder, stuck)
        assert (busy["busy"], busy["locked"], busy["transient_failures"]) == (1, 0, 0)
    finally:
        lock.release()
    assert waiting(folder) == {destination_id(stuck, ""): (2, 2)}


def test_an_otlp_partial_success_counts_the_records_it_rejected(
        tmp_path: Path, receiver: OTLPReceiver) -> None:
    folder = tmp_path / "spool"
    spool_records(folder, receiver.endpoint, records(1, 2, 3))
    receiver.script(Answer.partial(2))
    result = run(folder, receiver.endpoint)
    assert (result["batches_sent"], result["events_sent"], result["events_rejected"]) == (1, 1, 2)
    assert Spool(str(folder)).summary() == {}  # taken, so never sent again


class HeaderRecorder:
    """A loopback HTTP server that records the headers of every POST and answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.posts.append((self.path, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def header_recorder() -> Iterator[HeaderRecorder]:
    recorder = HeaderRecorder()
    yield recorder
    recorder.close()


@pytest.mark.parametrize("kind", ["nemo", "otlp"])
def test_a_detached_sender_sends_the_token_it_was_given(
        tmp_path: Path, header_recorder: HeaderRecorder, kind: str) -> None:
    folder = tmp_path / "spool"
    if kind == "otlp":
        endpoint = f"otlp+http://127.0.0.1:{header_recorder.port}"
    else:
        endpoint = f"http://127.0.0.1:{header_recorder.port}/ingest"
    token = "s3cret-Token.42"
    spool_batches(folder, endpoint, 1, token=token)
    # The caller's own token variable is not what the sender uses.
    environ = {**os.environ, config.TOKEN_ENV_VAR: "not-this-one"}
    assert sender.start_detached_sender(str(folder), endpoint, token=token, lifetime_seconds=20,
                                        environ=environ)
    assert wait_for_sender(20) == 0
    (path, headers), = header_recorder.posts
    assert path == ("/v1/logs" if kind == "otlp" else "/ingest")
    assert headers["Authorization"] == "Bearer s3cret-Token.42"
    assert headers["Content-Type"] == "application/json"
    assert Spool(str(folder)).summary() == {}


@pytest.mark.parametrize("token", [None, "", "   ", "two words", "caf\u00e9"])
def test_no_usable_token_means_no_authorization_header(
        tmp_path: Path, header_recorder: HeaderRecorder, monkeypatch: pytest.MonkeyPatch,
        token: str | None) -> None:
    if token is not None:
        monkeypatch.setenv(config.TOKEN_ENV_VAR, token)
    endpoint = f"http://127.0.0.1:{header_recorder.port}/x"
    folder = tmp_path / "spool"
    spool_batches(folder, endpoint, 1, token=config.NAT.token())  # as a handler spools it
    result = run(folder, endpoint, token=None)  # the tool's token, as a handler reads it
    assert result["events_sent"] == 1  # sent all the same, without the token
    (_, headers), = header_recorder.posts
    assert "Authorization" not in headers


def test_the_token_is_never_logged(
        tmp_path: Path, header_recorder: HeaderRecorder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(config.TOKEN_ENV_VAR, "s3cret-never-shown")
    endpoint = f"http://127.0.0.1:{header_recorder.port}/x"
    folder = tmp_path / "spool"
    spool_batches(folder, endpoint, 2, token="s3cret-never-shown")
    with caplog.at_level(logging.DEBUG):
        result = run(folder, endpoint, token=None)
    assert result["events_sent"] == 2
    assert [h["Authorization"] for _, h in header_recorder.posts] == [
        "Bearer s3cret-never-shown"] * 2
    assert "s3cret" not in caplog.text
    for path in folder.iterdir():
        assert b"s3cret" not in path.read_bytes() and "s3cret" not in path.name


# --------------------------------------------------------------------- lock


def test_a_second_sender_exits_at_once_while_the_lock_is_held(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    destination = destination_id(url, "")
    spool_batches(folder, url, 2)
    lock = sender.acquire_lock(str(folder), destination)
    assert lock is not None
    argv, env = planned_start(folder, url)
    try:
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, timeout=20)
        assert time.monotonic() - started < 5  # far from its 20 s lifetime
    finally:
        lock.release()
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b"")
    assert loopback_endpoint.requests == 0 and len(ready_names(folder)) == 2
    again = sender.acquire_lock(str(folder), destination)  # free again
    assert again is not None
    again.release()


def test_start_sender_starts_one_only_when_none_holds_the_lock(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    expected = spool_batches(folder, url, 2)
    lock = sender.acquire_lock(str(folder), destination_id(url, ""))
    assert lock is not None
    try:
        sender.start_sender(str(folder), url)
        assert sender._children == []  # the live one takes the new batch
    finally:
        lock.release()
    sender.start_sender(str(folder), url)
    assert len(sender._children) == 1
    assert wait_for_sender(20) == 0
    assert received(loopback_endpoint) == expected


def test_start_sender_delivers_here_where_no_sender_can_start(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    expected = spool_batches(folder, url, 2)
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # as in a frozen application
    started = time.monotonic()
    sender.start_sender(str(folder), url, budget=5.0)
    assert time.monotonic() - started < 5.0  # no linger: nobody else spools meanwhile
    assert sender._children == []
    assert received(loopback_endpoint) == expected
    assert Spool(str(folder)).summary() == {}


def test_the_pid_file_lock_where_fcntl_is_missing(tmp_path: Path) -> None:
    destination = destination_id("http://127.0.0.1:9/x", "")
    pidfile = tmp_path / f"{destination}.pid"
    first = sender.acquire_lock(str(tmp_path), destination, use_fcntl=False)
    assert first is not None
    assert sender.acquire_lock(str(tmp_path), destination, use_fcntl=False) is None
    other = sender.acquire_lock(str(tmp_path), "0" * 16, use_fcntl=False)
    assert other is not None  # another destination's lock is another file
    other.release()
    first.release()
    assert not pidfile.exists()
    # A pid file left by a process that is gone is taken over.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pidfile.write_text(child.stdout.strip())
    taken = sender.acquire_lock(str(tmp_path), destination, use_fcntl=False)
    assert taken is not None
    assert pidfile.read_text() == str(os.getpid())
    taken.release()
    # A live owner's stands, unless it is older than any sender lives.
    pidfile.write_text("1")
    assert sender.acquire_lock(str(tmp_path), destination, use_fcntl=False) is None
    old = time.time() - sender.PIDFILE_STALE_SECONDS - 10
    os.utime(pidfile, (old, old))
    taken = sender.acquire_lock(str(tmp_path), destination, use_fcntl=False)
    assert taken is not None
    taken.release()


@pytest.mark.parametrize("planted", ["fifo", "empty folder"])
def test_something_else_in_the_locks_place_is_replaced(tmp_path: Path, planted: str) -> None:
    destination = destination_id("http://127.0.0.1:9/x", "")
    path = tmp_path / f"{destination}.lock"
    if planted == "fifo":
        os.mkfifo(path)  # never waited on
    else:
        path.mkdir()
    lock = sender.acquire_lock(str(tmp_path), destination)
    assert lock is not None and path.is_file()
    lock.release()


def test_a_lock_that_cannot_be_used_is_said_not_waited_on(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    url = loopback_endpoint.url
    destination = destination_id(url, "")
    spool_batches(folder, url, 1)
    blocker = folder / f"{destination}.lock"
    blocker.mkdir()
    (blocker / "something").write_text("")  # a folder that cannot be removed
    with pytest.raises(sender.LockUnusable):
        sender.acquire_lock(str(folder), destination)
    result = run(folder, url)
    assert (result["unusable_lock"], result["locked"], loopback_endpoint.requests) == (1, 0, 0)
    assert Spool(str(folder)).states()[destination]["failure"].startswith("lock: ")
    argv, env = planned_start(folder, url)
    done = subprocess.run(argv, env=env, capture_output=True, timeout=20)
    assert (done.returncode, done.stdout, done.stderr) == (4, b"", b"")
    assert len(ready_names(folder)) == 1


# ------------------------------------------------------ detached from caller

SPOOL_ONE = r"""
from datetime import datetime, timezone
from {package} import sender
from {package}.events import CliCommandEvent
from {package}.payload import QueuedEvent
from {package}.spool import Spool, encode_batch
from {package}.transport import destination_id

def spool_one(folder, url, duration):
    event = CliCommandEvent(command="tool", task_status="success", duration_ms=duration,
                            python_version="3.11.7")
    record = sender.record_of(QueuedEvent(event, datetime.now(timezone.utc)))
    identity = {{"session_id": "caller", "client_version": "1.0", "product": None}}
    assert Spool(folder).write(encode_batch(identity, [record]), 1,
                               destination_id(url, "")).written
"""

CALLER = SPOOL_ONE.format(package="nat_telemetry") + r"""
import sys, time
folder, url = sys.argv[1], sys.argv[2]
spool_one(folder, url, 0)
started = time.perf_counter()
ok = sender.start_detached_sender(folder, url, lifetime_seconds=10)
took = time.perf_counter() - started
child = sender._children[-1]
print(ok, child if isinstance(child, int) else child.pid, took)
"""


@pytest.mark.parametrize("how", ["capture_output", "command substitution"])
def test_the_caller_returns_at_once_while_the_sender_waits(
        tmp_path: Path, black_hole: BlackHole, how: str) -> None:
    folder = tmp_path / "spool"
    script = tmp_path / "tool.py"
    script.write_text(CALLER)
    command = [sys.executable, str(script), str(folder), black_hole.url]
    started = time.monotonic()
    if how == "capture_output":
        done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                              env=subprocess_env(tmp_path))
        output = done.stdout
    else:
        quoted = " ".join(f"'{part}'" for part in command)
        done = subprocess.run(["sh", "-c", f'out=$({quoted}); echo "$out"'],
                              capture_output=True, text=True, timeout=30,
                              env=subprocess_env(tmp_path))
        output = done.stdout
    elapsed = time.monotonic() - started
    ok, pid, _took = output.split()
    try:
        assert done.returncode == 0 and ok == "True", done.stderr
        assert elapsed < 5  # the sender lives 10 s and holds no pipe of ours
        wait_until(lambda: black_hole.connections, timeout=10)
        assert black_hole.connections  # the sender was alive and posting meanwhile
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.getsid(int(pid)) == int(pid)  # a session of its own
    finally:
        with contextlib.suppress(OSError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize("spawn", ["posix_spawn", "subprocess"])
def test_the_sender_process_is_niced_and_holds_no_descriptor(
        tmp_path: Path, black_hole: BlackHole, monkeypatch: pytest.MonkeyPatch,
        spawn: str) -> None:
    if spawn == "subprocess":
        monkeypatch.setattr(sender, "_HAVE_POSIX_SPAWN", False)
    folder = tmp_path / "spool"
    spool_batches(folder, black_hole.url, 1)
    leaked_read, leaked_write = os.pipe()
    os.set_inheritable(leaked_write, True)  # what a careless caller might hold
    try:
        assert sender.start_detached_sender(str(folder), black_hole.url, lifetime_seconds=5)
        pid = child_pid(sender._children[-1])
        wait_until(lambda: black_hole.connections, timeout=10)
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert {fds[0], fds[1], fds[2]} == {os.devnull}
        assert not any(target.startswith("pipe:") for target in fds.values()), fds
        nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice >= min(19, os.nice(0) + sender.NICENESS)
    finally:
        os.close(leaked_read)
        os.close(leaked_write)


def test_endpoint_and_token_travel_in_the_environment_not_the_command_line(
        tmp_path: Path, black_hole: BlackHole) -> None:
    folder = tmp_path / "spool"
    endpoint = black_hole.url.replace("://", "://user:pa55word@")
    spool_batches(folder, endpoint, 1, token="s3cret-token")
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
               "PYTHONPATH": "/elsewhere", "AWS_SECRET_ACCESS_KEY": "not-for-telemetry",
               config.TOKEN_ENV_VAR: "s3cret-token", "LC_ALL": "C.UTF-8",
               config.TELEMETRY_ENV_VAR: "1"}
    assert sender.start_detached_sender(str(folder), endpoint, token="s3cret-token",
                                        lifetime_seconds=5, environ=environ)
    pid = child_pid(sender._children[-1])
    wait_until(lambda: black_hole.connections, timeout=10)
    assert black_hole.connections  # running, so what /proc shows is the sender's own
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert argv[1:3] == ["-I", "-S"]
    assert argv[-4:] == [str(folder), "5.0", "nat", "NAT"]
    assert not any("s3cret" in part or "pa55word" in part for part in argv)
    shown = dict(entry.split("=", 1) for entry in
                 Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if entry)
    assert shown == sender.sender_environment(endpoint, "s3cret-token", None, environ)
    assert shown[sender.ENDPOINT_ENV_VAR] == endpoint
    assert shown[sender.TOKEN_ENV_VAR] == "s3cret-token"
    assert "PYTHONPATH" not in shown and "AWS_SECRET_ACCESS_KEY" not in shown
    assert config.TOKEN_ENV_VAR not in shown  # the token it was given, not the variable


def test_the_sender_environment_is_an_allow_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYTOOL_TELEMETRY_CONSENT_FILE", str(tmp_path / "consent.toml"))
    tool = config.Tool("mytool")
    kept = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "LANG": "C.UTF-8",
            "LC_ALL": "C", "LANGUAGE": "en", "TZ": "UTC", "DO_NOT_TRACK": "0", "CI": "false",
            "GITHUB_ACTIONS": "", "MYTOOL_TELEMETRY_ENABLED": "1",
            "MYTOOL_TELEMETRY_CONSENT_FILE": str(tmp_path / "given.toml")}
    dropped = {"PATH": "/usr/bin", "HOME": "/root", "PYTHONPATH": "/x", "PYTHONSTARTUP": "/y",
               "LD_PRELOAD": "/evil.so", "AWS_SECRET_ACCESS_KEY": "k",
               "MYTOOL_TELEMETRY_TOKEN": "t", "NAT_TELEMETRY_ENABLED": "1",
               "MYTOOL_TELEMETRY_ENDPOINT": "http://elsewhere"}
    trust = tmp_path / "ca.pem"
    trust.write_text("")
    environ = {**kept, **dropped, "REQUESTS_CA_BUNDLE": str(trust)}
    env = sender.sender_environment("https://t.example/x", "tok", tool, environ)
    assert env == {**kept, "SSL_CERT_FILE": str(trust),
                   sender.ENDPOINT_ENV_VAR: "https://t.example/x", sender.TOKEN_ENV_VAR: "tok"}
    # A folder of certificates is handed over as one; no token, no variable; the
    # consent file is where this process reads it.
    environ = {"SSL_CERT_DIR": str(tmp_path)}
    env = sender.sender_environment("https://t.example/x", "", tool, environ)
    assert env["SSL_CERT_DIR"] == str(tmp_path) and sender.TOKEN_ENV_VAR not in env
    assert "SSL_CERT_FILE" not in env
    assert env["MYTOOL_TELEMETRY_CONSENT_FILE"] == tool.consent_file() == str(
        tmp_path / "consent.toml")


# ------------------------------------------------------------------ vendored

VENDORED_CALLER = r"""
import sys
sys.path.insert(0, sys.argv[1])
""" + SPOOL_ONE + r"""
spool_one(sys.argv[2], sys.argv[3], 7)
assert sender.start_detached_sender(sys.argv[2], sys.argv[3], lifetime_seconds=20)
assert "nat_telemetry" not in sys.modules
child = sender._children[-1]
print(child if isinstance(child, int) else child.pid)
"""


def vendor(destination: Path) -> None:
    shutil.copytree(REPO_ROOT / "nat_telemetry", destination,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_a_copy_vendored_under_another_name_works_in_isolation(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    vendor(tmp_path / "vendored" / "mytool_telemetry")
    folder = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", VENDORED_CALLER.format(package="mytool_telemetry"),
         str(tmp_path / "vendored"), str(folder), loopback_endpoint.url],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr
    assert ids(wait_until(lambda: loopback_endpoint.events, timeout=15)) == [7]
    assert wait_until(lambda: Spool(str(folder)).summary() == {}, timeout=5)


def test_a_vendored_copy_never_runs_its_host_package_init(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    # The host's __init__ needs site-packages (pytest stands for any dependency):
    # a sender that imported it under -I -S would die before sending.
    host = tmp_path / "site" / "theirpkg"
    vendor(host / "_vendor" / "nat_telemetry")
    (host / "__init__.py").write_text("import pytest\n")
    (host / "_vendor" / "__init__.py").write_text("")
    folder = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", VENDORED_CALLER.format(package="theirpkg._vendor.nat_telemetry")
         .replace('assert "nat_telemetry" not in sys.modules', ""),
         str(tmp_path / "site"), str(folder), loopback_endpoint.url],
        capture_output=True, text=True, timeout=30, env=subprocess_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert ids(wait_until(lambda: loopback_endpoint.events, timeout=15)) == [7]


# ---------------------------------------------------------- never loud, never raising


@pytest.mark.parametrize("args, endpoint, code", [
    ([], "http://127.0.0.1:9/x", 2),
    (["{folder}"], "", 2),
    (["{folder}", "not-a-number"], "http://127.0.0.1:9/x", 3),
    (["{folder}", "0"], "http://127.0.0.1:9/x", 2),
    (["{folder}", "1", "Not A Name", "X"], "http://127.0.0.1:9/x", 3),
    (["{folder}/missing", "1"], "http://127.0.0.1:9/x", 0),
])
def test_main_prints_nothing_whatever_it_is_given(
        tmp_path: Path, args: list[str], endpoint: str, code: int) -> None:
    argv, env = planned_start(tmp_path, "http://127.0.0.1:9/x", 1.0)
    env = {**env, sender.ENDPOINT_ENV_VAR: endpoint}
    done = subprocess.run(argv[:5] + [a.format(folder=tmp_path) for a in args], env=env,
                          capture_output=True, timeout=20)
    assert (done.returncode, done.stdout, done.stderr) == (code, b"", b"")


def test_no_interpreter_means_false_not_an_exception(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert sender.start_detached_sender(str(tmp_path), "http://127.0.0.1:9/x") is False
    monkeypatch.delattr(sys, "frozen")
    monkeypatch.setattr(sys, "executable", "")
    assert sender.start_detached_sender(str(tmp_path), "http://127.0.0.1:9/x") is False
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert sender.start_detached_sender(str(tmp_path), "http://127.0.0.1:9/x") is False
    assert sender._children == []


def test_the_planned_command_line_holds_no_secret(tmp_path: Path) -> None:
    endpoint = "https://user:pa55word@t.example/x?key=s3cret"
    argv, env = planned_start(tmp_path, endpoint, 30.0, token="t0ken")
    assert argv[1:3] == ["-I", "-S"]
    assert not any(secret in part for part in argv for secret in ("pa55word", "s3cret", "t0ken"))
    assert json.loads(json.dumps(argv))[-4:] == [str(tmp_path), "30.0", "nat", "NAT"]
    assert (env[sender.ENDPOINT_ENV_VAR], env[sender.TOKEN_ENV_VAR]) == (endpoint, "t0ken")
