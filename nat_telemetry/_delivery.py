"""The sending half of a handler: batches, transports, retries, the spool.

:class:`Delivering` is mixed into :class:`~.handler.NATTelemetryHandler`;
its methods run on the handler's worker thread (and, at exit, on the thread
that stops it).  Each batch goes to the transport the live configuration asks
for; what the transport answers decides, event by event, which counter of
``stats()`` the event moves to.  What cannot be sent from here any more (at
exit, or after ``stop()``'s last attempt) is handed to the spool for a
detached sender (see :mod:`.spool` and :mod:`.sender`).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from . import _log, config
from ._state import HandlerState, State
from .payload import QueuedEvent
from .retry import Outcome
from .sender import start_sender
from .transport import Delivery, Transport, transport_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    _T = TypeVar("_T")

__all__ = ["Delivering", "bounded_wait", "senders_wanted"]

_RUNNING, _STOPPED = State.RUNNING, State.STOPPED

# A POST made with less time than this left before a deadline cannot finish.
_MIN_REQUEST_TIMEOUT = 0.05

# threading's waits raise OverflowError beyond the platform's limit (and for
# inf), which a long flush interval or backoff would reach: every wait is
# capped, and every loop around one checks its condition again.
_MAX_WAIT_SECONDS = 3600.0


# Spools this process wrote to, and the URL their batches go to: a sender is
# started for each at exit.  And the spools already checked for leftovers.
senders_wanted: dict[tuple[str, str], None] = {}
_leftovers_checked: set[tuple[str, str]] = set()


class Delivering(HandlerState):
    """The worker loop, the delivery of batches, and the spool (see the module docstring)."""

    def _run(self) -> None:
        next_timed_flush = time.monotonic() + self.flush_interval_seconds
        while True:
            self._wake.clear()
            with self._lock:
                state, flush_ticket = self._state, self._flush_requested
                flush_deadline = self._flush_deadline
            if state is not _RUNNING:
                # One attempt, like flush(): an offline machine must not spend its
                # whole shutdown budget on retries at every exit.
                self._guarded(self._send_all, self._stop_deadline)
                return
            now = time.monotonic()
            if flush_ticket > self._flush_completed:
                self._guarded(self._flush_until, flush_deadline)
                with self._lock:
                    self._flush_completed = flush_ticket
                    self._flushed.notify_all()
            elif now >= self._backoff_until and (
                now >= next_timed_flush or self._dlq
                or len(self._queue.queue) >= self.max_queue_size
            ):
                self._guarded(self._send_all, None)
                if now >= next_timed_flush:
                    next_timed_flush = time.monotonic() + self.flush_interval_seconds
            # Work that is due (a DLQ to retry, a full queue, an overdue timed
            # flush) waits for the backoff deadline only, even one already past;
            # nothing else is due before the next timed flush.
            due = bool(self._dlq) or len(self._queue.queue) >= self.max_queue_size \
                or next_timed_flush <= time.monotonic()
            wake_at = self._backoff_until if due else next_timed_flush
            self._wake.wait(bounded_wait(wake_at - time.monotonic()))

    def _flush_until(self, deadline: float | None) -> None:
        """Send everything now; then, given a deadline, retry the dead-letter queue
        as the policy allows until it is empty or the deadline has passed."""
        self._send_all(deadline)
        while deadline is not None:
            self._wake.clear()  # stop() sets the state first, then wakes: checked below
            with self._lock:
                if self._state is not _RUNNING or not self._dlq:
                    return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if now < self._backoff_until:
                if deadline is not None and self._backoff_until >= deadline:
                    return  # the endpoint asked for more time than the caller gave
                self._wake.wait(bounded_wait(self._backoff_until - now))
                continue
            self._send_all(deadline)

    def _guarded(self, step: Callable[..., _T], *args: Any) -> _T | None:
        # The worker must outlive any bug or surprise in one round of sending.
        try:
            return step(*args)
        except Exception:
            _log.debug("telemetry worker step failed", exc_info=True)
            return None

    def _send_all(self, deadline: float | None) -> bool:
        """Send what is pending now, in batches; False after a transient failure.

        Bounded by what was pending when it began, so producers that keep
        enqueuing cannot keep one flush going forever.
        """
        with self._lock:
            budget = len(self._dlq) + len(self._queue.queue)
        while budget > 0:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            batch = self._take_batch(min(budget, self.max_batch_size))
            if not batch:
                break
            budget -= len(batch)
            if not self._deliver(batch, deadline):
                return False
        return True

    def _take_batch(self, limit: int) -> list[QueuedEvent]:
        with self._lock:
            if self._state is _STOPPED:
                return []
            batch: list[QueuedEvent] = []
            while self._dlq and len(batch) < limit:
                batch.append(self._dlq.popleft())
            for event, accepted_at in self._queue.take(limit - len(batch)):
                stamp = datetime.fromtimestamp(accepted_at, timezone.utc)
                batch.append(QueuedEvent(event, stamp))
            self._in_flight += len(batch)
            return batch

    def _deliver(self, batch: list[QueuedEvent], deadline: float | None) -> bool:
        """Send one batch (splitting on 413) and settle every event in it.

        Returns False after a transient failure, once the failed part and the
        parts not yet tried are back in the dead-letter queue.
        """
        transport = self._transport_for_batch()
        parts = [batch]
        while parts:
            part = parts.pop()
            body = self._encode(transport, part)
            if body is None:
                continue
            delivery = self._send(transport, body, deadline)
            outcome, retry_after = delivery[0], delivery[1]  # a caller's may be a 2-tuple
            if outcome is Outcome.SENT:
                self._failures = 0
                # A partial success: the peer took the body but refused some of
                # its events.  Which ones does not matter to the counts.
                rejected = getattr(delivery, "rejected", 0)
                if not isinstance(rejected, int) or rejected < 0:
                    rejected = 0
                kept = len(part) - min(rejected, len(part))
                if kept < len(part):
                    self._settle(part[kept:], "dropped_rejected")
                if kept:
                    self._settle(part[:kept], "sent")
                    self._note_delivery()
            elif outcome is Outcome.SKIPPED:
                self._settle(part, "skipped")
            elif outcome is Outcome.REJECTED:
                self._settle(part, "dropped_rejected")
            elif outcome is Outcome.UNUSABLE:
                self._settle(part, "dropped_bad_endpoint")
            elif outcome is Outcome.TOO_LARGE:
                if len(part) == 1:
                    self._settle(part, "dropped_too_large")
                else:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]  # first half goes first
            else:
                untried = [queued for rest in reversed(parts) for queued in rest]
                self._retry_later(part, untried, retry_after)
                return False
        return True

    def _encode(self, transport: Transport, part: list[QueuedEvent]) -> bytes | None:
        """The body for ``part``; None, with ``part`` settled as rejected, when it
        cannot be built (a bug or a hostile event class: nothing would fix it)."""
        try:
            return transport.encode(part, source_client_version=self.source_client_version,
                                    session_id=self.session_id)
        except Exception:
            _log.debug("could not build a telemetry payload", exc_info=True)
            self._settle(part, "dropped_rejected")
            return None

    def _transport_for_batch(self) -> Transport:
        """The caller's transport, or the one the live configuration asks for."""
        if self.transport is not None:
            return self.transport
        endpoint = self.endpoint if self.endpoint is not None else config.NAT_TELEMETRY_ENDPOINT
        key = (endpoint, config.NAT_TELEMETRY_DRY_RUN)
        if self._transport is None or key != self._transport_key:
            self._close_transport()
            self._transport, self._transport_key = transport_for(endpoint, dry_run=key[1]), key
        return self._transport

    def _close_transport(self) -> None:
        transport = self.transport if self.transport is not None else self._transport
        if transport is not None:
            try:
                transport.close()
            except Exception:
                _log.debug("closing the telemetry transport failed", exc_info=True)

    def _send(self, transport: Transport, body: bytes, deadline: float | None) -> Delivery:
        timeout = self.request_timeout_seconds
        if deadline is not None:
            timeout = max(_MIN_REQUEST_TIMEOUT, min(timeout, deadline - time.monotonic()))
        try:
            return transport.send(body, timeout)
        except Exception:
            _log.debug("telemetry transport failed unexpectedly", exc_info=True)
            return Delivery(Outcome.TRANSIENT)

    def _settle(self, part: list[QueuedEvent], outcome: str) -> None:
        with self._lock:
            self._in_flight -= len(part)
            self._counts[outcome] += len(part)
        if outcome.startswith("dropped_"):
            _log.debug("%d telemetry event(s) dropped: %s", len(part), outcome)

    def _retry_later(self, failed: list[QueuedEvent], untried: list[QueuedEvent],
                     retry_after: str | None) -> None:
        self._failures += 1
        try:
            delay = self.retry_policy.delay(self._failures, retry_after)
        except Exception:
            _log.debug("retry policy failed; using its longest backoff", exc_info=True)
            delay = self.retry_policy.backoff_max
        self._backoff_until = time.monotonic() + delay
        exhausted = 0
        requeue: list[QueuedEvent] = []
        for queued in failed:
            queued.retry_count += 1
            if self._gives_up(queued.retry_count):
                exhausted += 1
            else:
                requeue.append(queued)
        requeue += untried
        stranded: list[QueuedEvent] = []
        with self._lock:
            self._in_flight -= len(failed) + len(untried)
            self._counts["dropped_retries_exhausted"] += exhausted
            if self._state is not _RUNNING:
                # Stopping: the final flush makes one attempt, so nothing would
                # retry these here (and stop() may already have settled the
                # rest): they go to the spool, in flight until they are there.
                stranded = requeue
                self._in_flight += len(stranded)
                overflow = 0
            else:
                self._counts["retries"] += len(failed) - exhausted
                # The failed events are the oldest there are: they go first.
                self._dlq.extendleft(reversed(requeue))
                overflow = max(0, len(self._dlq) - self.max_dlq_size)
                for _ in range(overflow):
                    self._dlq.popleft()
                self._counts["dropped_dlq_full"] += overflow
        _log.debug("telemetry batch of %d failed; backing off %.2fs", len(failed), delay)
        _log_dropped(exhausted, "dropped_retries_exhausted")
        _log_dropped(overflow, "dropped_dlq_full")
        self._spool_or_drop(stranded)

    def _gives_up(self, retry_count: int) -> bool:
        try:
            return bool(self.retry_policy.exhausted(retry_count))
        except Exception:  # a custom policy's bug must not strand the event
            _log.debug("retry policy failed; giving the event up", exc_info=True)
            return True

    # ---------------------------------------------------------------- spool

    def _take_all_locked(self) -> list[QueuedEvent]:
        """Everything in the dead-letter queue and pending, now in flight (lock held)."""
        left = list(self._dlq)
        self._dlq.clear()
        for event, accepted_at in self._queue.take(self.max_buffer_size):
            left.append(QueuedEvent(event, datetime.fromtimestamp(accepted_at, timezone.utc)))
        self._in_flight += len(left)
        return left

    def _spool_target(self) -> tuple[Transport, str] | None:
        """The transport whose bodies may be spooled, and the spool; None when nothing may."""
        if self.spool_dir is None or not config.TELEMETRY_ENABLED:
            return None
        try:
            transport = self._transport_for_batch()
        except Exception:
            _log.debug("no transport to spool for", exc_info=True)
            return None
        return (transport, self.spool_dir) if transport.spool_url is not None else None

    def _spool_or_drop(self, events: list[QueuedEvent]) -> None:
        """Settle in-flight ``events`` that can no longer be sent from here: spooled
        for a later sender, or ``dropped_shutdown`` when there is no spool."""
        if not events:
            return
        target = self._spool_target()
        if target is None:
            self._settle(events, "dropped_shutdown")
            return
        from .spool import Spool

        transport, directory = target
        spool = Spool(directory)
        for start in range(0, len(events), self.max_batch_size):
            part = events[start:start + self.max_batch_size]
            body = self._encode(transport, part)
            if body is None:
                continue
            result = spool.write(body, len(part), transport.kind)
            self._settle(part, "spooled" if result.written else str(result.reason))
            if result.written:
                senders_wanted[(directory, str(transport.spool_url))] = None
            for reason, count in result.evicted.items():
                _log.debug("%d spooled event(s) of earlier runs dropped: %s", count, reason)

    def _note_delivery(self) -> None:
        # For `nat-telemetry status`; a file write, so at most once a minute.
        now = time.monotonic()
        if self.spool_dir is not None and now - self._delivery_noted_at >= 60.0:
            self._delivery_noted_at = now
            from .spool import note_delivery

            note_delivery(self.spool_dir)

    def _send_leftovers(self) -> None:
        """Start a sender for batches earlier runs left in the spool, once per process."""
        target = self._spool_target()
        if target is None:
            return
        transport, directory = target
        key = (directory, str(transport.spool_url))
        if key in _leftovers_checked:
            return
        _leftovers_checked.add(key)
        try:
            from .spool import Spool

            if Spool(directory).summary()[0]:
                start_sender(*key, budget=self.shutdown_timeout_seconds)
        except Exception:
            _log.debug("could not look at the spool", exc_info=True)


def bounded_wait(seconds: float) -> float:
    return min(max(0.0, seconds), _MAX_WAIT_SECONDS)


def _log_dropped(count: int, reason: str) -> None:
    if count:
        _log.debug("%d telemetry event(s) dropped: %s", count, reason)
