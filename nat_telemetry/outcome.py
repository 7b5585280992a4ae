"""How a command ended, in the three fields an event records.

One mapping, used by :func:`~.track.track_command` (a block or call that ended
with an exception, or without one), ``nat-telemetry run`` (a child's return
code) and the demo: ``(task_status, exit_code, error_class)``.  Only the
*class* of an exception is kept, never its message or arguments.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Literal

    TaskStatus = Literal["success", "failure", "interrupted"]

__all__ = [
    "EXIT_CODE_INTERRUPTED",
    "outcome_of",
    "outcome_of_returncode",
    "python_version",
]

# Exit code a shell reports for a command ended by Ctrl-C (128 + SIGINT).
EXIT_CODE_INTERRUPTED = 130
_MAX_ERROR_CLASS_LENGTH = 128

# TaskStatusEnum's values.
SUCCESS: TaskStatus = "success"
FAILURE: TaskStatus = "failure"
INTERRUPTED: TaskStatus = "interrupted"

_RELEASE_LEVELS = {"alpha": "a", "beta": "b", "candidate": "rc"}


def python_version() -> str:
    """The running Python's version, spelled like ``platform.python_version()``.

    ``3.11.7`` for a final release, ``3.13.0rc1`` for a pre-release.  Built
    from ``sys.version_info`` because ``platform`` is slow to import and its
    answer can carry a ``+`` suffix on development builds.
    """
    info = sys.version_info
    version = f"{info.major}.{info.minor}.{info.micro}"
    level = _RELEASE_LEVELS.get(info.releaselevel)
    if level is not None:
        version += f"{level}{info.serial}"
    return version


def _error_class(exc: BaseException) -> str:
    name = type(exc).__name__
    # A class made with type("some text", ...) can have any name at all; such
    # a name is not sent.
    if name.isascii() and name.isidentifier() and len(name) <= _MAX_ERROR_CLASS_LENGTH:
        return name
    return "undefined"


def outcome_of(exc: BaseException | None) -> tuple[TaskStatus, int, str]:
    """``(task_status, exit_code, error_class)`` for a block ended by ``exc``.

    ``SystemExit`` with code 0 or None is a success; with another int code it
    is a failure with that exit code; with any other code (a message) it is a
    failure with exit code 1, and the message is not kept.
    """
    if exc is None:
        return SUCCESS, 0, "undefined"
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or (isinstance(code, int) and code == 0):
            return SUCCESS, 0, "undefined"
        exit_code = int(code) if isinstance(code, int) else 1
        return FAILURE, exit_code, _error_class(exc)
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, EXIT_CODE_INTERRUPTED, _error_class(exc)
    return FAILURE, 1, _error_class(exc)


def outcome_of_returncode(returncode: int) -> tuple[TaskStatus, int]:
    """``(task_status, exit_code)`` for a child process's return code.

    A negative code is the signal that killed the child: the exit code a
    shell reports, ``128 + N``, and "interrupted" for SIGINT (so is a child
    that exited 130 itself).
    """
    if returncode < 0:
        signum = -returncode
        status = INTERRUPTED if signum == _SIGINT else FAILURE
        return status, 128 + signum
    if returncode == 0:
        return SUCCESS, 0
    if returncode == EXIT_CODE_INTERRUPTED:
        return INTERRUPTED, returncode
    return FAILURE, returncode


_SIGINT = 2  # signal.SIGINT on every platform that reports signals this way
