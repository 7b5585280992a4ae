"""One connection's exchanges at the HTTP level: a request read within its deadline, an answer.

Each request must arrive whole (line, headers, body) within the collector's
``request_timeout``, counted from the moment the connection is ready for it:
a silent connection is then closed, a partly sent request answered 408.  The
request line and headers may take 64 KiB.  Every answer is JSON.  What a
request means is :mod:`.ingest`'s business.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import re
import socket
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .limits import DeadlineReader, HeadTooLarge

if TYPE_CHECKING:
    from .core import Collector
    from .server import Connection, Listener

__all__ = ["Exchange", "content_length", "phrase"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_MAX_LINE = 65536
# The request line and headers together; http.server alone would read 100
# headers of 64 KiB each per connection.
_MAX_HEAD = 65536
_READ_BUFFER = 8192
# How long an unread body (413, 411, 405, 401) is drained before closing; see
# Exchange._discard_unread_input.
_LINGER_SECONDS = 2.0


class Exchange(BaseHTTPRequestHandler):
    """Reads one connection's requests under their deadlines, and writes the answers.

    Subclasses give each request its meaning (``do_POST`` and friends).
    """

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
            self._discard_unread_input()
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

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Called by the base class for a malformed request line or headers:
        # answer JSON like everything else.
        self.collector.tally.request("rejected", "bad_request")
        self._answer(code, {"error": message or phrase(code) or "bad request"}, close=True)

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


def content_length(value: str | None) -> int | None:
    # Stricter than int(): no sign, no blanks, no underscores ("1_0" is 10 to int()).
    if value is None or _CONTENT_LENGTH.fullmatch(value) is None:
        return None
    return int(value)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
