"""HTTP POST of one JSON body, and nothing else.

An HTTP client answers with the status code and the ``Retry-After`` header, or
raises :class:`TransportError` for anything that kept an answer from arriving
(refused, reset, timed out, bad URL).  Deciding what that means is the
transport's and the retry policy's business (see :mod:`.transport`).

There are two clients with one contract, because the people who vendor
this package often cannot install anything: :class:`RequestsClient` uses
``requests`` (one reused session, so one keep-alive connection per handler),
:class:`UrllibClient` only the standard library.  Both send the same
headers, never follow redirects, answer every HTTP status (3xx, 4xx and 5xx
included) as a :class:`Response`, read at most :data:`MAX_RESPONSE_BYTES` of a
body, apply the timeout to each socket operation (connect, and every read) and
take proxies from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``).

:func:`default_client` picks ``requests`` when it can be imported and
``urllib`` otherwise.  The choice is made once, at the first POST (on the
worker thread), and never by ``import nat_telemetry``, which must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

from . import _log
from ._fork_guard import import_guarded

if TYPE_CHECKING:
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


# Only the status line and headers matter; a body larger than this is not
# read, so an endpoint cannot make the client buffer without limit.
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
    # requests' ~/.netrc lookup (netrc, shlex) and the IDNA codec that encodes
    # the first host name connected to.
    import_guarded("encodings.idna")
    import_guarded("netrc")


class TransportError(Exception):
    """No answer: the connection failed, was reset, or timed out."""


class Response(NamedTuple):
    status: int
    retry_after: str | None


class HttpClient(Protocol):
    """What a transport needs from an HTTP client."""

    def post(self, url: str, body: bytes, timeout: float) -> Response: ...

    def close(self) -> None: ...


class RequestsClient:
    """POSTs with one reused :class:`requests.Session` (imported on first use)."""

    def __init__(self) -> None:
        self._session: Any = None

    def post(self, url: str, body: bytes, timeout: float) -> Response:
        requests = _import_requests()
        if self._session is None:
            self._session = requests.Session()
        try:
            reply = self._session.post(
                url, data=body, headers=_HEADERS, timeout=timeout,
                allow_redirects=False, stream=True,
            )
        except (requests.RequestException, OSError, ValueError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        try:
            received = 0
            for chunk in reply.iter_content(8192):
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    break  # close() below drops the connection instead of reusing it
        except (requests.RequestException, OSError) as exc:
            # The status line arrived; a broken body does not change what it said.
            _log.debug("reading the response body failed: %s", exc)
        finally:
            reply.close()
        return Response(reply.status_code, reply.headers.get("Retry-After"))

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


class UrllibClient:
    """POSTs with :mod:`urllib.request`: the standard library only.

    The opener has no redirect handler and no error processor, so every
    status, 3xx included, comes back as it is; it keeps urllib's
    :class:`~urllib.request.ProxyHandler`, which reads ``HTTP_PROXY``,
    ``HTTPS_PROXY`` and ``NO_PROXY`` (any case) for each POST, as ``requests``
    does.  urllib differs from ``requests`` in small ways: ``NO_PROXY`` takes
    host names and suffixes but no CIDR ranges, ``ALL_PROXY`` is not used,
    certificates are checked against the system's CA store rather than
    certifi's, and each POST opens a new connection (no keep-alive pool),
    which at one batch per flush costs nothing that matters.
    """

    def post(self, url: str, body: bytes, timeout: float) -> Response:
        _import_urllib()
        import http.client
        import urllib.error
        import urllib.parse
        import urllib.request

        try:
            scheme = urllib.parse.urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                # urllib would also open file:, ftp: and data: URLs; requests would not.
                raise ValueError(f"unsupported URL scheme {scheme!r} (need http or https)")
            request = urllib.request.Request(url, data=body, headers=_HEADERS, method="POST")
            reply: HTTPResponse | HTTPError | None = _opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:  # only with an error processor; kept as a net
            reply = exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError covers URLError, refused, reset, socket.timeout / TimeoutError.
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if reply is None:  # no handler took the request (e.g. an odd proxy scheme)
            raise TransportError(f"no handler could open {url!r}")
        try:
            status = _status_of(reply)
            retry_after = reply.headers.get("Retry-After")
            try:
                reply.read(MAX_RESPONSE_BYTES)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # The status line arrived; a broken body does not change what it said.
                _log.debug("reading the response body failed: %s", exc)
        finally:
            reply.close()
        return Response(status, retry_after)

    def close(self) -> None:
        """Nothing to release: every POST closes its own connection."""


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
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
    ]
    https_handler = getattr(urllib.request, "HTTPSHandler", None)  # absent without ssl
    if https_handler is not None:
        handlers.append(https_handler())
    for handler in handlers:
        opener.add_handler(handler)
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

    def post(self, url: str, body: bytes, timeout: float) -> Response:
        if self.chosen is None:
            self.chosen = _choose_default_class()()
        return self.chosen.post(url, body, timeout)

    def close(self) -> None:
        if self.chosen is not None:
            self.chosen.close()


def default_client() -> AutoClient:
    """The HTTP client a transport uses unless told otherwise (see :class:`AutoClient`)."""
    return AutoClient()
