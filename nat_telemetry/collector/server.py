"""The collector's HTTP side: one thread per connection, keep-alive, JSON answers.

Built on ``http.server`` so it runs wherever the client runs.  Any method but
``POST`` is answered 405, an over-size or undeclared body 413/411 unread (and
drained, so the client reads the answer instead of a reset); a ``POST`` body
is read whole, given its fault, validated, stored, and answered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import sqlite3
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .faults import Decision
from .storage import connect, insert_rows
from .validation import EnvelopeRejected, Row, parse_envelope

if TYPE_CHECKING:
    from .core import Collector

__all__ = ["Server"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
# An idle keep-alive connection is closed after this long.
_IDLE_TIMEOUT_SECONDS = 30.0
# How long an unread body (413, 411, 405) is drained before closing; see
# _RequestHandler._discard_unread_input.
_LINGER_SECONDS = 2.0


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive
    request_queue_size = 128  # the default 5 turns concurrent senders into SYN retries
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        # An instance attribute read by TCPServer.__init__ when it creates the socket.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.collector = collector
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(): a reverse DNS lookup
        # that can take seconds and tells us nothing we need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up, time out and reset: never a traceback on stderr.
        logger.debug("collector: error serving %s", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real ingest does
    # A request line too broken to carry a version still gets a status line
    # (the base class would answer such a line HTTP/0.9-style: a bare body).
    default_request_version = "HTTP/1.0"
    # Headers and body leave in two writes; with Nagle on, the body would wait
    # for the client's delayed ACK (~40 ms) on every reused connection.
    disable_nagle_algorithm = True
    server_version = "nat-telemetry-collector"
    timeout = _IDLE_TIMEOUT_SECONDS
    server: Server
    _db: sqlite3.Connection | None = None  # this connection's own, opened on first store
    _linger = False  # an answer went out before the body was read: drain it

    def setup(self) -> None:
        super().setup()
        self.server.collector._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.collector._untrack(self.connection)
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()

    def version_string(self) -> str:
        return self.server_version  # not the Python version: nobody needs to know it

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("collector: %s %s", self.address_string(), format % args)

    # ---------------------------------------------------------- dispatch

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers 501 for a method without a do_X; any
        # method but POST is a 405 here, whatever its name.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        # Invite the body only when it will be read: an over-size or undeclared
        # body gets its 413/411 at once, and the client never sends it.
        length = _content_length(self.headers.get("Content-Length"))
        if (self.command == "POST" and length is not None
                and length <= self.server.collector.max_body
                and "Transfer-Encoding" not in self.headers):
            return super().handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Called by the base class for a malformed request line or headers:
        # answer JSON like everything else.
        collector = self.server.collector
        collector.tally.request("rejected", "bad_request")
        self._answer(code, {"error": message or _phrase(code) or "bad request"}, close=True)

    def do_POST(self) -> None:
        collector = self.server.collector
        with collector._busy():
            self._handle_post(collector)
        if self._linger:
            self._discard_unread_input()

    def _method_not_allowed(self) -> None:
        collector = self.server.collector
        with collector._busy():
            collector.tally.request("rejected", "method_not_allowed")
            declared = _content_length(self.headers.get("Content-Length"))
            self._linger = bool(declared) or "Transfer-Encoding" in self.headers
            self._answer(405, {"error": f"method {self.command} not allowed; use POST"},
                         headers={"Allow": "POST"}, close=True)
        if self._linger:
            self._discard_unread_input()

    # -------------------------------------------------------------- POST

    def _handle_post(self, collector: Collector) -> None:
        if "Transfer-Encoding" in self.headers:
            self._refuse_unread(collector, 411, "length_required",
                                "Transfer-Encoding is not supported; send a Content-Length")
            return
        declared = self.headers.get_all("Content-Length") or []
        if not declared:
            self._refuse_unread(collector, 411, "length_required",
                                "a Content-Length header is required")
            return
        length = _content_length(declared[0]) if len(declared) == 1 else None
        if length is None:
            self._refuse_unread(collector, 400, "bad_request",
                                "invalid Content-Length header")
            return
        if length > collector.max_body:
            self._refuse_unread(collector, 413, "too_large",
                                f"body of {length} bytes exceeds the limit of "
                                f"{collector.max_body} bytes")
            return
        body = self._read_body(length)
        if body is None:
            # The client hung up or stalled mid-body: nobody is left to answer.
            collector.tally.request("errors", "incomplete_body")
            self.close_connection = True
            return
        self._ingest(collector, body, collector.fault_plan.decide())

    def _ingest(self, collector: Collector, body: bytes, decision: Decision) -> None:
        fault, slow = decision.action, decision.delay_ms
        if fault == "drop":
            collector.tally.request("faults", "drop")
            self._drop(slow)
            return
        if fault == "fail":
            status = decision.status
            collector.tally.request("faults", "fail", status=status)
            headers: dict[str, str] = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = str(decision.retry_after)
            self._answer(status, {"error": f"injected fault: {status} {_phrase(status)}"},
                         headers=headers, delay_ms=slow)
            return
        try:
            rows = parse_envelope(body, collector._event_types)
        except EnvelopeRejected as exc:
            if fault == "drop_after_store":
                collector.tally.request("faults", "drop_after_store")
                self._drop(slow)
                return
            collector.tally.request("rejected", exc.reason)
            self._answer(400, {"error": exc.message}, delay_ms=slow)
            return
        try:
            self._store(rows)
        except sqlite3.Error as exc:
            logger.debug("collector: could not store %d event(s)", len(rows), exc_info=True)
            collector.tally.request("errors", "storage")
            if fault == "drop_after_store":
                self._drop(slow)
            else:
                self._answer(503, {"error": f"could not store the events: {exc}"},
                             headers={"Retry-After": "1"}, delay_ms=slow)
            return
        if fault == "drop_after_store":
            collector.tally.request("faults", "drop_after_store", stored=len(rows))
            self._drop(slow)
            return
        collector.tally.request(None, None, stored=len(rows), accepted=len(rows))
        self._answer(200, {"accepted": len(rows)}, delay_ms=slow)

    def _refuse_unread(self, collector: Collector, status: int, reason: str,
                       message: str) -> None:
        collector.tally.request("rejected", reason)
        self._linger = True
        self._answer(status, {"error": message}, close=True)

    def _read_body(self, length: int) -> bytes | None:
        try:
            body = self.rfile.read(length)
        except OSError:  # includes socket.timeout
            return None
        return body if len(body) == length else None

    def _store(self, rows: list[Row]) -> None:
        if self._db is None:
            self._db = connect(self.server.collector.db_path)
        insert_rows(self._db, rows)

    # ----------------------------------------------------------- answers

    def _answer(self, status: int, payload: dict[str, Any], *,
                headers: Mapping[str, str] | None = None, close: bool = False,
                delay_ms: int = 0) -> None:
        self.server.collector._apply_delay(delay_ms)
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            logger.debug("collector: client went away before the answer", exc_info=True)
            self.close_connection = True
        if close:
            self.close_connection = True

    def _drop(self, delay_ms: int = 0) -> None:
        self.server.collector._apply_delay(delay_ms)
        self.close_connection = True
        # FIN without a byte of answer: the client sees "connection closed
        # without response".  The body was read in full, so no reset either.
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _discard_unread_input(self) -> None:
        """Drain (and throw away) what the client is still sending, then let it close.

        Closing a socket with unread bytes in its receive buffer sends a reset,
        and a reset can reach the client before it read the answer: it would
        see "connection reset" instead of 413.  So the write side is shut
        (the client gets the whole answer and an end of stream) and the rest
        of the body is read into a small buffer and discarded, for at most
        ``_LINGER_SECONDS``.  It is never stored, parsed or kept in memory.
        """
        self._linger = False
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + _LINGER_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self.connection.settimeout(left)
                if not self.rfile.read1(65536):
                    return
            except (OSError, ValueError):
                return


def _content_length(value: str | None) -> int | None:
    # Stricter than int(): no sign, no blanks, no underscores ("1_0" is 10 to int()).
    if value is None or _CONTENT_LENGTH.fullmatch(value) is None:
        return None
    return int(value)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


