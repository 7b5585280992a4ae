"""The standard-library transport keeps the requests transport's contract.

Every contract test runs against both transports and a raw socket server
that can answer anything (redirects, error statuses, trickled bytes, resets,
endless bodies), so "the same behaviour" is checked on the wire rather than
assumed.  The last tests check :func:`default_client`: the choice waits
for the first POST, is made once, and falls back to urllib when ``requests``
cannot be imported.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Callable, Union

import pytest
from support.endpoints import LoopbackEndpoint, loopback_listener
from support.helpers import REPO_ROOT, event, ids, wait_until

from nat_telemetry import http
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.http import (
    MAX_RESPONSE_BYTES,
    AutoClient,
    RequestsClient,
    Response,
    TransportError,
    UrllibClient,
    default_client,
)

AnyClient = Union[RequestsClient, UrllibClient]
BODY = b'{"events":[]}'


# ------------------------------------------------------------ raw server


class RawRequest:
    def __init__(self, line: str, headers: dict[str, str], body: bytes) -> None:
        self.line = line
        self.method, self.target, _ = line.split(" ", 2)
        self.headers = headers  # lower-cased names
        self.body = body


Responder = Callable[["RawServer", socket.socket, RawRequest], None]


class RawServer:
    """One thread per connection: read one request, let ``respond`` do the rest."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[RawRequest] = []
        self.closing = threading.Event()
        # The timeout is a safety net: close() wakes accept() itself.
        self._listener, self.port = loopback_listener(16, accept_timeout=0.5)
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.closing.is_set():  # the wake-up call from close()
                conn.close()
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = _read_request(conn)
            except OSError:
                return
            if request is None:
                return
            self.requests.append(request)
            with contextlib.suppress(OSError):
                self.respond(self, conn, request)

    def close(self) -> None:
        self.closing.set()
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._acceptor.join(5)
        self._listener.close()
        for worker in self._threads:
            worker.join(5)


def _read_request(conn: socket.socket) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawRequest(line, headers, body)


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Responder:
    def respond(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}",
                 "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    return respond


@pytest.fixture(name="serve")  # named: other test modules import it as serve_fixture
def serve_fixture() -> Iterator[Callable[[Responder], RawServer]]:
    servers: list[RawServer] = []

    def start(respond: Responder) -> RawServer:
        server = RawServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(name="client", params=[RequestsClient, UrllibClient])
def client_fixture(request: pytest.FixtureRequest) -> Iterator[AnyClient]:
    instance: AnyClient = request.param()
    yield instance
    instance.close()


ServeFixture = Callable[[Responder], RawServer]


# ------------------------------------------------------------ contract


def test_post_sends_json_and_returns_the_status(client: AnyClient, serve: ServeFixture) -> None:
    server = serve(answer(200, body=b'{"accepted": 1}'))
    assert client.post(server.url, BODY, 2.0) == Response(200, None, b'{"accepted": 1}')
    (request,) = server.requests
    assert (request.method, request.target, request.body) == ("POST", "/ingest", BODY)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-length"] == str(len(BODY))


@pytest.mark.parametrize("status", [400, 404, 408, 413, 422, 429, 500, 502, 503])
def test_error_statuses_are_answers_not_errors(
    client: AnyClient, serve: ServeFixture, status: int
) -> None:
    server = serve(answer(status, {"Retry-After": "7"}, b'{"error": "no"}'))
    assert client.post(server.url, BODY, 2.0) == Response(status, "7", b'{"error": "no"}')


