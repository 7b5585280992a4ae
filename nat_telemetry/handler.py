"""The handler: accepts events from any thread, sends them from one worker.

``enqueue`` only puts ``(event, time)`` on a bounded :class:`queue.Queue` and
returns; it never blocks, never raises and never does I/O.  One daemon worker
thread per handler takes batches off that queue and hands them to a
transport (see :mod:`.transport`: a POST, a line on stderr, or nothing):

* every ``flush_interval_seconds``, and as soon as ``max_queue_size`` events
  are waiting;
* at most ``max_batch_size`` events per POST, events that failed before (the
  dead-letter queue) first;
* after a transient failure (408, 429, 5xx, no answer) the batch goes to the
  dead-letter queue and nothing is POSTed before the retry policy's backoff
  deadline; an event is dropped after ``max_retries`` failed retries;
* a 413 splits the batch in halves; other 4xx answers drop it.

Every accepted event is, at any instant, counted exactly once in ``stats()``:
sent, skipped, pending, in the dead-letter queue, or dropped for a named
reason.  Stopping (explicitly, or at interpreter exit for every started
handler at once) gives the final flush a bounded amount of time and then
counts whatever is left as ``dropped_shutdown``.
"""

from __future__ import annotations

import atexit
import collections
import enum
import os
import threading
import time
import weakref
from datetime import datetime, timezone

from . import __version__, _log, config
from ._args import require
from ._fork_guard import import_guarded
from .endpoint import endpoint_problem
from .event_queue import EventQueue
from .events import TelemetryEvent
from .payload import QueuedEvent
from .retry import Outcome, RetryPolicy
from .spool import default_spool_dir
from .transport import Delivery, Transport, transport_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    _T = TypeVar("_T")

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_SECONDS",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_REQUEST_TIMEOUT_SECONDS",
    "DEFAULT_SHUTDOWN_TIMEOUT_SECONDS",
    "NATTelemetryHandler",
]


DEFAULT_FLUSH_INTERVAL_SECONDS: float = 120.0
DEFAULT_MAX_QUEUE_SIZE: int = 50
DEFAULT_MAX_RETRIES: int = 3
DEFAULT_REQUEST_TIMEOUT_SECONDS: float = 2.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: float = 2.0
DEFAULT_MAX_BUFFER_SIZE: int = 10_000
DEFAULT_MAX_DLQ_SIZE: int = 1_000
DEFAULT_MAX_BATCH_SIZE: int = 500
# This package's version, as sent in every envelope.  The package's own
# __version__ (the metadata setup.cfg installs says the same), not a look-up in
# importlib.metadata: that scans sys.path, and costs a command line ~10 ms.
CLIENT_VERSION: str = __version__
# spool_dir's default: the folder default_spool_dir() names (a marker, not a path).
DEFAULT_SPOOL: str = "<default spool>"

# A POST made with less time than this left before a deadline cannot finish.
_MIN_REQUEST_TIMEOUT = 0.05

# threading's waits raise OverflowError beyond the platform's limit (and for
# inf), which a long flush interval or backoff would reach: every wait is
# capped, and every loop around one checks its condition again.
_MAX_WAIT_SECONDS = 3600.0

# Every counter of stats() that is not derived from the queues.
COUNTERS = (
    "sent",
    "skipped",
    "retries",
    "dropped_disabled",
    "dropped_invalid",
    "dropped_buffer_full",
    "dropped_rejected",
    "dropped_too_large",
    "dropped_retries_exhausted",
    "dropped_dlq_full",
    "dropped_shutdown",
    "dropped_bad_endpoint",
    "spooled",
    "dropped_spool_full",
    "dropped_spool_expired",
    "dropped_spool_oversize",
    "dropped_spool_untrusted",
    "dropped_spool_error",
)



class State(enum.Enum):
    """Where a handler is in its life."""

    NEW = "new"  # accepts events; the first one starts the worker
    RUNNING = "running"
    STOPPING = "stopping"  # the final flush is under way
    STOPPED = "stopped"


_NEW, _RUNNING, _STOPPING, _STOPPED = State.NEW, State.RUNNING, State.STOPPING, State.STOPPED



