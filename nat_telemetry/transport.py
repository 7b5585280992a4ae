"""HTTP POST of one JSON body, and nothing else.

A transport answers with the status code and the ``Retry-After`` header, or
raises :class:`TransportError` for anything that kept an answer from arriving
(refused, reset, timed out, bad URL).  Deciding what that means is the
handler's and the retry policy's business.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, NamedTuple, Optional

__all__ = ["MAX_RESPONSE_BYTES", "RequestsTransport", "Response", "TransportError"]

logger = logging.getLogger("nat_telemetry")

# Only the status line and headers matter; a body larger than this is not
# read, so an endpoint cannot make the client buffer without limit.
MAX_RESPONSE_BYTES = 64 * 1024

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

# `import requests` runs on a worker thread, the first time something is sent,
# and takes a while.  A fork in the middle of it would leave the child a
# half-initialised `requests` in sys.modules (the importing thread does not
# exist there) that no later import can repair; so a fork waits for it.
_import_lock = threading.Lock()
_FORK_WAIT_SECONDS = 5.0
_held_for_fork = False


def _import_requests() -> Any:
    with _import_lock:
        import requests  # lazily: `import nat_telemetry` must stay cheap
    return requests


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = _import_lock.acquire(timeout=_FORK_WAIT_SECONDS)


def _after_fork() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _import_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                        after_in_child=_after_fork)


class TransportError(Exception):
    """No answer: the connection failed, was reset, or timed out."""


class Response(NamedTuple):
    status: int
    retry_after: Optional[str]


class RequestsTransport:
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
            logger.debug("reading the response body failed: %s", exc)
        finally:
            reply.close()
        return Response(reply.status_code, reply.headers.get("Retry-After"))

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
