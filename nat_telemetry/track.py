"""``track_command``: one telemetry event per command, without writing a handler.

A script or small command line only names its command; the outcome, duration and
exit code follow from how the block ends.  Only the caller's names (validated as
short tokens when the tracker is made, so a path or a typo fails at once) and the
*class* of the ending exception are sent: never arguments, messages or paths.
Telemetry must not change the program: the block's exception is re-raised untouched,
and a failure while recording is logged at debug level and swallowed.

Without a handler of the caller's, events go to the process's :class:`Recorder` (one per
tool and session id).  A command line exits within milliseconds, and a handler's thread,
queue and event classes would cost more than its whole run, so the recorder only keeps
each event's fields and time, and at exit spools them as one batch for a detached sender
(:mod:`.sender`, which validates and encodes them as a handler would).  It hands them to
a :class:`~.handler.NATTelemetryHandler` with the same session id instead once the
process shows it is no short command line (still running one flush interval after its
first event, or a batch's worth recorded), or at exit when they cannot be spooled (no
usable spool, or a destination that is not a URL).  Telemetry turned off before exit
drops what was kept; a forked child starts with no recorder (the parent's events are
the parent's).
"""

from __future__ import annotations

import _thread  # threading's primitives, without importing threading
import os
import time

from . import config
from ._rules import is_token

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Any, Callable, Literal, TypeVar, overload

    import click  # the adapters' types; click and Typer are the tool's own dependencies
    import typer

    from .handler import NATTelemetryHandler

    _F = TypeVar("_F", bound=Callable[..., Any])
    _G = TypeVar("_G")
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["Recorder", "ToolTelemetry", "record_command", "recorder_for", "track_command"]


class track_command:  # used like a function: `with track_command("x"):`
    """Record one ``CliCommandEvent`` per use, as a context manager or a decorator.

    A ``command`` or ``subcommand`` that is not a short token raises
    :class:`~nat_telemetry.ValidationError` here, at the call site, instead of
    silently never being recorded.  ``handler`` receives the events; without one
    they go to the :class:`Recorder` for ``tool`` (default: the NeMo Agent Toolkit)
    and ``session_id`` (which a handler, having its own, excludes).  Every block and
    call is timed on its own, so one tracker may be nested, reused and shared by threads.
    """

    def __init__(self, command: str, subcommand: str | None = None, *,
                 handler: NATTelemetryHandler | None = None, session_id: str | None = None,
                 tool: config.Tool | None = None) -> None:
        if handler is not None and session_id is not None:
            raise ValueError("track_command: pass either handler= or session_id=, not both "
                             "(a handler reports under its own session id)")
        if session_id is not None and not isinstance(session_id, str):
            raise TypeError(f"session_id must be a string, got {type(session_id).__name__}")
        self.command = command
        self.subcommand = "undefined" if subcommand is None else subcommand
        self.handler = handler
        self.session_id = session_id
        self.tool = config.NAT if tool is None else tool
        self._local = _thread._local()
        # Checked now, telemetry on or off, with the event's own rule; only a bad
        # name pays for building the event, for its error.
        if not (isinstance(command, str) and is_token(command)
                and isinstance(self.subcommand, str) and is_token(self.subcommand)):
            from .events import CliCommandEvent
            from .outcome import command_fields

            CliCommandEvent(**command_fields(command, self.subcommand, "success", 0,
                                             "undefined", -1))  # raises ValidationError

    def __enter__(self) -> track_command:
        stack: list[float] | None = getattr(self._local, "starts", None)
        if stack is None:
            stack = self._local.starts = []
        stack.append(time.perf_counter())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> Literal[False]:
        stack: list[float] | None = getattr(self._local, "starts", None)
        self._record(stack.pop() if stack else None, exc)
        return False  # never swallow the block's exception

    def __call__(self, func: _F) -> _F:
        import functools
        import inspect  # only for decorators: costly, and a `with` block needs neither

        # Coroutines and generators interleave on one thread, so they keep their own
        # start time instead of the thread's stack that `with self` uses.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    self._record(start, exc)
                    raise
                self._record(start, None)
                return result

            return async_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(func):
            # Timed across the whole iteration, where the generator's work happens.
            @functools.wraps(func)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = yield from func(*args, **kwargs)
                except BaseException as exc:
                    # A consumer that stops early (GeneratorExit) is not a failure.
                    self._record(start, None if isinstance(exc, GeneratorExit) else exc)
                    raise
                self._record(start, None)
                return result

            return generator_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _record(self, start: float | None, exc: BaseException | None) -> None:
        """Record the event; never raises."""
        try:
            duration_ms = -1 if start is None else max(0, int((time.perf_counter() - start) * 1000))
            if self.handler is None and not self.tool.enabled:
                return  # a user who said no pays for no import, thread or event
            from .outcome import command_fields, outcome_of

            status, exit_code, error_class = outcome_of(exc)
            if self.handler is None:
                record_command(self.command, self.subcommand, status, exit_code, error_class,
                               duration_ms, session_id=self.session_id, tool=self.tool)
                return
            from .events import CliCommandEvent

            self.handler.enqueue(CliCommandEvent(**command_fields(
                self.command, self.subcommand, status, exit_code, error_class, duration_ms,
                _nemo_source(self.tool))))
        except Exception:  # telemetry must not break the command
            from . import _process

            _process.debug("could not record the %r command", self.command, exc_info=True)

    def __repr__(self) -> str:
        return f"track_command({self.command!r}, {self.subcommand!r})"


