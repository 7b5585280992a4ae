"""What a handler is made of: its state, its registries, and the attributes
its sending half (:mod:`._delivery`) shares with it."""

from __future__ import annotations

import enum
import weakref

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import collections
    import threading

    from .event_queue import EventQueue
    from .handler import NATTelemetryHandler
    from .payload import QueuedEvent
    from .retry import RetryPolicy
    from .transport import Transport

__all__ = ["HandlerState", "State", "live_handlers", "started_handlers"]


class State(enum.Enum):
    """Where a handler is in its life."""

    NEW = "new"  # accepts events; the first one starts the worker
    RUNNING = "running"
    STOPPING = "stopping"  # the final flush is under way
    STOPPED = "stopped"


class HandlerState:
    """The attributes a handler sets and both of its halves use (see handler.py)."""

    # settings
    flush_interval_seconds: float
    max_queue_size: int
    request_timeout_seconds: float
    shutdown_timeout_seconds: float
    max_buffer_size: int
    max_dlq_size: int
    max_batch_size: int
    endpoint: str | None
    source_client_version: str
    session_id: str
    retry_policy: RetryPolicy
    transport: Transport | None
    spool_dir: str | None
    # state, guarded by _lock where shared between threads
    _lock: threading.Lock
    _flushed: threading.Condition
    _wake: threading.Event
    _queue: EventQueue
    _dlq: collections.deque[QueuedEvent]
    _counts: dict[str, int]
    _refused_at_enqueue: int
    _in_flight: int
    _state: State
    _accepting: bool
    _worker: threading.Thread | None
    _stop_deadline: float | None
    _flush_requested: int
    _flush_completed: int
    _flush_deadline: float | None
    _failures: int
    _backoff_until: float
    _delivery_noted_at: float
    _transport: Transport | None
    _transport_key: tuple[str, bool] | None


# Every handler, for fork; and the started ones, for the exit hook.
live_handlers: weakref.WeakSet[NATTelemetryHandler] = weakref.WeakSet()
started_handlers: weakref.WeakSet[NATTelemetryHandler] = weakref.WeakSet()
