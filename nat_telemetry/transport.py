"""Where a batch goes: one transport object per kind of destination.

A transport does two things: it turns a batch into the bytes of one request
(:meth:`Transport.encode`) and it sends those bytes, answering with a
:class:`Delivery` that says what became of the events in them.  The handler
only batches, retries and counts; it never knows whether "sending" meant a
POST, a line on stderr or nothing at all.

:func:`transport_for` is the one place that reads an endpoint string:

* ``""`` (no endpoint): :class:`NoEndpoint`, payloads are built and validated
  and then skipped;
* ``"stdout"``: :class:`StdoutSink`, one JSON line per payload on stderr;
* with ``NAT_TELEMETRY_DRY_RUN``: :class:`DryRun` (:class:`OtlpDryRun` for
  an OTLP endpoint), nothing is POSTed;
* ``otlp+http(s)://...``: :class:`OtlpTransport`, OpenTelemetry logs as
  OTLP/HTTP JSON (see :mod:`.otlp`);
* any other URL: :class:`HttpTransport`, a POST of the NeMo envelope.

The handler asks again for every batch (so a changed configuration applies at
once) and keeps the transport while the answer stays the same (so an HTTP
connection is reused).
"""

from __future__ import annotations

import collections
import sys

from . import _compact_json, _log, config
from ._fork_guard import import_guarded, import_lock
from .endpoint import destination, endpoint_problem
from .retry import Outcome, classify_status

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import NamedTuple

    from .http_client import HttpClient, Response
    from .payload import QueuedEvent

# This package's own name, as vendored copies rename it.
_PACKAGE = __name__.rpartition(".")[0]

__all__ = [
    "Delivery",
    "DryRun",
    "HttpTransport",
    "NoEndpoint",
    "OtlpDryRun",
    "OtlpTransport",
    "StdoutSink",
    "Transport",
    "Unusable",
    "transport_for",
]


if TYPE_CHECKING:

    class Delivery(NamedTuple):
        """What became of one body (see below)."""

        outcome: Outcome
        retry_after: str | None = None
        rejected: int = 0
else:
    # A typing.NamedTuple to type checkers; at run time the same class without
    # importing typing, which a command line would otherwise pay for at exit.
    Delivery = collections.namedtuple("Delivery", "outcome retry_after rejected",
                                      defaults=(None, 0))
    Delivery.__doc__ = (
        "What became of one body: the outcome, how long the peer asked us to wait, "
        "and how many of the body's events a peer that took it said it rejected "
        "(an OTLP partial success; at most the batch's size is counted).")


class Transport:
    """Encodes a batch as the NeMo envelope; subclasses decide what sending means."""

    #: The body format, as recorded with spooled bodies.
    kind = "nemo"
    #: Where a later sender POSTs this transport's spooled bodies; None: not
    #: spooled (nothing to send to, or sending is instant anyway).
    spool_url: str | None = None

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        from .payload import build_payload

        payload = build_payload(batch, source_client_version=source_client_version,
                                session_id=session_id)
        return _compact_json.dumps(payload).encode("utf-8")

    def send(self, body: bytes, timeout: float) -> Delivery:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the transport may still be used afterwards."""


class NoEndpoint(Transport):
    """No endpoint configured: every payload is built, then skipped."""

    def send(self, body: bytes, timeout: float) -> Delivery:
        return Delivery(Outcome.SKIPPED)


class StdoutSink(Transport):
    """Each payload as one JSON line on stderr (stdout is the command's own output).

    Written as ``json.dumps`` writes by default (``", "`` and ``": "``), as
    the original client did, so the greps people wrote against it still match.
    """

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        from .payload import build_payload

        payload = build_payload(batch, source_client_version=source_client_version,
                                session_id=session_id)
        import json  # the stdout sink's own format: json.dumps' defaults

        return json.dumps(payload).encode("utf-8")

    def send(self, body: bytes, timeout: float) -> Delivery:
        stream = sys.stderr
        if stream is None:
            return Delivery(Outcome.REJECTED)
        try:
            stream.write(body.decode("utf-8") + "\n")
            stream.flush()
        except (OSError, ValueError):
            return Delivery(Outcome.REJECTED)
        return Delivery(Outcome.SENT)


# Unusable endpoints already reported by this process: said once, not per batch.
_reported_problems: set[str] = set()


def _unusable(problem: str) -> Delivery:
    if problem not in _reported_problems:
        _reported_problems.add(problem)
        _log.warning("telemetry is not sent: %s (from %s)", problem, config.ENDPOINT_ENV_VAR)
    return Delivery(Outcome.UNUSABLE)


class Unusable(Transport):
    """An endpoint that can never be sent to: said once, at WARNING; events dropped."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def send(self, body: bytes, timeout: float) -> Delivery:
        return _unusable(self.problem)


class DryRun(Transport):
    """Each payload that would be POSTed to ``url`` goes to stderr instead.

    One line per payload, ``nat-telemetry dry run: POST <url>: <json>``, with
    the URL's credentials redacted, so a person can read exactly what would
    leave the machine and a script can pick the lines out.  Counted skipped:
    nothing was sent.
    """

    #: What every line starts with.
    PREFIX = "nat-telemetry dry run: "

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, body: bytes, timeout: float) -> Delivery:
        return self._show(self.url, body)

    def _show(self, url: str, body: bytes) -> Delivery:
        from .endpoint import redact

        stream = sys.stderr
        try:
            if stream is not None:
                text = body.decode("utf-8", errors="replace")
                stream.write(f"{self.PREFIX}POST {redact(url)}: {text}\n")
                stream.flush()
        except (OSError, ValueError):  # a closed stderr: the dry run still sends nothing
            _log.debug("dry run: could not write the payload to stderr")
        return Delivery(Outcome.SKIPPED)


