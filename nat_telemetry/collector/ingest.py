"""What a request means to the collector: who may send it, and what becomes of a POST.

With a token, every request needs ``Authorization: Bearer <token>`` (401
otherwise).  Any method but ``POST`` is answered 405, an over-size or
undeclared body 413/411 unread.  A ``POST`` body is read only within the
collector's budget of bytes in flight, then given its fault, validated,
stored and answered: ``200`` only once the rows are in the file at the
database's path.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from typing import Any

from .exchange import Exchange, content_length, phrase
from .faults import Decision
from .validation import EnvelopeRejected, parse_envelope

__all__ = ["RequestHandler"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])


class RequestHandler(Exchange):
    """The collector's answer to each request of one connection (see the module)."""

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers 501 for a method without a do_X; any
        # method but POST is a 405 here, whatever its name.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        # Invite the body only when it will be read: an over-size, undeclared
        # or unauthorised body gets its answer at once, and is never sent.
        length = content_length(self.headers.get("Content-Length"))
        if (self.command == "POST" and length is not None
                and length <= self.collector.max_body and self._authorized()
                and "Transfer-Encoding" not in self.headers):
            return super().handle_expect_100()
        return True

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
                declared = content_length(self.headers.get("Content-Length"))
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
        length = content_length(declared[0]) if len(declared) == 1 else None
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
            self._answer(status, {"error": f"injected fault: {status} {phrase(status)}"},
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
