"""A small OTLP/HTTP logs receiver for tests: a real socket, the reference parser.

:class:`OTLPReceiver` listens on 127.0.0.1 (a free port), accepts
``POST /v1/logs`` with ``Content-Type: application/json`` and parses every body
with ``google.protobuf.json_format`` into the reference
``ExportLogsServiceRequest``, strictly (an unknown field is a 400).  Each
request is recorded as an :class:`Export`.  Answers follow the OTLP/HTTP
specification: 200 with an ``ExportLogsServiceResponse`` (``{}``, or a
``partialSuccess``), or an error status with a ``google.rpc.Status`` body.

Faults are scripted per request with :class:`Answer` (503, 429 with
``Retry-After``, a dropped connection, a partial success, a delay); when the
script is empty, ``default`` answers.  Use it as a context manager::

    with OTLPReceiver() as receiver:
        receiver.script(Answer.unavailable(), Answer.partial(1))
        ... POST to receiver.url, or point a handler at receiver.endpoint ...
        receiver.wait_for_requests(3)
        receiver.accepted_records  # what was kept
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, Union

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from .endpoints import QuietHTTPServer

__all__ = ["Answer", "Export", "OTLPReceiver", "any_value", "as_answer", "attributes_of"]

LOGS_PATH = "/v1/logs"
MAX_BODY = 4 * 1024 * 1024

# google.rpc.Code values for the Status body of an error answer.
_RPC_CODES = {400: 3, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


@dataclasses.dataclass(frozen=True)
class Answer:
    """How to answer one request.

    ``drop`` reads the body and closes the connection without a word;
    ``rejected`` > 0 makes a 2xx a partial success naming that many rejected
    records (the receiver then keeps all but the request's last ``rejected``).
    """

    status: int = 200
    retry_after: str | None = None
    rejected: int = 0
    error_message: str = ""
    drop: bool = False
    delay: float = 0.0

    @classmethod
    def unavailable(cls, retry_after: str | None = None) -> Answer:
        return cls(503, retry_after=retry_after)

    @classmethod
    def throttled(cls, retry_after: str | None = "1") -> Answer:
        return cls(429, retry_after=retry_after)

    @classmethod
    def dropped(cls) -> Answer:
        return cls(drop=True)

    @classmethod
    def partial(cls, rejected: int, error_message: str = "some records were rejected") -> Answer:
        return cls(200, rejected=rejected, error_message=error_message)

    @property
    def ok(self) -> bool:
        return not self.drop and 200 <= self.status < 300


AnswerLike = Union[Answer, int, str]


def as_answer(spec: AnswerLike) -> Answer:
    """An :class:`Answer` from itself, a status code, or ``"drop"``."""
    if isinstance(spec, Answer):
        return spec
    if spec == "drop":
        return Answer(drop=True)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return Answer(spec)
    raise TypeError(f"not an answer: {spec!r}")


@dataclasses.dataclass
class Export:
    """One request as received, and what it was answered."""

    method: str
    path: str
    content_type: str
    body: bytes
    request: ExportLogsServiceRequest | None  # None unless it parsed
    error: str | None  # why it did not parse, or was refused before parsing
    answer: Answer
    at: float  # time.monotonic() when the body had arrived

    @property
    def log_records(self) -> list[LogRecord]:
        if self.request is None:
            return []
        return [record
                for resource_logs in self.request.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records]

    @property
    def accepted_records(self) -> list[LogRecord]:
        """The records kept: none unless answered 2xx, all but the rejected ones if so."""
        if not self.answer.ok:
            return []
        records = self.log_records
        return records[:max(0, len(records) - self.answer.rejected)]


class _Server(QuietHTTPServer):
    receiver: OTLPReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a Collector does
    timeout = 10  # an idle keep-alive connection does not hold a thread forever
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        path = self.path.split("?", 1)[0]
        content_type = self.headers.get("Content-Type", "")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._refuse(411, "Content-Length required")
            return
        try:
            length = int(length_header)
        except ValueError:
            self._refuse(400, "bad Content-Length")
            return
        if not 0 <= length <= receiver.max_body:
            self._refuse(413, "body too large")
            return
        body = self.rfile.read(length)
        error: str | None = None
        request: ExportLogsServiceRequest | None = None
        status: int | None = None
        if path != receiver.path:
            status, error = 404, f"no such path {path!r}"
        elif content_type.split(";", 1)[0].strip().lower() != "application/json":
            status, error = 415, f"unsupported Content-Type {content_type!r}"
        else:
            request, error = _parse(body, self.headers.get("Content-Encoding", ""))
            if request is None:
                status = 400
        answer = receiver._next_answer()
        if status is not None and answer.ok:
            answer = Answer(status, error_message=error or "")
        receiver._record(Export("POST", path, content_type, body, request, error, answer,
                                time.monotonic()))
        if answer.delay:
            receiver._closing.wait(answer.delay)
        if answer.drop:
            self._drop()
            return
        self._answer(answer)

    def do_GET(self) -> None:
        self._refuse(405, "only POST")

    do_PUT = do_DELETE = do_PATCH = do_GET

    def _refuse(self, status: int, message: str) -> None:
        # Refused before the body was read: the connection cannot be reused.
        self.close_connection = True
        self._answer(Answer(status, error_message=message))

    def _answer(self, answer: Answer) -> None:
        if answer.ok:
            response: dict[str, Any] = {}
            if answer.rejected:
                response["partialSuccess"] = {"rejectedLogRecords": str(answer.rejected),
                                              "errorMessage": answer.error_message}
        else:
            response = {"code": _RPC_CODES.get(answer.status, 2),
                        "message": answer.error_message or f"status {answer.status}"}
        payload = json.dumps(response).encode("utf-8")
        self.send_response(answer.status)
        if answer.retry_after is not None:
            self.send_header("Retry-After", answer.retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _parse(body: bytes, encoding: str) -> tuple[ExportLogsServiceRequest | None, str | None]:
    try:
        if encoding.strip().lower() == "gzip":
            body = gzip.decompress(body)
        request = ExportLogsServiceRequest()
        json_format.Parse(body.decode("utf-8"), request)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return request, None


class OTLPReceiver:
    """An OTLP/HTTP logs receiver on 127.0.0.1; start and stop it with ``with``."""

    def __init__(self, *, path: str = LOGS_PATH, max_body: int = MAX_BODY) -> None:
        self.path = path
        self.max_body = max_body
        self.default: Answer = Answer()
        self._script: collections.deque[Answer] = collections.deque()
        self._exports: list[Export] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> OTLPReceiver:
        if self._server is not None:
            raise RuntimeError("already started")
        self._closing.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="test-otlp-receiver", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        self._closing.set()  # delayed answers stop waiting
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ addresses

    @property
    def endpoint(self) -> str:
        """What to give a handler: ``otlp+http://127.0.0.1:PORT`` (no path)."""
        return f"otlp+http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Where the logs are POSTed: ``http://127.0.0.1:PORT/v1/logs``."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    # ------------------------------------------------------------ scripting

    def script(self, *answers: AnswerLike) -> None:
        """Answer the next requests with these, in order; then ``default``."""
        with self._changed:
            self._script.extend(as_answer(a) for a in answers)

    def _next_answer(self) -> Answer:
        with self._changed:
            return self._script.popleft() if self._script else self.default

    def _record(self, export: Export) -> None:
        with self._changed:
            self._exports.append(export)
            self._changed.notify_all()

    # ------------------------------------------------------------ results

    @property
    def exports(self) -> list[Export]:
        with self._changed:
            return list(self._exports)

    @property
    def requests(self) -> int:
        with self._changed:
            return len(self._exports)

    @property
    def log_records(self) -> list[LogRecord]:
        """Every record received, whatever the answer."""
        return [record for export in self.exports for record in export.log_records]

    @property
    def accepted_records(self) -> list[LogRecord]:
        """The records kept: from 2xx answers, less those a partial success rejected."""
        return [record for export in self.exports for record in export.accepted_records]

    def wait_for_requests(self, count: int, timeout: float = 3.0) -> bool:
        """Wait until ``count`` requests have been recorded; False after ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._exports) >= count, timeout)

    def iter_attributes(self) -> Iterator[dict[str, Any]]:
        """Each accepted record's attributes as a plain ``{key: value}`` dict."""
        for record in self.accepted_records:
            yield attributes_of(record)


def attributes_of(record: Any) -> dict[str, Any]:
    """A record's (or resource's) attributes as ``{key: python value}``."""
    return {kv.key: any_value(kv.value) for kv in record.attributes}


def any_value(value: Any) -> Any:
    """The Python value of an OTLP ``AnyValue`` (scalars only)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("string_value", "bool_value", "int_value", "double_value", "bytes_value"):
        return getattr(value, kind)
    raise ValueError(f"unexpected AnyValue kind {kind}")