class HttpTransport(Transport):
    """A POST to ``url``: 2xx sent, 413 too large, 408/429/5xx or no answer transient.

    ``token`` (a collector's ``--token``) is sent as ``Authorization: Bearer
    <token>`` with every POST.  It takes the place of any ``user:password@``
    in ``url``: one request carries one ``Authorization`` header, and the
    token is the credential given for this purpose, so the URL's userinfo is
    then not sent at all.  The token is never logged, nor shown in an error
    or a ``repr``.
    """

    def __init__(self, url: str, client: HttpClient | None = None,
                 token: str | None = None) -> None:
        self.url = url
        self.spool_url = url
        self._client = client
        self._headers: dict[str, str] = {}
        if token:
            if not self.is_sendable_token(token):
                # Never the token itself: it is a secret, even a malformed one.
                raise ValueError("a telemetry token must be printable ASCII without spaces")
            self._headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def is_sendable_token(token: str) -> bool:
        """Fits in a header as it is: printable ASCII, no spaces (RFC 6750's token68 and more)."""
        return token.isascii() and token.isprintable() and " " not in token

    @classmethod
    def token_from_environment(cls) -> str | None:
        """``NAT_TELEMETRY_TOKEN`` (blanks around it ignored), or None when unset or unusable."""
        import os

        token = os.environ.get(config.TOKEN_ENV_VAR, "").strip()
        if token and not cls.is_sendable_token(token):
            _log.warning("%s is not a token that can be sent (printable ASCII without "
                         "spaces): sending without it", config.TOKEN_ENV_VAR)
            return None
        return token or None

    @property
    def client(self) -> HttpClient:
        """The HTTP client, made at the first POST.

        Not before: a command line whose events go to the spool at exit never
        imports the HTTP stack.  Usually on the worker thread, so the import
        goes through the fork guard.
        """
        if self._client is None:
            self._client = import_guarded(f"{_PACKAGE}.http_client").default_client()
        return self._client

    def send(self, body: bytes, timeout: float) -> Delivery:
        response = self._post(self.url, body, timeout)
        if response is None:
            return Delivery(Outcome.TRANSIENT)
        return Delivery(classify_status(response.status), response.retry_after)

    def _post(self, url: str, body: bytes, timeout: float) -> Response | None:
        """The answer to one POST of ``body`` to ``url``; None when none came."""
        transport_error = import_guarded(f"{_PACKAGE}.http_client").TransportError
        try:
            if self._headers:
                response = self.client.post(url, body, timeout, headers=self._headers)
            else:  # a caller's client may take only the first three arguments
                response = self.client.post(url, body, timeout)
        except transport_error as exc:
            _log.debug("telemetry POST failed: %s", exc)
            return None
        _log.debug("telemetry POST answered %d", response.status)
        return response

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# ------------------------------------------------------------------- OTLP


def _otlp() -> ModuleType:
    """The OTLP encoder (:mod:`.otlp`), imported at its first use.

    Not with this module: a command line sending the NeMo envelope never
    needs it.  Usually first needed on the worker thread, so imported holding
    the fork guard's lock (it imports nothing that takes logging's lock).
    """
    name = f"{_PACKAGE}.otlp"
    with import_lock:
        __import__(name)
    return sys.modules[name]


