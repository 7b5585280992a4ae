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
sent, skipped, pending, in the dead-letter queue, spooled, or dropped for a
named reason.  ``stop()`` gives the final flush a bounded amount of time and
spools what is left; at interpreter exit, what is pending is spooled at once
and a detached sender delivers it (:mod:`._process_hooks`).

This module holds the producers' side and the lifecycle; the worker's side
(batches, transports, retries, the spool) is :mod:`._delivery`, and the
attributes both share are declared in :mod:`._state`.
"""

from __future__ import annotations

import collections
import threading
import time

from . import __version__, _log, config
from ._args import require
from ._delivery import Delivering, bounded_wait
from ._state import State, live_handlers, started_handlers
from .config import (
    DEFAULT_FLUSH_INTERVAL_SECONDS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BUFFER_SIZE,
    DEFAULT_MAX_DLQ_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
)
from .endpoint import endpoint_problem
from .event_queue import EventQueue
from .events import TelemetryEvent
from .retry import RetryPolicy
from .spool import default_spool_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    from .payload import QueuedEvent
    from .transport import Transport

    _T = TypeVar("_T")

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_SECONDS",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_REQUEST_TIMEOUT_SECONDS",
    "DEFAULT_SHUTDOWN_TIMEOUT_SECONDS",
    "NATTelemetryHandler",
]


# This package's version, as sent in every envelope.  The package's own
# __version__ (the metadata setup.cfg installs says the same), not a look-up in
# importlib.metadata: that scans sys.path, and costs a command line ~10 ms.
CLIENT_VERSION: str = __version__
# spool_dir's default: the folder default_spool_dir() names (a marker, not a path).
DEFAULT_SPOOL: str = "<default spool>"

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



_NEW, _RUNNING, _STOPPING, _STOPPED = State.NEW, State.RUNNING, State.STOPPING, State.STOPPED



class NATTelemetryHandler(Delivering):
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
        self.session_id = config.prefixed_session_id(session_id)
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy(max_retries)
        # A caller's transport is used for every batch; otherwise one is
        # chosen per batch from the endpoint (see _transport_for_batch).
        self.transport = transport
        # Where undelivered events wait for a later sender (None: nowhere).
        self.spool_dir = default_spool_dir() if spool_dir is DEFAULT_SPOOL else spool_dir
        self._reset_state(_NEW)
        live_handlers.add(self)

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
        self._offer(event, time.time())

    def _offer(self, event: TelemetryEvent, accepted_at: float) -> None:
        # enqueue, for an event accepted earlier elsewhere (track_command's
        # recorder hands over what it kept, with the times it kept them).
        if not config.TELEMETRY_ENABLED:
            self._drop_unaccepted("dropped_disabled")
            return
        candidate: object = event  # the annotation is a promise callers may not keep
        if not isinstance(candidate, TelemetryEvent):
            self._drop_unaccepted("dropped_invalid")
            return
        if not self._accepting and not self._accept_slowly():
            return
        if not self._queue.offer((event, accepted_at)):
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
        with self._lock:
            if not (self._state is _NEW or (restart and self._state is _STOPPED)):
                return
            worker = threading.Thread(target=self._run, name="nat-telemetry-worker", daemon=True)
            try:
                worker.start()
            except RuntimeError:
                # No thread to be had: at interpreter exit (3.12 refuses new
                # threads in exit hooks) or out of threads.  The handler still
                # accepts events; flush() and stop() send them from the caller.
                _log.debug("telemetry worker not started: sending from the caller",
                           exc_info=True)
                self._worker = None
            else:
                self._worker = worker
            self._state = _RUNNING
            self._accepting = True
        started_handlers.add(self)
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
        if self._worker is None and self._state is _RUNNING:
            self._guarded(self._flush_until, deadline)  # no worker: send from here
        with self._lock:
            if (self._state is not _RUNNING or self._worker is None
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
        with self._lock:
            while self._flush_completed < ticket and self._state is _RUNNING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._flushed.wait(None if remaining is None else bounded_wait(remaining))
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
                worker.join(bounded_wait(deadline - time.monotonic()))
        elif worker is None and self._state is _STOPPING:
            self._guarded(self._send_all, deadline)  # the worker's last attempt, made here
        left: list[QueuedEvent] = []
        with self._lock:
            if self._state is not _STOPPED:
                self._state = _STOPPED
                left = self._take_all_locked()
            self._flushed.notify_all()
        started_handlers.discard(self)
        self._spool_or_drop(left)
        if worker is None or not worker.is_alive():
            self._close_transport()

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
        started_handlers.discard(self)
        self._spool_or_drop(left)
        return True

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

    # ----------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        # The parent's pending events are the parent's to send; the child starts
        # empty, and starts a worker again on its first event.
        state = _STOPPED if self._state in (_STOPPING, _STOPPED) else _NEW
        self._reset_state(state)


async def _in_executor(function: Callable[..., _T], *args: Any) -> _T:
    import asyncio  # only code written for the async API pays for asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, function, *args)


# The exit and fork hooks of every handler (registered on import).
from . import _process_hooks  # noqa: E402, F401
