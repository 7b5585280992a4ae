"""Shared fixtures: isolated config, handlers that never leak, fake endpoints.

* every test runs with telemetry enabled, no endpoint, no dry run, no session
  prefix, no proxy and a consent file of its own (autouse);
* ``make_handler`` builds handlers with test-friendly defaults and stops them
  all at teardown, so no worker thread outlives its test;
* ``fake_endpoint`` scripts HTTP answers with ``responses`` (no sockets);
* ``collector`` is a real loopback HTTP server, ``black_hole`` a port that
  accepts connections and never answers, ``refused_url`` a port nobody
  listens on.

Helpers for test modules: ``event(**overrides)``, ``ids(events)``,
``assert_balanced(stats)`` and ``wait_until(predicate)``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Union

import pytest
import responses

from nat_telemetry import config, consent
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent

# The suite also runs under CI, where CI=true would keep telemetry off and the
# prompt away: every test (and every child it starts) begins outside CI and
# without DO_NOT_TRACK; the tests of those rules set them themselves.
for _name in (*config.CI_ENV_VARS, config.DO_NOT_TRACK_ENV_VAR):
    os.environ.pop(_name, None)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# Counters that are part of `enqueued` (dropped_disabled/dropped_invalid are not).
SETTLED_KEYS = (
    "sent",
    "skipped",
    "pending",
    "dlq",
    "dropped_buffer_full",
    "dropped_rejected",
    "dropped_too_large",
    "dropped_retries_exhausted",
    "dropped_dlq_full",
    "dropped_shutdown",
    "dropped_bad_endpoint",
    "spooled",
    "dropped_spool_full",
    "dropped_spool_expired",
    "dropped_spool_oversize",
    "dropped_spool_untrusted",
    "dropped_spool_error",
)


# ----------------------------------------------------------------- helpers


def event(**overrides: Any) -> CliCommandEvent:
    """A valid CliCommandEvent; ``duration_ms`` is a handy unique id."""
    fields: dict[str, Any] = {
        "command": "nat",
        "subcommand": "run",
        "task_status": "success",
        "duration_ms": 0,
        "exit_code": 0,
        "python_version": "3.11.7",
    }
    fields.update(overrides)
    return CliCommandEvent(**fields)


def ids(wire_events: list[dict[str, Any]]) -> list[int]:
    """The ``durationMs`` of every wire event, in order."""
    return [e["parameters"]["durationMs"] for e in wire_events]


def assert_balanced(stats: dict[str, int]) -> None:
    """Every accepted event is counted exactly once."""
    settled = sum(stats[key] for key in SETTLED_KEYS)
    assert stats["enqueued"] == settled, stats
    assert all(value >= 0 for value in stats.values()), stats


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it is truthy; return its value, or the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a child Python that imports nat_telemetry from this tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and not k.startswith("NAT_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["NAT_TELEMETRY_ENABLED"] = "1"
    env["NAT_TELEMETRY_CONSENT_FILE"] = str(tmp_path / "child-consent.toml")
    # The in-process exit path; the spool's tests turn the spool on themselves.
    env["NAT_TELEMETRY_SPOOL_DIR"] = "off"
    env.update(extra)
    return env


# -------------------------------------------------------- isolation fixtures


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home, XDG folder and consent file (returned); no NAT_TELEMETRY_ENABLED."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    consent_file = tmp_path / "conf" / "telemetry.toml"
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(consent_file))
    monkeypatch.delenv(consent.TELEMETRY_ENV_VAR, raising=False)
    return consent_file


@pytest.fixture(autouse=True)
def telemetry_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enabled, no endpoint, no dry run, no prefix, private consent file, no proxy."""
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", True, raising=False)
    monkeypatch.setenv("NAT_TELEMETRY_CONSENT_FILE", str(tmp_path / "consent" / "telemetry.toml"))
    # No spool unless a test asks for one (spool_dir=, or the variable).
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", "off")
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "")
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", False)
    monkeypatch.setattr(config, "SESSION_PREFIX", None)
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class HandlerRegistry:
    """Every handler a test built; ``stop_all`` is safe to call repeatedly."""

    def __init__(self) -> None:
        self.handlers: list[NATTelemetryHandler] = []

    def stop_all(self) -> None:
        for handler in self.handlers:
            handler.stop(timeout=1)


@pytest.fixture(autouse=True)
def handler_registry() -> Iterator[HandlerRegistry]:
    """Stops every handler ``make_handler`` built, then checks its books balance."""
    registry = HandlerRegistry()
    yield registry
    registry.stop_all()
    for handler in registry.handlers:
        assert_balanced(handler.stats())


