"""A wall-clock deadline for one POST, for both HTTP clients.

A socket timeout bounds one wait, so a peer that sends a byte just before each
wait ends, or an endless run of ``HTTP/1.1 100 Continue``, would hold a POST,
and the thread making it, for as long as it likes.  So every POST gets a
:class:`Deadline`: each socket the POST uses is registered with it, and at the
deadline a watchdog thread shuts them all down; the library then reads
end-of-file (or fails to write) and gives up at once, whatever it was doing: a
TLS handshake, a proxy's ``CONNECT`` answer, the status line, the headers or
the body.  One watchdog serves every POST of the process; it starts with the
first deadline and ends after :data:`WATCHDOG_IDLE_SECONDS` without any.

Our own connection classes register the sockets, finding the POST running on
their thread through a thread-local, so nothing has to be passed through
``requests`` or ``urllib``.  They are built on first use: ``urllib3`` and
``http.client`` are not imported by ``import nat_telemetry``.
"""

from __future__ import annotations

import os
import threading
import time

from ._process import import_guarded

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a sender's start)
if TYPE_CHECKING:
    import socket
    from http.client import HTTPResponse
    from typing import Any
    from urllib.request import Request

__all__ = ["Deadline", "begin", "end", "watched_adapter_class", "watched_handler_classes"]

# How long the watchdog thread outlives the last deadline (a burst of POSTs
# keeps one thread; an idle process keeps none).
WATCHDOG_IDLE_SECONDS = 1.0

# The deadline of the POST running on this thread, if any.
_current = threading.local()


class Deadline:
    """Shuts down the sockets of one POST when ``timeout`` seconds have passed.

    What is shut down is a duplicate of each socket's descriptor: it still
    reaches the connection after a TLS wrap has taken over the original socket
    object, and no other code can close it and reuse its number while we hold
    it.  :meth:`finish` closes the duplicates, so a connection kept alive after
    the POST is never touched.  Where no thread can be started (at interpreter
    exit, since Python 3.12) the per-operation timeouts are the only bound.
    """

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + max(timeout, 0.0)
        #: The deadline passed (and the sockets were shut down).
        self.expired = False
        #: It passed before the status line and headers were all in: what the library
        #: made of the bytes it had (end-of-file ends its headers) is not an answer.
        self.cut_short = False
        self._answered = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._over = False
        _arm(self)

    def watch(self, sock: socket.socket) -> None:
        import socket

        try:
            duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):  # closed meanwhile: nothing left to bound
            return
        with self._lock:
            if not self._over:
                self._sockets.append(duplicate)
                if self.expired:
                    _shut_down(duplicate)
                return
        duplicate.close()

    def answered(self) -> None:
        """The status line and headers are in: from now on the deadline only cuts the body."""
        with self._lock:
            self._answered = True

    def expire(self) -> None:
        """The time is up (called by the watchdog): shut the POST's sockets down."""
        with self._lock:
            if self._over:
                return
            self.expired = True
            self.cut_short = not self._answered
            for sock in self._sockets:
                _shut_down(sock)

    def finish(self) -> None:
        """The POST is over: nothing is shut down from now on."""
        _disarm(self)
        with self._lock:
            self._over = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


# ------------------------------------------------------------ the watchdog

_wake = threading.Condition(threading.Lock())
_pending: set[Deadline] = set()
_watchdog: threading.Thread | None = None
_wake_at = float("inf")  # when the watchdog wakes next (inf: at its idle timeout)


def _arm(deadline: Deadline) -> None:
    global _watchdog
    with _wake:
        if _watchdog is None or not _watchdog.is_alive():
            thread = threading.Thread(target=_watch_deadlines, name="nat-telemetry-deadline",
                                      daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return
            _watchdog = thread
        _pending.add(deadline)
        if deadline.at < _wake_at:
            _wake.notify()


def _disarm(deadline: Deadline) -> None:
    with _wake:
        _pending.discard(deadline)
        if not _pending:
            _wake.notify()  # start the idle countdown now, not at the old deadline


def _watch_deadlines() -> None:
    global _watchdog, _wake_at
    with _wake:
        while True:
            now = time.monotonic()
            for deadline in [d for d in _pending if d.at <= now]:
                _pending.discard(deadline)
                deadline.expire()
            if _pending:
                _wake_at = min(d.at for d in _pending)
                _wake.wait(_wake_at - now)
            else:
                _wake_at = float("inf")
                if not _wake.wait(WATCHDOG_IDLE_SECONDS) and not _pending:
                    _watchdog = None
                    return


def _reset_after_fork() -> None:
    # The watchdog does not exist in a child, and its lock may have been held.
    global _wake, _pending, _watchdog, _wake_at
    _wake = threading.Condition(threading.Lock())
    _pending = set()
    _watchdog = None
    _wake_at = float("inf")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _shut_down(sock: socket.socket) -> None:
    import contextlib
    import socket

    with contextlib.suppress(OSError):  # already closed, by the peer or by us
        sock.shutdown(socket.SHUT_RDWR)


def begin(timeout: float) -> Deadline:
    """Start the deadline of the POST this thread is about to make."""
    deadline = Deadline(timeout)
    _current.deadline = deadline
    return deadline


def end(deadline: Deadline) -> None:
    """The POST this thread made is over (answered or not)."""
    _current.deadline = None
    deadline.finish()


def _watch(sock: socket.socket | None) -> socket.socket | None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)
    return sock


