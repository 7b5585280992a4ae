"""Every POST ends within its timeout, however the peer trickles its bytes.

A timeout on each socket operation is no bound against a peer that sends one
byte just before each wait would end, nor against an endless run of
``HTTP/1.1 100 Continue``.  These servers do exactly that (at a pace that
costs them little CPU, so the process's CPU time measures the client), on
plain HTTP, inside a TLS handshake and behind a proxy's ``CONNECT`` (past
:data:`~nat_telemetry._deadline.MAX_INTERIM_ANSWERS` interim answers, a
client gives up at once).  Each stops by itself after :data:`SERVER_GIVES_UP`
seconds, so a client with no deadline fails the time assertion instead of
hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from support.helpers import REPO_ROOT, subprocess_env
from test_http_client import (
    BODY,
    AnyClient,
    RawRequest,
    RawServer,
    Responder,
    ServeFixture,
    answer,
    client_fixture,  # noqa: F401  (the client fixture)
    serve_fixture,  # noqa: F401  (the serve fixture)
)

from nat_telemetry import _deadline
from nat_telemetry.http import RequestsClient, Response, TransportError

TIMEOUT = 0.5
SERVER_GIVES_UP = 5.0


def drip(prefix: bytes, filler: bytes, every: float) -> Responder:
    """``prefix`` then ``filler`` for ever, one byte every ``every`` seconds."""

    def respond(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        given_up = time.monotonic() + SERVER_GIVES_UP
        stream = iter(prefix)
        while time.monotonic() < given_up:
            byte = next(stream, None)
            if byte is None:
                stream = iter(filler)
                continue
            conn.sendall(bytes([byte]))
            if server.closing.wait(every):
                return

    return respond


def endless_continue(every: float) -> Responder:
    def respond(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        given_up = time.monotonic() + SERVER_GIVES_UP
        while time.monotonic() < given_up:
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if server.closing.wait(every):
                return

    return respond


class DripOnConnect:
    """A TLS "server" that answers a ClientHello with a record it never finishes."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._listener.accept()
            self.connections += 1
            with conn:
                # A handshake record header announcing 16 KiB, then a byte at a time.
                head = b"\x16\x03\x03\x40\x00"
                given_up = time.monotonic() + SERVER_GIVES_UP
                for i in range(16 * 1024 + len(head)):
                    conn.sendall(head[i:i + 1] if i < len(head) else b"\x00")
                    if self.closing.wait(0.1) or time.monotonic() > given_up:
                        return

    def close(self) -> None:
        self.closing.set()
        self._listener.close()
        self._thread.join(SERVER_GIVES_UP + 1)


def timed_failure(client: AnyClient, url: str) -> tuple[float, float]:
    """POST ``url`` expecting a TransportError; the wall and CPU seconds it took."""
    wall, cpu = time.monotonic(), time.process_time()
    with pytest.raises(TransportError, match="deadline") as failed:
        client.post(url, BODY, TIMEOUT)
    assert failed.value.kind == "timeout"
    return time.monotonic() - wall, time.process_time() - cpu


def assert_bounded(wall: float, cpu: float) -> None:
    assert TIMEOUT - 0.05 <= wall < 2.0
    assert cpu < 0.25 * wall, (cpu, wall)  # waited, did not spin


@pytest.mark.parametrize("where", ["status line", "headers"])
def test_a_drip_fed_answer_is_cut_at_the_deadline(
    client: AnyClient, serve: ServeFixture, where: str
) -> None:
    prefix = b"HTTP/1.1 200 OK\r\n" if where == "headers" else b""
    filler = b"X-Drip: a\r\n" if where == "headers" else b"HTTP/1.1 200 OK"
    # The status line arrives at once; then header bytes, one every 0.1 s.
    responder = drip(prefix, filler, 0.1) if where == "status line" else drip_after(prefix, filler)
    server = serve(responder)
    assert_bounded(*timed_failure(client, server.url))