@pytest.fixture
def make_handler(handler_registry: HandlerRegistry) -> Callable[..., NATTelemetryHandler]:
    """``make_handler(**kwargs)``: a handler with short timeouts, stopped at teardown.

    Defaults: flush every 60 s (so only the threshold or flush() sends), 0.3 s
    request timeout, 0.5 s shutdown budget, and a retry policy with 10-50 ms
    backoff (built from ``max_retries`` unless ``retry_policy`` is given).
    """

    def factory(**kwargs: Any) -> NATTelemetryHandler:
        kwargs.setdefault("flush_interval_seconds", 60.0)
        kwargs.setdefault("request_timeout_seconds", 0.3)
        kwargs.setdefault("shutdown_timeout_seconds", 0.5)
        if "retry_policy" not in kwargs:
            kwargs["retry_policy"] = RetryPolicy(
                kwargs.get("max_retries", 3), backoff_base=0.01, backoff_max=0.05
            )
        handler = NATTelemetryHandler(**kwargs)
        handler_registry.handlers.append(handler)
        return handler

    return factory


# ------------------------------------------------------------------ replies


@dataclasses.dataclass
class Reply:
    """One scripted answer: a status with headers after a delay, or a drop.

    ``drop`` closes the connection without answering (loopback collector);
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


ReplyLike = Union[Reply, int, str, BaseException, tuple]


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
    peer: Any = None  # the client's (host, port), loopback collector only


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

    def _record(self, path: str, envelope: Any, peer: Any = None) -> Reply:
        with self._lock:
            if self._script:
                reply = self._script.popleft()
            elif self.responder is not None:
                reply = as_reply(self.responder(envelope))
            else:
                reply = self.routes.get(path.split("?")[0], self.default)
            self.records.append(Received(path, envelope, time.monotonic(), reply, peer))
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


@pytest.fixture
def fake_endpoint(handler_registry: HandlerRegistry) -> Iterator[FakeEndpoint]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        endpoint = FakeEndpoint(mock)
        yield endpoint
        # Stop the test's handlers while the mock is still in place: a final
        # flush must never reach the real network.
        handler_registry.stop_all()


# -------------------------------------------------------- loopback collector


class _CollectorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    collector: Collector

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the tests


class _CollectorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoint does
    timeout = 10  # idle keep-alive connections do not keep threads forever
    server: _CollectorServer

    def do_POST(self) -> None:
        collector = self.server.collector
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = None
        reply = collector._record(self.path, envelope, self.client_address)
        if reply.delay:
            collector.closing.wait(reply.delay)
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


class Collector(_Recorder):
    """A real HTTP server on 127.0.0.1 that records every POSTed envelope."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = threading.Event()
        self._server = _CollectorServer(("127.0.0.1", 0), _CollectorRequestHandler)
        self._server.collector = self
        self.port: int = self._server.server_address[1]
        self.url = self.url_for("/ingest")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="test-collector", daemon=True,
        )
        self._thread.start()

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def collector(handler_registry: HandlerRegistry) -> Iterator[Collector]:
    server = Collector()
    yield server
    handler_registry.stop_all()  # while the server still answers
    server.close()


# ------------------------------------------------------ black hole, refused


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
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


@pytest.fixture
def black_hole(handler_registry: HandlerRegistry) -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()  # first: a POST stuck in the hole fails at once
    handler_registry.stop_all()


@pytest.fixture
def refused_url() -> str:
    """A URL on a loopback port that was bound and closed: connection refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ingest"


# ------------------------------------------------------- dependency modes

# The third-party modules the package can do without (see nat_telemetry._toml
# and nat_telemetry.transport): hidden in "stdlib" mode.
OPTIONAL_MODULES = ("requests", "tomli_w", "tomli", "tomllib")


@pytest.fixture(params=["installed", "stdlib"])
def dependency_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    handler_registry: HandlerRegistry,
) -> Iterator[str]:
    """Run a test with the optional dependencies ("installed") and without ("stdlib").

    "stdlib" puts None in ``sys.modules`` for ``requests``, ``tomli_w``,
    ``tomli`` and ``tomllib`` and every submodule of theirs already imported,
    so any import of them raises ImportError and the standard-library
    fallbacks are really used.  The transport choice is forgotten before the
    test (and restored after) so it is made again under the test's conditions.
    Handlers are stopped while the mode still holds.
    """
    import sys

    from nat_telemetry import http_client

    monkeypatch.setattr(http_client, "_default_class", None)
    if request.param == "stdlib":
        prefixes = tuple(f"{name}." for name in OPTIONAL_MODULES)
        for name in list(sys.modules):
            if name in OPTIONAL_MODULES or name.startswith(prefixes):
                monkeypatch.setitem(sys.modules, name, None)
        for name in OPTIONAL_MODULES:
            monkeypatch.setitem(sys.modules, name, None)
    yield request.param
    handler_registry.stop_all()
