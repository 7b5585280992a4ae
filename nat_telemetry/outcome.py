"""How a command ended, as the fields of the event that records it.

One mapping to ``(task_status, exit_code, error_class)`` for :func:`~.track.track_command`
(a block or call, ended by an exception or not) and ``nat-telemetry run`` (a child's return
code), keeping only the *class* of an exception, never its message or arguments.
:func:`command_fields` gives the keyword arguments of :class:`~.events.CliCommandEvent`
without importing the event classes, which a command line that only spools never needs.
"""

from __future__ import annotations

import sys

from ._rules import is_error_class

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Literal

    TaskStatus = Literal["success", "failure", "interrupted"]

__all__ = [
    "COMMAND_EVENT",
    "EXIT_CODE_INTERRUPTED",
    "command_fields",
    "outcome_of",
    "outcome_of_returncode",
    "python_version",
]

#: The wire name of :class:`~.events.CliCommandEvent`.
COMMAND_EVENT = "nat_cli_command"
EXIT_CODE_INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C: 128 + SIGINT
_SIGINT = 2  # signal.SIGINT on every platform that reports signals this way

# TaskStatusEnum's values.
SUCCESS: TaskStatus = "success"
FAILURE: TaskStatus = "failure"
INTERRUPTED: TaskStatus = "interrupted"

_RELEASE_LEVELS = {"alpha": "a", "beta": "b", "candidate": "rc"}


def python_version() -> str:
    """The running Python's version as ``platform.python_version()`` spells it (``3.11.7``,
    ``3.13.0rc1``), from ``sys.version_info``: ``platform`` is slow to import and may add
    a ``+``."""
    info = sys.version_info
    level = _RELEASE_LEVELS.get(info.releaselevel)
    suffix = f"{level}{info.serial}" if level is not None else ""
    return f"{info.major}.{info.minor}.{info.micro}{suffix}"


def _error_class(exc: BaseException) -> str:
    # A class made with type("some text", ...) can have any name: not sent.
    name = type(exc).__name__
    return name if is_error_class(name) else "undefined"


def outcome_of(exc: BaseException | None) -> tuple[TaskStatus, int, str]:
    """``(task_status, exit_code, error_class)`` for a block ended by ``exc``.

    ``SystemExit`` with code 0 or None is a success, with another int code a failure with
    that exit code, with a message a failure with exit code 1 (the message not kept).
    Ctrl-C is "interrupted", 130.
    """
    code = exc.code if isinstance(exc, SystemExit) else 1  # any other exception exits 1
    if exc is None or code is None or (isinstance(code, int) and code == 0):
        return SUCCESS, 0, "undefined"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, EXIT_CODE_INTERRUPTED, _error_class(exc)
    return FAILURE, int(code) if isinstance(code, int) else 1, _error_class(exc)


def outcome_of_returncode(returncode: int) -> tuple[TaskStatus, int]:
    """``(task_status, exit_code)`` for a child process's return code: a negative
    one is the signal that killed it (``128 + N``, "interrupted" for SIGINT, as
    is a child that exited 130 itself)."""
    if returncode < 0:
        return (INTERRUPTED if -returncode == _SIGINT else FAILURE), 128 - returncode
    if returncode == 0:
        return SUCCESS, 0
    return (INTERRUPTED if returncode == EXIT_CODE_INTERRUPTED else FAILURE), returncode


def command_fields(command: str, subcommand: str, task_status: str, exit_code: int,
                   error_class: str, duration_ms: int,
                   nemo_source: str | None = None) -> dict[str, Any]:
    """The keyword arguments of ``CliCommandEvent`` for one command, with the running
    Python's version (``nemo_source`` only when given)."""
    fields: dict[str, Any] = {
        "command": command, "subcommand": subcommand, "task_status": task_status,
        "duration_ms": duration_ms, "exit_code": exit_code, "error_class": error_class,
        "python_version": python_version()}
    if nemo_source is not None:
        fields["nemo_source"] = nemo_source
    return fields
