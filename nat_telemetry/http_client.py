"""HTTP POST of one JSON body, and nothing else.

An HTTP client answers with the status code, the ``Retry-After`` header and
the start of the body (an OTLP receiver says there what it rejected), or
raises :class:`TransportError` for anything that kept an answer from arriving
(refused, reset, timed out, bad URL).  Deciding what that means is the
transport's and the retry policy's business (see :mod:`.transport`).

There are two clients with one contract, because the people who vendor
this package often cannot install anything: :class:`RequestsClient` uses
``requests`` (one reused session, so one keep-alive connection per handler),
:class:`UrllibClient` only the standard library.  Both:

* send the same headers, never follow redirects, and answer every HTTP status
  (3xx, 4xx and 5xx included) as a :class:`Response`;
* give each POST a wall-clock deadline of ``timeout`` seconds (see
  :mod:`._http_deadline`): the whole exchange (connect, TLS, proxy tunnel,
  request, status line, headers, then at most :data:`MAX_RESPONSE_BYTES` of
  the body) ends by then, however the peer trickles its bytes;
* take proxies from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``) but no
  credentials: never ``~/.netrc``, never anything else ambient;
* send the ``user:password@`` of a URL as ``Authorization: Basic`` (UTF-8)
  and the URL without it, unless the caller's own ``Authorization`` header
  (a bearer token) takes its place.  Libraries never see the userinfo, so
  their error messages and debug logs cannot show it.

:func:`default_client` picks ``requests`` when it can be imported and
``urllib`` otherwise.  The choice is made once, at the first POST (on the
worker thread), and never by ``import nat_telemetry``, which must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

from . import _http_deadline, _log
from ._fork_guard import import_guarded
from .endpoint import redact

if TYPE_CHECKING:
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
]


# Of the body only the start matters (an OTLP partial success is a few bytes);
# no more than this is read, so an endpoint cannot make the client buffer
# without limit.
MAX_RESPONSE_BYTES = 64 * 1024

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _import_requests() -> Any:
    requests = import_guarded("requests")  # lazily: `import nat_telemetry` must stay cheap
    _import_first_use()
    return requests


def _import_urllib() -> None:
    # Imported here for the caller to use (urllib.request itself imports
    # http.client, urllib.error and urllib.parse).
    import_guarded("urllib.request")
    _import_first_use()


def _import_first_use() -> None:
    # What a first POST would otherwise import on the worker thread, unguarded:
    # the IDNA codec that encodes the first host name connected to, and what
    # turns URL credentials into a header.
    import_guarded("encodings.idna")
    import_guarded("urllib.parse")
    import_guarded("base64")


class TransportError(Exception):
    """No answer: the connection failed, was reset, or timed out."""


class Response(NamedTuple):
    """The status, the ``Retry-After`` header, and the body as far as it was read.

    ``body`` holds at most :data:`MAX_RESPONSE_BYTES`; it is empty when the
    answer had none, or when reading it failed after the status arrived.
    """

    status: int
    retry_after: str | None
    body: bytes = b""


class HttpClient(Protocol):
    """What a transport needs from an HTTP client.

    ``headers`` are added to the client's own (and win over the credentials
    of the URL for ``Authorization``); a transport passes them only when it
    has some, so a client written for three arguments keeps working.
    """

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response: ...

    def close(self) -> None: ...


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
        raise TransportError(f"invalid URL {redact(url)!r}: {exc}") from None
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if not at:
        return url, merged
    if not any(name.lower() == "authorization" for name in merged):
        user, _, password = userinfo.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        merged["Authorization"] = "Basic " + b64encode(pair).decode("ascii")
    return urlunsplit(parts._replace(netloc=host_port)), merged


def _no_auth(request: Any) -> Any:
    """A requests auth that adds nothing: with one set, requests skips ``~/.netrc``."""
    return request


def _no_answer(exc: BaseException | None, deadline: _http_deadline.Deadline,
               timeout: float) -> TransportError:
    if exc is None or deadline.cut_short:
        return TransportError(f"no complete answer within the deadline of {timeout:g} s")
    return TransportError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------ requests

class RequestsClient:
    """POSTs with one reused :class:`requests.Session` (imported on first use)."""

    def __init__(self) -> None:
        self._session: Any = None

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        requests = _import_requests()
        target, merged = _prepare(url, headers)
        if self._session is None:
            self._session = self._new_session(requests)
        deadline = _http_deadline.begin(timeout)
        try:
            try:
                reply = self._session.post(
                    target, data=body, headers=merged, timeout=timeout,
                    allow_redirects=False, stream=True,
                )
            except (requests.RequestException, OSError, ValueError) as exc:
                raise _no_answer(exc, deadline, timeout) from exc
            try:
                if deadline.cut_short:
                    raise _no_answer(None, deadline, timeout)
                chunks: list[bytes] = []
                received = 0
                for chunk in reply.iter_content(8192):
                    chunks.append(chunk)
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break  # close() below drops the connection instead of reusing it
                # A body the deadline cut short is not the answer: none then.
                body = b"" if deadline.expired else b"".join(chunks)[:MAX_RESPONSE_BYTES]
            except (requests.RequestException, OSError) as exc:
                # The status line arrived; a broken body does not change what it said.
                _log.debug("reading the response body failed: %s", exc)
                body = b""
            finally:
                reply.close()
            return Response(reply.status_code, reply.headers.get("Retry-After"), body)
        finally:
            _http_deadline.end(deadline)

    @staticmethod
    def _new_session(requests: Any) -> Any:
        session = requests.Session()
        session.auth = _no_auth  # never credentials from ~/.netrc (trust_env stays, for proxies)
        adapter = _http_deadline.watched_adapter_class()()
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

    The opener has no redirect handler, no error processor and no auth
    handler, so every status, 3xx included, comes back as it is; it keeps
    urllib's :class:`~urllib.request.ProxyHandler`, which reads ``HTTP_PROXY``,
    ``HTTPS_PROXY`` and ``NO_PROXY`` (any case) for each POST, as ``requests``
    does.  urllib differs from ``requests`` in small ways: ``NO_PROXY`` takes
    host names and suffixes but no CIDR ranges, ``ALL_PROXY`` is not used,
    certificates are checked against the system's CA store rather than
    certifi's, and each POST opens a new connection (no keep-alive pool),
    which at one batch per flush costs nothing that matters.
    """

    def post(self, url: str, body: bytes, timeout: float,
             headers: Mapping[str, str] | None = None) -> Response:
        _import_urllib()
        import http.client
        import urllib.error
        import urllib.parse
        import urllib.request

        target, merged = _prepare(url, headers)
        deadline = _http_deadline.begin(timeout)
        try:
            try:
                scheme = urllib.parse.urlsplit(target).scheme.lower()
                if scheme not in ("http", "https"):
                    # urllib would also open file:, ftp: and data: URLs; requests would not.
                    raise ValueError(f"unsupported URL scheme {scheme!r} (need http or https)")
                request = urllib.request.Request(target, data=body, headers=merged,
                                                 method="POST")
                reply: HTTPResponse | HTTPError | None = _opener().open(request,
                                                                        timeout=timeout)
            except urllib.error.HTTPError as exc:  # only with an error processor; kept as a net
                reply = exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # OSError covers URLError, refused, reset, socket.timeout / TimeoutError.
                raise _no_answer(exc, deadline, timeout) from exc
            if reply is None:  # no handler took the request (e.g. an odd proxy scheme)
                raise TransportError(f"no handler could open {redact(target)!r}")
            try:
                if deadline.cut_short:
                    raise _no_answer(None, deadline, timeout)
                status = _status_of(reply)
                retry_after = reply.headers.get("Retry-After")
                try:
                    body = reply.read(MAX_RESPONSE_BYTES)
                    if deadline.expired or _incomplete(body, reply.headers.get("Content-Length")):
                        body = b""  # urllib returns a cut body as it is; requests raises
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    # The status line arrived; a broken body does not change what it said.
                    _log.debug("reading the response body failed: %s", exc)
                    body = b""
            finally:
                reply.close()
            return Response(status, retry_after, body)
        finally:
            _http_deadline.end(deadline)

    def close(self) -> None:
        """Nothing to release: every POST closes its own connection."""


