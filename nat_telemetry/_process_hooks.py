"""What every handler needs from the process: an exit hook and a fork hook.

At interpreter exit, every started handler hands what is pending to the spool
and a detached sender takes it from there; a handler whose events cannot be
spooled is stopped as by ``stop()``; all within one shared time budget.  In
a forked child, every handler starts empty (the parent's events are the
parent's to send).  Registered once, when :mod:`.handler` is imported.
"""

from __future__ import annotations

import atexit
import os
import time

from . import _log
from ._delivery import senders_wanted
from ._state import live_handlers, started_handlers
from .sender import start_sender

__all__ = ["stop_all_at_exit"]


def stop_all_at_exit() -> None:
    """Hand every started handler's events over to the spool and a detached
    sender; a handler that cannot spool is stopped as before, all of them
    within one shared time budget."""
    handlers = list(started_handlers)
    if not handlers and not senders_wanted:
        return
    budget = max((h.shutdown_timeout_seconds for h in handlers), default=0.0)
    deadline = time.monotonic() + budget
    flushing = []
    for handler in handlers:
        try:
            if not handler._hand_over_at_exit():
                flushing.append(handler)
        except Exception:
            _log.debug("telemetry hand-over failed", exc_info=True)
            flushing.append(handler)
    for handler in flushing:
        handler._begin_stop(deadline)
    for handler in flushing:
        try:
            handler._finish_stop(deadline)
        except Exception:
            _log.debug("telemetry shutdown failed", exc_info=True)
    for directory, url in list(senders_wanted):
        try:
            start_sender(directory, url, max(0.0, deadline - time.monotonic()))
        except Exception:
            _log.debug("could not start a telemetry sender", exc_info=True)
    senders_wanted.clear()


def _reinit_after_fork() -> None:
    for handler in list(live_handlers):
        handler._after_fork_in_child()
    started_handlers.clear()
    senders_wanted.clear()


atexit.register(stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