def drip_after(prefix: bytes, filler: bytes) -> Responder:
    def respond(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        conn.sendall(prefix)
        drip(b"", filler, 0.1)(server, conn, request)

    return respond


@pytest.mark.parametrize("every", [0.005, 0.1])
def test_an_endless_100_continue_ends_by_the_deadline(
    client: AnyClient, serve: ServeFixture, every: float
) -> None:
    # Fast: given up after MAX_INTERIM_ANSWERS, at once; slow: cut at the deadline.
    server = serve(endless_continue(every))
    wall, cpu = time.monotonic(), time.process_time()
    with pytest.raises(TransportError, match=r"interim|deadline"):
        client.post(server.url, BODY, TIMEOUT)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert wall < (TIMEOUT if every < 0.01 else 2.0)
    # Waited, did not spin: a spin would use about as much CPU as wall time;
    # below 0.5 s, the fixed cost of a POST would dominate the ratio.
    assert cpu < 0.25 * max(wall, 0.5), (cpu, wall)


def test_a_few_100_continue_then_the_answer(client: AnyClient, serve: ServeFixture) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" * _deadline.MAX_INTERIM_ANSWERS
    final = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    server = serve(lambda srv, conn, req: conn.sendall(interim + final))
    assert client.post(server.url, BODY, 2.0) == Response(202, None)


def test_a_drip_fed_tls_handshake_is_cut_at_the_deadline(client: AnyClient) -> None:
    server = DripOnConnect()
    try:
        assert_bounded(*timed_failure(client, f"https://127.0.0.1:{server.port}/ingest"))
    finally:
        server.close()
    assert server.connections == 1


def test_a_drip_fed_proxy_tunnel_is_cut_at_the_deadline(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(drip(b"", b"HTTP/1.1 200 Connection established", 0.1))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert_bounded(*timed_failure(client, "https://telemetry.invalid/v1.1/events/json"))
    (request,) = proxy.requests
    assert request.method == "CONNECT"


def test_after_a_cut_the_client_posts_again(client: AnyClient, serve: ServeFixture) -> None:
    slow = serve(endless_continue(0.005))
    fine = serve(answer(200))
    with pytest.raises(TransportError):
        client.post(slow.url, BODY, 0.2)
    assert client.post(fine.url, BODY, 2.0) == Response(200, None)


def test_a_kept_alive_connection_is_watched_too(serve: ServeFixture) -> None:
    # The second POST reuses the first one's connection (no connect() to hook).
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])

    def keep_alive_then_drip(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        conn.sendall(next(answers))
        conn.recv(65536)  # the second request, on the same connection
        drip(b"", b"HTTP/1.1 200 OK", 0.1)(server, conn, request)

    server = serve(keep_alive_then_drip)
    requests_client = RequestsClient()
    try:
        assert requests_client.post(server.url, BODY, 2.0) == Response(200, None)
        assert_bounded(*timed_failure(requests_client, server.url))
    finally:
        requests_client.close()
    assert len(server.requests) == 1  # one connection served both


def test_one_watchdog_for_many_posts_and_none_left_when_idle(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deadline, "WATCHDOG_IDLE_SECONDS", 0.2)
    server = serve(answer(200))
    client.post(server.url, BODY, 2.0)  # the first POST imports and builds what it needs
    descriptors = open_descriptors()
    watchdogs = set()
    for _ in range(20):
        assert client.post(server.url, BODY, 2.0) == Response(200, None)
        watchdogs.update(watchdog_threads())
    assert len(watchdogs) == 1
    deadline = time.monotonic() + 3
    while watchdog_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watchdog_threads() == []
    assert open_descriptors() <= descriptors + 1  # at most a kept-alive connection


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nat-telemetry-deadline"]


def open_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_without_a_watchdog_thread_the_post_still_goes_out(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At interpreter exit (Python 3.12+) no thread can be started: the POST
    # is then bounded by the per-operation timeouts alone, and still made.
    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    shutting_down = types.SimpleNamespace(**vars(threading))
    shutting_down.Thread = Refused
    monkeypatch.setattr(_deadline, "_watchdog", None)
    monkeypatch.setattr(_deadline, "threading", shutting_down)
    server = serve(answer(200))
    assert client.post(server.url, BODY, 2.0) == Response(200, None)
    assert client.post(server.url, BODY, 2.0) == Response(200, None)
    assert _deadline._watchdog is None  # none could start: the fallback was taken


def test_a_deadline_after_the_post_touches_nothing() -> None:
    left, right = socket.socketpair()
    with left, right:
        deadline = _deadline.Deadline(0.05)
        deadline.watch(left)
        deadline.finish()
        time.sleep(0.15)
        right.sendall(b"still open")
        assert left.recv(64) == b"still open"
        assert not deadline.expired


def test_deadlines_expire_in_their_own_order() -> None:
    # A later deadline armed first must not delay an earlier one armed after it.
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        late, early = _deadline.Deadline(3.0), _deadline.Deadline(0.1)
        late.watch(pairs[0][0])
        early.watch(pairs[1][0])
        started = time.monotonic()
        pairs[1][0].settimeout(2.0)
        assert pairs[1][0].recv(1) == b""  # shut down: end-of-file
        assert time.monotonic() - started < 1.0
        assert early.expired and early.cut_short and not late.expired
        late.finish()
        early.finish()
    finally:
        for left, right in pairs:
            left.close()
            right.close()


FORK_SCRIPT = """\
import os, socket, sys, threading, time
from nat_telemetry.http import TransportError, UrllibClient

listener = socket.create_server(("127.0.0.1", 0))
url = "http://127.0.0.1:%d/x" % listener.getsockname()[1]

def serve():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()

def answer(conn):
    conn.recv(65536)
    if not answer.dripping:
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
        return
    for _ in range(100):  # 10 s at most
        conn.sendall(b"H")
        time.sleep(0.1)

answer.dripping = False
threading.Thread(target=serve, daemon=True).start()
client = UrllibClient()
client.post(url, b"{}", 2.0)  # the watchdog is running now
answer.dripping = True
pid = os.fork()
if pid == 0:
    started = time.monotonic()
    try:
        client.post(url, b"{}", 0.3)
        os._exit(3)
    except TransportError:
        os._exit(0 if time.monotonic() - started < 2.0 else 4)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_a_watchdog_of_its_own(tmp_path: Path) -> None:
    script = tmp_path / "fork_deadline.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT,
                            env=subprocess_env(tmp_path), capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.split() == ["CHILD", "0"], result.stderr
