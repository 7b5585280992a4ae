"""A loopback ingest for the telemetry wire format: HTTP in, SQLite out.

A telemetry client is only as testable as the endpoint it talks to, and a mock
cannot show what a real socket does under load, on a dropped connection or
behind a slow answer.  :class:`Collector` is a real ingest built from the
standard library alone (``http.server`` + ``sqlite3``), so it runs wherever the
client runs: in a test, in ``nat-telemetry demo``, or as ``nat-telemetry
collect`` for someone who wants to see exactly what their tool would send.

It is deliberately strict, because this is where a client that leaks
something gets caught: every key of the reference envelope is required and no
other key is accepted (the schema is ``additionalProperties: false``), every
identity field must be ``"undefined"`` and every GDPR field ``"None"``, and each
event's parameters go through its event class's ``model_validate``.  A request
is stored whole or not at all (one SQLite transaction), so a rejected or failed
request never leaves half a batch behind.

Fault injection (``fail_rate``, ``delay_ms``, ``drop_rate``, and a mix of
:class:`Fault` kinds given as ``faults``) is decided per request, in the order
the request bodies finish arriving, from one seeded ``random.Random``: with a
single sender a seed replays the same run.  Every
request lands in exactly one bucket of :meth:`Collector.counts`, so a stress
test can reconcile what clients believe with what was stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import socket
import socketserver
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Union

from .events import TelemetryEvent
from .payload import format_timestamp

__all__ = [
    "DEFAULT_MAX_BODY",
    "ENVELOPE_KEYS",
    "ERROR_KINDS",
    "EVENT_COLUMNS",
    "FAULT_KINDS",
    "GDPR_FIELDS",
    "IDENTITY_FIELDS",
    "INGEST_PATH",
    "REJECT_REASONS",
    "Collector",
    "EnvelopeRejected",
    "Fault",
    "init_database",
    "known_event_types",
    "parse_envelope",
]

logger = logging.getLogger("nat_telemetry")

INGEST_PATH = "/v1.1/events/json"
DEFAULT_MAX_BODY = 1_048_576

# Fields that could identify a person, a device or an organisation.
IDENTITY_FIELDS = (
    "browserType", "deviceId", "deviceMake", "deviceModel", "deviceOS", "deviceOSVersion",
    "deviceType", "externalUserId", "idpId", "integrationId", "productName", "productVersion",
    "userId",
)
GDPR_FIELDS = (
    "deviceGdprBehOptIn", "deviceGdprFuncOptIn", "deviceGdprTechOptIn",
    "gdprBehOptIn", "gdprFuncOptIn", "gdprTechOptIn",
)
_TEXT_FIELDS = (
    "clientId", "clientType", "clientVariant", "clientVer", "cpuArchitecture",
    "eventProtocol", "eventSchemaVer", "eventSysVer", "sessionId",
)
# Every key of reference/envelope-example.json, in its order (for messages).
ENVELOPE_KEYS = (
    "browserType", "clientId", "clientType", "clientVariant", "clientVer", "cpuArchitecture",
    "deviceGdprBehOptIn", "deviceGdprFuncOptIn", "deviceGdprTechOptIn", "deviceId",
    "deviceMake", "deviceModel", "deviceOS", "deviceOSVersion", "deviceType",
    "eventProtocol", "eventSchemaVer", "eventSysVer", "externalUserId", "gdprBehOptIn",
    "gdprFuncOptIn", "gdprTechOptIn", "idpId", "integrationId", "productName",
    "productVersion", "sentTs", "sessionId", "userId", "events",
)
_ENVELOPE_KEY_SET = frozenset(ENVELOPE_KEYS)
_EVENT_KEYS = ("ts", "parameters", "name")
_MAX_TEXT_LENGTH = 256
# One message naming a thousand broken events helps nobody.
_MAX_PROBLEMS = 10
_MAX_MESSAGE_LENGTH = 2000

# [0-9], not \d: \d also matches other scripts' digits.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_TIMESTAMP_RULE = "a UTC timestamp like '2026-11-22T10:18:40.513Z'"
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")

EVENT_COLUMNS = (
    "id", "received_at", "session_id", "client_ver", "cpu_architecture",
    "schema_version", "name", "ts", "parameters",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    session_id TEXT NOT NULL,
    client_ver TEXT NOT NULL,
    cpu_architecture TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    name TEXT NOT NULL,
    ts TEXT NOT NULL,
    parameters TEXT NOT NULL
)
"""
_INSERT = (
    "INSERT INTO events (received_at, session_id, client_ver, cpu_architecture,"
    " schema_version, name, ts, parameters) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# Writers queue on SQLite's lock; past this the request answers 503 (retryable).
_BUSY_TIMEOUT_SECONDS = 10.0
# An idle keep-alive connection is closed after this long.
_IDLE_TIMEOUT_SECONDS = 30.0
# How long an unread body (413, 411, 405) is drained before closing; see
# _RequestHandler._discard_unread_input.
_LINGER_SECONDS = 2.0

REJECT_REASONS = (
    "bad_request", "bad_json", "invalid_envelope", "invalid_event",
    "too_large", "length_required", "method_not_allowed",
)
FAULT_KINDS = ("fail", "drop", "drop_after_store", "delay")
# What a Fault in a mix may do (see Fault).
MIX_KINDS = ("fail", "drop", "slow")
ERROR_KINDS = ("incomplete_body", "storage")

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"

# (received_at, session_id, client_ver, cpu_architecture, schema_version, name, ts, parameters)
Row = tuple[str, ...]
StrPath = Union[str, "os.PathLike[str]"]


class Fault(NamedTuple):
    """One entry of a fault mix: ``rate`` of the requests get this fault.

    ``kind`` is ``"fail"`` (answer ``status``, with ``Retry-After:
    retry_after`` when given; nothing is stored), ``"drop"`` (close without an
    answer once the body was read; stored first when the collector has
    ``drop_after_store``) or ``"slow"`` (store and answer normally, ``delay_ms``
    late).  Counted like the single-rate faults: ``faults['fail']`` (and
    ``fail_statuses[status]``), ``faults['drop']`` or
    ``faults['drop_after_store']``, and ``faults['delay']`` on top.
    """

    rate: float
    kind: str
    status: int = 503
    retry_after: int | None = None
    delay_ms: int = 0


class EnvelopeRejected(Exception):
    """A request body that will not be stored; ``reason`` is a ``counts()`` key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def known_event_types() -> dict[str, type[TelemetryEvent]]:
    """Event name -> class, for every :class:`TelemetryEvent` subclass defined so far.

    Breadth first, first definition wins: the package's own classes (direct
    subclasses, defined at import) keep their names even if a later subclass
    reuses one.
    """
    found: dict[str, type[TelemetryEvent]] = {}
    pending = list(TelemetryEvent.__subclasses__())
    while pending:
        cls = pending.pop(0)
        name = cls.__dict__.get("_event_name")
        if isinstance(name, str):
            found.setdefault(name, cls)
        pending.extend(cls.__subclasses__())
    return found


def parse_envelope(
    body: bytes,
    event_types: Mapping[str, type[TelemetryEvent]],
    received_at: str | None = None,
) -> list[Row]:
    """Validate one request body; return the rows to insert, one per event.

    Raises :class:`EnvelopeRejected` naming every problem found (up to ten):
    reason ``bad_json``, ``invalid_envelope`` or ``invalid_event``.
    """
    try:
        envelope = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvelopeRejected("bad_json", f"body is not UTF-8: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise EnvelopeRejected("bad_json", f"invalid JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise EnvelopeRejected(
            "invalid_envelope", f"the envelope must be a JSON object, got {_json_type(envelope)}")

    problems = _envelope_problems(envelope)
    if problems:
        raise EnvelopeRejected("invalid_envelope", _join(problems))

    if received_at is None:
        received_at = format_timestamp()
    common = (received_at, envelope["sessionId"], envelope["clientVer"],
              envelope["cpuArchitecture"], envelope["eventSchemaVer"])
    rows: list[Row] = []
    for index, item in enumerate(envelope["events"]):
        found = _event_problems(index, item, event_types)
        if isinstance(found, list):
            problems += found
            if len(problems) >= _MAX_PROBLEMS:
                break
        elif not problems:
            rows.append(common + found)
    if problems:
        raise EnvelopeRejected("invalid_event", _join(problems))
    return rows


def _envelope_problems(envelope: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    missing = [key for key in ENVELOPE_KEYS if key not in envelope]
    if missing:
        problems.append(_named("missing envelope key", missing))
    unknown = sorted(str(key) for key in envelope if key not in _ENVELOPE_KEY_SET)
    if unknown:
        problems.append(_named("unknown envelope key", unknown))
    for key in IDENTITY_FIELDS:
        if key in envelope and envelope[key] != "undefined":
            problems.append(f"field {key!r} must be 'undefined'")
    for key in GDPR_FIELDS:
        if key in envelope and envelope[key] != "None":
            problems.append(f"field {key!r} must be 'None'")
    for key in _TEXT_FIELDS:
        if key in envelope and not _is_text(envelope[key]):
            problems.append(
                f"field {key!r} must be a string of 1 to {_MAX_TEXT_LENGTH} printable characters")
    if "sentTs" in envelope and not _is_timestamp(envelope["sentTs"]):
        problems.append(f"field 'sentTs' must be {_TIMESTAMP_RULE}")
    events = envelope.get("events")
    if "events" in envelope and (not isinstance(events, list) or not events):
        problems.append("field 'events' must be a non-empty array")
    return problems


def _event_problems(
    index: int, item: Any, event_types: Mapping[str, type[TelemetryEvent]]
) -> list[str] | tuple[str, str, str]:
    """The problems of one event, or its ``(name, ts, parameters JSON)``."""
    where = f"events[{index}]"
    if not isinstance(item, dict):
        return [f"{where} must be an object, got {_json_type(item)}"]
    problems: list[str] = []
    missing = [key for key in _EVENT_KEYS if key not in item]
    if missing:
        problems.append(f"{where}: " + _named("missing key", missing))
    unknown = sorted(str(key) for key in item if key not in _EVENT_KEYS)
    if unknown:
        problems.append(f"{where}: " + _named("unknown key", unknown))
    cls: type[TelemetryEvent] | None = None
    name = item.get("name")
    if "name" in item:
        if not isinstance(name, str):
            problems.append(f"{where}.name must be a string, got {_json_type(name)}")
        else:
            cls = event_types.get(name)
            if cls is None:
                problems.append(f"{where}: unknown event name {_short(name)}")
    ts = item.get("ts")
    if "ts" in item and not _is_timestamp(ts):
        problems.append(f"{where}.ts must be {_TIMESTAMP_RULE}")
    parameters = ""
    if cls is not None and "parameters" in item:
        try:
            event = cls.model_validate(item["parameters"])
        except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
            problems.append(f"{where}.parameters: {exc}")
        else:
            parameters = json.dumps(event.model_dump(by_alias=True), separators=(",", ":"))
    if problems:
        return problems
    assert isinstance(name, str) and isinstance(ts, str)
    return (name, ts, parameters)


def _is_text(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= _MAX_TEXT_LENGTH
            and value.isprintable())


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        return False
    try:
        datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:  # the right shape, but e.g. month 13
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _named(what: str, keys: list[str]) -> str:
    plural = "s" if len(keys) > 1 else ""
    return f"{what}{plural} " + ", ".join(_short(key) for key in keys)


def _join(problems: list[str]) -> str:
    text = "; ".join(problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        text += "; ..."
    if len(text) > _MAX_MESSAGE_LENGTH:
        text = text[: _MAX_MESSAGE_LENGTH - 3] + "..."
    return text


# ------------------------------------------------------------------ storage


def _connect(db_path: StrPath) -> sqlite3.Connection:
    # isolation_level=None: the transactions are explicit (BEGIN IMMEDIATE takes
    # the write lock up front, so a busy database waits in busy_timeout instead
    # of failing half-way through a request).
    db = sqlite3.connect(os.fspath(db_path), timeout=_BUSY_TIMEOUT_SECONDS,
                         isolation_level=None)
    # NORMAL is crash-safe in WAL mode; only a power loss can lose the last commits.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def init_database(db_path: StrPath) -> None:
    """Create the ``events`` table (if missing) and switch the file to WAL mode.

    Raises ``ValueError`` when the file holds an ``events`` table of another
    shape, ``sqlite3.Error`` when it is not a database at all.
    """
    if os.fspath(db_path) in ("", ":memory:"):
        # Every connection would get its own private, empty database.
        raise ValueError("the collector needs a database file, not an in-memory database")
    db = _connect(db_path)
    try:
        # WAL: readers (report) never block the writers, writers never block readers.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(events)"))
        if columns != EVENT_COLUMNS:
            raise ValueError(f"{os.fspath(db_path)} has an 'events' table with other columns "
                             f"({', '.join(columns)}); use a new --db file")
    finally:
        db.close()


# ------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
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
    server: _Server
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
        collector._count_request("rejected", "bad_request")
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
            collector._count_request("rejected", "method_not_allowed")
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
            collector._count_request("errors", "incomplete_body")
            self.close_connection = True
            return
        self._ingest(collector, body, collector._decide_fault())

    def _ingest(self, collector: Collector, body: bytes, decision: _Decision) -> None:
        fault, slow = decision.action, decision.delay_ms
        if fault == "drop":
            collector._count_request("faults", "drop")
            self._drop(slow)
            return
        if fault == "fail":
            status = decision.status
            collector._count_request("faults", "fail", status=status)
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
                collector._count_request("faults", "drop_after_store")
                self._drop(slow)
                return
            collector._count_request("rejected", exc.reason)
            self._answer(400, {"error": exc.message}, delay_ms=slow)
            return
        try:
            self._store(rows)
        except sqlite3.Error as exc:
            logger.debug("collector: could not store %d event(s)", len(rows), exc_info=True)
            collector._count_request("errors", "storage")
            if fault == "drop_after_store":
                self._drop(slow)
            else:
                self._answer(503, {"error": f"could not store the events: {exc}"},
                             headers={"Retry-After": "1"}, delay_ms=slow)
            return
        if fault == "drop_after_store":
            collector._count_request("faults", "drop_after_store", stored=len(rows))
            self._drop(slow)
            return
        collector._count_request(None, None, stored=len(rows), accepted=len(rows))
        self._answer(200, {"accepted": len(rows)}, delay_ms=slow)

    def _refuse_unread(self, collector: Collector, status: int, reason: str,
                       message: str) -> None:
        collector._count_request("rejected", reason)
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
            self._db = _connect(self.server.collector.db_path)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

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


def _new_counts() -> dict[str, Any]:
    return {
        "requests": 0,
        "accepted_requests": 0,
        "accepted_events": 0,
        "stored_events": 0,
        "stored_then_dropped_events": 0,
        "rejected": dict.fromkeys(REJECT_REASONS, 0),
        "faults": dict.fromkeys(FAULT_KINDS, 0),
        "fail_statuses": {},
        "errors": dict.fromkeys(ERROR_KINDS, 0),
    }


class _Decision(NamedTuple):
    """The fault chosen for one request: ``action`` is ``""``, ``"fail"``,
    ``"drop"`` or ``"drop_after_store"``; ``delay_ms`` is added to the answer."""

    action: str = ""
    status: int = 503
    retry_after: int | None = None
    delay_ms: int = 0


_NO_FAULT = _Decision()


def _as_faults(faults: Sequence[Fault | tuple[Any, ...]]) -> tuple[Fault, ...]:
    mix = tuple(Fault(*fault) for fault in faults)
    for fault in mix:
        _check(fault.kind in MIX_KINDS, "faults kind", fault.kind)
        _check(0.0 <= fault.rate <= 1.0, "faults rate", fault.rate)
        _check(400 <= fault.status <= 599, "faults status", fault.status)
        _check(fault.retry_after is None or fault.retry_after >= 0, "faults retry_after",
               fault.retry_after)
        _check(fault.delay_ms >= 0, "faults delay_ms", fault.delay_ms)
    total = sum(fault.rate for fault in mix)
    _check(total <= 1.0 + 1e-9, "faults (sum of rates)", total)
    return mix


class Collector:
    """A loopback HTTP ingest that validates envelopes and stores events in SQLite.

    ``port=0`` picks a free port; ``url`` is the full URL to POST to (any
    path is accepted).  Faults: ``fail_rate`` of the requests answer
    ``fail_status`` (with ``Retry-After: retry_after`` when given);
    ``drop_rate`` of them are closed without an answer after the body was
    read (stored first when ``drop_after_store``); every answer waits
    ``delay_ms``.  ``faults`` adds a mix of :class:`Fault` entries (e.g. 30 %
    503, 5 % 429 with ``Retry-After``, 5 % drops, 2 % slow answers): one draw
    per request picks at most one of them, and only requests that
    ``fail_rate``/``drop_rate`` left alone get one.  ``seed`` makes the fault
    sequence replayable.
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
        _check(0 <= port <= 65535, "port", port)
        _check(max_body >= 1, "max_body", max_body)
        _check(0.0 <= fail_rate <= 1.0, "fail_rate", fail_rate)
        _check(400 <= fail_status <= 599, "fail_status", fail_status)
        _check(retry_after is None or retry_after >= 0, "retry_after", retry_after)
        _check(delay_ms >= 0, "delay_ms", delay_ms)
        _check(0.0 <= drop_rate <= 1.0, "drop_rate", drop_rate)
        self.db_path = os.fspath(db_path)
        self.host = host
        self.max_body = max_body
        self.fail_rate = float(fail_rate)
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.delay_ms = delay_ms
        self.drop_rate = float(drop_rate)
        self.drop_after_store = drop_after_store
        self.faults = _as_faults(faults)
        self.seed = seed
        self._port = port
        self._event_types = known_event_types()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._rng = random.Random(seed)
        self._counts = _new_counts()
        self._busy_requests = 0
        self._connections: set[socket.socket] = set()
        self._closing = threading.Event()
        self._state = _NEW
        self._server: _Server | None = None
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
        server = _Server((self.host, self._port), self)
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
        with self._lock:
            snapshot = dict(self._counts)
            for key in ("rejected", "faults", "fail_statuses", "errors"):
                snapshot[key] = dict(self._counts[key])
        return snapshot

    def stored_count(self) -> int:
        """Rows in the database right now (a query, not a counter)."""
        db = _connect(self.db_path)
        try:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            db.close()

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, oldest first, ``parameters`` parsed."""
        db = _connect(self.db_path)
        try:
            cursor = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id")
            out = [dict(zip(EVENT_COLUMNS, row)) for row in cursor]
        finally:
            db.close()
        for row in out:
            row["parameters"] = json.loads(row["parameters"])
        return out

    # --------------------------------------------- used by the handler

    def _count_request(self, bucket: str | None, key: str | None, *,
                       stored: int = 0, accepted: int = 0, status: int | None = None) -> None:
        """Count one request in ``counts()[bucket][key]``, or as accepted (bucket None)."""
        # Counted before the answer goes out: a client that got its answer
        # already finds it in counts().
        with self._lock:
            counts = self._counts
            counts["requests"] += 1
            if status is not None:
                counts["fail_statuses"][status] = counts["fail_statuses"].get(status, 0) + 1
            if bucket is not None and key is not None:
                counts[bucket][key] += 1
            else:
                counts["accepted_requests"] += 1
            counts["stored_events"] += stored
            counts["accepted_events"] += accepted
            counts["stored_then_dropped_events"] += stored - accepted

    def _decide_fault(self) -> _Decision:
        """The fault (if any) for the next request.

        Always two draws per request, whatever the rates, so that changing one
        rate does not shift the other's sequence; a drop wins over a failure.
        A fault mix takes one more draw per request (only when there is a mix,
        so a seed replays the same single-rate run as before mixes existed).
        """
        with self._lock:
            drop_draw = self._rng.random()
            fail_draw = self._rng.random()
            mix_draw = self._rng.random() if self.faults else 1.0
        drop = "drop_after_store" if self.drop_after_store else "drop"
        if drop_draw < self.drop_rate:
            return _Decision(drop)
        if fail_draw < self.fail_rate:
            return _Decision("fail", self.fail_status, self.retry_after)
        for fault in self.faults:
            if mix_draw < fault.rate:
                if fault.kind == "fail":
                    return _Decision("fail", fault.status, fault.retry_after)
                if fault.kind == "drop":
                    return _Decision(drop)
                return _Decision(delay_ms=fault.delay_ms)
            mix_draw -= fault.rate
        return _NO_FAULT

    def _apply_delay(self, extra_ms: int = 0) -> None:
        delay_ms = self.delay_ms + extra_ms
        if delay_ms <= 0:
            return
        with self._lock:
            self._counts["faults"]["delay"] += 1
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


def _check(ok: bool, name: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} out of range: {value!r}")

