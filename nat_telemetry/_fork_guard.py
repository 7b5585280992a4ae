"""Imports made on a worker thread, kept whole across a fork.

Some modules are imported on a worker thread the first time they are needed
(``requests`` or ``urllib.request`` at the first POST, ``logging`` at the first
message), because ``import nat_telemetry`` must stay cheap.  A fork in the
middle of one would leave the child a half-initialised module in
``sys.modules`` (the importing thread does not exist there) that no later
import can repair.  So those imports go through :func:`import_guarded`, which
holds :data:`import_lock`, and a fork waits for that lock (a bounded time).

``logging`` is imported here, with this module, on the thread that creates
the first handler, and not on a worker: its own fork hook takes its own lock,
which a guarded import of ``requests`` needs while it holds ours.  Fork hooks
run newest first, so ours, registered after logging's, takes the import lock
before logging takes its lock, and the two never wait for each other.  (A
module that registers a fork hook while a fork is under way, as ``logging``
would if a worker imported it then, breaks the fork's own bookkeeping.)
"""

from __future__ import annotations

import importlib
import logging  # noqa: F401  (before our fork hook: see above)
import os
import sys
import threading
from types import ModuleType

__all__ = ["import_guarded", "import_lock"]

import_lock = threading.RLock()  # re-entrant: a guarded import may log
_FORK_WAIT_SECONDS = 5.0
_held_for_fork = False


def import_guarded(name: str) -> ModuleType:
    """``importlib.import_module(name)``, safe against a fork in the middle of it."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    with import_lock:
        return importlib.import_module(name)


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = import_lock.acquire(timeout=_FORK_WAIT_SECONDS)


def _after_fork() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        import_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                        after_in_child=_after_fork)
