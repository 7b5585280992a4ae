"""Where a batch goes: what an endpoint means, and one transport per kind of it.

An endpoint (see :func:`~.config.destination`) is ``""`` (send nothing),
``"stdout"`` (one JSON line per payload on stderr), ``http(s)://`` (a POST of
the NeMo envelope) or ``otlp+http(s)://`` (OpenTelemetry logs); anything no
client can send to is a configuration error, said once, never a failure to
retry.  :func:`transport_for` is the one place that picks a transport for an
endpoint, and :func:`deliver` the one loop around a transport (encode, send,
split on 413, settle), for the handler's worker and the detached sender alike.
"""

from __future__ import annotations

import sys

from . import _process, config
from .config import destination, destination_id, endpoint_problem, host_of, logs_url, redact

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Callable

    from .http import HttpClient, Response
    from .payload import QueuedEvent

__all__ = [
    "Delivery", "DryRun", "HttpTransport", "NoEndpoint", "OtlpDryRun", "OtlpTransport",
    "Outcome", "StdoutSink", "Transport", "Unusable", "classify_status", "deliver",
    "destination", "destination_id", "endpoint_problem", "host_of", "logs_url", "redact",
    "transport_for",
]

# ------------------------------------------------------------------ outcomes

class Outcome:
    """What an answer means for the events of one body."""

    SENT = "sent"
    SKIPPED = "skipped"  # nowhere to send them (no endpoint, dry run)
    REJECTED = "rejected"  # the endpoint will never take these events
    TOO_LARGE = "too_large"  # take them in smaller batches
    TRANSIENT = "transient"  # try again later
    UNUSABLE = "unusable"  # the endpoint can never be sent to


