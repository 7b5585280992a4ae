"""Where a handler's accepted events are once they leave its queue.

An :class:`Outbox` keeps the books of ``stats()`` (the counters, the dead-letter
queue, the events in flight) under one lock, and settles each event of a
:class:`~.transport.Result`: sent, skipped or dropped for a reason, back in the
dead-letter queue with one more retry (after the retry policy's backoff), or
spooled for a detached sender.  The queue, the worker and the lifecycle are the
handler's.
"""

from __future__ import annotations

import collections
import threading
import time

from . import _process

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .payload import QueuedEvent
    from .retry import RetryPolicy
    from .sender import Outlet
    from .transport import Result, Transport

__all__ = ["COUNTERS", "Outbox"]

# Every counter of stats() that is not derived from the queues.
COUNTERS = (
    "sent", "skipped", "retries", "dropped_disabled", "dropped_invalid", "dropped_buffer_full",
    "dropped_rejected", "dropped_too_large", "dropped_retries_exhausted", "dropped_dlq_full",
    "dropped_shutdown", "dropped_bad_endpoint", "dropped_revoked", "spooled",
    "dropped_spool_full", "dropped_spool_expired", "dropped_spool_oversize",
    "dropped_spool_untrusted", "dropped_spool_error",
)
# What the spool refused because it cannot be used (at exit: deliver in-process instead).
_SPOOL_UNUSABLE = ("dropped_spool_error", "dropped_spool_untrusted", "dropped_spool_oversize")


class Outbox:
    """The books of one handler.  ``spooling()`` says how the handler spools now: the
    endpoint, the token and who records (:func:`~.sender.identity`); None: not at all."""

    def __init__(self, max_dlq_size: int, max_batch_size: int, policy: RetryPolicy,
                 outlet: Outlet,
                 spooling: Callable[[], tuple[str, str, dict[str, Any]] | None]) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.dlq: collections.deque[QueuedEvent] = collections.deque()
        self.in_flight = 0
        self.refused = 0  # accepted, but dropped before reaching the queue
        self.failures = 0  # consecutive transient failures
        self.backoff_until = 0.0  # no POST before this (time.monotonic())
        self.max_dlq_size, self.max_batch_size = max_dlq_size, max_batch_size
        self.policy, self.outlet, self._spooling = policy, outlet, spooling

    def count(self, counter: str, number: int) -> None:
        """Add ``number`` to ``counter`` (lock held); dropped events are logged."""
        self.counts[counter] += number
        if number and counter.startswith("dropped_"):
            _process.debug("%d telemetry event(s) dropped: %s", number, counter)

    def settle(self, events: Sequence[QueuedEvent], counter: str) -> None:
        """In-flight ``events`` are now ``counter``'s."""
        with self.lock:
            self.in_flight -= len(events)
            self.count(counter, len(events))

    def take(self, limit: int, fresh: Callable[[int], list[QueuedEvent]]) -> list[QueuedEvent]:
        """Up to ``limit`` events, the dead-letter queue's first, then ``fresh(n)``,
        now in flight (lock held)."""
        taken = [self.dlq.popleft() for _ in range(min(limit, len(self.dlq)))]
        taken += fresh(limit - len(taken))
        self.in_flight += len(taken)
        return taken

    def delivered(self, result: Result, transport: Transport, token: str,
                  running: bool) -> bool:
        """Settle every event of a :func:`~.transport.deliver` result; False when part
        of it failed for now (then in the dead-letter queue, or spooled when the
        handler is no longer ``running``)."""
        for counter, events in result.settled:
            self.settle(events, counter)
            if counter == "sent":
                self.failures = 0
                self.outlet.note(transport.spool_endpoint, token, None)
        if not result.failed:
            if result.problem:  # a rejection: nothing to retry, but worth knowing why
                self.outlet.note(transport.spool_endpoint, token, result.problem)
            return True
        failed, untried = result.failed, result.untried
        problem = getattr(result.last, "problem", None)
        self.outlet.note(transport.spool_endpoint, token, problem or "no answer")
        # A certificate that cannot be checked is a configuration problem, not the
        # events' fault: no retry is used up, and the wait is the longest there is.
        configuration = problem == "tls"
        try:
            if configuration:
                delay = self.policy.retry_after_max
            else:
                self.failures += 1
                delay = self.policy.delay(self.failures, getattr(result.last, "retry_after", None))
        except Exception:
            _process.debug("retry policy failed; using its longest backoff", exc_info=True)
            delay = self.policy.backoff_max
        self.backoff_until = time.monotonic() + delay
        again: list[QueuedEvent] = []
        for queued in failed:
            if not configuration:
                queued.retry_count += 1
            if configuration or not self._gives_up(queued.retry_count):
                again.append(queued)
        exhausted = len(failed) - len(again)
        with self.lock:
            self.in_flight -= exhausted
            self.count("dropped_retries_exhausted", exhausted)
            if running:
                self.count("retries", 0 if configuration else len(again))
                self.in_flight -= len(again) + len(untried)
                self.dlq.extendleft(reversed(again + untried))  # the oldest there are: first
                overflow = max(0, len(self.dlq) - self.max_dlq_size)
                for _ in range(overflow):
                    self.dlq.popleft()
                self.count("dropped_dlq_full", overflow)
        _process.debug("telemetry batch of %d failed; backing off %.2fs", len(failed), delay)
        if not running:
            # Stopping: the final attempt is made once, so nothing would retry these
            # here: they go to the spool, in flight until they are there.
            self.spool_or_drop(again + untried, "dropped_shutdown")
        return False

    def _gives_up(self, retry_count: int) -> bool:
        try:
            return bool(self.policy.exhausted(retry_count))
        except Exception:  # a custom policy's bug must not strand the event
            return True

    def spool_or_drop(self, events: list[QueuedEvent], otherwise: str | None
                      ) -> list[QueuedEvent]:
        """Spool in-flight ``events`` for a later sender; what the spool refuses is counted
        under its reason, all of them as ``otherwise`` when nothing may be spooled.  With
        ``otherwise`` None (at exit), what cannot be spooled is returned, still in flight."""
        from .sender import record_of

        spooling = self._spooling() if events else None
        if spooling is None:
            if otherwise is None:
                return events
            self.settle(events, otherwise)
            return []
        endpoint, token, who = spooling
        refused: list[QueuedEvent] = []
        for start in range(0, len(events), self.max_batch_size):
            part = events[start:start + self.max_batch_size]
            result = self.outlet.spool(endpoint, token, who, [record_of(q) for q in part])
            if result.written:
                self.settle(part, "spooled")
            elif otherwise is None and result.reason in _SPOOL_UNUSABLE:
                refused += part
            else:
                self.settle(part, str(result.reason or otherwise))
        return refused
