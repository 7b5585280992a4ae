"""HTTP POST of one JSON body, over plain HTTP or HTTPS, and nothing else.

A client answers with the status code, the ``Retry-After`` header and the
start of the body (an OTLP receiver says there what it rejected), or raises
:class:`TransportError`, whose ``kind`` says what kept an answer from arriving
(``refused``, ``timeout``, ``tls``, ``dns``, ``connection``, ``invalid``).
What an answer means is the transport's business (see :mod:`.transport`).

Two clients, one contract, because people who vendor this package often
cannot install anything: :class:`RequestsClient` (one reused session, so one
keep-alive connection per handler) and :class:`UrllibClient` (the standard
library; the detached sender's).  Both:

* send the same headers, never follow redirects, and answer every HTTP status
  (3xx, 4xx and 5xx included) as a :class:`Response`;
* give each POST a wall-clock deadline of ``timeout`` seconds (see
  :mod:`._deadline`): the whole exchange ends by then, however the peer
  trickles its bytes;
* take proxies from the environment but no credentials: never ``~/.netrc``;
* send the ``user:password@`` of a URL as ``Authorization: Basic`` and the URL
  without it, unless the caller's own ``Authorization`` (a token) replaces it;
* trust the same certificates, chosen by one rule
  (:func:`~.config.ca_location`): the bundle named by ``REQUESTS_CA_BUNDLE``,
  else ``CURL_CA_BUNDLE``, else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else
  certifi's bundle when it is installed, else the system's store.  Host names
  are always checked, and verification is never turned off.

:func:`default_client` picks ``requests`` when it can be imported, ``urllib``
otherwise, once, at the first POST, never at ``import nat_telemetry``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

from . import _deadline, _process
from ._process import import_guarded
from .config import ca_location

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from http.client import HTTPResponse
    from urllib.error import HTTPError
    from urllib.request import OpenerDirector

__all__ = [
    "MAX_RESPONSE_BYTES",
    "AutoClient",
    "HttpClient",
    "RequestsClient",
    "Response",
    "TransportError",
    "UrllibClient",
    "default_client",
    "tls_context",
]

# Of the body only the start matters (an OTLP partial success is a few bytes).
MAX_RESPONSE_BYTES = 64 * 1024

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class TransportError(Exception):
    """No answer: ``kind`` says why (``refused``, ``timeout``, ``tls``, ``dns``,
    ``connection`` or ``invalid``)."""

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


class Response(NamedTuple):
    """The status, the ``Retry-After`` header, and at most :data:`MAX_RESPONSE_BYTES`
    of the body (empty when it had none, or reading it failed after the status)."""

    status: int
    retry_after: str | None
    body: bytes = b""


class HttpClient(Protocol):
    """What a transport needs from an HTTP client.  ``headers`` are passed only
    when there are some, so a client written for three arguments keeps working."""

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------ trust

_contexts: dict[str | None, ssl.SSLContext] = {}


def tls_context(location: str | None) -> ssl.SSLContext:
    """A verifying, host-checking context trusting ``location`` (None: the system's store)."""
    context = _contexts.get(location)
    if context is None:
        ssl_module = import_guarded("ssl")
        if location is None:
            context = ssl_module.create_default_context()
        elif os.path.isdir(location):
            context = ssl_module.create_default_context(capath=location)
        else:
            context = ssl_module.create_default_context(cafile=location)
        _contexts[location] = context
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


# ------------------------------------------------------------ credentials

def _prepare(url: str, headers: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
    """The URL to hand to a library (no userinfo) and every header to send."""
    from base64 import b64encode
    from urllib.parse import unquote, urlsplit, urlunsplit

    merged = dict(_HEADERS)
    merged.update(headers or {})
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


def _import_first_use() -> None:
    # What a first POST would otherwise import on the worker thread, unguarded:
    # the IDNA codec for the first host name, and what handles URL credentials.
    for name in ("encodings.idna", "urllib.parse", "base64", "socket", "ssl"):
        try:
            import_guarded(name)
        except ImportError:  # an interpreter without ssl still speaks plain HTTP
            pass


# ------------------------------------------------------------ requests

def _no_auth(request: Any) -> Any:
    """A requests auth that adds nothing: with one set, requests skips ``~/.netrc``."""
    return request


class RequestsClient:
    """POSTs with one reused :class:`requests.Session` (imported on first use)."""

    def __init__(self) -> None:
        self._session: Any = None

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        requests = import_guarded("requests")
        _import_first_use()
        target, merged = _prepare(url, headers)
        if self._session is None:
            self._session = self._new_session(requests)
        deadline = _deadline.begin(timeout)
        try:
            try:
                reply = self._session.post(
                    target, data=body, headers=merged, timeout=timeout,
                    allow_redirects=False, stream=True, verify=ca_location() or True)
            except (requests.RequestException, OSError, ValueError) as exc:
                raise _no_answer(exc, deadline, timeout, target) from exc
            try:
                if deadline.cut_short:
                    raise _no_answer(None, deadline, timeout, target)
                chunks: list[bytes] = []
                received = 0
                for chunk in reply.iter_content(8192):
                    chunks.append(chunk)
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break  # close() below drops the connection instead of reusing it
                # A body the deadline cut short is not the answer: none then.
                answer = b"" if deadline.expired else b"".join(chunks)[:MAX_RESPONSE_BYTES]
            except (requests.RequestException, OSError) as exc:
                _process.debug("reading the response body failed: %s", exc)
                answer = b""
            finally:
                reply.close()
            return Response(reply.status_code, reply.headers.get("Retry-After"), answer)
        finally:
            _deadline.end(deadline)

    @staticmethod
    def _new_session(requests: Any) -> Any:
        session = requests.Session()
        session.auth = _no_auth  # never credentials from ~/.netrc (trust_env stays, for proxies)
        adapter = _deadline.watched_adapter_class()()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


# ------------------------------------------------------------ urllib

class UrllibClient:
    """POSTs with :mod:`urllib.request`: the standard library only.

    No redirect, error or auth handler, so every status comes back as it is;
    urllib's ``ProxyHandler`` reads ``HTTP(S)_PROXY`` and ``NO_PROXY`` (any
    case) at each POST.  Unlike ``requests``, ``NO_PROXY`` takes no CIDR ranges,
    ``ALL_PROXY`` is not used, and each POST opens its own connection.
    """

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        import_guarded("urllib.request")
        _import_first_use()
        import http.client
        import urllib.error
        import urllib.parse
        import urllib.request

        target, merged = _prepare(url, headers)
        deadline = _deadline.begin(timeout)
        try:
            try:
                scheme = urllib.parse.urlsplit(target).scheme.lower()
                if scheme not in ("http", "https"):
                    # urllib would also open file:, ftp: and data: URLs; requests would not.
                    raise TransportError(f"unsupported URL scheme {scheme!r}", "invalid")
                request = urllib.request.Request(target, data=body, headers=merged,
                                                 method="POST")
                reply: HTTPResponse | HTTPError | None = _opener().open(request,
                                                                        timeout=timeout)
            except urllib.error.HTTPError as exc:  # only with an error processor; kept as a net
                reply = exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # OSError covers URLError, refused, reset, socket.timeout / TimeoutError.
                raise _no_answer(exc, deadline, timeout, target) from exc
            if reply is None:  # no handler took the request (e.g. an odd proxy scheme)
                raise TransportError("no handler could open the URL", "invalid")
            try:
                if deadline.cut_short:
                    raise _no_answer(None, deadline, timeout, target)
                status = getattr(reply, "status", None)
                if not isinstance(status, int):
                    raise TransportError("the answer carried no status code")
                retry_after = reply.headers.get("Retry-After")
                try:
                    answer = reply.read(MAX_RESPONSE_BYTES)
                    if deadline.expired or _incomplete(answer, reply.headers.get("Content-Length")):
                        answer = b""  # urllib returns a cut body as it is; requests raises
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    _process.debug("reading the response body failed: %s", exc)
                    answer = b""
            finally:
                reply.close()
            return Response(status, retry_after, answer)
        finally:
            _deadline.end(deadline)

    def close(self) -> None:
        """Nothing to release: every POST closes its own connection."""


def _incomplete(body: bytes, content_length: str | None) -> bool:
    """Fewer bytes than ``Content-Length`` promised (up to what is read at most)."""
    if content_length is None or not content_length.strip().isdigit():
        return False
    return len(body) < min(int(content_length), MAX_RESPONSE_BYTES)


def _opener() -> OpenerDirector:
    """An opener for http(s) only: proxies from the environment, nothing followed,
    the certificates of :func:`ca_location` trusted.  Built per POST: the proxy
    handler reads the environment when it is made, as requests does per request."""
    import urllib.request

    opener = urllib.request.OpenerDirector()
    opener.add_handler(urllib.request.ProxyHandler())
    opener.add_handler(urllib.request.UnknownHandler())
    plain, secure = _deadline.watched_handler_classes()
    opener.add_handler(plain())
    if secure is not None:
        opener.add_handler(secure(context=tls_context(ca_location())))
    return opener


# ---------------------------------------------------------------- the choice

ClientClass = Union[type[RequestsClient], type[UrllibClient]]

# The process-wide choice, made at the first POST of any AutoClient.
# Tests reset it (set it to None) to choose again under other conditions.
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