def _encode_otlp(batch: Sequence[QueuedEvent], service_name: str | None,
                 source_client_version: str, session_id: str) -> bytes:
    body: bytes = _otlp().encode_logs_body(batch, service_name=service_name,
                                           service_version=source_client_version,
                                           session_id=session_id)
    return body


def _logs_url(endpoint: str) -> str:
    """Where OTLP logs for ``endpoint`` are POSTed; ValueError naming what is wrong."""
    import_guarded("urllib.parse")  # what otlp_logs_url reads the URL with
    url: str = _otlp().otlp_logs_url(endpoint)
    return url


class OtlpTransport(HttpTransport):
    """OTLP/HTTP with JSON encoding: the events as OpenTelemetry logs.

    ``endpoint`` is ``otlp+http://host:port`` or ``otlp+https://...`` (see
    :func:`.otlp.otlp_logs_url`; kept as :attr:`url` and :attr:`spool_url`,
    so a later sender knows to send spooled bodies as OTLP); the POST goes to
    :attr:`logs_url`.  ``service_name`` is the resource's ``service.name``
    (default: the client id).  Status codes, retries, 413 and the token work
    as for :class:`HttpTransport`; a 2xx whose answer is a partial success
    reports its ``rejectedLogRecords`` in :attr:`Delivery.rejected`.

    The URL is worked out at the first POST, not here, because that needs
    :mod:`urllib.parse` and a command line that only spools at exit never
    POSTs.  An endpoint it cannot make a URL of is reported once, like an
    unusable one, and its events dropped.
    """

    kind = "otlp"

    def __init__(self, endpoint: str, client: HttpClient | None = None,
                 token: str | None = None, *, service_name: str | None = None) -> None:
        super().__init__(endpoint, client, token)
        self.service_name = service_name
        self._logs_url: str | None = None

    @property
    def logs_url(self) -> str:
        """The ``http(s)://`` URL the logs are POSTed to; ValueError when there is none."""
        if self._logs_url is None:
            self._logs_url = _logs_url(self.url)
        return self._logs_url

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        return _encode_otlp(batch, self.service_name, source_client_version, session_id)

    def send(self, body: bytes, timeout: float) -> Delivery:
        try:
            url = self.logs_url
        except ValueError as exc:
            return _unusable(str(exc))
        response = self._post(url, body, timeout)
        if response is None:
            return Delivery(Outcome.TRANSIENT)
        outcome = classify_status(response.status)
        rejected = 0
        if outcome is Outcome.SENT:
            # A caller's client may answer without the body: nothing rejected then.
            rejected = _otlp().rejected_log_records(getattr(response, "body", b"") or b"")
            if rejected:
                _log.debug("the OTLP endpoint rejected %d log record(s)", rejected)
        return Delivery(outcome, response.retry_after, rejected)


class OtlpDryRun(DryRun):
    """:class:`DryRun` for an OTLP endpoint: the OTLP body, and the URL it would go to."""

    kind = "otlp"

    def __init__(self, endpoint: str, *, service_name: str | None = None) -> None:
        super().__init__(endpoint)
        self.service_name = service_name

    def encode(self, batch: Sequence[QueuedEvent], *, source_client_version: str,
               session_id: str) -> bytes:
        return _encode_otlp(batch, self.service_name, source_client_version, session_id)

    def send(self, body: bytes, timeout: float) -> Delivery:
        try:
            url = _logs_url(self.url)
        except ValueError as exc:
            return _unusable(str(exc))
        return self._show(url, body)


def transport_for(endpoint: str, *, dry_run: bool | None = None) -> Transport:
    """The transport for ``endpoint`` (``dry_run`` defaults to ``NAT_TELEMETRY_DRY_RUN``)."""
    kind = destination(endpoint, config.NAT_TELEMETRY_DRY_RUN if dry_run is None else dry_run)
    if kind == "none":
        return NoEndpoint()
    if kind == "stdout":
        return StdoutSink()
    if kind == "unusable":
        return Unusable(str(endpoint_problem(endpoint)))
    if kind == "otlp-dry-run":
        return OtlpDryRun(endpoint)
    if kind == "dry-run":
        return DryRun(endpoint)
    token = HttpTransport.token_from_environment()
    if kind == "otlp":
        return OtlpTransport(endpoint, token=token)
    return HttpTransport(endpoint, token=token)
