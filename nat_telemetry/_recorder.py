"""Where ``track_command`` keeps a command line's events: in memory, until exit.

A command line records an event or two and exits within milliseconds.  A
handler (a worker thread, a queue, a retry policy, the event classes) would
cost such a process more than its whole run, just to import.  So the events
``track_command`` records without a handler of the caller's are kept here,
as the fields of the event with the time each was recorded, and:

* at interpreter exit, written to the spool as one batch, and a detached
  sender started (see :mod:`.sender`): the command pays for one small file
  and one ``posix_spawn``, whatever the endpoint does;
* handed to a :class:`~.handler.NATTelemetryHandler` with the same session id
  as soon as the process shows it is no such command line (it still runs one
  flush interval after its first event, or it records a batch's worth), or
  when the spool cannot take them at exit (turned off, not writable, or a
  destination that is not a URL: none, ``stdout``, a dry run).
  From then on the handler sends them, and every later event, as it always
  does, and its own exit hook applies.

Telemetry turned off before exit drops what was kept (``dropped_disabled``):
nothing is spooled, no handler made.

An event is kept only if the event class would accept it: the same rules,
checked without importing the event classes (the tests hold the spooled
bytes equal to what the handler would send).  One recorder per session id
(``track_command(session_id=...)``), made on first use; a forked child
starts with none, as the parent's events are the parent's to send.
"""

from __future__ import annotations

import _thread
import atexit
import os
import time

from . import __version__, _log, config
from ._rules import is_dotted_identifier, is_python_version, is_token
from .outcome import outcome_of, python_version

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from .events import CliCommandEvent
    from .handler import NATTelemetryHandler

    # command, subcommand, task status, duration (ms), exit code, error class, Python version
    Fields = tuple[str, str, str, int, int, str, str]

__all__ = ["Recorder", "cli_event", "command_fields", "recorder_for"]

# CliCommandEvent's wire name, schema version and source (see events).
EVENT_NAME = "nat_cli_command"
SCHEMA_VERSION = "1.5"
NEMO_SOURCE = "agent_toolkit"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TIMER_START_WAIT = 5.0  # seconds; a thread starts in microseconds


def command_fields(command: str, subcommand: str, exc: BaseException | None,
                   duration_ms: int) -> Fields:
    """The fields of the event for a command that ended with ``exc`` (None: success)."""
    task_status, exit_code, error_class = outcome_of(exc)
    return (command, subcommand, task_status, duration_ms, exit_code, error_class,
            python_version())


def cli_event(fields: Fields) -> CliCommandEvent:
    """The event itself; ``ValidationError`` when a field breaks its rule."""
    from .events import CliCommandEvent

    command, subcommand, task_status, duration_ms, exit_code, error_class, version = fields
    return CliCommandEvent(command=command, subcommand=subcommand,
                           task_status=task_status,  # type: ignore[arg-type]
                           duration_ms=duration_ms, exit_code=exit_code,
                           error_class=error_class, python_version=version)


def _valid(fields: Fields) -> bool:
    # CliCommandEvent's rules for these values (see events).
    command, subcommand, _, duration_ms, exit_code, error_class, version = fields
    return (isinstance(command, str) and is_token(command)
            and isinstance(subcommand, str) and is_token(subcommand)
            and type(duration_ms) is int and -1 <= duration_ms <= _INT64_MAX
            and type(exit_code) is int and _INT64_MIN <= exit_code <= _INT64_MAX
            and len(error_class) <= 128 and is_dotted_identifier(error_class)
            and is_python_version(version))


def _parameters(fields: Fields) -> dict[str, object]:
    """``cli_event(fields).model_dump(by_alias=True)``, for valid fields."""
    command, subcommand, task_status, duration_ms, exit_code, error_class, version = fields
    return {"nemoSource": NEMO_SOURCE, "command": command, "subcommand": subcommand,
            "taskStatus": task_status, "durationMs": duration_ms, "exitCode": exit_code,
            "errorClass": error_class, "pythonVersion": version}


