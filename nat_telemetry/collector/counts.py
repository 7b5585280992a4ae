"""The collector's books: every request lands in exactly one bucket.

``requests`` = ``accepted_requests`` + sum(``rejected``) + ``faults['fail']``
+ ``faults['drop']`` + ``faults['drop_after_store']`` + sum(``errors``);
``faults['delay']`` counts delayed answers on top.  ``stored_events`` =
``accepted_events`` + ``stored_then_dropped_events``.  A stress test reconciles
what its clients believe with these.  ``fail_statuses`` splits
``faults['fail']`` by the status answered.

A request is counted once a byte of it arrived.  ``connections`` counts
connections, not requests: ``accepted``; ``evicted`` (closed to make room for
a new one, or to free a descriptor); ``timed_out`` (closed at the request
deadline, silent or not); ``accept_errors`` (no descriptor left to accept one).
"""

from __future__ import annotations

import threading
from typing import Any

from .faults import FAULT_KINDS
from .validation import REJECT_REASONS

__all__ = ["CONNECTION_KINDS", "ERROR_KINDS", "Tally"]

# incomplete_body: the client hung up mid-body; storage: not stored, 503;
# evicted: a partly received request closed to make room; busy: no room in the
# bytes-in-flight budget before the request's deadline, 503.
ERROR_KINDS = ("incomplete_body", "storage", "evicted", "busy")
CONNECTION_KINDS = ("accepted", "evicted", "timed_out", "accept_errors")


class Tally:
    """Thread-safe counters with consistent snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Any] = {
            "requests": 0,
            "accepted_requests": 0,
            "accepted_events": 0,
            "stored_events": 0,
            "stored_then_dropped_events": 0,
            "rejected": dict.fromkeys(REJECT_REASONS, 0),
            "faults": dict.fromkeys(FAULT_KINDS, 0),
            "fail_statuses": {},
            "errors": dict.fromkeys(ERROR_KINDS, 0),
            "connections": dict.fromkeys(CONNECTION_KINDS, 0),
        }

    def request(self, bucket: str | None, key: str | None, *,
                stored: int = 0, accepted: int = 0, status: int | None = None) -> None:
        """Count one request in ``[bucket][key]``, or as accepted (bucket None)."""
        with self._lock:
            counts = self._counts
            counts["requests"] += 1
            if status is not None:
                counts["fail_statuses"][status] = counts["fail_statuses"].get(status, 0) + 1
            if bucket is not None and key is not None:
                counts[bucket][key] += 1
            else:
                counts["accepted_requests"] += 1
            counts["stored_events"] += stored
            counts["accepted_events"] += accepted
            counts["stored_then_dropped_events"] += stored - accepted

    def add(self, bucket: str, key: str) -> None:
        """One more in ``[bucket][key]``, not a request of its own (e.g. a delay)."""
        with self._lock:
            self._counts[bucket][key] += 1

    def snapshot(self) -> dict[str, Any]:
        """A fresh copy, taken at one instant."""
        with self._lock:
            snapshot = dict(self._counts)
            for key, value in self._counts.items():
                if isinstance(value, dict):
                    snapshot[key] = dict(value)
        return snapshot
