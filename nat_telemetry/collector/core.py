"""The public :class:`Collector`: a loopback ingest for the telemetry wire format.

A telemetry client is only as testable as the endpoint it talks to, and a mock
cannot show what a real socket does under load, on a dropped connection or
behind a slow answer.  The collector is a real ingest built from the standard
library alone (``http.server`` + ``sqlite3``), so it runs wherever the client
runs: in a test, in ``nat-telemetry demo``, or as ``nat-telemetry collect``
for someone who wants to see exactly what their tool would send.

This module holds its lifecycle, its options and its books; the parts live
next to it: :mod:`.validation`, :mod:`.storage`, :mod:`.faults`,
:mod:`.limits`, :mod:`.server`, :mod:`.exchange` and :mod:`.ingest`.

It is meant for one machine: a developer's, a test's, a CI job's.  Past that,
send the client's OTLP export (``otlp+http://`` endpoints) to an
OpenTelemetry Collector.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Union

from .counts import Tally
from .faults import Fault, FaultPlan, as_faults, check
from .ingest import RequestHandler
from .limits import ByteBudget
from .server import Listener
from .storage import Store, init_database, read_rows, row_count
from .validation import known_event_types

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_REQUEST_TIMEOUT",
    "INGEST_PATH",
    "Collector",
    "is_loopback",
]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

INGEST_PATH = "/v1.1/events/json"
DEFAULT_MAX_BODY = 1_048_576
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_REQUEST_TIMEOUT = 10.0
# Bodies being read, parsed or stored at once.  Parsing JSON costs about ten
# times a body, so request memory stays near 100 MB whatever the clients do.
DEFAULT_MAX_INFLIGHT = 8 * 1_048_576
# RFC 6750's b64token: what may follow "Bearer " in a header.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"

StrPath = Union[str, "os.PathLike[str]"]


class Collector:
    """A loopback HTTP ingest that validates envelopes and stores events in SQLite.

    ``port=0`` picks a free port; ``url`` is the full URL to POST to (any
    path is accepted).  Faults (one plan, see :mod:`.faults`): ``drop_rate``
    of the requests are closed without an answer after the body was read
    (stored first when ``drop_after_store``); the next ``fail_rate`` of them
    answer ``fail_status`` (with ``Retry-After: retry_after`` when given);
    ``faults`` adds further :class:`Fault` entries (e.g. 30 % 503, 5 % 429
    with ``Retry-After``, 5 % drops, 2 % slow answers).  One draw per request
    picks at most one entry.  Every answer waits ``delay_ms``.  ``seed``
    makes the fault sequence replayable.

    Limits: at most ``max_connections`` connections (see :mod:`.server`);
    each request must arrive whole within ``request_timeout`` seconds; bodies
    up to ``max_body`` bytes, and at most ``max_inflight`` bytes of bodies
    held at once (default: the larger of 8 MiB and ``max_body``).
    ``token``: every request needs ``Authorization: Bearer <token>``; a
    collector listening beyond loopback needs one, unless ``insecure``.
    """

    def __init__(
        self,
        db_path: StrPath,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = DEFAULT_MAX_BODY,
        fail_rate: float = 0.0,
        fail_status: int = 503,
        retry_after: int | None = None,
        delay_ms: int = 0,
        drop_rate: float = 0.0,
        drop_after_store: bool = False,
        seed: int | None = None,
        faults: Sequence[Fault | tuple[Any, ...]] = (),
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_inflight: int | None = None,
        token: str | None = None,
        insecure: bool = False,
    ) -> None:
        check(0 <= port <= 65535, "port", port)
        check(max_body >= 1, "max_body", max_body)
        check(0.0 <= fail_rate <= 1.0, "fail_rate", fail_rate)
        check(400 <= fail_status <= 599, "fail_status", fail_status)
        check(retry_after is None or retry_after >= 0, "retry_after", retry_after)
        check(delay_ms >= 0, "delay_ms", delay_ms)
        check(0.0 <= drop_rate <= 1.0, "drop_rate", drop_rate)
        check(max_connections >= 1, "max_connections", max_connections)
        check(0 < request_timeout < 1e6, "request_timeout", request_timeout)
        inflight = max(DEFAULT_MAX_INFLIGHT, max_body) if max_inflight is None else max_inflight
        check(inflight >= max_body, "max_inflight (at least max_body)", max_inflight)
        if token is not None and (len(token) > 4096 or not _TOKEN.fullmatch(token)):
            raise ValueError("token must be 1 to 4096 letters, digits or '-._~+/' "
                             "(optionally ending in '='), as an HTTP bearer token is")
        if token is None and not insecure and not is_loopback(host):
            raise ValueError(f"listening on {host} lets any machine that reaches it write: "
                             "give a token (or say insecure=True)")
        self.db_path = os.fspath(db_path)
        self.host = host
        self.max_body = max_body
        self.fail_rate = float(fail_rate)
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.delay_ms = delay_ms
        self.drop_rate = float(drop_rate)
        self.drop_after_store = drop_after_store
        self.faults = as_faults(faults)
        self.seed = seed
        self.max_connections = max_connections
        self.request_timeout = float(request_timeout)
        self.token = token
        self.fault_plan = FaultPlan.from_options(
            fail_rate=self.fail_rate, fail_status=fail_status, retry_after=retry_after,
            delay_ms=delay_ms, drop_rate=self.drop_rate, drop_after_store=drop_after_store,
            faults=self.faults, seed=seed)
        self.budget = ByteBudget(inflight)
        self.store = Store(self.db_path)
        self.tally = Tally()
        self.event_types = known_event_types()
        self._port = port
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy_requests = 0
        self._closing = threading.Event()
        self._state = _NEW
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the token
        return f"Collector({self.db_path!r}, host={self.host!r}, port={self._port})"

    # -------------------------------------------------------- lifecycle

    def start(self) -> Collector:
        """Create the database, bind, and serve from a daemon thread.

        Idempotent while running; a stopped collector cannot be restarted.
        Raises ``OSError`` (e.g. port in use), ``ValueError`` or
        ``sqlite3.Error`` (unusable database file).
        """
        with self._lock:
            if self._state is _RUNNING:
                return self
            if self._state is _STOPPED:
                raise RuntimeError("a stopped Collector cannot be started again")
        init_database(self.db_path)  # ValueError for a foreign events table
        self.store.open()
        try:
            listener = Listener((self.host, self._port), max_connections=self.max_connections,
                                tally=self.tally, handle=self._serve_connection, collector=self)
        except OSError:
            self.store.close()
            raise
        self._port = listener.port
        thread = threading.Thread(target=listener.serve, name="nat-telemetry-collector",
                                  daemon=True)
        with self._lock:
            self._listener, self._thread, self._state = listener, thread, _RUNNING
        thread.start()
        logger.debug("collector: listening on %s, storing in %s", self.url, self.db_path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in progress finish (up to ``timeout``), close.

        Delays in progress are cut short.  Idle keep-alive connections are
        closed.  Idempotent.
        """
        with self._lock:
            listener, thread, state = self._listener, self._thread, self._state
            self._state = _STOPPED
        if state is not _RUNNING or listener is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        self._closing.set()
        listener.close()
        thread.join(max(0.0, deadline - time.monotonic()))
        listener.close_socket()
        with self._lock:
            while self._busy_requests and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
        # Wakes the threads waiting on idle keep-alive connections.
        listener.shutdown_connections()
        self.store.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------- addressing

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/v1.1/events/json``: what a handler posts to."""
        if self._state is _NEW and self._port == 0:
            raise RuntimeError("the collector has no port yet: call start() first")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}{INGEST_PATH}"

    # ------------------------------------------------------------ stats

    def counts(self) -> dict[str, Any]:
        """A consistent snapshot of the counters (a fresh copy); see :mod:`.counts`."""
        return self.tally.snapshot()

    def stored_count(self) -> int:
        """Rows in the database right now (a query, not a counter)."""
        return row_count(self.db_path)

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, oldest first, ``parameters`` parsed."""
        return read_rows(self.db_path)

    def open_connections(self) -> int:
        """Client connections open right now."""
        listener = self._listener
        return 0 if listener is None else listener.open_connections()

    # ------------------------------------- used by the request handler

    def _serve_connection(self, sock: Any, address: Any, connection: Any) -> None:
        assert self._listener is not None
        RequestHandler(sock, address, self._listener, connection)

    def _apply_delay(self, extra_ms: int = 0) -> None:
        delay_ms = self.fault_plan.delay_ms + extra_ms
        if delay_ms <= 0:
            return
        self.tally.add("faults", "delay")
        self._closing.wait(delay_ms / 1000.0)

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        with self._lock:
            self._busy_requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy_requests -= 1
                if not self._busy_requests:
                    self._idle.notify_all()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (a name other than localhost may be anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