class Recorder:
    """The events of one session, kept until exit or handed to a handler (see the module)."""

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id  # as given: the handler adds the prefix itself
        self._lock = _thread.allocate_lock()
        self._kept: list[tuple[Fields, float]] = []
        self._handler: NATTelemetryHandler | None = None
        self._closed = False  # the exit hook has run
        # Every event kept is, at any moment, still kept, handed over to the
        # handler, spooled, or dropped because telemetry was turned off before
        # exit; one recorded after the exit hook is dropped too.
        self._counts = {"handed_over": 0, "spooled": 0, "dropped_disabled": 0,
                        "dropped_shutdown": 0}
        self._closing = 0  # taken by the exit hook, on their way to the spool

    @property
    def session_id(self) -> str:
        return config.prefixed_session_id(self._session_id)

    def stats(self) -> dict[str, int]:
        """``kept``, ``handed_over``, ``spooled``, ``dropped_disabled`` and
        ``dropped_shutdown`` event counts."""
        with self._lock:
            return {"kept": len(self._kept) + self._closing, **self._counts}

    def record(self, fields: Fields) -> None:
        """Keep the event, or pass it to the handler once there is one."""
        if self._handler is None and _valid(fields):
            with self._lock:
                if self._closed:
                    self._counts["dropped_shutdown"] += 1
                    _log.debug("telemetry event dropped: dropped_shutdown (recorded after exit)")
                    return
                keep = self._handler is None
                if keep:
                    self._kept.append((fields, time.time()))
                    count = len(self._kept)
            if keep:
                if count == 1:
                    self._start_timer()
                elif count >= config.DEFAULT_MAX_QUEUE_SIZE:
                    self.handler()  # a batch's worth: not a short command line
                return
        event = cli_event(fields)  # raises for invalid fields, before any handler is made
        self.handler().enqueue(event)

    def handler(self) -> NATTelemetryHandler:
        """The handler that takes over: made, and given what was kept, on the first call."""
        handler = self._handler
        if handler is not None:
            return handler
        return self._hand_over([])

    def _hand_over(self, taken: list[tuple[Fields, float]]) -> NATTelemetryHandler:
        """Give the handler (made if need be) ``taken`` and whatever is still kept."""
        from .handler import NATTelemetryHandler  # outside the lock: an import takes a while

        with self._lock:
            if self._handler is None:
                self._handler = NATTelemetryHandler(session_id=self._session_id)
            events, self._kept = taken + self._kept, []
            self._closing = 0
            # Under the lock, so that no event is handed over twice, nor out of order.
            for fields, recorded_at in events:
                self._handler._offer(cli_event(fields), recorded_at)
            self._counts["handed_over"] += len(events)
            return self._handler

    def _start_timer(self) -> None:
        # A plain thread, not threading's (whose import a command line would
        # pay): it sleeps one flush interval, then hands over what is still kept.
        running = _thread.allocate_lock()
        running.acquire()
        try:
            delay = config.DEFAULT_FLUSH_INTERVAL_SECONDS
            _thread.start_new_thread(self._hand_over_later, (delay, running))
        except Exception:  # no thread to be had: the exit hook still takes them
            _log.debug("could not start the telemetry recorder's timer", exc_info=True)
            return
        # Returns once the thread runs, as threading's start() does: an
        # interpreter that exits while a thread is still starting can crash.
        running.acquire(True, _TIMER_START_WAIT)

    def _hand_over_later(self, delay: float, running: _thread.LockType) -> None:
        running.release()
        time.sleep(delay)
        try:
            with self._lock:
                due = self._kept and self._handler is None and not self._closed
            if due:
                self.handler().flush()
        except Exception:
            _log.debug("telemetry hand-over failed", exc_info=True)

    def close_at_exit(self) -> None:
        """Spool what is kept and start a sender; or give it to a handler to deliver."""
        with self._lock:
            self._closed = True
            # Taken out at once: a timer waking now finds nothing to hand over.
            kept, self._kept = self._kept, []
            self._closing = len(kept)
        if not kept:
            return  # nothing kept, or a handler has it all (and its own exit hook)
        if not config.TELEMETRY_ENABLED:  # turned off since: nothing is sent, or spooled
            with self._lock:
                self._counts["dropped_disabled"] += len(kept)
                self._closing = 0
            return
        spooled = False
        try:
            spooled = self._spool(kept)
        except Exception:
            _log.debug("could not spool telemetry at exit", exc_info=True)
        if spooled:
            with self._lock:
                self._counts["spooled"] += len(kept)
                self._closing = 0
            return
        self._hand_over(kept)
        from ._process_hooks import stop_all_at_exit

        stop_all_at_exit()

    def _spool(self, kept: list[tuple[Fields, float]]) -> bool:
        """Write ``kept`` to the spool as one batch, and start a sender; False
        when the spool cannot take them (a handler delivers them instead)."""
        from .endpoint import destination

        url = config.NAT_TELEMETRY_ENDPOINT
        kind = destination(url, config.NAT_TELEMETRY_DRY_RUN)
        if kind not in ("nemo", "otlp"):
            return False
        from .spool import Spool, default_spool_dir

        directory = default_spool_dir()
        if directory is None:
            return False
        from .sender import start_sender

        body = self.body(kept, kind)
        result = Spool(directory).write(body, len(kept), kind)
        for reason, count in result.evicted.items():
            _log.debug("%d spooled event(s) of earlier runs dropped: %s", count, reason)
        if not result.written:
            return False
        try:
            start_sender(directory, url, config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)
        except Exception:  # spooled all the same: the next run's sender takes it
            _log.debug("could not start a telemetry sender", exc_info=True)
        return True

    def body(self, kept: list[tuple[Fields, float]], kind: str = "nemo") -> bytes:
        """The request body for ``kept``: the NeMo envelope, or (``kind="otlp"``) the
        OTLP logs request; byte for byte what the handler's transport would POST."""
        from ._compact_json import dumps

        if kind == "otlp":
            from .otlp import epoch_unix_nano, logs_request

            request = logs_request(
                [(EVENT_NAME, _parameters(fields), epoch_unix_nano(recorded_at))
                 for fields, recorded_at in kept],
                service_version=__version__, session_id=self.session_id)
        else:
            from .payload import envelope, format_epoch

            request = envelope(
                [{"ts": format_epoch(recorded_at), "parameters": _parameters(fields),
                  "name": EVENT_NAME} for fields, recorded_at in kept],
                schema_version=SCHEMA_VERSION, source_client_version=__version__,
                session_id=self.session_id)
        return dumps(request).encode("utf-8")

    def __repr__(self) -> str:
        state = "handed over" if self._handler is not None else f"{len(self._kept)} kept"
        return f"<Recorder session={self.session_id!r}: {state}>"


# ------------------------------------------------------------- the registry

# Keyed by the session id the caller asked for (None: the process's own
# random id).  Almost always just the None entry.
_recorders: dict[str | None, Recorder] = {}
_recorders_lock = _thread.allocate_lock()


def recorder_for(session_id: str | None) -> Recorder:
    """The recorder for ``session_id``, made once, thread-safely."""
    recorder = _recorders.get(session_id)
    if recorder is not None:
        return recorder
    with _recorders_lock:
        recorder = _recorders.get(session_id)
        if recorder is None:
            # 128 random bits, as uuid4().hex would give without its import
            # (which imports platform, and costs a command line ~3 ms).
            recorder = Recorder(os.urandom(16).hex() if session_id is None else session_id)
            _recorders[session_id] = recorder
        return recorder


def _close_all_at_exit() -> None:
    for recorder in list(_recorders.values()):
        try:
            recorder.close_at_exit()
        except Exception:
            _log.debug("telemetry hand-over at exit failed", exc_info=True)


def _forget_after_fork() -> None:
    # The child must not report under the parent's random session id, nor
    # send the parent's events; the locks may have been held at the fork.
    global _recorders_lock
    _recorders_lock = _thread.allocate_lock()
    _recorders.clear()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
