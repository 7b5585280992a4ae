"""One connection's exchanges: a request in, an answer out, until either side stops.

Built on ``http.server`` so it runs wherever the client runs.  Each request
must arrive whole (line, headers, body) within the collector's
``request_timeout``, counted from the moment the connection is ready for it:
a silent connection is then closed, a partly sent request answered 408.  With
a token, every request needs ``Authorization: Bearer <token>`` (401
otherwise).  Any method but ``POST`` is answered 405, an over-size or
undeclared body 413/411 unread (and drained, so the client reads the answer
instead of a reset).  A ``POST`` body is read only within the collector's
budget of bytes in flight, then given its fault, validated, stored and
answered; ``200`` only once the rows are in the file at the database's path.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import json
import logging
import re
import socket
import sqlite3
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .faults import Decision
from .limits import DeadlineReader, HeadTooLarge
from .validation import EnvelopeRejected, parse_envelope

if TYPE_CHECKING:
    from .core import Collector
    from .server import Connection, Listener

__all__ = ["RequestHandler"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_MAX_LINE = 65536
# The request line and headers together; http.server alone would read 100
# headers of 64 KiB each per connection.
_MAX_HEAD = 65536
_READ_BUFFER = 8192
# How long an unread body (413, 411, 405, 401) is drained before closing; see
# RequestHandler._discard_unread_input.
_LINGER_SECONDS = 2.0


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real ingest does
    # A request line too broken to carry a version still gets a status line
    # (the base class would answer such a line HTTP/0.9-style: a bare body).
    default_request_version = "HTTP/1.0"
    # Headers and body leave in two writes; with Nagle on, the body would wait
    # for the client's delayed ACK (~40 ms) on every reused connection.
    disable_nagle_algorithm = True
    server_version = "nat-telemetry-collector"
    _linger = False  # an answer went out before the body was read: drain it

    def __init__(self, sock: socket.socket, address: Any, listener: Listener,
                 connection: Connection) -> None:
        self.link = connection
        self.collector: Collector = listener.collector
        # Serves until the connection ends.  The listener stands in for a
        # socketserver server: nothing here reads it.
        super().__init__(sock, address, listener)  # type: ignore[arg-type]

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.reader = self.link.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader, _READ_BUFFER)

    def version_string(self) -> str:
        return self.server_version  # not the Python version: nobody needs to know it

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("collector: %s %s", self.address_string(), format % args)

    # ------------------------------------------------------------ reading

    def handle_one_request(self) -> None:
        self.link.waiting()
        self.reader.begin(self.collector.request_timeout, _MAX_HEAD + _READ_BUFFER)
        self._linger = False
        # What an answer sent before the request line was parsed reads.
        self.command, self.requestline = "", ""
        self.request_version = self.default_request_version
        try:
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
            if self.link.evicted or not self.raw_requestline:
                self._cut_short()
                return
            if len(self.raw_requestline) > _MAX_LINE:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self._parse():
                return
            if self.link.was_evicted():  # while the headers were read
                self._cut_short()
                return
            self.reader.head_done()
            getattr(self, "do_" + self.command)()
            self.wfile.flush()
        except HeadTooLarge:
            self._refuse_unread(431, "too_large", "request line and headers too large")
        except socket.timeout:
            self._timed_out()
        except OSError:  # reset, or the listener closed this connection
            logger.debug("collector: connection ended mid-request", exc_info=True)
            self._cut_short()

    def _parse(self) -> bool:
        words = str(self.raw_requestline, "iso-8859-1").split()
        if len(words) == 2 and words[0] == "GET":
            # HTTP/0.9: no headers follow, so none are waited for; it gets its
            # 405 (and is counted) at once, like any other GET.
            self.command, self.path = words
            self.requestline = " ".join(words)
            self.request_version = self.default_request_version
            self.close_connection = True
            self.headers = http.client.HTTPMessage()
            return True
        return self.parse_request()

    def _timed_out(self) -> None:
        self.close_connection = True
        self.collector.tally.add("connections", "timed_out")
        if self.reader.received:  # a partly sent request, not just a silent connection
            self.collector.tally.request("rejected", "timeout")
            self._answer(408, {"error": "the request did not arrive within "
                                        f"{self.collector.request_timeout:g} s"}, close=True)

    def _cut_short(self) -> None:
        self.close_connection = True
        if self.link.evicted and self.reader.received:
            self.collector.tally.request("errors", "evicted")

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers 501 for a method without a do_X; any
        # method but POST is a 405 here, whatever its name.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        # Invite the body only when it will be read: an over-size, undeclared
        # or unauthorised body gets its answer at once, and is never sent.
        length = _content_length(self.headers.get("Content-Length"))
        if (self.command == "POST" and length is not None
                and length <= self.collector.max_body and self._authorized()
                and "Transfer-Encoding" not in self.headers):
            return super().handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Called by the base class for a malformed request line or headers:
        # answer JSON like everything else.
        self.collector.tally.request("rejected", "bad_request")
        self._answer(code, {"error": message or _phrase(code) or "bad request"}, close=True)

    def _authorized(self) -> bool:
        token = self.collector.token
        if token is None:
            return True
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        # compare_digest: how long the comparison takes says nothing about the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("latin-1", "replace"), token.encode("ascii"))

    def do_POST(self) -> None:
        with self.collector._busy():
            if not self._authorized():
                self._unauthorized()
            else:
                self._handle_post()
        if self._linger:
            self._discard_unread_input()

    def _method_not_allowed(self) -> None:
        with self.collector._busy():
            self.link.busy = True
            if not self._authorized():
                self._unauthorized()
            else:
                self.collector.tally.request("rejected", "method_not_allowed")
                self._answer(405, {"error": f"method {self.command} not allowed; use POST"},
                             headers={"Allow": "POST"}, close=True)
                declared = _content_length(self.headers.get("Content-Length"))
                self._linger = bool(declared) or "Transfer-Encoding" in self.headers
        if self._linger:
            self._discard_unread_input()

    def _unauthorized(self) -> None:
        self._refuse_unread(401, "unauthorized",
                            "a valid 'Authorization: Bearer' token is required",
                            headers={"WWW-Authenticate": 'Bearer realm="nat-telemetry"'})

    # -------------------------------------------------------------- POST

    def _handle_post(self) -> None:
        collector = self.collector
        if "Transfer-Encoding" in self.headers:
            self._refuse_unread(411, "length_required",
                                "Transfer-Encoding is not supported; send a Content-Length")
            return
        declared = self.headers.get_all("Content-Length") or []
        if not declared:
            self._refuse_unread(411, "length_required", "a Content-Length header is required")
            return
        length = _content_length(declared[0]) if len(declared) == 1 else None
        if length is None:
            self._refuse_unread(400, "bad_request", "invalid Content-Length header")
            return
        if length > collector.max_body:
            self._refuse_unread(413, "too_large", f"body of {length} bytes exceeds the limit "
                                                  f"of {collector.max_body} bytes")
            return
        if not collector.budget.acquire(length, self.reader.deadline,
                                        give_up=lambda: self.link.evicted):
            if self.link.evicted:
                self._cut_short()
                return
            self._refuse_unread(503, None, "the collector is busy: try again shortly",
                                headers={"Retry-After": "1"})
            return
        try:
            body = self._read_body(length)
            if body is not None:
                self.link.busy = True  # the whole request is here: no longer evictable
                self._ingest(body, collector.fault_plan.decide())
        finally:
            collector.budget.release(length)

    def _read_body(self, length: int) -> bytes | None:
        try:
            body = self.rfile.read(length)
        except OSError:  # includes socket.timeout
            body = b""
        if len(body) == length:
            return body
        self.close_connection = True
        if self.reader.timed_out:
            self._timed_out()
        elif self.link.evicted:
            self._cut_short()
        else:  # the client hung up mid-body: nobody is left to answer
            self.collector.tally.request("errors", "incomplete_body")
        return None

    def _ingest(self, body: bytes, decision: Decision) -> None:
        collector, fault, slow = self.collector, decision.action, decision.delay_ms
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
            rows = parse_envelope(body, collector.event_types)
        except EnvelopeRejected as exc:
            if fault == "drop_after_store":
                collector.tally.request("faults", "drop_after_store")
                self._drop(slow)
                return
            collector.tally.request("rejected", exc.reason)
            self._answer(400, {"error": exc.message}, delay_ms=slow)
            return
        del body  # the rows are all that is kept from here on
        try:
            collector.store.store(rows)
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

    # ----------------------------------------------------------- answers

    def _refuse_unread(self, status: int, reason: str | None, message: str, *,
                       headers: Mapping[str, str] | None = None) -> None:
        """Answer before reading the body (then drained); ``reason`` None: busy."""
        if reason is None:
            self.collector.tally.request("errors", "busy")
        else:
            self.collector.tally.request("rejected", reason)
        self._linger = True
        self._answer(status, {"error": message}, headers=headers, close=True)

    def _answer(self, status: int, payload: dict[str, Any], *,
                headers: Mapping[str, str] | None = None, close: bool = False,
                delay_ms: int = 0) -> None:
        self.collector._apply_delay(delay_ms)
        body = json.dumps(payload).encode("utf-8")
        try:
            # A client that does not read its answer holds a thread this long at most.
            self.connection.settimeout(self.collector.request_timeout)
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
        self.collector._apply_delay(delay_ms)
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
        self.link.busy = False  # a connection only draining may make room for another
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self.reader.begin(_LINGER_SECONDS)
        with contextlib.suppress(OSError, ValueError):
            while self.rfile.read1(65536):
                pass


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
