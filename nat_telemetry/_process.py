"""What the package asks of the process: one exit hook, one fork hook, a logger,
and imports that a fork cannot cut in half.

**Exit and fork.**  Whatever holds events (a handler, ``track_command``'s
recorder) registers here once.  At interpreter exit one hook closes them all, in
the order they registered (and any registered meanwhile, such as a handler made
to deliver what could not be spooled) within one shared deadline, then runs what
they asked to run last (starting the detached senders).  In a forked child every
party is told so, and starts empty.

**The logger** is looked up on first use, under the package's own name (a
vendored copy logs under the name it was given): importing :mod:`logging`
costs a command line more than everything else the package does on its way in.

**Guarded imports.**  A module first imported on a worker thread (the HTTP
stack at the first POST, :mod:`logging` at the first message) and cut in half by
a fork would stay half-initialised in the child for good: those imports hold
:data:`import_lock`, which a fork waits for (a bounded time).  Fork hooks run
newest first, so once :mod:`logging` is imported ours is registered again, to
take the import lock before logging's hook takes logging's lock: the two never
wait for each other.  While logging's own import is under way its hook is the
newer one; ours then lends logging's lock back to that import while it waits.
"""

from __future__ import annotations

import _thread
import _weakref
import atexit
import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import logging
    from types import ModuleType
    from typing import Any, Callable, Protocol

    class Party(Protocol):
        @property
        def exit_budget(self) -> float:
            """The longest an exit may wait for this party, in seconds."""

        def close_at_exit(self, deadline: float) -> None: ...

        def after_fork_in_child(self) -> None: ...

__all__ = [
    "EXIT_BROKEN_PIPE", "after_exit", "debug", "import_guarded", "import_lock", "logger",
    "reader_went_away", "register", "warning", "warning_once",
]

PACKAGE = __name__.rpartition(".")[0]
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell tool killed by it reports

# ------------------------------------------------------------ exit and fork

_parties: dict[int, Any] = {}  # id -> weak reference, in registration order
_last: dict[object, tuple[Callable[..., Any], tuple[Any, ...]]] = {}


def register(party: Party) -> None:
    """Close ``party`` at exit and tell it about a fork; held weakly."""
    key = id(party)
    _parties[key] = _weakref.ref(party, lambda _ref: _parties.pop(key, None))


def after_exit(key: object, function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` at exit, once the hook has closed every party; once
    per ``key`` (the first call's arguments win)."""
    _last.setdefault(key, (function, args))


def _call(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        debug("telemetry exit step failed", exc_info=True)


def _at_exit() -> None:
    closed: set[int] = set()
    deadline: float | None = None
    while pending := [(key, party) for key, ref in list(_parties.items())
                      if key not in closed and (party := ref()) is not None]:
        if deadline is None:
            budget = max(getattr(party, "exit_budget", 0.0) for _, party in pending)
            deadline = time.monotonic() + budget
        for _key, party in pending:  # each begins, side by side, before any is awaited
            prepare = getattr(party, "prepare_exit", None)
            if prepare is not None:
                _call(prepare, deadline)
        for key, party in pending:
            closed.add(key)
            _call(party.close_at_exit, deadline)
    for function, args in list(_last.values()):
        _call(function, *args)
    _last.clear()


def _after_fork_in_child() -> None:
    _last.clear()
    for party in [ref() for ref in list(_parties.values())]:
        if party is not None:
            _call(party.after_fork_in_child)


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# ------------------------------------------------------------------ logging


def logger() -> logging.Logger:
    found: logging.Logger = import_guarded("logging").getLogger(PACKAGE)
    return found


def debug(message: str, *args: object, exc_info: bool = False) -> None:
    logger().debug(message, *args, exc_info=exc_info)


def warning(message: str, *args: object) -> None:
    logger().warning(message, *args)


_said: set[str] = set()


def warning_once(message: str, *args: object) -> None:
    """:func:`warning`, the first time this process has this exact thing to say."""
    text = message % args if args else message
    if text not in _said:
        _said.add(text)
        warning("%s", text)


def reader_went_away() -> int:
    """Exit quietly when stdout's reader closed early (``nat-telemetry demo | head``):
    :data:`EXIT_BROKEN_PIPE`, nothing on stderr, and stdout pointed at the null device
    so that the interpreter's final flush does not complain either."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


# ------------------------------------------------------------ guarded imports

import_lock = _thread.RLock()  # re-entrant: a guarded import may log
_FORK_WAIT_SECONDS = 5.0
_held_for_fork = False
_newer_than_logging = False


def import_guarded(name: str) -> ModuleType:
    """``import name`` and return the module, safe against a fork in the middle of it."""
    module = sys.modules.get(name)
    if module is not None and _newer_than_logging and not _initializing(module):
        return module
    if name != "logging":
        import_guarded("logging")
    with import_lock:
        # Also when another thread is importing it: this waits for that import
        # to finish, and a half-initialised module is never returned.
        __import__(name)
    _stay_newer_than_logging()
    return sys.modules[name]


def _initializing(module: ModuleType) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _stay_newer_than_logging() -> None:
    global _newer_than_logging
    if not _newer_than_logging and "logging" in sys.modules:
        _newer_than_logging = True
        _register_import_hooks()


def _before_fork() -> None:
    global _held_for_fork
    if _held_for_fork:  # registered twice: the newer registration took it
        return
    logging_module = sys.modules.get("logging")
    had_logging = logging_module is not None and not _initializing(logging_module)
    # Halfway through its import, logging has registered its own fork hook, newer
    # than ours: it ran first and holds logging's lock, which the rest of that import
    # needs.  Give the lock back while the import finishes, and take it again after.
    lent = None if had_logging or logging_module is None else _lock_held_here(logging_module)
    if lent is not None:
        lent.release()
    try:
        _held_for_fork = import_lock.acquire(timeout=_FORK_WAIT_SECONDS)
    finally:
        if lent is not None:
            lent.acquire()
    logging_module = sys.modules.get("logging")
    if had_logging or logging_module is None or lent is not None:
        return
    # Imported while this fork waited, logging's fork hook came too late to run, yet its
    # after-fork hooks will release its lock: take it, as its hook would have.
    lock = getattr(logging_module, "_lock", None)
    if getattr(lock, "_is_owned", None) is None or _lock_held_here(logging_module):
        return  # unknown internals, or logging's own hook did run after all
    take = (getattr(logging_module, "_prepareFork", None)
            or getattr(logging_module, "_acquireLock", None))
    if take is not None:
        take()


def _lock_held_here(logging_module: ModuleType) -> Any:
    """Logging's module lock, if this thread holds it; else None."""
    lock = getattr(logging_module, "_lock", None)
    owned = getattr(lock, "_is_owned", None)
    return lock if owned is not None and owned() else None


def _after_fork() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        import_lock.release()


def _register_import_hooks() -> None:
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                            after_in_child=_after_fork)


_register_import_hooks()
_stay_newer_than_logging()
