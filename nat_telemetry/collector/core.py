"""The public :class:`Collector`: a loopback ingest for the telemetry wire format.

A telemetry client is only as testable as the endpoint it talks to, and a mock
cannot show what a real socket does under load, on a dropped connection or
behind a slow answer.  The collector is a real ingest built from the standard
library alone (``http.server`` + ``sqlite3``), so it runs wherever the client
runs: in a test, in ``nat-telemetry demo``, or as ``nat-telemetry collect``
for someone who wants to see exactly what their tool would send.

This module holds its lifecycle, its options and its books; the parts live
next to it: :mod:`.validation`, :mod:`.storage`, :mod:`.faults`,
:mod:`.server`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Union

from .counts import Tally
from .faults import Fault, FaultPlan, as_faults, check
from .server import Server
from .storage import init_database, read_rows, row_count
from .validation import known_event_types

__all__ = ["DEFAULT_MAX_BODY", "INGEST_PATH", "Collector"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

INGEST_PATH = "/v1.1/events/json"
DEFAULT_MAX_BODY = 1_048_576

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
    ) -> None:
        check(0 <= port <= 65535, "port", port)
        check(max_body >= 1, "max_body", max_body)
        check(0.0 <= fail_rate <= 1.0, "fail_rate", fail_rate)
        check(400 <= fail_status <= 599, "fail_status", fail_status)
        check(retry_after is None or retry_after >= 0, "retry_after", retry_after)
        check(delay_ms >= 0, "delay_ms", delay_ms)
        check(0.0 <= drop_rate <= 1.0, "drop_rate", drop_rate)
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
        self._port = port
        self._event_types = known_event_types()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.fault_plan = FaultPlan.from_options(
            fail_rate=self.fail_rate, fail_status=fail_status, retry_after=retry_after,
            delay_ms=delay_ms, drop_rate=self.drop_rate, drop_after_store=drop_after_store,
            faults=self.faults, seed=seed)
        self.tally = Tally()
        self._busy_requests = 0
        self._connections: set[socket.socket] = set()
        self._closing = threading.Event()
        self._state = _NEW
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

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
        init_database(self.db_path)
        server = Server((self.host, self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="nat-telemetry-collector", daemon=True)
        with self._lock:
            self._server, self._thread, self._state = server, thread, _RUNNING
        thread.start()
        logger.debug("collector: listening on %s, storing in %s", self.url, self.db_path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in progress finish (up to ``timeout``), close.

        Delays in progress are cut short.  Idle keep-alive connections are
        closed.  Idempotent.
        """
        with self._lock:
            server, thread, state = self._server, self._thread, self._state
            self._state = _STOPPED
        if state is not _RUNNING or server is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        self._closing.set()
        server.shutdown()
        server.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            while self._busy_requests and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            connections = list(self._connections)
        for sock in connections:
            # Wakes the threads waiting on idle keep-alive connections.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

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
        """A consistent snapshot of the counters (a fresh copy).

        ``requests`` = ``accepted_requests`` + sum(``rejected``) +
        ``faults['fail']`` + ``faults['drop']`` + ``faults['drop_after_store']``
        + sum(``errors``): every request lands in exactly one of those
        (``faults['delay']`` counts delayed answers on top).
        ``stored_events`` = ``accepted_events`` + ``stored_then_dropped_events``.
        ``fail_statuses`` splits ``faults['fail']`` by the status answered.
        """
        return self.tally.snapshot()

    def stored_count(self) -> int:
        """Rows in the database right now (a query, not a counter)."""
        return row_count(self.db_path)

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, oldest first, ``parameters`` parsed."""
        return read_rows(self.db_path)

    # --------------------------------------------- used by the server

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

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)


