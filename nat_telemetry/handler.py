"""The handler: accepts events from any thread, sends them from one worker.

``enqueue`` only puts ``(event, time)`` on a bounded queue: it never blocks,
never raises and never does I/O.  One daemon worker thread per handler sends
batches of at most ``max_batch_size`` events, the dead-letter queue's first,
through a transport (:mod:`.transport`: a POST, a line on stderr, or nothing)
every ``flush_interval_seconds`` and as soon as ``max_queue_size`` events wait.
What a failure makes of a batch (retries, backoff, the spool) is decided by the
handler's :class:`~._outbox.Outbox`.

Every accepted event is, at any instant, counted exactly once in ``stats()``:
sent, skipped, pending, in the dead-letter queue, spooled, or dropped for a
named reason.  ``stop()`` gives the final flush a bounded amount of time and
spools what is left.  At interpreter exit, what is pending is spooled at once
for a detached sender (:mod:`.sender`); where the spool cannot take it, the
handler delivers it in-process within its shutdown budget.
"""

from __future__ import annotations

import collections
import threading
import time
from datetime import datetime, timezone

from . import __version__, _process, config
from ._outbox import COUNTERS, Outbox
from .config import (  # re-exported
    DEFAULT_FLUSH_INTERVAL_SECONDS,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
)
from .events import TelemetryEvent
from .payload import QueuedEvent
from .retry import RetryPolicy
from .sender import Outlet, identity
from .transport import HttpTransport, Transport, deliver, transport_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    _T = TypeVar("_T")

__all__ = [
    "CLIENT_VERSION", "COUNTERS", "DEFAULT_FLUSH_INTERVAL_SECONDS", "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_RETRIES", "DEFAULT_REQUEST_TIMEOUT_SECONDS", "DEFAULT_SHUTDOWN_TIMEOUT_SECONDS",
    "NATTelemetryHandler",
]

# This package's version, as sent in every envelope (the package's own
# __version__: importlib.metadata would scan sys.path, ~10 ms on a command line).
CLIENT_VERSION: str = __version__
# spool_dir's default: the folder the tool's settings name (a marker, not a path).
DEFAULT_SPOOL: str = "<default spool>"

NEW, RUNNING, STOPPING, STOPPED = "new", "running", "stopping", "stopped"
# A POST made with less time than this left before a deadline cannot finish.
_MIN_REQUEST_TIMEOUT = 0.05
# threading's waits raise OverflowError beyond the platform's limit (and for
# inf): every wait is capped, and every loop around one checks again.
_MAX_WAIT_SECONDS = 3600.0


def bounded_wait(seconds: float) -> float:
    return min(max(0.0, seconds), _MAX_WAIT_SECONDS)


def _guarded(step: Callable[..., _T], *args: Any) -> _T | None:
    # The worker must outlive any bug or surprise in one round of sending.
    try:
        return step(*args)
    except Exception:
        _process.debug("telemetry worker step failed", exc_info=True)
        return None


class _EventQueue:
    """The bounded queue of accepted ``(event, time)`` pairs.

    It counts what went in, and wakes the worker when its length reaches
    ``threshold``: both under ``mutex``, so exactly one producer sees the length
    reach it.  A full queue answers False; nobody ever waits on it.
    """

    def __init__(self, maxsize: int, threshold: int, wake: threading.Event) -> None:
        self.mutex = threading.Lock()
        self.queue: collections.deque[tuple[TelemetryEvent, float]] = collections.deque()
        self.total_put = 0
        self.maxsize, self._threshold, self._wake = maxsize, threshold, wake

    def offer(self, item: tuple[TelemetryEvent, float]) -> bool:
        with self.mutex:
            if len(self.queue) >= self.maxsize:
                return False
            self.queue.append(item)
            self.total_put += 1
            if len(self.queue) == self._threshold:
                self._wake.set()
        return True

    def take(self, limit: int) -> list[QueuedEvent]:
        """Remove up to ``limit`` items, oldest first, as queued events."""
        with self.mutex:
            taken = [self.queue.popleft() for _ in range(min(limit, len(self.queue)))]
        return [QueuedEvent(event, datetime.fromtimestamp(accepted_at, timezone.utc))
                for event, accepted_at in taken]


