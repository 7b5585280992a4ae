"""HTTP POST of one JSON body, over plain HTTP or HTTPS, and nothing else.

A client answers with the status code, the ``Retry-After`` header and the
start of the body (an OTLP receiver says there what it rejected), or raises
:class:`TransportError`; what an answer means is :mod:`.transport`'s business.

Two clients, one contract, because people who vendor this package often cannot
install anything: :class:`RequestsClient` (one reused session, so one keep-alive
connection per handler) and :class:`UrllibClient` (the standard library; the
detached sender's).  Both send the same headers and:

* follow no redirect: every status, 3xx included, is an answer;
* end each POST within ``timeout`` seconds, however the peer trickles its bytes
  (:mod:`._deadline`);
* take proxies from the environment, never credentials from ``~/.netrc``;
* send a URL's ``user:password@`` as ``Authorization: Basic`` (and the URL
  without it) unless the caller's own ``Authorization`` (a token) replaces it;
* trust what :func:`~.config.ca_location` names: always verified, host names checked.

:func:`default_client` picks ``requests`` when it can be imported, ``urllib``
otherwise, once, at the first POST, never at ``import nat_telemetry``.
"""

from __future__ import annotations

import collections
import os

from . import _deadline, _process
from ._process import import_guarded
from .config import ca_location

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a sender's start)
if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from typing import Any, NamedTuple, Protocol, Union

__all__ = [
    "MAX_RESPONSE_BYTES", "AutoClient", "HttpClient", "RequestsClient", "Response",
    "TransportError", "UrllibClient", "default_client", "tls_context",
]

# Of the body only the start matters (an OTLP partial success is a few bytes).
MAX_RESPONSE_BYTES = 64 * 1024


class TransportError(Exception):
    """No answer: ``kind`` says why (``refused``, ``timeout``, ``tls``, ``dns``,
    ``connection`` or ``invalid``)."""

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


if TYPE_CHECKING:
    class Response(NamedTuple):
        """See below."""

        status: int
        retry_after: str | None
        body: bytes = b""

    class HttpClient(Protocol):
        """What a transport needs from an HTTP client.  ``headers`` are passed only
        when there are some, so a client written for three arguments keeps working."""

        def post(self, url: str, body: bytes, timeout: float,
                 headers: Mapping[str, str] | None = None) -> Response: ...

        def close(self) -> None: ...

    ClientClass = Union[type["RequestsClient"], type["UrllibClient"]]
else:  # the same, without importing typing at run time
    Response = collections.namedtuple("Response", "status retry_after body", defaults=(b"",))
    HttpClient = ClientClass = object
Response.__doc__ = ("The status, the ``Retry-After`` header, and at most MAX_RESPONSE_BYTES "
                    "of the body (empty when it had none, or reading it failed after the "
                    "status).")


# ------------------------------------------------------------------ trust

_contexts: dict[str | None, ssl.SSLContext] = {}


def tls_context(location: str | None) -> ssl.SSLContext:
    """A verifying, host-checking context trusting ``location`` (None: the system's store)."""
    context = _contexts.get(location)
    if context is None:
        folder = location is not None and os.path.isdir(location)
        context = _contexts[location] = import_guarded("ssl").create_default_context(
            cafile=None if folder else location, capath=location if folder else None)
    return context


# ------------------------------------------------------------------ failures

