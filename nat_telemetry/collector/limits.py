"""What one hostile client may cost the collector: time per request, bytes in flight.

A per-read socket timeout bounds nothing: a client sending one byte a second
never trips it.  :class:`DeadlineReader` is the socket as the request handler
reads it, with a wall-clock deadline for the whole request (line, headers and
body) and a cap on the size of its head.  :class:`ByteBudget` bounds the
request bodies held at once across all connections, so many near-complete
large bodies wait their turn instead of all being held in memory together.
"""

from __future__ import annotations

import io
import math
import socket
import threading
import time
from typing import Any, Callable

__all__ = ["ByteBudget", "DeadlineReader", "HeadTooLarge"]


class HeadTooLarge(OSError):
    """The request line and headers are longer than the collector reads."""


class DeadlineReader(io.RawIOBase):
    """Reads a socket, but never past the current request's deadline.

    ``begin(seconds, head_limit)`` starts a request: it must arrive within
    ``seconds`` from now, and at most ``head_limit`` bytes are read until
    :meth:`head_done` lifts that limit.  Past the deadline a read raises
    ``socket.timeout`` and :attr:`timed_out` is set.  :attr:`received` counts
    the bytes of the current request; :attr:`blocked_since` tells whether
    (and since when) a read is waiting for the client right now.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = math.inf
        self.received = 0
        self.timed_out = False
        # Since when a read waits for the client (None: not waiting on it now).
        self.blocked_since: float | None = None
        self._limit: int | None = None

    def begin(self, seconds: float, head_limit: int | None = None) -> None:
        self.deadline = time.monotonic() + seconds
        self.received = 0
        self.timed_out = False
        self._limit = head_limit

    def head_done(self) -> None:
        self._limit = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise socket.timeout("the request took longer than its deadline")
        view = memoryview(buffer).cast("B")
        if self._limit is not None:
            room = self._limit - self.received
            if room <= 0:
                raise HeadTooLarge("request line and headers too large")
            view = view[:room]
        self._sock.settimeout(left)
        self.blocked_since = time.monotonic()
        try:
            count = self._sock.recv_into(view)
        except socket.timeout:
            self.timed_out = True
            raise
        finally:
            self.blocked_since = None
        self.received += count
        return count


class ByteBudget:
    """A shared allowance of bytes: request bodies are read only within it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._changed = threading.Condition()

    def acquire(self, amount: int, deadline: float,
                give_up: Callable[[], bool] = lambda: False) -> bool:
        """Take ``amount`` bytes, waiting until ``deadline`` (monotonic) at most.

        Also False once ``give_up()`` is true, checked whenever :meth:`wake`
        or a release wakes the waiters.
        """
        with self._changed:
            while self._used + amount > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or give_up():
                    return False
                self._changed.wait(left)
            self._used += amount
            return True

    def wake(self) -> None:
        """Let every waiter look at its ``give_up`` again."""
        with self._changed:
            self._changed.notify_all()

    def release(self, amount: int) -> None:
        with self._changed:
            self._used -= amount
            self._changed.notify_all()

    @property
    def used(self) -> int:
        with self._changed:
            return self._used
