"""Endpoints for the client's tests: scripted answers, recorded requests.

* ``FakeEndpoint``: an HTTP endpoint mocked with ``responses`` (no sockets);
* ``LoopbackEndpoint``: a real HTTP server on 127.0.0.1 that records every
  POSTed envelope (not to be confused with ``nat_telemetry.collector.Collector``,
  the package's own server, which validates and stores);
* ``BlackHole``: a port on 127.0.0.1 that accepts connections, never answers.

The first two answer from a script of ``Reply`` objects (or anything
``as_reply`` turns into one), then from their default.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

import responses

__all__ = [
    "BlackHole",
    "FakeEndpoint",
    "LoopbackEndpoint",
    "QuietHTTPServer",
    "Received",
    "Reply",
    "ReplyLike",
    "as_reply",
    "loopback_listener",
    "refusing_port",
]


# --------------------------------------------------------------- loopback ports


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs.

    The port stays bound (never listening) until the block ends, so no other
    socket can take it meanwhile: a port merely let go may be handed to another
    test's server at once, when several suites run side by side.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def loopback_listener(backlog: int, accept_timeout: float) -> tuple[socket.socket, int]:
    """A listening socket on a free loopback port, and the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.settimeout(accept_timeout)
    return listener, int(listener.getsockname()[1])


# ------------------------------------------------------------------ replies


@dataclasses.dataclass
class Reply:
    """One scripted answer: a status with headers after a delay, or a drop.

    ``drop`` closes the connection without answering (loopback endpoint);
    ``error`` is raised by the ``responses`` mock instead of answering.
    """

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return not self.drop and self.error is None and 200 <= self.status < 300


ReplyLike = Union[Reply, int, str, BaseException, tuple[Any, ...]]


def as_reply(spec: ReplyLike) -> Reply:
    if isinstance(spec, Reply):
        return spec
    if isinstance(spec, BaseException):
        return Reply(error=spec)
    if spec == "drop":
        return Reply(drop=True)
    if isinstance(spec, int):
        return Reply(spec)
    if isinstance(spec, tuple):
        return Reply(*spec)
    raise TypeError(f"not a reply: {spec!r}")


@dataclasses.dataclass
class Received:
    path: str
    envelope: Any  # parsed JSON, or None when the body was not JSON
    at: float  # time.monotonic() when the body had arrived
    reply: Reply
    peer: Any = None  # the client's (host, port), loopback endpoint only
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # loopback only


class _Recorder:
    """Records requests and hands out replies: scripted first, then the default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Received] = []
        self._script: collections.deque[Reply] = collections.deque()
        self.default: Reply = Reply()
        self.routes: dict[str, Reply] = {}
        # responder(envelope) -> ReplyLike, consulted when the script is empty.
        self.responder: Callable[[Any], ReplyLike] | None = None

    def script(self, *replies: ReplyLike) -> None:
        """Answer the next requests with these, in order."""
        with self._lock:
            self._script.extend(as_reply(r) for r in replies)

    def set_default(self, reply: ReplyLike) -> None:
        with self._lock:
            self.default = as_reply(reply)

    def _record(self, path: str, envelope: Any, peer: Any = None,
                headers: dict[str, str] | None = None) -> Reply:
        with self._lock:
            if self._script:
                reply = self._script.popleft()
            elif self.responder is not None:
                reply = as_reply(self.responder(envelope))
            else:
                reply = self.routes.get(path.split("?")[0], self.default)
            self.records.append(Received(path, envelope, time.monotonic(), reply, peer,
                                         dict(headers or {})))
            return reply

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.records)

    @property
    def envelopes(self) -> list[Any]:
        with self._lock:
            return [r.envelope for r in self.records]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Events of every request that was answered (or scripted) 2xx."""
        with self._lock:
            return [e for r in self.records if r.reply.ok and r.envelope
                    for e in r.envelope["events"]]

    @property
    def all_events(self) -> list[dict[str, Any]]:
        """Events of every request, whatever the answer."""
        with self._lock:
            return [e for r in self.records if r.envelope for e in r.envelope["events"]]

    def batch_sizes(self) -> list[int]:
        with self._lock:
            return [len(r.envelope["events"]) for r in self.records]

    def times(self) -> list[float]:
        with self._lock:
            return [r.at for r in self.records]


# ------------------------------------------------------- responses endpoint


class FakeEndpoint(_Recorder):
    """An HTTP endpoint mocked with ``responses``: no sockets at all."""

    URL = "http://telemetry.test/ingest"

    def __init__(self, mock: responses.RequestsMock) -> None:
        super().__init__()
        self.url = self.URL
        mock.add_callback(responses.POST, self.URL, callback=self._callback)

    def _callback(self, request: Any) -> Any:
        body = request.body
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        reply = self._record(request.path_url, json.loads(body))
        if reply.delay:
            time.sleep(reply.delay)
        if reply.error is not None:
            return reply.error
        return (reply.status, dict(reply.headers), "")


# --------------------------------------------------------- loopback endpoint


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that says nothing about clients hanging up."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the tests


class _LoopbackServer(QuietHTTPServer):
    endpoint: LoopbackEndpoint
    tls: Any = None  # an ssl.SSLContext: HTTPS, each handshake on its connection's thread

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class _LoopbackRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoint does
    timeout = 10  # idle keep-alive connections do not keep threads forever
    server: _LoopbackServer

    def do_POST(self) -> None:
        endpoint = self.server.endpoint
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = None
        reply = endpoint._record(self.path, envelope, self.client_address, dict(self.headers))
        if reply.delay:
            endpoint.closing.wait(reply.delay)
        if reply.drop or reply.error is not None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackEndpoint(_Recorder):
    """A real HTTP server on 127.0.0.1 that records every POSTed envelope.

    With ``tls`` (a server ``ssl.SSLContext``) it speaks HTTPS, and its URLs name
    ``host`` (which must resolve to 127.0.0.1 for a client to reach it).  ``port``
    brings an endpoint that was down back up where it was.
    """

    def __init__(self, tls: Any = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.closing = threading.Event()
        self._server = _LoopbackServer(("127.0.0.1", port), _LoopbackRequestHandler)
        self._server.endpoint = self
        self._server.tls = tls
        self.scheme, self.host = ("https" if tls is not None else "http"), host
        self.port: int = self._server.server_address[1]
        self.url = self.url_for("/ingest")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="test-loopback-endpoint", daemon=True,
        )
        self._thread.start()

    def url_for(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# ---------------------------------------------------------------- black hole


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self._listener, self.port = loopback_listener(64, accept_timeout=0.05)
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-black-hole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self.connections:
            conn.close()
