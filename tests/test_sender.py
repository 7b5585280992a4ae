"""The detached sender, against a real loopback loopback_endpoint, in real processes.

Detached senders started by a test are waited for (or killed) before the
test ends, by pid; the spool folders are temporary.
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
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint, Reply
from support.helpers import REPO_ROOT, event, subprocess_env, wait_until
from support.otlp_receiver import Answer, OTLPReceiver, attributes_of

from nat_telemetry import _spoolfile as sf
from nat_telemetry import config, sender
from nat_telemetry.payload import QueuedEvent
from nat_telemetry.retry import RetryPolicy
from nat_telemetry.spool import BACKOFF_NAME, PIDFILE_NAME, Spool
from nat_telemetry.transport import OtlpTransport

FAST_RETRIES = RetryPolicy(3, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(autouse=True)
def no_sender_left() -> Iterator[None]:
    """Kill and reap every sender a test started and did not wait for."""
    yield
    for child in list(sender._children):
        pid = child if isinstance(child, int) else child.pid
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        sender._children.remove(child)


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


def spool_batches(folder: Path, count: int, kind: str = "nemo") -> list[int]:
    spool = Spool(str(folder))
    for n in range(count):
        envelope = {"clientId": "test", "events": [{"n": n}]}
        assert spool.write(json.dumps(envelope).encode(), 1, kind=kind).written
    return list(range(count))


def received(endpoint: LoopbackEndpoint) -> list[int]:
    return sorted(e["n"] for env in endpoint.envelopes if env for e in env["events"])


def ready_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".nsp")]


# ------------------------------------------------------------------ delivery


@pytest.mark.parametrize("spawn", ["posix_spawn", "subprocess"])
def test_a_detached_sender_delivers_the_spool_and_empties_it(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch,
        spawn: str) -> None:
    if spawn == "subprocess":
        monkeypatch.setattr(sender, "_HAVE_POSIX_SPAWN", False)
    folder = tmp_path / "spool"
    expected = spool_batches(folder, 4)
    assert sender.start_detached_sender(str(folder), loopback_endpoint.url, lifetime_seconds=20)
    assert wait_for_sender(20) == 0
    assert received(loopback_endpoint) == expected  # each once
    assert Spool(str(folder)).summary() == (0, 0, 0, None)
    assert {r.path for r in loopback_endpoint.records} == {"/ingest"}


def test_senders_started_together_deliver_each_batch_once(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    expected = spool_batches(folder, 30)
    for _ in range(3):
        assert sender.start_detached_sender(str(folder), loopback_endpoint.url, lifetime_seconds=20)
    codes = sorted(wait_for_sender(20) for _ in range(3))
    assert codes[0] == 0 and set(codes) <= {0, 1}  # 1: found the lock taken
    assert received(loopback_endpoint) == expected


def test_a_batch_spooled_just_before_the_lock_is_let_go_is_not_left_behind(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another run spools a batch after this sender's last look at the folder,
    # while it still holds the lock; that run's own sender finds it busy.
    folder = tmp_path / "spool"
    spool_batches(folder, 1)
    real_release = sender._Lock.release
    late: list[int] = []

    def release_after_a_late_batch(lock: Any) -> None:
        if not late:
            late.append(1)
            envelope = {"clientId": "test", "events": [{"n": 1}]}
            assert Spool(str(folder)).write(json.dumps(envelope).encode(), 1).written
            assert sender.run_sender(str(folder), loopback_endpoint.url)["busy"] == 1
        real_release(lock)

    monkeypatch.setattr(sender._Lock, "release", release_after_a_late_batch)
    result = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10)
    assert received(loopback_endpoint) == [0, 1]
    assert result["batches_sent"] == 2
    assert Spool(str(folder)).summary()[0] == 0


@pytest.mark.parametrize("dated", ["earlier", "ahead"])
def test_a_batch_it_cannot_take_does_not_keep_it_going_round(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint,
        monkeypatch: pytest.MonkeyPatch, dated: str) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 1)
    # A batch of a newer format (claimed, put back, never sent here), dated
    # before this run, or ahead of it as by a clock that was set back since.
    created = time.time_ns() + (10**10 if dated == "ahead" else -(10**9))
    future = folder / sf.ready_name(created, 0, "nemo", 1, 9)
    future.write_bytes(b"NATSPOOL 2 nemo 1 1 2 extra\n{}")
    real_acquire = sender.acquire_lock
    rounds: list[int] = []

    def counting(directory: str, **kwargs: Any) -> Any:
        rounds.append(1)
        return real_acquire(directory, **kwargs)

    monkeypatch.setattr(sender, "acquire_lock", counting)
    result = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10)
    assert received(loopback_endpoint) == [0] and result["batches_sent"] == 1
    assert len(rounds) == (1 if dated == "earlier" else 1 + sender._LATE_LOOKS)
    assert future.exists()


def test_rejected_and_too_large_batches_are_dropped_from_the_spool(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 3)
    loopback_endpoint.script(400, 413, 200)
    result = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10,
                               policy=FAST_RETRIES)
    assert (result["events_rejected"], result["events_too_large"], result["events_sent"],
            result["batches_sent"], result["transient_failures"]) == (1, 1, 1, 1, 0)
    assert Spool(str(folder)).summary()[0] == 0


# --------------------------------------------------- endpoint down or silent


def test_a_refusing_endpoint_leaves_the_spool_for_later(tmp_path: Path, refused_url: str) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 3)
    before = sorted(ready_names(folder))
    started = time.monotonic()
    assert sender.start_detached_sender(str(folder), refused_url, lifetime_seconds=2.0)
    assert wait_for_sender(10) == 0
    assert time.monotonic() - started < 2.0 + 2.0  # its lifetime, plus an interpreter start
    assert sorted(ready_names(folder)) == before  # released, not left claimed


def test_a_silent_endpoint_cannot_hold_the_sender_past_its_lifetime(
        tmp_path: Path, black_hole: BlackHole) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 2)
    started = time.monotonic()
    assert sender.start_detached_sender(str(folder), black_hole.url, lifetime_seconds=1.5)
    assert wait_for_sender(10) == 0
    assert time.monotonic() - started < 1.5 + 2.0
    assert black_hole.connections  # it did try
    assert len(ready_names(folder)) == 2


def test_transient_failures_back_off_then_deliver(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    expected = spool_batches(folder, 2)
    loopback_endpoint.script(Reply(503, {"Retry-After": "1"}), 500)
    started = time.monotonic()
    result = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10,
                               policy=FAST_RETRIES)
    assert time.monotonic() - started >= 1.0  # the Retry-After was honoured
    assert result["transient_failures"] == 2 and result["events_sent"] == 2
    assert received(loopback_endpoint) == [0, 0, *expected]  # batch 0 was tried three times
    assert loopback_endpoint.events == [{"n": 0}, {"n": 1}]
    assert not (folder / BACKOFF_NAME).exists()  # cleared by the success


def test_a_retry_after_past_the_lifetime_defers_the_next_senders(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 2)
    loopback_endpoint.set_default(Reply(429, {"Retry-After": "60"}))
    started = time.monotonic()
    first = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=5,
                              policy=FAST_RETRIES)
    assert time.monotonic() - started < 3  # did not sit out the 60 s
    assert (first["transient_failures"], first["deferred"]) == (1, 0)
    assert (folder / BACKOFF_NAME).exists() and len(ready_names(folder)) == 2
    second = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=5)
    assert (second["locked"], second["deferred"]) == (1, 1)
    assert loopback_endpoint.requests == 1


def test_consecutive_transient_failures_end_the_run(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 2)
    loopback_endpoint.set_default(503)
    result = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10,
                               policy=FAST_RETRIES)
    assert result["transient_failures"] == 4 == loopback_endpoint.requests  # 1 + max_retries
    assert len(ready_names(folder)) == 2


# ------------------------------------------------- kinds, token, OTLP bodies


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as server:
        yield server


def spool_otlp_batch(folder: Path, durations: list[int]) -> None:
    """One spooled OTLP body, encoded as the handler encodes it."""
    now = datetime.now(timezone.utc)
    body = OtlpTransport("otlp+http://127.0.0.1:9").encode(
        [QueuedEvent(event(duration_ms=d), now) for d in durations],
        source_client_version="1.0", session_id="spooled")
    assert Spool(str(folder)).write(body, len(durations), kind="otlp").written


def otlp_durations(receiver: OTLPReceiver) -> list[int]:
    return [attributes_of(r)["durationMs"] for r in receiver.accepted_records]


def test_each_endpoint_takes_only_the_batches_of_its_kind(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, receiver: OTLPReceiver) -> None:
    folder = tmp_path / "spool"
    spool_otlp_batch(folder, [5, 6])
    expected = spool_batches(folder, 2)
    nemo = sender.run_sender(str(folder), loopback_endpoint.url, lifetime_seconds=10,
                             policy=FAST_RETRIES)
    assert (nemo["events_sent"], received(loopback_endpoint)) == (2, expected)
    (left,) = ready_names(folder)  # the OTLP batch, back in place for its own sender
    assert ".otlp." in left
    otlp = sender.run_sender(str(folder), receiver.endpoint, lifetime_seconds=10,
                             policy=FAST_RETRIES)
    assert (otlp["batches_sent"], otlp["events_sent"]) == (1, 2)
    (export,) = receiver.exports
    assert (export.path, export.content_type, export.error) == ("/v1/logs", "application/json",
                                                                None)
    assert otlp_durations(receiver) == [5, 6]
    assert loopback_endpoint.requests == 2 and Spool(str(folder)).summary()[0] == 0


def test_an_otlp_partial_success_counts_the_records_it_rejected(
        tmp_path: Path, receiver: OTLPReceiver) -> None:
    folder = tmp_path / "spool"
    spool_otlp_batch(folder, [1, 2, 3])
    receiver.script(Answer.partial(2))
    result = sender.run_sender(str(folder), receiver.endpoint, lifetime_seconds=10,
                               policy=FAST_RETRIES)
    assert (result["batches_sent"], result["events_sent"], result["events_rejected"]) == (1, 1, 2)
    assert Spool(str(folder)).summary()[0] == 0  # taken, so never sent again


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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
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
def test_a_detached_sender_sends_the_token_of_its_environment(
        tmp_path: Path, header_recorder: HeaderRecorder, kind: str) -> None:
    folder = tmp_path / "spool"
    if kind == "otlp":
        spool_otlp_batch(folder, [1])
        endpoint = f"otlp+http://127.0.0.1:{header_recorder.port}"
    else:
        spool_batches(folder, 1)
        endpoint = f"http://127.0.0.1:{header_recorder.port}/ingest"
    environ = {**os.environ, config.TOKEN_ENV_VAR: " s3cret-Token.42 "}
    assert sender.start_detached_sender(str(folder), endpoint, lifetime_seconds=20,
                                        environ=environ)
    assert wait_for_sender(20) == 0
    (path, headers), = header_recorder.posts
    assert path == ("/v1/logs" if kind == "otlp" else "/ingest")
    assert headers["Authorization"] == "Bearer s3cret-Token.42"
    assert headers["Content-Type"] == "application/json"
    assert Spool(str(folder)).summary()[0] == 0


@pytest.mark.parametrize("token", [None, "", "   ", "two words", "caf\u00e9"])
def test_no_usable_token_means_no_authorization_header(
        tmp_path: Path, header_recorder: HeaderRecorder, monkeypatch: pytest.MonkeyPatch,
        token: str | None) -> None:
    if token is None:
        monkeypatch.delenv(config.TOKEN_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(config.TOKEN_ENV_VAR, token)
    folder = tmp_path / "spool"
    spool_batches(folder, 1)
    result = sender.run_sender(str(folder), f"http://127.0.0.1:{header_recorder.port}/x",
                               lifetime_seconds=10)
    assert result["events_sent"] == 1  # sent all the same, without the token
    (_, headers), = header_recorder.posts
    assert "Authorization" not in headers


def test_the_token_is_never_logged(
        tmp_path: Path, header_recorder: HeaderRecorder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(config.TOKEN_ENV_VAR, "s3cret-never-shown")
    folder = tmp_path / "spool"
    spool_batches(folder, 2)
    with caplog.at_level(logging.DEBUG):
        result = sender.run_sender(str(folder), f"http://127.0.0.1:{header_recorder.port}/x",
                                   lifetime_seconds=10)
    assert result["events_sent"] == 2
    assert [h["Authorization"] for _, h in header_recorder.posts] == [
        "Bearer s3cret-never-shown"] * 2
    assert "s3cret" not in caplog.text


# --------------------------------------------------------------------- lock


def test_a_second_sender_exits_at_once_while_the_lock_is_held(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 2)
    lock = sender.acquire_lock(str(folder))
    assert lock is not None
    argv = sender._command(str(folder), 20.0)
    assert argv is not None
    try:
        started = time.monotonic()
        env = {**os.environ, sender.ENDPOINT_ENV_VAR: loopback_endpoint.url}
        done = subprocess.run(argv, env=env, capture_output=True, timeout=20)
        assert time.monotonic() - started < 5  # far from its 20 s lifetime
    finally:
        lock.release()
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b"")
    assert loopback_endpoint.requests == 0 and len(ready_names(folder)) == 2
    assert sender.acquire_lock(str(folder)) is not None  # free again


def test_the_pid_file_lock_where_fcntl_is_missing(tmp_path: Path) -> None:
    first = sender.acquire_lock(str(tmp_path), use_fcntl=False)
    assert first is not None
    assert sender.acquire_lock(str(tmp_path), use_fcntl=False) is None
    first.release()
    assert not (tmp_path / PIDFILE_NAME).exists()
    # A pid file left by a process that is gone is taken over.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    (tmp_path / PIDFILE_NAME).write_text(child.stdout.strip())
    taken = sender.acquire_lock(str(tmp_path), use_fcntl=False)
    assert taken is not None
    assert (tmp_path / PIDFILE_NAME).read_text() == str(os.getpid())
    taken.release()


# ------------------------------------------------------ detached from caller

CALLER = r"""
import sys, time
from nat_telemetry.spool import Spool
from nat_telemetry import sender
folder, url = sys.argv[1], sys.argv[2]
Spool(folder).write(b'{"events": [{"n": 0}]}', 1)
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


