"""``track_command``: one telemetry event per command, without writing a handler.

A plain script or a small command line wants to say "this is the ``convert``
command" and nothing more; the outcome, the duration and the exit code follow
from how the block ends.  So :func:`track_command` is both a context manager
and a decorator, and everything it sends comes from two places only: the
names the caller passed (validated as short tokens when the tracker is
created, so a typo or a path is a bug the developer sees at once) and the
*class* of the exception that ended the block.  Arguments, messages and paths
never reach it.

Telemetry must never change the program it measures: the exception that ended
the block is re-raised untouched, and anything going wrong while recording is
logged at debug level and swallowed.

Without an explicit handler the events go to a recorder shared by the whole
process, made on first use with a random session id (see :mod:`._recorder`):
it keeps them in memory and spools them at exit for a detached sender, or
hands them to a handler when the program runs long; a forked child gets a
new one with a new session id, so parent and child never report under the
same session.
"""

from __future__ import annotations

import _thread  # threading's primitives, without importing threading
import time

from . import _log, config
from ._rules import is_token

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Callable, Literal, TypeVar

    from .handler import NATTelemetryHandler

    _F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["track_command"]


# ------------------------------------------------------------------- tracker


class track_command:  # used like a function: `with track_command("x"):`
    """Record one ``CliCommandEvent`` per use, as a context manager or a decorator.

    ``command`` and ``subcommand`` are validated here, at construction, with
    the event's own rules: a name that is not a short token (a path, a
    sentence, an argument) raises :class:`~nat_telemetry.ValidationError` at
    the call site instead of silently never being recorded.

    ``handler`` receives the events; without one they go to a recorder shared
    by the process, which spools them at exit for a detached sender, or hands
    them to a handler of its own when the program runs long (see
    :mod:`._recorder`).  ``session_id`` picks the session of that shared
    destination (one per distinct id, made on first use); it cannot be
    combined with ``handler``, whose session id is its own.

    Every ``with`` block and every call of a decorated function is timed on
    its own, so one tracker may be nested, reused, and shared by threads.
    """

    def __init__(
        self,
        command: str,
        subcommand: str | None = None,
        *,
        handler: NATTelemetryHandler | None = None,
        session_id: str | None = None,
    ) -> None:
        if handler is not None and session_id is not None:
            raise ValueError(
                "track_command: pass either handler= or session_id=, not both "
                "(a handler reports under its own session id)"
            )
        if session_id is not None and not isinstance(session_id, str):
            raise TypeError(f"session_id must be a string, got {type(session_id).__name__}")
        self.command = command
        self.subcommand = "undefined" if subcommand is None else subcommand
        self.handler = handler
        self.session_id = session_id
        self._local = _thread._local()
        # The event's own rule for the names, checked now, so a bad name fails
        # loudly where it is written, telemetry on or off.  The check itself
        # imports nothing; only a bad name builds the event, for its error.
        if not (isinstance(command, str) and is_token(command)
                and isinstance(self.subcommand, str) and is_token(self.subcommand)):
            from ._recorder import cli_event, command_fields

            cli_event(command_fields(command, self.subcommand, None, -1))  # raises ValidationError

    # ----------------------------------------------------- context manager

    def __enter__(self) -> track_command:
        stack: list[float] | None = getattr(self._local, "starts", None)
        if stack is None:
            stack = self._local.starts = []
        stack.append(time.perf_counter())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        stack: list[float] | None = getattr(self._local, "starts", None)
        start = stack.pop() if stack else None
        self._record(start, exc)
        return False  # never swallow the block's exception

    # ----------------------------------------------------------- decorator

    def __call__(self, func: _F) -> _F:
        import functools
        import inspect  # only for decorators: costly, and a `with` block needs neither

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
            # Timed across the whole iteration: the generator's work happens
            # while it is consumed, not when it is called.
            @functools.wraps(func)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = yield from func(*args, **kwargs)
                except GeneratorExit:
                    self._record(start, None)  # the consumer stopped early: not a failure
                    raise
                except BaseException as exc:
                    self._record(start, exc)
                    raise
                self._record(start, None)
                return result

            return generator_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._record(start, exc)
                raise
            self._record(start, None)
            return result

        return wrapper  # type: ignore[return-value]

    # -------------------------------------------------------------- record

    def _record(self, start: float | None, exc: BaseException | None) -> None:
        """Build and enqueue the event; never raises."""
        try:
            duration_ms = -1 if start is None else max(0, int((time.perf_counter() - start) * 1000))
            handler = self.handler
            if handler is None and not config.TELEMETRY_ENABLED:
                return  # no thread, no handler, no event, for a user who said no
            from ._recorder import cli_event, command_fields, recorder_for

            fields = command_fields(self.command, self.subcommand, exc, duration_ms)
            if handler is None:
                recorder_for(self.session_id).record(fields)
            else:
                handler.enqueue(cli_event(fields))
        except Exception:  # telemetry must not break the command
            _log.debug("could not record the %r command", self.command, exc_info=True)

    def __repr__(self) -> str:
        return f"track_command({self.command!r}, {self.subcommand!r})"