def record_command(command: str, subcommand: str, task_status: str, exit_code: int,
                   error_class: str, duration_ms: int, *, session_id: str | None = None,
                   tool: config.Tool | None = None) -> None:
    """Record one command's event with the process's recorder for ``tool``
    (nothing at all when telemetry is off for it)."""
    tool = config.NAT if tool is None else tool
    if not tool.enabled:
        return
    from .outcome import command_fields

    recorder_for(session_id, tool).record(command_fields(
        command, subcommand, task_status, exit_code, error_class, duration_ms,
        _nemo_source(tool)))


def _nemo_source(tool: config.Tool) -> str | None:
    """The ``nemoSource`` an event of ``tool`` names; None for the default tool, whose
    events keep the field's own default."""
    return None if tool is config.NAT else tool.nemo_source


class Recorder:
    """One tool's session's events, kept until exit or handed to a handler (see the
    module docstring).  Each event kept is at any moment still kept, handed over,
    spooled, or dropped (telemetry turned off before exit, or recorded after the
    exit hook ran): :meth:`stats` counts them."""

    exit_budget = config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS

    def __init__(self, session_id: str, tool: config.Tool) -> None:
        self._session_id = session_id  # as given: the tool adds the prefix itself
        self.tool = tool
        self._lock = _thread.allocate_lock()
        self._kept: list[tuple[dict[str, Any], float]] = []
        self._handler: NATTelemetryHandler | None = None
        self._closed = False  # the exit hook has run
        self._counts = {"handed_over": 0, "spooled": 0, "dropped_disabled": 0,
                        "dropped_shutdown": 0}
        self._closing = 0  # taken by the exit hook, on their way to the spool
        from . import _process

        _process.register(self)  # one exit hook and one fork hook for the whole package

    @property
    def session_id(self) -> str:
        return self.tool.session_id(self._session_id)

    def stats(self) -> dict[str, int]:
        """Event counts: ``kept`` (those on their way to the spool too), and one per fate."""
        with self._lock:
            return {"kept": len(self._kept) + self._closing, **self._counts}

    def record(self, fields: dict[str, Any]) -> None:
        """Keep the event (``CliCommandEvent``'s keyword arguments), or pass it on to the
        handler once there is one."""
        with self._lock:
            if self._closed:
                self._counts["dropped_shutdown"] += 1
                return
            keep = self._handler is None
            if keep:
                self._kept.append((fields, time.time()))
                count = len(self._kept)
        if not keep:
            from .events import CliCommandEvent

            self.handler().enqueue(CliCommandEvent(**fields))
        elif count == 1:
            self._start_timer()
        elif count >= config.DEFAULT_MAX_QUEUE_SIZE:
            self.handler()  # a batch's worth: not a short command line

    def handler(self) -> NATTelemetryHandler:
        """The handler that takes over: made, and given what was kept, on the first call."""
        return self._handler if self._handler is not None else self._hand_over([])

    def _hand_over(self, taken: list[tuple[dict[str, Any], float]],
                   spool: bool = True) -> NATTelemetryHandler:
        """Give the handler (made if need be) ``taken`` and whatever is still kept."""
        from . import _process
        from .events import CliCommandEvent, ValidationError
        from .handler import DEFAULT_SPOOL, NATTelemetryHandler

        with self._lock:  # so that no event is handed over twice, nor out of order
            if self._handler is None:
                self._handler = NATTelemetryHandler(
                    session_id=self._session_id, tool=self.tool,
                    spool_dir=DEFAULT_SPOOL if spool else None)
            events, self._kept, self._closing = taken + self._kept, [], 0
            for fields, recorded_at in events:
                try:
                    self._handler._offer(CliCommandEvent(**fields), recorded_at)
                except ValidationError:
                    _process.debug("telemetry event dropped: not a valid event")
            self._counts["handed_over"] += len(events)
            return self._handler

    def _start_timer(self) -> None:
        # A bare thread (threading's import would cost a command line) that hands
        # over, one flush interval on, whatever is still kept.
        running = _thread.allocate_lock()
        running.acquire()
        try:
            _thread.start_new_thread(self._hand_over_later, (running,))
        except Exception:  # no thread to be had: the exit hook still takes them
            return
        # Wait until it runs, as threading's start() does: an interpreter exiting
        # while a thread is still starting can crash.
        running.acquire(True, 5.0)  # seconds; a thread starts in microseconds

    def _hand_over_later(self, running: _thread.LockType) -> None:
        running.release()
        time.sleep(config.DEFAULT_FLUSH_INTERVAL_SECONDS)
        try:
            with self._lock:
                due = self._kept and self._handler is None and not self._closed
            if due:
                self.handler().flush()
        except Exception:
            from . import _process

            _process.debug("telemetry hand-over failed", exc_info=True)

    def close_at_exit(self, deadline: float) -> None:
        """Spool what is kept for a detached sender; or give it to a handler to deliver."""
        with self._lock:
            self._closed = True
            # Taken out at once: a timer waking now finds nothing to hand over.
            kept, self._kept = self._kept, []
            self._closing = len(kept)
        if not kept:
            return  # nothing kept, or a handler has it all (and is closed on its own)
        if not self.tool.enabled or self.tool.refused_since():
            fate = "dropped_disabled"  # turned off since: nothing is sent, or spooled
        elif self._spool(kept):
            fate = "spooled"
        else:
            self._hand_over(kept, spool=False)  # the exit hook closes this handler next
            return
        with self._lock:
            self._counts[fate] += len(kept)
            self._closing = 0

    def _spool(self, kept: list[tuple[dict[str, Any], float]]) -> bool:
        """Spool ``kept`` as one batch; False when the spool cannot take them (no spool,
        a destination that is not a URL, or a spool that cannot be written)."""
        from . import __version__, _process
        from .outcome import COMMAND_EVENT
        from .sender import Outlet, identity

        tool = self.tool
        outlet, endpoint = Outlet(tool, tool.spool_dir()), tool.endpoint
        if config.destination(endpoint, tool.dry_run) not in ("nemo", "otlp") or not outlet.takes(
                endpoint):
            return False
        records = [[COMMAND_EVENT, None, recorded_at, 0, fields] for fields, recorded_at in kept]
        who = identity(self.session_id, tool.version or __version__,
                       None if tool.version is None else (tool.name, tool.version))
        try:
            return outlet.spool(endpoint, tool.token(), who, records).written
        except Exception:
            _process.debug("could not spool telemetry at exit", exc_info=True)
            return False

    def after_fork_in_child(self) -> None:
        # The child must not report under the parent's session, nor send its
        # events; the locks may have been held at the fork.
        global _recorders_lock
        self._lock, _recorders_lock = _thread.allocate_lock(), _thread.allocate_lock()
        self._kept, self._closed = [], True
        _recorders.clear()

    def __repr__(self) -> str:
        state = "handed over" if self._handler is not None else f"{len(self._kept)} kept"
        return f"<Recorder {self.tool.name} session={self.session_id!r}: {state}>"


