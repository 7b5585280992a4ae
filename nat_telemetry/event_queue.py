"""The bounded queue between the producers and a handler's worker thread."""

from __future__ import annotations

import queue
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EventQueue"]


class EventQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``Queue`` that counts what went in and wakes the worker at a threshold.

    Producers use :meth:`offer`, a ``put_nowait`` for a queue whose consumer
    never blocks in ``get()``: the worker sleeps on ``wake`` instead, so there
    is nobody to notify per item, and a full queue answers False rather than
    raising.  The count and the threshold test run under the queue's own
    mutex: the count is exact without another lock on the producers' path, and
    exactly one producer sees the length reach the threshold.
    """

    def __init__(self, maxsize: int, threshold: int, wake: threading.Event) -> None:
        super().__init__(maxsize)
        self.total_put = 0
        self._threshold = threshold
        self._wake = wake

    def offer(self, item: Any) -> bool:
        """Append ``item`` unless the queue is full; never blocks."""
        with self.mutex:
            if len(self.queue) >= self.maxsize:
                return False
            self._put(item)
        return True

    def _put(self, item: Any) -> None:
        # Every addition comes through here, from offer() or a plain put().
        self.queue.append(item)
        self.total_put += 1
        if len(self.queue) == self._threshold:
            self._wake.set()

    def take(self, limit: int) -> list[Any]:
        """Remove and return up to ``limit`` items, oldest first."""
        with self.mutex:
            items = self.queue
            taken = [items.popleft() for _ in range(min(limit, len(items)))]
            if taken:
                self.not_full.notify(len(taken))
            return taken

    def snapshot(self) -> tuple[int, int]:
        """``(total_put, currently queued)``, read together."""
        with self.mutex:
            return self.total_put, len(self.queue)