def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (causes, contexts, and the ``reason`` of urllib's
    and urllib3's wrappers), breadth first."""
    seen: list[BaseException] = []
    pending: list[Any] = [exc]
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if isinstance(current, BaseException) and all(current is not s for s in seen):
            seen.append(current)
            pending += [current.__cause__, current.__context__, getattr(current, "reason", None),
                        *current.args]
    return seen


def failure_kind(exc: BaseException) -> str:
    """What kind of failure kept an answer from arriving."""
    import socket

    causes = _causes(exc)
    names = {type(cause).__name__ for cause in causes}
    texts = " ".join(str(cause) for cause in causes)
    if "SSLCertVerificationError" in names or "CERTIFICATE_VERIFY_FAILED" in texts:
        return "tls"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "refused"
    if any(isinstance(cause, socket.gaierror) for cause in causes) or "NameResolution" in texts:
        return "dns"
    if any(isinstance(cause, TimeoutError) for cause in causes) or names & {
            "Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError",
            "ConnectTimeoutError"}:
        return "timeout"
    if "SSLError" in names:
        return "tls"
    if names & {"InvalidURL", "InvalidSchema", "MissingSchema", "URLRequired", "InvalidHeader"}:
        return "invalid"
    return "connection"


def _no_answer(exc: BaseException | None, deadline: _deadline.Deadline, timeout: float,
               url: str) -> TransportError:
    """Why no answer came, in words that never quote the URL (its path or query may
    hold a secret: a library's message may repeat them)."""
    if exc is None or deadline.cut_short:
        return TransportError(f"no complete answer within the deadline of {timeout:g} s",
                              "timeout")
    kind = failure_kind(exc)
    reason = str(exc)
    if kind == "tls":
        reason = next((str(c) for c in _causes(exc) if "certificate" in str(c).lower()
                       and " " in str(c)), reason)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    for shown in (url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query):
        if shown and shown != "/":
            reason = reason.replace(shown, "<url>")
    return TransportError(f"{type(exc).__name__}: {reason}", kind)


# ------------------------------------------------------------ the POST

def _prepare(url: str, headers: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
    """The URL to hand to a library (no userinfo) and every header to send."""
    from base64 import b64encode
    from urllib.parse import unquote, urlsplit, urlunsplit

    merged = {"Content-Type": "application/json", "Accept": "application/json",
              **(headers or {})}
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # the reason never quotes the URL
        raise TransportError(f"invalid URL: {exc}", "invalid") from None
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if not at:
        return url, merged
    if not any(name.lower() == "authorization" for name in merged):
        user, _, password = userinfo.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        merged["Authorization"] = "Basic " + b64encode(pair).decode("ascii")
    return urlunsplit(parts._replace(netloc=host_port)), merged


class _Client:
    """The POST both clients make; a subclass only opens the request and reads the
    body of the answer with its own library."""

    _library = ""  # imported before the deadline starts

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        import_guarded(self._library)
        # What a first POST would otherwise import on the worker thread, unguarded:
        # the IDNA codec for the first host name, and what handles URL credentials.
        for name in ("encodings.idna", "urllib.parse", "base64", "socket", "ssl"):
            try:
                import_guarded(name)
            except ImportError:  # an interpreter without ssl still speaks plain HTTP
                pass
        import http.client

        # OSError covers requests' errors, urllib's URLError, refused, reset and timeouts.
        failures = (OSError, http.client.HTTPException, ValueError)
        target, merged = _prepare(url, headers)
        deadline = _deadline.begin(timeout)
        try:
            try:
                reply, status = self._open(target, body, timeout, merged)
            except failures as exc:
                raise _no_answer(exc, deadline, timeout, target) from exc
            try:
                if deadline.cut_short:
                    raise _no_answer(None, deadline, timeout, target)
                try:
                    answer = self._read(reply)
                    if deadline.expired:  # a body the deadline cut short is not the answer
                        answer = b""
                except failures as exc:
                    _process.debug("reading the response body failed: %s", exc)
                    answer = b""
            finally:
                reply.close()
            return Response(status, reply.headers.get("Retry-After"), answer)
        finally:
            _deadline.end(deadline)

    def _open(self, url: str, body: bytes, timeout: float,
              headers: dict[str, str]) -> tuple[Any, int]:
        """The reply, whatever its status, and its status code."""
        raise NotImplementedError

    def _read(self, reply: Any) -> bytes:
        """At most :data:`MAX_RESPONSE_BYTES` of the body; empty when it came incomplete."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release: every POST closes its own connection."""


class RequestsClient(_Client):
    """POSTs with one reused :class:`requests.Session` (imported on first use)."""

    _library = "requests"

    def __init__(self) -> None:
        self._session: Any = None

    def _open(self, url: str, body: bytes, timeout: float,
              headers: dict[str, str]) -> tuple[Any, int]:
        if self._session is None:
            self._session = import_guarded("requests").Session()
            # An auth that adds nothing keeps ~/.netrc out (trust_env stays, for proxies).
            self._session.auth = lambda request: request
            adapter = _deadline.watched_adapter_class()()
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
        reply = self._session.post(url, data=body, headers=headers, timeout=timeout,
                                   allow_redirects=False, stream=True,
                                   verify=ca_location() or True)
        return reply, reply.status_code

    def _read(self, reply: Any) -> bytes:
        body = bytearray()
        for chunk in reply.iter_content(8192):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                break  # closing the reply then drops the connection instead of reusing it
        return bytes(body[:MAX_RESPONSE_BYTES])

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


class UrllibClient(_Client):
    """POSTs with :mod:`urllib.request`: the standard library only.

    Unlike ``requests``, ``NO_PROXY`` takes no CIDR ranges, ``ALL_PROXY`` is not
    used, and each POST opens its own connection.
    """

    _library = "urllib.request"

    def __init__(self) -> None:
        self._openers: dict[tuple[Any, ...], Any] = {}

    def _open(self, url: str, body: bytes, timeout: float,
              headers: dict[str, str]) -> tuple[Any, int]:
        import urllib.parse
        import urllib.request

        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            # urllib would also open file:, ftp: and data: URLs; requests would not.
            raise TransportError(f"unsupported URL scheme {scheme!r}", "invalid")
        # The proxies are read from the environment at each POST, as requests does;
        # an opener is made again only when they (or the certificates) change.
        proxies = urllib.request.getproxies()
        tls = "https" in (scheme, urllib.parse.urlsplit(proxies.get(scheme, "")).scheme)
        key = (tuple(sorted(proxies.items())), ca_location() if tls else None, tls)
        opener = self._openers.get(key)
        if opener is None:
            # No redirect, error or auth handler: every status comes back as it is;
            # UnknownHandler refuses any other scheme.
            opener = urllib.request.OpenerDirector()
            opener.add_handler(urllib.request.ProxyHandler(proxies))
            opener.add_handler(urllib.request.UnknownHandler())
            plain, secure = _deadline.watched_handler_classes()
            opener.add_handler(plain())
            if tls and secure is not None:  # an HTTPS context only for what needs one
                opener.add_handler(secure(context=tls_context(key[1])))
            self._openers = {key: opener}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        reply = opener.open(request, timeout=timeout)
        return reply, reply.status

    def _read(self, reply: Any) -> bytes:
        body: bytes = reply.read(MAX_RESPONSE_BYTES)
        # Fewer bytes than Content-Length promised: urllib returns a cut body, requests raises.
        length = reply.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and len(body) < min(
                int(length), MAX_RESPONSE_BYTES):
            return b""
        return body


# ---------------------------------------------------------------- the choice

# The process-wide choice, made at the first POST of any AutoClient (tests reset it to None).
_default_class: ClientClass | None = None


def _choose_default_class() -> ClientClass:
    global _default_class
    chosen = _default_class
    if chosen is None:
        try:
            import_guarded("requests")
            chosen = RequestsClient
        except Exception as exc:  # missing or broken: either way, urllib
            _process.debug("requests is not usable (%s); sending with urllib", exc)
            chosen = UrllibClient
        _default_class = chosen
    return chosen


class AutoClient:
    """Sends with ``requests`` when it is importable, else with ``urllib``; decided
    at the first POST (on the worker thread), then kept."""

    def __init__(self) -> None:
        self.chosen: RequestsClient | UrllibClient | None = None

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        if self.chosen is None:
            self.chosen = _choose_default_class()()
        if headers:
            return self.chosen.post(url, body, timeout, headers)
        return self.chosen.post(url, body, timeout)

    def close(self) -> None:
        if self.chosen is not None:
            self.chosen.close()


def default_client() -> AutoClient:
    """The HTTP client a transport uses unless told otherwise (see :class:`AutoClient`)."""
    return AutoClient()