# By tool name and the session id asked for (None: a random one); almost always one.
_recorders: dict[tuple[str, str | None], Recorder] = {}
_recorders_lock = _thread.allocate_lock()


def recorder_for(session_id: str | None, tool: config.Tool | None = None) -> Recorder:
    """The recorder for ``tool`` and ``session_id``, made once, thread-safely."""
    tool = config.NAT if tool is None else tool
    key = (tool.name, session_id)
    with _recorders_lock:
        recorder = _recorders.get(key)
        if recorder is None:
            # 128 random bits, as uuid4().hex would give without its import.
            recorder = _recorders[key] = Recorder(
                os.urandom(16).hex() if session_id is None else session_id, tool)
    return recorder


class ToolTelemetry:
    """Telemetry for a tool that embeds this package.

    ``name`` (lowercase letters, digits, ``-``, ``_``) names the tool's folders
    (``$XDG_CONFIG_HOME/<name>/telemetry.toml``, ``$XDG_STATE_HOME/<name>/telemetry-spool``)
    and its events (``productName``; OTLP ``service.name``); ``version`` is their
    ``productVersion`` and ``clientVer``.  Settings are read as ``<PREFIX>_TELEMETRY_*``
    (``env_prefix``, default: the name upper-cased, ``-`` made ``_``; ``_ENDPOINT`` and
    ``_TOKEN`` over ``endpoint`` and ``token``); ``DO_NOT_TRACK`` and the CI rule apply
    to every tool.  The prompt names ``display_name`` and
    ``change_command`` (default: ``"<name> telemetry"``), where the consent commands
    answer (:meth:`main`, or mounted in click, Typer or argparse).  ``nemo_source``
    is the NeMo product the tool is, if it is one.
    """

    def __init__(self, name: str, *, version: str, endpoint: str = "",
                 env_prefix: str | None = None, display_name: str | None = None,
                 change_command: str | None = None, token: str = "",
                 nemo_source: str = "undefined") -> None:
        if nemo_source != "undefined":
            from .events import NemoSourceEnum

            NemoSourceEnum(nemo_source)  # ValueError for a value the schema does not have
        self.tool = config.Tool(name, env_prefix=env_prefix, endpoint=endpoint,
                                version=version, nemo_source=nemo_source, token=token)
        self.display_name = display_name or name
        self.change_command = change_command or f"{name} telemetry"
        # The names the consent commands are mounted under: not recorded as commands.
        self.mounted: set[str] = set()

    @property
    def enabled(self) -> bool:
        """This process's decision for the tool (live: the prompt may change it)."""
        return self.tool.enabled

    def maybe_prompt_for_consent(self, *, raise_on_interrupt: bool = False) -> None:
        """The first-run prompt (see :func:`~.consent.maybe_prompt_for_consent`)."""
        from .consent import maybe_prompt_for_consent

        maybe_prompt_for_consent(product_name=self.display_name,
                                 change_command=self.change_command,
                                 raise_on_interrupt=raise_on_interrupt, tool=self.tool)

    def track_command(self, command: str, subcommand: str | None = None, *,
                      handler: NATTelemetryHandler | None = None,
                      session_id: str | None = None) -> track_command:
        """:func:`track_command` for this tool."""
        return track_command(command, subcommand, handler=handler, session_id=session_id,
                             tool=self.tool)

    def record(self, command: str, subcommand: str, task_status: str, exit_code: int,
               error_class: str, duration_ms: int) -> None:
        """Record one command's event (what the click hook calls for each command)."""
        record_command(command, subcommand, task_status, exit_code, error_class, duration_ms,
                       tool=self.tool)

    def handler(self, **options: Any) -> NATTelemetryHandler:
        """A :class:`~.handler.NATTelemetryHandler` for this tool."""
        from .handler import NATTelemetryHandler

        return NATTelemetryHandler(tool=self.tool, **options)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run ``status [--json] | enable | disable | reset`` for this tool; the exit status."""
        from .status import tool_main

        return tool_main(self.tool, self.change_command, argv)

    def click_group(self, name: str = "telemetry") -> click.Group:
        """A click group ``name`` with the consent commands."""
        from .status import click_group

        self.mounted.add(name)
        return click_group(self, name)

    def typer_app(self, name: str = "telemetry") -> typer.Typer:
        """A Typer app ``name`` with the consent commands."""
        from .status import typer_app

        self.mounted.add(name)
        return typer_app(self, name)

    def add_argparse_commands(self, subparsers: _Subparsers,
                              name: str = "telemetry") -> argparse.ArgumentParser:
        """Add ``name`` (the consent commands) to an argparse sub-parsers object;
        the parsed namespace's ``func(args)`` runs it and returns the exit status."""
        from .status import add_argparse_commands

        self.mounted.add(name)
        return add_argparse_commands(self, subparsers, name)

    if TYPE_CHECKING:  # without typing imported, at run time
        @overload
        def tracked_click_group(self, base: None = None) -> type[click.Group]: ...

        @overload
        def tracked_click_group(self, base: type[_G]) -> type[_G]: ...

    def tracked_click_group(self, base: type[Any] | None = None) -> type[Any]:
        """A click ``Group`` class (``base``, default ``click.Group``; Typer's
        ``TyperGroup`` works too, click installed or not) recording every command
        invoked under it."""
        from .status import tracked_click_group

        return tracked_click_group(self, base)

    def __repr__(self) -> str:
        return f"ToolTelemetry({self.tool.name!r}, version={self.tool.version!r})"