def test_the_sender_process_is_niced_and_holds_no_descriptor(
        tmp_path: Path, black_hole: BlackHole) -> None:
    folder = tmp_path / "spool"
    spool_batches(folder, 1)
    leaked_read, leaked_write = os.pipe()
    os.set_inheritable(leaked_write, True)  # what a careless caller might hold
    try:
        assert sender.start_detached_sender(str(folder), black_hole.url, lifetime_seconds=5)
        pid = sender._children[-1]
        wait_until(lambda: black_hole.connections, timeout=10)
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert {fds[0], fds[1], fds[2]} == {os.devnull}
        assert not any(target.startswith("pipe:") for target in fds.values()), fds
        nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice >= min(19, os.nice(0) + sender.NICENESS)
    finally:
        os.close(leaked_read)
        os.close(leaked_write)


# ------------------------------------------------------------------ vendored

VENDORED_CALLER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from {package}.spool import Spool
from {package} import sender
Spool(sys.argv[2]).write(b'{{"events": [{{"n": 7}}]}}', 1)
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
    assert wait_until(lambda: loopback_endpoint.events, timeout=15) == [{"n": 7}]
    assert wait_until(lambda: Spool(str(folder)).summary()[0] == 0, timeout=5)


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
    assert wait_until(lambda: loopback_endpoint.events, timeout=15) == [{"n": 7}]


# ---------------------------------------------------------- never loud, never raising


@pytest.mark.parametrize("args, endpoint, code", [
    ([], "http://127.0.0.1:9/x", 2),
    (["{folder}"], "", 2),
    (["{folder}", "not-a-number"], "http://127.0.0.1:9/x", 3),
    (["{folder}/missing", "1"], "http://127.0.0.1:9/x", 0),
])
def test_main_prints_nothing_whatever_it_is_given(
        tmp_path: Path, args: list[str], endpoint: str, code: int) -> None:
    argv = sender._command(str(tmp_path), 1.0)
    assert argv is not None
    env = {**os.environ, sender.ENDPOINT_ENV_VAR: endpoint}
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


def test_the_endpoint_travels_in_the_environment_not_the_command_line(tmp_path: Path) -> None:
    argv = sender._command(str(tmp_path), 30.0)
    assert argv is not None and argv[1:3] == ["-I", "-S"]
    assert not any("secret" in part for part in argv)
    assert json.loads(json.dumps(argv))[-2:] == [str(tmp_path), "30.0"]