@pytest.mark.parametrize("value", ["120", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_retry_after_is_passed_through_verbatim(
    client: AnyClient, serve: ServeFixture, value: str
) -> None:
    server = serve(answer(503, {"Retry-After": value}))
    assert client.post(server.url, BODY, 2.0) == Response(503, value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(
    client: AnyClient, serve: ServeFixture, status: int
) -> None:
    elsewhere = serve(answer(200))
    server = serve(answer(status, {"Location": elsewhere.url}))
    assert client.post(server.url, BODY, 2.0) == Response(status, None)
    assert len(server.requests) == 1
    assert elsewhere.requests == []


def test_refused_connection_is_a_transport_error(client: AnyClient, refused_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError) as failed:
        client.post(refused_url, BODY, 2.0)
    assert time.monotonic() - started < 1.0
    assert failed.value.kind == "refused"


def test_no_answer_times_out(client: AnyClient, serve: ServeFixture) -> None:
    def never(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        server.closing.wait(10)

    server = serve(never)
    started = time.monotonic()
    with pytest.raises(TransportError) as failed:
        client.post(server.url, BODY, 0.3)
    assert 0.25 <= time.monotonic() - started < 1.5
    assert failed.value.kind == "timeout"


def trickle(pieces: list[bytes], every: float) -> Responder:
    def respond(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        for piece in pieces:
            conn.sendall(piece)
            if server.closing.wait(every):
                return

    return respond


TRICKLED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"


def test_a_trickle_within_the_timeout_is_an_answer(
    client: AnyClient, serve: ServeFixture
) -> None:
    server = serve(trickle([TRICKLED_HEAD[:10], TRICKLED_HEAD[10:], b"ab", b"cd"], 0.05))
    assert client.post(server.url, BODY, 2.0) == Response(200, None, b"abcd")


def test_the_timeout_bounds_the_whole_exchange_not_each_wait(
    client: AnyClient, serve: ServeFixture
) -> None:
    # Every byte comes well within the timeout, the status line does not.
    head = TRICKLED_HEAD
    server = serve(trickle([head[i:i + 4] for i in range(0, len(head), 4)], 0.12))
    started = time.monotonic()
    with pytest.raises(TransportError, match="deadline") as failed:
        client.post(server.url, BODY, 0.4)
    assert 0.35 <= time.monotonic() - started < 1.0
    assert failed.value.kind == "timeout"


def test_a_body_cut_by_the_timeout_still_gives_the_status(
    client: AnyClient, serve: ServeFixture
) -> None:
    server = serve(trickle([TRICKLED_HEAD, b"a", b"b", b"c", b"d"], 0.15))
    started = time.monotonic()
    assert client.post(server.url, BODY, 0.3) == Response(200, None, b"")  # no partial body
    assert time.monotonic() - started < 0.55  # the last byte would come at 0.6 s


def test_closed_without_answer_is_a_transport_error(
    client: AnyClient, serve: ServeFixture
) -> None:
    server = serve(lambda srv, conn, req: conn.shutdown(socket.SHUT_RDWR))
    with pytest.raises(TransportError):
        client.post(server.url, BODY, 2.0)


def test_reset_is_a_transport_error(client: AnyClient, serve: ServeFixture) -> None:
    def reset(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = serve(reset)
    with pytest.raises(TransportError):
        client.post(server.url, BODY, 2.0)


def test_garbage_answer_is_a_transport_error(client: AnyClient, serve: ServeFixture) -> None:
    server = serve(lambda srv, conn, req: conn.sendall(b"hello there\r\n\r\n"))
    with pytest.raises(TransportError):
        client.post(server.url, BODY, 2.0)


def test_broken_body_still_returns_the_status(client: AnyClient, serve: ServeFixture) -> None:
    def short(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 100\r\nRetry-After: 3\r\n\r\nonly")

    server = serve(short)
    assert client.post(server.url, BODY, 2.0) == Response(503, "3")


def test_response_body_is_read_at_most_max_bytes(
    client: AnyClient, serve: ServeFixture
) -> None:
    # The server announces 100 MB, sends two limits' worth and then stalls:
    # a client that tried to read it all would wait for the timeout.
    def endless(server: RawServer, conn: socket.socket, request: RawRequest) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        conn.sendall(b"x" * (2 * MAX_RESPONSE_BYTES))  # fails once the client hangs up
        server.closing.wait(10)

    server = serve(endless)
    started = time.monotonic()
    assert client.post(server.url, BODY, 5.0) == Response(200, None, b"x" * MAX_RESPONSE_BYTES)
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "ftp://127.0.0.1/x", "file:///etc/passwd", "http://", "http://[::1"],
)
def test_bad_urls_are_transport_errors(client: AnyClient, url: str) -> None:
    with pytest.raises(TransportError):
        client.post(url, BODY, 1.0)


def test_proxy_from_the_environment_is_used(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(answer(200))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = "http://telemetry.invalid/v1.1/events/json"
    assert client.post(target, BODY, 2.0) == Response(200, None)
    (request,) = proxy.requests
    assert (request.method, request.target, request.body) == ("POST", target, BODY)


def test_no_proxy_bypasses_the_proxy(
    client: AnyClient, serve: ServeFixture, refused_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(answer(204))
    monkeypatch.setenv("HTTP_PROXY", refused_url.rsplit("/", 1)[0])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert client.post(server.url, BODY, 2.0) == Response(204, None)
    assert len(server.requests) == 1


def test_usable_again_after_close(client: AnyClient, serve: ServeFixture) -> None:
    server = serve(answer(200))
    client.close()
    client.close()
    assert client.post(server.url, BODY, 2.0) == Response(200, None)


# ------------------------------------------------------------ the choice


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_default_class", None)


def recorded_choice() -> object:
    """The process-wide choice as it stands (None: not made yet)."""
    return http._default_class


def chosen_by(auto: AutoClient) -> object:
    return auto.chosen


def test_choice_waits_for_the_first_post(fresh_choice: None, serve: ServeFixture) -> None:
    server = serve(answer(200))
    auto = default_client()
    assert isinstance(auto, AutoClient)
    assert chosen_by(auto) is None
    assert recorded_choice() is None
    auto.close()  # closing an unused one decides nothing
    assert recorded_choice() is None
    assert auto.post(server.url, BODY, 2.0) == Response(200, None)
    assert type(auto.chosen) is RequestsClient
    assert recorded_choice() is RequestsClient


def test_without_requests_the_choice_is_urllib(
    fresh_choice: None, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(200))
    monkeypatch.setitem(sys.modules, "requests", None)
    auto = default_client()
    assert auto.post(server.url, BODY, 2.0) == Response(200, None)
    assert type(auto.chosen) is UrllibClient
    assert recorded_choice() is UrllibClient


def test_a_broken_requests_also_means_urllib(
    fresh_choice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarded = http.import_guarded

    def broken(name: str) -> types.ModuleType:
        if name == "requests":
            raise AttributeError("module 'urllib3' has no attribute 'something'")
        return guarded(name)

    monkeypatch.setattr(http, "import_guarded", broken)
    assert http._choose_default_class() is UrllibClient


def test_the_choice_is_made_once(
    fresh_choice: None, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(200))
    first = default_client()
    first.post(server.url, BODY, 2.0)
    assert recorded_choice() is RequestsClient

    class Recording:
        posts = 0

        def post(self, url: str, body: bytes, timeout: float) -> Response:
            Recording.posts += 1
            return Response(299, None)

        def close(self) -> None:
            pass

    # Later transports take the recorded choice without deciding again...
    monkeypatch.setattr(http, "_default_class", Recording)
    second = default_client()
    assert second.post(server.url, BODY, 2.0) == Response(299, None)
    assert Recording.posts == 1
    # ...and a transport keeps the one it picked.
    assert first.post(server.url, BODY, 2.0) == Response(200, None)
    assert type(first.chosen) is RequestsClient
    assert len(server.requests) == 2


def test_import_does_not_decide() -> None:
    code = ("import sys, nat_telemetry\n"
            "from nat_telemetry import http\n"
            "from nat_telemetry.handler import NATTelemetryHandler\n"
            "h = NATTelemetryHandler(endpoint='')\n"
            "print(http._default_class, 'requests' in sys.modules,"
            " 'urllib.request' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "False", "False"]


@pytest.mark.usefixtures("dependency_mode")
def test_handler_sends_with_the_transport_of_the_mode(
    dependency_mode: str, loopback_endpoint: LoopbackEndpoint,
    make_handler: Callable[..., NATTelemetryHandler],
) -> None:
    h = make_handler(endpoint=loopback_endpoint.url)
    h.enqueue(event(duration_ms=7))
    assert h.flush(timeout=5) is True
    assert ids(loopback_endpoint.events) == [7]
    assert wait_until(lambda: h.stats()["sent"] == 1)
    chosen = h._transport.client.chosen
    expected = UrllibClient if dependency_mode == "stdlib" else RequestsClient
    assert type(chosen) is expected
    if dependency_mode == "stdlib":
        with pytest.raises(ImportError):
            import requests  # noqa: F401
