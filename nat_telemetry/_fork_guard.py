"""Imports made on a worker thread, kept whole across a fork.

Some modules are imported on a worker thread the first time they are needed
(the HTTP stack at the first POST, ``logging`` at the first message), because
a command line that never POSTs in-process must not pay for them.  A fork in
the middle of one would leave the child a half-initialised module in
``sys.modules`` (the importing thread does not exist there) that no later
import can repair.  So those imports go through :func:`import_guarded`, which
holds :data:`import_lock`, and a fork waits for that lock (a bounded time).

``logging`` needs care: its own fork hook takes its lock, which a guarded
import of ``requests`` needs while it holds ours.  Fork hooks run newest
first, so once ``logging`` is imported (by us or by anyone) our hook is
registered again, to be newer than logging's: a fork then takes the import
lock before logging's lock, and the two never wait for each other.  The hooks
tolerate being registered twice.  ``logging`` itself is imported on its own,
before anything that would need its lock; and when that import happens while
a fork waits for it, logging's fork hook was registered too late to run
before that fork, so ours takes logging's lock in its place.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["import_guarded", "import_lock"]

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
        _register()


def _before_fork() -> None:
    global _held_for_fork
    if _held_for_fork:  # registered twice: the newer registration took it
        return
    logging = sys.modules.get("logging")
    had_logging = logging is not None and not _initializing(logging)
    _held_for_fork = import_lock.acquire(timeout=_FORK_WAIT_SECONDS)
    if not had_logging and "logging" in sys.modules:
        _take_logging_lock_too()


def _take_logging_lock_too() -> None:
    # logging was imported while this fork waited for the import above, so its
    # own fork hook came too late to run before this fork, while its after-fork
    # hooks will run: they release logging's lock.  Take it, as its hook would
    # have, so the two stay paired.
    logging = sys.modules["logging"]
    lock = getattr(logging, "_lock", None)
    owned = getattr(lock, "_is_owned", None)
    if owned is None or owned():
        return  # unknown internals, or logging's own hook did run after all
    take = getattr(logging, "_prepareFork", None) or getattr(logging, "_acquireLock", None)
    if take is not None:
        take()


def _after_fork() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        import_lock.release()


def _register() -> None:
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                            after_in_child=_after_fork)


_register()
_stay_newer_than_logging()