def _answered() -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.answered()


# ------------------------------------------------------------ connections

# Interim answers (``100 Continue``) accepted before the final one.  One is
# what servers send; a stream of them costs CPU for nothing until the
# deadline, so past this many the answer is taken as garbage at once.
MAX_INTERIM_ANSWERS = 16


def _watched_connection(base: Any) -> Any:
    """``base``, an ``http.client`` or a ``urllib3`` (1.26 or 2.x) connection class,
    whose sockets obey the deadline of the POST running on the thread."""

    class Capped(base.response_class):  # type: ignore[misc]  # base comes from a lazy import
        _interim = 0

        def _read_status(self) -> Any:
            version, status, reason = super()._read_status()
            if status == 100:
                self._interim += 1
                if self._interim > MAX_INTERIM_ANSWERS:
                    import http.client

                    raise http.client.HTTPException(
                        f"more than {MAX_INTERIM_ANSWERS} interim answers")
            return version, status, reason

    class Watched(base):  # type: ignore[misc]
        response_class = Capped

        # A new socket is watched as soon as it is open, before any TLS handshake or
        # proxy tunnel: http.client opens it with ``_create_connection`` (set in its
        # ``__init__``, so wrapped here), urllib3 with ``_new_conn``.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create: Any = self._create_connection  # type: ignore[has-type]
            self._create_connection = lambda *args, **kwargs: _watch(create(*args, **kwargs))

        def _new_conn(self) -> Any:
            return _watch(super()._new_conn())

        def putrequest(self, *args: Any, **kwargs: Any) -> Any:
            _watch(self.sock)  # a connection kept alive from an earlier POST
            return super().putrequest(*args, **kwargs)

        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            response = super().getresponse(*args, **kwargs)
            _answered()
            return response

    return Watched


# ------------------------------------------------------------ requests

_adapter_class: Any = None


def watched_adapter_class() -> Any:
    """A ``requests`` ``HTTPAdapter`` whose connection pools use watched connections."""
    global _adapter_class
    if _adapter_class is not None:
        return _adapter_class
    base: Any = import_guarded("requests.adapters").HTTPAdapter
    connectionpool = import_guarded("urllib3.connectionpool")
    stock = {"http": connectionpool.HTTPConnectionPool,
             "https": connectionpool.HTTPSConnectionPool}
    watched = {scheme: type("Watched" + pool.__name__, (pool,),
                            {"ConnectionCls": _watched_connection(pool.ConnectionCls)})
               for scheme, pool in stock.items()}

    def use_watched_pools(manager: Any) -> Any:
        # A SOCKS proxy manager has pools of its own: those keep their timeouts only.
        if getattr(manager, "pool_classes_by_scheme", None) == stock:
            manager.pool_classes_by_scheme = watched
        return manager

    class WatchedAdapter(base):  # type: ignore[misc]
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            use_watched_pools(self.poolmanager)

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            return use_watched_pools(super().proxy_manager_for(*args, **kwargs))

    _adapter_class = WatchedAdapter
    return WatchedAdapter


# ------------------------------------------------------------ urllib

_handler_classes: list[Any] = []


def watched_handler_classes() -> tuple[Any, Any]:
    """``urllib.request`` HTTP and HTTPS handler classes (the second None without
    ssl) whose connections obey the deadline."""
    if not _handler_classes:
        import http.client
        import urllib.request

        plain = _watched_connection(http.client.HTTPConnection)

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req: Request) -> HTTPResponse:
                return self.do_open(plain, req)

        secure_handler: Any = None
        if hasattr(urllib.request, "HTTPSHandler"):  # absent without ssl
            secure = _watched_connection(http.client.HTTPSConnection)

            class HTTPSHandler(urllib.request.HTTPSHandler):
                def https_open(self, req: Request) -> HTTPResponse:
                    return self.do_open(secure, req, context=getattr(self, "_context", None))

            secure_handler = HTTPSHandler
        _handler_classes[:] = [HTTPHandler, secure_handler]
    return _handler_classes[0], _handler_classes[1]
