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
* with ``NAT_TELEMETRY_DRY_RUN``: :class:`DryRun`, nothing is POSTed;
* anything else: :class:`HttpTransport`, a POST to that URL.

The handler asks again for every batch (so a changed configuration applies at
once) and keeps the transport while the answer stays the same (so an HTTP
connection is reused).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from . import _log, config
from ._fork_guard import import_guarded
from .endpoint import endpoint_problem
from .retry import Outcome, classify_status

if TYPE_CHECKING:
    from .http_client import HttpClient
    from .payload import QueuedEvent

# This package's own name, as vendored copies rename it.
_PACKAGE = __name__.rpartition(".")[0]

__all__ = [
    "Delivery",
    "DryRun",
    "HttpTransport",
    "NoEndpoint",
    "StdoutSink",
    "Transport",
    "Unusable",
    "transport_for",
]


class Delivery(NamedTuple):
    """What became of one body: the outcome, and how long the peer asked us to wait."""

    outcome: Outcome
    retry_after: str | None = None


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
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")

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


class Unusable(Transport):
    """An endpoint that can never be sent to: said once, at WARNING; events dropped."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def send(self, body: bytes, timeout: float) -> Delivery:
        if self.problem not in _reported_problems:
            _reported_problems.add(self.problem)
            _log.warning("telemetry is not sent: %s (from %s)", self.problem,
                         config.ENDPOINT_ENV_VAR)
        return Delivery(Outcome.UNUSABLE)


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
        from .endpoint import redact

        stream = sys.stderr
        try:
            if stream is not None:
                text = body.decode("utf-8", errors="replace")
                stream.write(f"{self.PREFIX}POST {redact(self.url)}: {text}\n")
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
        transport_error = import_guarded(f"{_PACKAGE}.http_client").TransportError
        try:
            if self._headers:
                response = self.client.post(self.url, body, timeout, headers=self._headers)
            else:  # a caller's client may take only the first three arguments
                response = self.client.post(self.url, body, timeout)
        except transport_error as exc:
            _log.debug("telemetry POST failed: %s", exc)
            return Delivery(Outcome.TRANSIENT)
        _log.debug("telemetry POST answered %d", response.status)
        return Delivery(classify_status(response.status), response.retry_after)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def transport_for(endpoint: str, *, dry_run: bool | None = None) -> Transport:
    """The transport for ``endpoint`` (``dry_run`` defaults to ``NAT_TELEMETRY_DRY_RUN``)."""
    if not endpoint:
        return NoEndpoint()
    if endpoint == config.STDOUT_ENDPOINT_SENTINEL:
        return StdoutSink()
    problem = endpoint_problem(endpoint)
    if problem is not None:
        return Unusable(problem)
    if config.NAT_TELEMETRY_DRY_RUN if dry_run is None else dry_run:
        return DryRun(endpoint)
    return HttpTransport(endpoint, token=HttpTransport.token_from_environment())