class NATTelemetryHandler:
    """Batches events and sends them from a daemon worker thread.

    ``endpoint=None`` reads the tool's endpoint (``config.NAT_TELEMETRY_ENDPOINT``)
    at send time: ``""`` builds payloads and sends nothing (counted ``skipped``),
    ``"stdout"`` writes each payload as a JSON line to stderr, anything else is
    the URL to POST to.  ``token`` is sent as a bearer token (default: the tool's
    ``*_TELEMETRY_TOKEN``).  Telemetry disabled (the live ``config.TELEMETRY_ENABLED``)
    makes ``enqueue`` drop events; a "no" saved by another process drops what is
    waiting before the next batch goes (``dropped_revoked``).  ``spool_dir=None``
    keeps nothing for later.
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
        max_buffer_size: int = config.DEFAULT_MAX_BUFFER_SIZE,
        max_dlq_size: int = config.DEFAULT_MAX_DLQ_SIZE,
        max_batch_size: int = config.DEFAULT_MAX_BATCH_SIZE,
        retry_policy: RetryPolicy | None = None,
        transport: Transport | None = None,
        spool_dir: str | None = DEFAULT_SPOOL,
        token: str | None = None,
        tool: config.Tool | None = None,
    ) -> None:
        for ok, name, value in (
                (flush_interval_seconds > 0, "flush_interval_seconds", flush_interval_seconds),
                (max_queue_size >= 1, "max_queue_size", max_queue_size),
                (max_retries >= 0, "max_retries", max_retries),
                (request_timeout_seconds > 0, "request_timeout_seconds", request_timeout_seconds),
                (shutdown_timeout_seconds >= 0, "shutdown_timeout_seconds",
                 shutdown_timeout_seconds),
                (max_buffer_size >= 1, "max_buffer_size", max_buffer_size),
                (max_dlq_size >= 0, "max_dlq_size", max_dlq_size),
                (max_batch_size >= 1, "max_batch_size", max_batch_size)):
            if not ok:
                raise ValueError(f"{name} out of range: {value!r}")
        problem = None if endpoint is None else config.endpoint_problem(endpoint)
        if problem is not None:
            raise ValueError(problem)
        if token and not HttpTransport.is_sendable_token(token):
            raise ValueError("a telemetry token must be printable ASCII without spaces")
        self.tool = config.NAT if tool is None else tool
        self.flush_interval_seconds = float(flush_interval_seconds)
        self.request_timeout_seconds = float(request_timeout_seconds)
        self.shutdown_timeout_seconds = float(shutdown_timeout_seconds)
        self.max_queue_size, self.max_buffer_size = max_queue_size, max_buffer_size
        self.max_dlq_size, self.max_batch_size = max_dlq_size, max_batch_size
        self.endpoint, self.token, self.transport = endpoint, token, transport
        self.source_client_version = (source_client_version if source_client_version is not None
                                      else self.tool.version or CLIENT_VERSION)
        self.session_id = self.tool.session_id(session_id)
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy(max_retries)
        self.spool_dir = self.tool.spool_dir() if spool_dir is DEFAULT_SPOOL else spool_dir
        self._reset_state(NEW)
        _process.register(self)

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    @property
    def exit_budget(self) -> float:
        return self.shutdown_timeout_seconds

    def _reset_state(self, state: str) -> None:
        """Fresh locks, queues and counters (construction, and a forked child)."""
        self._outlet = Outlet(self.tool, self.spool_dir, self.shutdown_timeout_seconds)
        self._box = Outbox(self.max_dlq_size, self.max_batch_size, self.retry_policy,
                           self._outlet, self._spooling)
        self._lock = self._box.lock
        self._flushed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue = _EventQueue(self.max_buffer_size, self.max_queue_size, self._wake)
        self._state = state
        self._accepting = False  # True only while RUNNING: the enqueue fast path
        self._worker: threading.Thread | None = None
        self._stop_deadline: float | None = None
        self._flush_requested = self._flush_completed = 0
        self._flush_deadline: float | None = None
        self._transport: Transport | None = None
        self._transport_key: tuple[str, bool] | None = None

    def enqueue(self, event: TelemetryEvent) -> None:
        """Accept ``event`` for sending; never blocks, never raises."""
        self._offer(event, time.time())

    def _offer(self, event: TelemetryEvent, accepted_at: float) -> None:
        # enqueue, with the time track_command's recorder kept the event at.
        candidate: object = event  # the annotation is a promise callers may not keep
        enabled = self.tool.enabled
        if not enabled or not isinstance(candidate, TelemetryEvent):
            with self._lock:  # never accepted: not part of `enqueued`
                self._box.count("dropped_invalid" if enabled else "dropped_disabled", 1)
        elif not self._accepting and not _guarded(self._start, False):
            self._refuse("dropped_shutdown")
        elif not self._queue.offer((event, accepted_at)):
            self._refuse("dropped_buffer_full")
        elif self._state is STOPPED:
            # A producer that passed the running check just before stop() ended
            # put its event into a queue nobody will read again.
            with self._lock:
                self._box.count("dropped_shutdown", len(self._queue.take(self.max_buffer_size)))

    def _refuse(self, reason: str) -> None:
        with self._lock:
            self._box.refused += 1
            self._box.count(reason, 1)

    def start(self) -> None:
        """Start the worker thread; idempotent.  A stopped handler starts again.
        The first start with batches left in the spool starts a sender for them."""
        self._start(restart=True)

    def _start(self, restart: bool) -> bool:
        # True when running (enqueue starts a new handler, never a stopped one).
        with self._lock:
            if not (self._state is NEW or (restart and self._state is STOPPED)):
                return self._state is RUNNING
            worker = threading.Thread(target=self._run, name="nat-telemetry-worker", daemon=True)
            try:
                worker.start()
                self._worker = worker
            except RuntimeError:
                # No thread to be had (an exit hook on 3.12+, or out of threads): the
                # handler still accepts events; flush() and stop() send them.
                self._worker = None
            self._state, self._accepting = RUNNING, True
        _guarded(lambda: self._outlet.leftovers(self._transport_for_batch().spool_endpoint,
                                                self._token()))
        return self._state is RUNNING

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything pending and the dead-letter queue at once, ignoring any
        backoff; True when nothing is left in either.  With a ``timeout``, keeps retrying
        what failed as the retry policy allows (its backoff and ``Retry-After``) until
        nothing is left, the retries are used up, or a wait would end past the deadline;
        without one, makes that one attempt and waits for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._worker is None and self._state is RUNNING:
            _guarded(self._flush_until, deadline)  # no worker: send from here
        with self._lock:
            if (self._state is not RUNNING or self._worker is None
                    or threading.current_thread() is self._worker):
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
            while (self._flush_completed < ticket and self._state is RUNNING
                   and (deadline is None or time.monotonic() < deadline)):
                self._flushed.wait(bounded_wait(
                    _MAX_WAIT_SECONDS if deadline is None else deadline - time.monotonic()))
            return self._nothing_left()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, give the final flush ``timeout`` seconds (default
        ``shutdown_timeout_seconds``) and join the worker; what is left is spooled for
        a detached sender where it can be, else ``dropped_shutdown``.  Idempotent."""
        budget = self.shutdown_timeout_seconds if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + budget
        self._begin_stop(deadline)
        self._finish_stop(deadline)

    def _begin_stop(self, deadline: float) -> None:
        with self._lock:
            self._accepting = False
            if self._state is NEW:
                self._state = STOPPED
            elif self._state is RUNNING:
                self._state, self._stop_deadline = STOPPING, deadline
        self._wake.set()

    def _finish_stop(self, deadline: float) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            while worker.is_alive() and time.monotonic() < deadline:
                worker.join(bounded_wait(deadline - time.monotonic()))
        elif worker is None and self._state is STOPPING:
            _guarded(self._send_all, deadline)  # the worker's last attempt, made here
        if self._state is not STOPPED:
            self._box.spool_or_drop(self._take_all(), "dropped_shutdown")
        if worker is None or not worker.is_alive():
            self._close_transport()

    def prepare_exit(self, deadline: float) -> None:
        """At exit, before any party is closed: a handler with nothing to spool for
        begins its final attempt now, side by side with the others'."""
        if self._state is RUNNING and self._spooling() is None:
            self._begin_stop(deadline)

    def close_at_exit(self, deadline: float) -> None:
        """At exit: spool what is pending for a detached sender, at once; what the spool
        cannot take is sent from here (one attempt) before ``deadline``.  Without a
        spool, stop as ``stop()`` does, within ``deadline``."""
        if self._state is STOPPING:
            self._finish_stop(deadline)
        if self._state is not RUNNING:
            return
        refused = self._box.spool_or_drop(self._take_all(), None)
        self._outlet.refused = bool(refused)
        for start in range(0, len(refused), self.max_batch_size):
            if time.monotonic() >= deadline:  # out of time: what is left goes
                self._box.settle(refused[start:], "dropped_shutdown")
                break
            batch = refused[start:start + self.max_batch_size]
            if not self._deliver(batch, deadline):
                self._box.settle(refused[start + len(batch):], "dropped_shutdown")
                break
        self._close_transport()

    def after_fork_in_child(self) -> None:
        # The parent's events are the parent's to send: the child starts empty.
        self._reset_state(STOPPED if self._state in (STOPPING, STOPPED) else NEW)

    def __enter__(self) -> NATTelemetryHandler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def astart(self) -> None:
        """``start()`` in the event loop's default executor (for the original's async API)."""
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

    def stats(self) -> dict[str, int]:
        """A consistent snapshot of the counters (see the module docstring)."""
        box, queued = self._box, self._queue
        with self._lock, queued.mutex:
            return {**box.counts, "enqueued": queued.total_put + box.refused,
                    "pending": len(queued.queue) + box.in_flight, "dlq": len(box.dlq)}

    def _nothing_left(self) -> bool:
        return not (self._queue.queue or self._box.in_flight or self._box.dlq)

    def _run(self) -> None:
        next_timed_flush = time.monotonic() + self.flush_interval_seconds
        while True:
            self._wake.clear()
            with self._lock:
                state, ticket, flush_deadline = (self._state, self._flush_requested,
                                                 self._flush_deadline)
            if state is not RUNNING:
                # One attempt, like flush(): an offline machine must not spend its
                # whole shutdown budget on retries at every exit.
                _guarded(self._send_all, self._stop_deadline)
                return
            now, backoff_until = time.monotonic(), self._box.backoff_until
            if ticket > self._flush_completed:
                _guarded(self._flush_until, flush_deadline)
                with self._lock:
                    self._flush_completed = ticket
                    self._flushed.notify_all()
            elif now >= backoff_until and (now >= next_timed_flush or self._due()):
                _guarded(self._send_all, None)
                if now >= next_timed_flush:
                    next_timed_flush = time.monotonic() + self.flush_interval_seconds
            # Due work (a DLQ, a full queue, an overdue timed flush) waits for the
            # backoff deadline only; nothing else is due before the next timed flush.
            due = self._due() or next_timed_flush <= time.monotonic()
            wake_at = self._box.backoff_until if due else next_timed_flush
            self._wake.wait(bounded_wait(wake_at - time.monotonic()))

    def _due(self) -> bool:
        return bool(self._box.dlq) or len(self._queue.queue) >= self.max_queue_size

    def _flush_until(self, deadline: float | None) -> None:
        """Send everything now; then, given a deadline, retry the dead-letter queue as
        the policy allows until it is empty or the deadline has passed."""
        self._send_all(deadline)
        while deadline is not None:
            self._wake.clear()  # stop() sets the state first, then wakes: checked below
            with self._lock:
                if self._state is not RUNNING or not self._box.dlq:
                    return
            now, backoff_until = time.monotonic(), self._box.backoff_until
            if now >= deadline or backoff_until >= deadline:
                return  # over, or the endpoint asked for more time than the caller gave
            if now < backoff_until:
                self._wake.wait(bounded_wait(backoff_until - now))
            else:
                self._send_all(deadline)

    def _send_all(self, deadline: float | None) -> None:
        """Send what is pending now, in batches, until a transient failure.  Bounded by
        what was pending when it began: producers cannot keep one flush going."""
        if self.tool.refused_since():  # a "no" saved elsewhere: what waits goes
            self.tool.enabled = False  # and nothing more is accepted
            with self._lock:
                self._box.count("dropped_revoked", len(self._box.dlq) + len(
                    self._queue.take(self.max_buffer_size)))
                self._box.dlq.clear()
            return
        with self._lock:
            budget = len(self._box.dlq) + len(self._queue.queue)
        while budget > 0 and (deadline is None or time.monotonic() < deadline):
            with self._lock:
                batch = [] if self._state is STOPPED else self._box.take(
                    min(budget, self.max_batch_size), self._queue.take)
            budget -= len(batch)
            if not batch or not self._deliver(batch, deadline):
                return

    def _deliver(self, batch: list[QueuedEvent], deadline: float | None) -> bool:
        """Send one batch and settle every event in it; False after a transient failure."""

        def timeout() -> float:
            limit = self.request_timeout_seconds
            return limit if deadline is None else max(
                _MIN_REQUEST_TIMEOUT, min(limit, deadline - time.monotonic()))

        transport = self._transport_for_batch()
        result = deliver(transport, batch, timeout, session_id=self.session_id,
                         source_client_version=self.source_client_version)
        return self._box.delivered(result, transport, self._token(), self._state is RUNNING)

    def _token(self) -> str:
        return self.tool.token() if self.token is None else self.token

    def _transport_for_batch(self) -> Transport:
        """The caller's transport, or the one the live configuration asks for."""
        if self.transport is not None:
            return self.transport
        endpoint = self.endpoint if self.endpoint is not None else self.tool.endpoint
        key = (endpoint, self.tool.dry_run)
        if self._transport is None or key != self._transport_key:
            self._close_transport()
            self._transport = transport_for(endpoint, dry_run=key[1], token=self._token(),
                                            tool=self.tool)
            self._transport_key = key
        return self._transport

    def _close_transport(self) -> None:
        transport = self.transport if self.transport is not None else self._transport
        if transport is not None:
            _guarded(transport.close)

    def _take_all(self) -> list[QueuedEvent]:
        """Everything left, now in flight: no batch is taken, nor event accepted, after it."""
        with self._lock:
            self._state, self._accepting = STOPPED, False
            left = self._box.take(len(self._box.dlq) + self.max_buffer_size, self._queue.take)
            self._flushed.notify_all()
        return left

    def _spooling(self) -> tuple[str, str, dict[str, Any]] | None:
        """How batches are spooled now (see :class:`~._outbox.Outbox`); None when not."""
        transport = _guarded(self._transport_for_batch)
        endpoint = None if transport is None else transport.spool_endpoint
        if endpoint is None or not self._outlet.takes(endpoint) or self.tool.refused_since():
            return None
        return endpoint, self._token(), identity(self.session_id, self.source_client_version,
                                                 transport.product if transport else None)


async def _in_executor(function: Callable[..., _T], *args: Any) -> _T:
    import asyncio  # only code written for the async API pays for asyncio

    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