class NATTelemetryHandler:
    """Batches events and sends them from a daemon worker thread.

    ``endpoint=None`` reads ``config.NAT_TELEMETRY_ENDPOINT`` at send time:
    ``""`` builds payloads and sends nothing (counted ``skipped``), ``"stdout"``
    writes each payload as a JSON line to stderr, anything else is the URL to
    POST to.  Telemetry disabled (the live ``config.TELEMETRY_ENABLED``) makes
    ``enqueue`` drop events; every other method stays safe to call.
    """

    def __init__(
        self,
        flush_interval_seconds: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        source_client_version: str | None = None,
        session_id: str = "undefined",
        *,
        endpoint: str | None = None,
        shutdown_timeout_seconds: float = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
        max_dlq_size: int = DEFAULT_MAX_DLQ_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        retry_policy: RetryPolicy | None = None,
        transport: Transport | None = None,
        spool_dir: str | None = DEFAULT_SPOOL,
    ) -> None:
        require(flush_interval_seconds > 0, "flush_interval_seconds", flush_interval_seconds)
        require(max_queue_size >= 1, "max_queue_size", max_queue_size)
        require(max_retries >= 0, "max_retries", max_retries)
        require(request_timeout_seconds > 0, "request_timeout_seconds", request_timeout_seconds)
        require(shutdown_timeout_seconds >= 0, "shutdown_timeout_seconds",
                 shutdown_timeout_seconds)
        require(max_buffer_size >= 1, "max_buffer_size", max_buffer_size)
        require(max_dlq_size >= 0, "max_dlq_size", max_dlq_size)
        require(max_batch_size >= 1, "max_batch_size", max_batch_size)
        if endpoint is not None:
            problem = endpoint_problem(endpoint)
            if problem is not None:
                raise ValueError(problem)

        self.flush_interval_seconds = float(flush_interval_seconds)
        self.max_queue_size = max_queue_size
        self.request_timeout_seconds = float(request_timeout_seconds)
        self.shutdown_timeout_seconds = float(shutdown_timeout_seconds)
        self.max_buffer_size = max_buffer_size
        self.max_dlq_size = max_dlq_size
        self.max_batch_size = max_batch_size
        self.endpoint = endpoint
        self.source_client_version = (
            source_client_version if source_client_version is not None
            else CLIENT_VERSION
        )
        prefix = config.SESSION_PREFIX
        self.session_id = f"{prefix}{session_id}" if prefix else session_id
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy(max_retries)
        # A caller's transport is used for every batch; otherwise one is
        # chosen per batch from the endpoint (see _transport_for_batch).
        self.transport = transport
        # Where undelivered events wait for a later sender (None: nowhere).
        self.spool_dir = default_spool_dir() if spool_dir is DEFAULT_SPOOL else spool_dir
        self._reset_state(_NEW)
        _live_handlers.add(self)

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    def _reset_state(self, state: State) -> None:
        """Fresh locks, queues and counters (construction, and a forked child)."""
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue = EventQueue(self.max_buffer_size, self.max_queue_size, self._wake)
        self._dlq: collections.deque[QueuedEvent] = collections.deque()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._refused_at_enqueue = 0  # accepted, but dropped before reaching the queue
        self._in_flight = 0
        self._state = state
        self._accepting = False  # True only while _RUNNING: the enqueue fast path
        self._worker: threading.Thread | None = None
        self._stop_deadline: float | None = None
        self._flush_requested = 0
        self._flush_completed = 0
        self._flush_deadline: float | None = None
        self._failures = 0  # consecutive transient failures
        self._backoff_until = 0.0
        self._delivery_noted_at = float("-inf")
        self._transport: Transport | None = None
        self._transport_key: tuple[str, bool] | None = None

    # ------------------------------------------------------------ producers

    def enqueue(self, event: TelemetryEvent) -> None:
        """Accept ``event`` for sending; never blocks, never raises."""
        if not config.TELEMETRY_ENABLED:
            self._drop_unaccepted("dropped_disabled")
            return
        candidate: object = event  # the annotation is a promise callers may not keep
        if not isinstance(candidate, TelemetryEvent):
            self._drop_unaccepted("dropped_invalid")
            return
        if not self._accepting and not self._accept_slowly():
            return
        if not self._queue.offer((event, time.time())):
            self._refuse("dropped_buffer_full")
            return
        if self._state is _STOPPED:
            self._discard_queued_after_stop()

    def _accept_slowly(self) -> bool:
        """The handler is not running: start it, or count the event as dropped."""
        try:
            self._start(restart=False)  # only start() itself brings a stopped handler back
        except Exception:
            _log.debug("could not start the telemetry worker", exc_info=True)
        if self._state is _RUNNING:
            return True
        self._refuse("dropped_shutdown")
        return False

    def _drop_unaccepted(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] += 1
        _log.debug("telemetry event dropped: %s", reason)

    def _refuse(self, reason: str) -> None:
        with self._lock:
            self._refused_at_enqueue += 1
            self._counts[reason] += 1
        _log.debug("telemetry event dropped: %s", reason)

    def _discard_queued_after_stop(self) -> None:
        # A producer that passed the running check just before stop() finished
        # put its event into a queue nobody will read again.
        with self._lock:
            stranded = len(self._queue.take(self.max_buffer_size))
            self._counts["dropped_shutdown"] += stranded
        if stranded:
            _log.debug("%d telemetry event(s) dropped: dropped_shutdown", stranded)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread; idempotent.  A stopped handler starts again.

        The first start with events left in the spool by earlier runs starts a
        sender for them.
        """
        self._start(restart=True)

    def _start(self, restart: bool) -> None:
        # logging on this thread, before any worker runs: see _fork_guard.
        import_guarded("logging")
        with self._lock:
            if not (self._state is _NEW or (restart and self._state is _STOPPED)):
                return
            worker = threading.Thread(target=self._run, name="nat-telemetry-worker", daemon=True)
            worker.start()
            self._worker = worker
            self._state = _RUNNING
            self._accepting = True
        _started_handlers.add(self)
        self._send_leftovers()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything pending and the dead-letter queue, within ``timeout``.

        Sends at once, ignoring any backoff.  With a ``timeout``, keeps retrying
        what failed as the retry policy allows (its backoff and ``Retry-After``)
        until nothing is left, the retries are used up, or ``timeout`` seconds
        have passed; a wait that would end past the deadline ends the flush.
        Without one, makes that one attempt and waits for it: there is no
        bound to fit backoffs into.  Returns True when nothing is left pending
        or in the dead-letter queue.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._state is not _RUNNING or threading.current_thread() is self._worker:
                return self._nothing_left()
            if self._flush_requested == self._flush_completed:
                self._flush_deadline = deadline
            elif self._flush_deadline is not None:
                # Callers waiting together: the worker keeps on until the latest deadline.
                self._flush_deadline = None if deadline is None else max(
                    self._flush_deadline, deadline)
            self._flush_requested += 1
            ticket = self._flush_requested
        self._wake.set()
        with self._lock:
            while self._flush_completed < ticket and self._state is _RUNNING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._flushed.wait(None if remaining is None else _bounded_wait(remaining))
            return self._nothing_left()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, give the final flush ``timeout`` seconds, join the worker.

        ``timeout`` defaults to ``shutdown_timeout_seconds``.  Whatever is still
        pending or in the dead-letter queue afterwards is ``dropped_shutdown``.
        Idempotent.
        """
        budget = self.shutdown_timeout_seconds if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + budget
        self._begin_stop(deadline)
        self._finish_stop(deadline)

    def _begin_stop(self, deadline: float) -> None:
        with self._lock:
            self._accepting = False
            if self._state is _NEW:
                self._state = _STOPPED
            elif self._state is _RUNNING:
                self._state = _STOPPING
                self._stop_deadline = deadline
        self._wake.set()

    def _finish_stop(self, deadline: float) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            while worker.is_alive() and time.monotonic() < deadline:
                worker.join(_bounded_wait(deadline - time.monotonic()))
        left: list[QueuedEvent] = []
        with self._lock:
            if self._state is not _STOPPED:
                self._state = _STOPPED
                left = self._take_all_locked()
            self._flushed.notify_all()
        _started_handlers.discard(self)
        self._spool_or_drop(left)
        if worker is None or not worker.is_alive():
            self._close_transport()

    def __enter__(self) -> NATTelemetryHandler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------- async compatibility

    async def astart(self) -> None:
        """``start()`` in the event loop's default executor."""
        await _in_executor(self.start)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` in the event loop's default executor."""
        return await _in_executor(self.flush, timeout)

    async def astop(self, timeout: float | None = None) -> None:
        """``stop()`` in the event loop's default executor."""
        await _in_executor(self.stop, timeout)

    async def __aenter__(self) -> NATTelemetryHandler:
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, int]:
        """A consistent snapshot of the counters (see the module docstring)."""
        with self._lock:
            total_put, queued = self._queue.snapshot()
            snapshot = dict(self._counts)
            snapshot["enqueued"] = total_put + self._refused_at_enqueue
            snapshot["pending"] = queued + self._in_flight
            snapshot["dlq"] = len(self._dlq)
        return snapshot

    def _nothing_left(self) -> bool:
        return len(self._queue.queue) == 0 and self._in_flight == 0 and not self._dlq

    # --------------------------------------------------------------- worker

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
            self._wake.wait(_bounded_wait(wake_at - time.monotonic()))

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
                self._wake.wait(_bounded_wait(self._backoff_until - now))
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
            try:
                body = transport.encode(part, source_client_version=self.source_client_version,
                                        session_id=self.session_id)
            except Exception:
                _log.debug("could not build a telemetry payload", exc_info=True)
                self._settle(part, "dropped_rejected")
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
            try:
                body = transport.encode(part, source_client_version=self.source_client_version,
                                        session_id=self.session_id)
            except Exception:
                _log.debug("could not build a telemetry payload", exc_info=True)
                self._settle(part, "dropped_rejected")
                continue
            result = spool.write(body, len(part), transport.kind)
            self._settle(part, "spooled" if result.written else str(result.reason))
            if result.written:
                _senders_wanted[(directory, str(transport.spool_url))] = None
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
                _start_sender(*key, budget=self.shutdown_timeout_seconds)
        except Exception:
            _log.debug("could not look at the spool", exc_info=True)

    def _hand_over_at_exit(self) -> bool:
        """At exit: spool everything pending instead of waiting for it; False when
        this handler's events cannot be spooled (it flushes in-process instead)."""
        if self._spool_target() is None:
            return False
        with self._lock:
            if self._state is not _RUNNING:
                return False
            self._accepting = False
            self._state = _STOPPED  # the worker takes no new batch from here on
            left = self._take_all_locked()
            self._flushed.notify_all()
        self._wake.set()
        _started_handlers.discard(self)
        self._spool_or_drop(left)
        return True

    def _gives_up(self, retry_count: int) -> bool:
        try:
            return bool(self.retry_policy.exhausted(retry_count))
        except Exception:  # a custom policy's bug must not strand the event
            _log.debug("retry policy failed; giving the event up", exc_info=True)
            return True

    # ----------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        # The parent's pending events are the parent's to send; the child starts
        # empty, and starts a worker again on its first event.
        state = _STOPPED if self._state in (_STOPPING, _STOPPED) else _NEW
        self._reset_state(state)


def _bounded_wait(seconds: float) -> float:
    return min(max(0.0, seconds), _MAX_WAIT_SECONDS)


def _log_dropped(count: int, reason: str) -> None:
    if count:
        _log.debug("%d telemetry event(s) dropped: %s", count, reason)


async def _in_executor(function: Callable[..., _T], *args: Any) -> _T:
    import asyncio  # only code written for the async API pays for asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, function, *args)


# Every handler, for fork; and the started ones, for the exit flush.
_live_handlers: weakref.WeakSet[NATTelemetryHandler] = weakref.WeakSet()
_started_handlers: weakref.WeakSet[NATTelemetryHandler] = weakref.WeakSet()


# Spools this process wrote to, and the URL their batches go to: a sender is
# started for each at exit.  And the spools already checked for leftovers.
_senders_wanted: dict[tuple[str, str], None] = {}
_leftovers_checked: set[tuple[str, str]] = set()


def _start_sender(directory: str, url: str, budget: float) -> None:
    """A detached sender for ``directory``; where none can be started, deliver
    in-process for at most ``budget`` seconds."""
    from .sender import run_sender, start_detached_sender

    if not start_detached_sender(directory, url):
        run_sender(directory, url, lifetime_seconds=budget)


def _stop_all_at_exit() -> None:
    """Hand every started handler's events over to the spool and a detached
    sender; a handler that cannot spool is stopped as before, all of them
    within one shared time budget."""
    handlers = list(_started_handlers)
    if not handlers and not _senders_wanted:
        return
    budget = max((h.shutdown_timeout_seconds for h in handlers), default=0.0)
    deadline = time.monotonic() + budget
    flushing = []
    for handler in handlers:
        try:
            if not handler._hand_over_at_exit():
                flushing.append(handler)
        except Exception:
            _log.debug("telemetry hand-over failed", exc_info=True)
            flushing.append(handler)
    for handler in flushing:
        handler._begin_stop(deadline)
    for handler in flushing:
        try:
            handler._finish_stop(deadline)
        except Exception:
            _log.debug("telemetry shutdown failed", exc_info=True)
    for directory, url in list(_senders_wanted):
        try:
            _start_sender(directory, url, max(0.0, deadline - time.monotonic()))
        except Exception:
            _log.debug("could not start a telemetry sender", exc_info=True)
    _senders_wanted.clear()


def _reinit_after_fork() -> None:
    for handler in list(_live_handlers):
        handler._after_fork_in_child()
    _started_handlers.clear()
    _senders_wanted.clear()


atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