def classify_status(status: int) -> str:
    """2xx sent; 413 too large; 408, 429 and 5xx transient; anything else rejected
    (a 3xx too: a payload goes only where it was configured to go)."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status == 413:
        return Outcome.TOO_LARGE
    if status in (408, 429) or 500 <= status < 600:
        return Outcome.TRANSIENT
    return Outcome.REJECTED


class Delivery(tuple):  # type: ignore[type-arg]
    """What became of one body: its outcome, how long the peer asked to wait, how
    many of its events a peer that took it rejected (an OTLP partial success),
    and what went wrong, in a word or two (``refused``, ``timeout``, ``tls``,
    ``http 401``...), for ``status``."""

    def __new__(cls, outcome: str, retry_after: str | None = None, rejected: int = 0,
                problem: str | None = None) -> Delivery:
        return tuple.__new__(cls, (outcome, retry_after, rejected, problem))

    outcome: str = property(lambda self: self[0])  # type: ignore[assignment]
    retry_after: str | None = property(lambda self: self[1])  # type: ignore[assignment]
    rejected: int = property(lambda self: self[2])  # type: ignore[assignment]
    problem: str | None = property(lambda self: self[3])  # type: ignore[assignment]


# What each outcome makes of the events, in stats() terms.
COUNTERS = {Outcome.SENT: "sent", Outcome.SKIPPED: "skipped",
            Outcome.REJECTED: "dropped_rejected", Outcome.TOO_LARGE: "dropped_too_large",
            Outcome.UNUSABLE: "dropped_bad_endpoint"}


class Result:
    """What :func:`deliver` made of a batch: ``settled`` (counter, events) pairs, in
    order; ``failed``, the events of the body that failed for now, and
    ``untried``, those not sent after it; ``last``, the delivery that decided;
    ``problem``, the last thing that went wrong (a rejection too), for ``status``."""

    __slots__ = ("failed", "last", "problem", "settled", "untried")

    def __init__(self) -> None:
        self.settled: list[tuple[str, list[QueuedEvent]]] = []
        self.failed: list[QueuedEvent] = []
        self.untried: list[QueuedEvent] = []
        self.last: Delivery | None = None
        self.problem: str | None = None


def deliver(transport: Transport, batch: list[QueuedEvent], timeout: Callable[[], float], *,
            source_client_version: str, session_id: str) -> Result:
    """Send ``batch`` through ``transport``: halves after a 413, stops at the first
    transient failure.  Never raises."""
    result = Result()
    parts = [batch]
    while parts:
        part = parts.pop()
        try:
            body = transport.encode(part, source_client_version=source_client_version,
                                    session_id=session_id)
        except Exception:  # a bug or a hostile event class: nothing would fix it
            _process.debug("could not build a telemetry payload", exc_info=True)
            result.settled.append(("dropped_rejected", part))
            continue
        try:
            delivery = Delivery(*transport.send(body, timeout()))  # a caller's may be a pair
        except Exception:
            _process.debug("telemetry transport failed unexpectedly", exc_info=True)
            delivery = Delivery(Outcome.TRANSIENT, problem="error")
        result.last = delivery
        if delivery.problem:
            result.problem = delivery.problem
        if delivery.outcome == Outcome.TOO_LARGE and len(part) > 1:
            middle = len(part) // 2
            parts += [part[middle:], part[:middle]]  # the first half goes first
        elif delivery.outcome == Outcome.TRANSIENT:
            result.failed = part
            result.untried = [queued for rest in reversed(parts) for queued in rest]
            return result
        elif delivery.outcome == Outcome.SENT:
            rejected = delivery.rejected if isinstance(delivery.rejected, int) else 0
            kept = len(part) - min(max(rejected, 0), len(part))
            if kept < len(part):
                result.settled.append(("dropped_rejected", part[kept:]))
            if kept:
                result.settled.append(("sent", part[:kept]))
        else:
            result.settled.append((COUNTERS.get(delivery.outcome, "dropped_rejected"), part))
    return result


# ------------------------------------------------------------------ transports

class Transport:
    """Encodes a batch as the NeMo envelope; subclasses decide what sending means.
    ``product`` (a tool's name and version) fills the envelope's ``productName`` and
    ``productVersion``, and the OTLP resource's service."""

    #: The endpoint a detached sender is given for this transport's spooled
    #: batches; None: not spooled (nothing to send to, or sending is instant).
    spool_endpoint: str | None = None
    product: tuple[str, str] | None = None
    #: For a person to read: as ``json.dumps`` writes by default, the original client's form.
    formatted = False

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        from .payload import build_payload

        # A worker's or a sender's (json's C encoder is three times faster than
        # payload.dumps), imported under the fork guard like every first-POST import.
        json = _process.import_guarded("json")

        name, version = self.product or ("undefined", "undefined")
        payload = build_payload(batch, source_client_version=source_client_version,
                                session_id=session_id, product_name=name,
                                product_version=version)
        text: str = json.dumps(payload, separators=None if self.formatted else (",", ":"))
        return text.encode("utf-8")

    def send(self, body: bytes, timeout: float) -> Delivery:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the transport may still be used afterwards."""


class NoEndpoint(Transport):
    """No endpoint configured: every payload is built, then skipped."""

    def send(self, body: bytes, timeout: float) -> Delivery:
        return Delivery(Outcome.SKIPPED)


def _to_stderr(text: str) -> bool:
    stream = sys.stderr
    try:
        if stream is not None:  # None without a console (pythonw)
            stream.write(text + "\n")
            stream.flush()
            return True
    except (OSError, ValueError):  # a closed stderr
        pass
    return False


class StdoutSink(Transport):
    """Each payload as one JSON line on stderr (stdout is the command's own output)."""

    formatted = True

    def send(self, body: bytes, timeout: float) -> Delivery:
        sent = _to_stderr(body.decode("utf-8"))
        return Delivery(Outcome.SENT if sent else Outcome.REJECTED)


class Unusable(Transport):
    """An endpoint that can never be sent to: said once, at WARNING; events dropped."""

    def __init__(self, problem: str, variable: str = config.ENDPOINT_ENV_VAR) -> None:
        self.problem, self.variable = problem, variable

    def send(self, body: bytes, timeout: float) -> Delivery:
        _process.warning_once("telemetry is not sent: %s (from %s)", self.problem, self.variable)
        return Delivery(Outcome.UNUSABLE, problem="unusable endpoint")


class DryRun(Transport):
    """Each payload that would be POSTed goes to stderr instead, as one line
    ``nat-telemetry dry run: POST <url>: <json>`` (the URL redacted), so a person
    can read exactly what would leave the machine.  Counted skipped."""

    #: What every line starts with.
    PREFIX = "nat-telemetry dry run: "
    formatted = True

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, body: bytes, timeout: float) -> Delivery:
        where = f"POST {redact(self.target())}" if self.url else "no endpoint set, nothing sent"
        _to_stderr(f"{self.PREFIX}{where}: {body.decode('utf-8')}")
        return Delivery(Outcome.SKIPPED)

    def target(self) -> str:
        return self.url


class HttpTransport(Transport):
    """A POST to ``url``: 2xx sent, 413 too large, 408/429/5xx or no answer transient.
    ``token`` is sent as ``Authorization: Bearer <token>``, in place of any
    ``user:password@`` in ``url`` (one request carries one Authorization header);
    never logged, nor shown in an error or a ``repr``."""

    def __init__(self, url: str, client: HttpClient | None = None, token: str | None = None,
                 *, product: tuple[str, str] | None = None) -> None:
        self.url = self.spool_endpoint = url
        self.product = product
        self._client = client
        self._headers: dict[str, str] = {}
        if token:
            if not self.is_sendable_token(token):
                raise ValueError("a telemetry token must be printable ASCII without spaces")
            self._headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def is_sendable_token(token: str) -> bool:
        """Fits in a header as it is: printable ASCII, no spaces."""
        return token.isascii() and token.isprintable() and " " not in token

    @property
    def client(self) -> HttpClient:
        """The HTTP client, made at the first POST (so a command line that only
        spools never imports the HTTP stack); imported under the fork guard."""
        if self._client is None:
            self._client = _process.import_guarded(f"{_process.PACKAGE}.http").default_client()
        return self._client

    def target(self) -> str:
        return self.url

    def send(self, body: bytes, timeout: float) -> Delivery:
        response = self._post(body, timeout)
        if isinstance(response, str):
            return Delivery(Outcome.TRANSIENT, problem=response)
        outcome = classify_status(response.status)
        problem = None if outcome == Outcome.SENT else f"http {response.status}"
        return Delivery(outcome, response.retry_after, self._rejected(outcome, response),
                        problem)

    def _rejected(self, outcome: str, response: Response) -> int:
        return 0

    def _post(self, body: bytes, timeout: float) -> Response | str:
        """The answer to one POST of ``body``; the kind of failure when none came."""
        http = _process.import_guarded(f"{_process.PACKAGE}.http")
        try:
            if self._headers:
                response: Response = self.client.post(self.target(), body, timeout,
                                                      headers=self._headers)
            else:  # a caller's client may take only the first three arguments
                response = self.client.post(self.target(), body, timeout)
        except http.TransportError as exc:
            kind: str = getattr(exc, "kind", "error")
            if kind == "tls":
                _process.warning_once("telemetry cannot be sent to %s: %s", redact(self.url),
                                      exc)
            _process.debug("telemetry POST failed: %s", exc)
            return kind
        _process.debug("telemetry POST answered %d", response.status)
        return response

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _Otlp(Transport):
    """What the OTLP transports share: the events as OpenTelemetry logs (OTLP/HTTP
    with JSON encoding), for the URL :func:`~.config.logs_url` makes of ``url``."""

    logs_url: str
    _service_name: str | None = None

    @property
    def service_name(self) -> str | None:
        """``service.name``: as given, else the product's name, else None (the client id)."""
        return self._service_name or (self.product[0] if self.product else None)

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        otlp = _process.import_guarded(f"{_process.PACKAGE}.otlp")
        body: bytes = otlp.encode_logs_body(batch, service_name=self.service_name,
                                            service_version=source_client_version,
                                            session_id=session_id)
        return body

    def target(self) -> str:
        return self.logs_url


class OtlpTransport(_Otlp, HttpTransport):
    """OTLP/HTTP to an ``otlp+http(s)://`` endpoint (kept as :attr:`url`).  A 2xx that
    is a partial success reports its ``rejectedLogRecords``."""

    def __init__(self, endpoint: str, client: HttpClient | None = None,
                 token: str | None = None, *, product: tuple[str, str] | None = None,
                 service_name: str | None = None) -> None:
        super().__init__(endpoint, client, token, product=product)
        self._service_name = service_name
        self.logs_url = logs_url(endpoint)

    def _rejected(self, outcome: str, response: Response) -> int:
        if outcome != Outcome.SENT:
            return 0
        otlp = _process.import_guarded(f"{_process.PACKAGE}.otlp")
        rejected: int = otlp.rejected_log_records(getattr(response, "body", b"") or b"")
        if rejected:
            _process.debug("the OTLP endpoint rejected %d log record(s)", rejected)
        return rejected


class OtlpDryRun(_Otlp, DryRun):
    """:class:`DryRun` for an OTLP endpoint: the OTLP body, and the URL it would go to."""

    def __init__(self, endpoint: str, *, service_name: str | None = None) -> None:
        super().__init__(endpoint)
        self._service_name = service_name
        self.logs_url = logs_url(endpoint)


def transport_for(endpoint: str, *, dry_run: bool | None = None, token: str | None = None,
                  tool: config.Tool | None = None) -> Transport:
    """The transport for ``endpoint``, for ``tool`` (default: the NeMo Agent Toolkit):
    its dry run, its identity and its token unless ``dry_run`` or ``token`` are given."""
    tool = config.NAT if tool is None else tool
    kind = destination(endpoint, tool.dry_run if dry_run is None else dry_run)
    if kind == "none":
        return NoEndpoint()
    if kind == "unusable":
        return Unusable(str(endpoint_problem(endpoint)), tool.var("ENDPOINT"))
    product = (tool.name, tool.version) if tool.version is not None else None
    if kind in ("stdout", "dry-run", "otlp-dry-run"):
        shown = StdoutSink() if kind == "stdout" else (
            OtlpDryRun(endpoint) if kind == "otlp-dry-run" else DryRun(endpoint))
        shown.product = product
        return shown
    token = tool.token() if token is None else token
    if token and not HttpTransport.is_sendable_token(token):
        _process.warning_once("%s is not a token that can be sent (printable ASCII without "
                              "spaces): sending without it", tool.var("TOKEN"))
        token = ""
    if kind == "otlp":
        return OtlpTransport(endpoint, token=token or None, product=product)
    return HttpTransport(endpoint, token=token or None, product=product)
