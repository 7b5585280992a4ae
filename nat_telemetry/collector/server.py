"""The listening socket: at most ``max_connections`` connections, one thread each.

A thread per connection keeps the request handling plain and blocking, so
the number of connections is what must be bounded.  At the cap, a new
connection takes the place of the one that has waited longest for its next
request among those stalled on their client (an idle keep-alive connection, a
client that connected and said nothing, or one trickling its request in); a
connection whose request is being processed, or is already in its socket
waiting to be read, is never closed.  When every connection is busy, new ones
wait in the listen backlog.  The cap is lowered to what the descriptor
limit leaves room for, keeping a reserve; should the process still run out
(``EMFILE``), the longest-stalled connection is closed too, and the accept
loop always waits before trying again: it never spins.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .counts import Tally
from .limits import DeadlineReader

if TYPE_CHECKING:
    from .core import Collector

__all__ = ["Connection", "Listener"]

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

# How often the accept loop looks at its stop flag, and how long it waits for a
# slot or after a failed accept before looking at the listening socket again.
_POLL_SECONDS = 0.05
# The default of 5 turns a burst of senders into SYN retries.
_BACKLOG = 128
# A connection is stalled on its client once a read has found nothing to read
# for this long (a request already in the socket is read at once), or once its
# request has been on its way for this long (a trickle, one byte at a time).
_BLOCKED_SECONDS = 0.005
_SLOW_SECONDS = 1.0
# Descriptors kept free of connections: for SQLite (which needs three to open a
# database again), the modules a request may import on first use, and the rest
# of the process.
_RESERVED_DESCRIPTORS = 32
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Connection:
    """One accepted connection, as the listener sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting_since = time.monotonic()
        self.busy = False  # a whole request was read and is being processed
        self.evicted = False  # closed by the listener to make room
        self.evicted_at = 0.0
        self.reader: DeadlineReader | None = None  # set by the request handler

    def waiting(self) -> None:
        """Ready for the next request (evictable until it has been read)."""
        self.waiting_since = time.monotonic()
        self.busy = False

    def was_evicted(self) -> bool:
        return self.evicted

    def stalled(self, now: float) -> bool:
        """Waiting on the client: blocked reading right now, or without a request for long.

        A connection whose thread has not read yet, or that is between two
        reads, may have its request right there in the socket: not stalled,
        unless its request has been on its way for a second already.
        """
        reader = self.reader
        if self.busy or reader is None:
            return False
        since = reader.blocked_since
        return ((since is not None and now - since >= _BLOCKED_SECONDS)
                or now - self.waiting_since >= _SLOW_SECONDS)


class Listener:
    """Accepts connections and runs ``handle(sock, address, connection)`` on a thread each."""

    def __init__(self, address: tuple[str, int], *, max_connections: int, tally: Tally,
                 handle: Callable[[socket.socket, Any, Connection], None],
                 collector: Collector) -> None:
        self.collector = collector  # what the request handler reads its settings from
        self.max_connections = max_connections
        self._tally = tally
        self._handle = handle
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":  # on Windows, SO_REUSEADDR lets others steal the port
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(_BACKLOG)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.port = int(self.socket.getsockname()[1])
        # Descriptors are handed out lowest first: the listening socket's
        # number is about how many the process has open.
        room = _descriptor_room(in_use=self.socket.fileno() + 1)
        if room is not None and room < max_connections:
            logger.debug("collector: %d connections at most, for the descriptor limit", room)
            self.max_connections = max(1, room)
        self._connections: dict[socket.socket, Connection] = {}
        self._changed = threading.Condition()
        self._reserved = 0  # slots taken: running connections and one being accepted
        self._closing = threading.Event()

    # ------------------------------------------------------------ accepting

    def serve(self) -> None:
        """The accept loop; returns once :meth:`close` was called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            while not self._closing.is_set():
                try:
                    if selector.select(_POLL_SECONDS) and self._take_slot():
                        self._accept()
                except Exception:  # the accept loop must outlive anything one client does
                    logger.debug("collector: accept loop error", exc_info=True)
                    self._closing.wait(_POLL_SECONDS)

    def _accept(self) -> None:
        try:
            sock, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            self._free_slot()
        except OSError as exc:
            self._free_slot()
            self._accept_failed(exc)
        else:
            self._start(sock, address)

    def _take_slot(self) -> bool:
        """Reserve a slot for the waiting connection; at the cap, make room (never spins)."""
        with self._changed:
            if self._reserved < self.max_connections:
                self._reserved += 1
                return True
            self._evict_longest_waiting()
            # Until a connection ends (an evicted one ends at once); then try again.
            self._changed.wait(_POLL_SECONDS)
            return False

    def _free_slot(self) -> None:
        with self._changed:
            self._reserved -= 1
            self._changed.notify_all()

    def _accept_failed(self, exc: OSError) -> None:
        # Whatever went wrong, the listening socket still reads as ready: wait,
        # for a connection to end (one is made to when descriptors ran out).
        if exc.errno in _OUT_OF_DESCRIPTORS:
            self._tally.add("connections", "accept_errors")
            logger.debug("collector: cannot accept (%s); closing an idle connection", exc)
            with self._changed:
                if self._evict_longest_waiting():
                    self._changed.wait(_POLL_SECONDS)
                    return
        else:
            logger.debug("collector: accept failed", exc_info=True)
        self._closing.wait(_POLL_SECONDS)

    def _evict_longest_waiting(self) -> bool:
        """Close the connection waiting longest for a request (caller holds the lock).

        One at a time: while an evicted connection's thread is still ending,
        its slot is about to be free and nobody else needs to go.  True when
        a connection is (still) on its way out.
        """
        connections = self._connections.values()
        now = time.monotonic()
        if any(c.evicted and now - c.evicted_at < _SLOW_SECONDS for c in connections):
            return True
        waiting = [c for c in connections if not c.evicted and c.stalled(now)]
        if not waiting:
            return False
        victim = min(waiting, key=lambda connection: connection.waiting_since)
        victim.evicted, victim.evicted_at = True, now
        self._tally.add("connections", "evicted")
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)  # its thread wakes up and ends
        self.collector.budget.wake()  # ... also when it was waiting for bytes to read into
        return True

    def _start(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(True)  # some systems hand out the listener's non-blocking mode
        connection = Connection(sock)
        with self._changed:
            self._connections[sock] = connection
        self._tally.add("connections", "accepted")
        thread = threading.Thread(target=self._run, args=(sock, address, connection),
                                  name="nat-telemetry-collector-connection", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refuse this one, keep serving
            self._forget(sock)

    def _run(self, sock: socket.socket, address: Any, connection: Connection) -> None:
        try:
            self._handle(sock, address, connection)
        except Exception:  # clients hang up, time out and reset: never a traceback
            logger.debug("collector: error serving %s", address, exc_info=True)
        finally:
            self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        sock.close()
        with self._changed:
            self._connections.pop(sock, None)
            self._reserved -= 1
            self._changed.notify_all()

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop accepting (the accept loop returns within a poll) and close the socket."""
        self._closing.set()
        with self._changed:
            self._changed.notify_all()

    def close_socket(self) -> None:
        self.socket.close()

    def shutdown_connections(self) -> None:
        """Wake every connection's thread; each closes its socket and ends."""
        with self._changed:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        with self._changed:
            return len(self._connections)


def _descriptor_room(in_use: int) -> int | None:
    """Connections the descriptor limit leaves room for; None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    return int(soft) - in_use - _RESERVED_DESCRIPTORS