def _incomplete(body: bytes, content_length: str | None) -> bool:
    """Fewer bytes than ``Content-Length`` promised (up to what is read at most)."""
    if content_length is None or not content_length.strip().isdigit():
        return False
    return len(body) < min(int(content_length), MAX_RESPONSE_BYTES)


def _status_of(reply: Any) -> int:
    status = getattr(reply, "status", None)  # HTTPResponse (and HTTPError since 3.9)
    if not isinstance(status, int):
        status = getattr(reply, "code", None)  # HTTPError's own name for it
    if not isinstance(status, int):
        raise TransportError("the answer carried no status code")
    return status


def _opener() -> OpenerDirector:
    """An opener for http(s) only: proxies from the environment, nothing followed."""
    import urllib.request

    opener = urllib.request.OpenerDirector()
    # Built per POST: ProxyHandler reads the environment when it is created,
    # and requests reads it per request too.
    opener.add_handler(urllib.request.ProxyHandler())
    opener.add_handler(urllib.request.UnknownHandler())
    for handler_class in _http_deadline.watched_handler_classes():
        opener.add_handler(handler_class())
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
            _import_requests()
            chosen = RequestsClient
        except Exception as exc:  # missing or broken: either way, urllib
            _log.debug("requests is not usable (%s); sending with urllib", exc)
            chosen = UrllibClient
        _default_class = chosen
    return chosen


class AutoClient:
    """Sends with ``requests`` when it is importable, else with ``urllib``.

    Deciding costs an import, so it waits for the first POST (which runs on
    the handler's worker thread); from then on this instance keeps the
    client it picked.
    """

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
