"""``nat-telemetry demo``: the whole pipeline, on one machine, in a few seconds.

Reading about a telemetry client tells you less than watching it work.  The
demo starts an in-process :class:`~.core.Collector` on a free loopback
port with a SQLite file (in a temporary folder removed afterwards, unless a
path to keep is given), runs a small workload (a
few simulated commands with a mix of successes, failures and interruptions)
from several threads, each command instrumented the way a user's would be,
with the public ``track_command(..., handler=...)`` and one real
:class:`~nat_telemetry.handler.NATTelemetryHandler`, flushes, and prints the
report and the handler's counters.

Consent: the demo turns telemetry on for this process only, by assigning the
live ``config.TELEMETRY_ENABLED`` before anything reads it.  Because that flag
is resolved lazily on first read, the assignment means the user's consent file
is never read, and nothing here prompts or writes one.  The previous state
(including "not resolved yet") is put back afterwards, so calling
:func:`run_demo` inside a longer-lived process changes nothing for it.  The
events never leave the machine: the endpoint is the loopback collector, and
proxy settings are bypassed for it.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, TextIO

from .. import config
from ..handler import NATTelemetryHandler
from ..track import track_command
from .core import Collector
from .report import build_report, render_table

__all__ = ["DEFAULT_EVENTS_PER_THREAD", "DEFAULT_THREADS", "run_demo"]

DEFAULT_THREADS = 4
DEFAULT_EVENTS_PER_THREAD = 25
_FLUSH_TIMEOUT_SECONDS = 10.0

# (command, subcommand, weight, typical milliseconds of simulated work)
_COMMANDS = (
    ("run", "undefined", 5, 6),
    ("info", "list-components", 3, 1),
    ("eval", "undefined", 2, 10),
    ("workflow", "create", 1, 3),
)
_ERRORS: tuple[type[Exception], ...] = (
    ValueError, FileNotFoundError, TimeoutError, ConnectionError,
)

_UNSET: Any = object()


def run_demo(
    *,
    threads: int = DEFAULT_THREADS,
    events_per_thread: int = DEFAULT_EVENTS_PER_THREAD,
    out: TextIO | None = None,
    db_path: str | None = None,
) -> int:
    """Run the demo, print what happened to ``out``; 0 when every event arrived.

    ``db_path`` keeps the collector's SQLite file there; without it the
    database lives in a temporary folder that is removed before returning.
    """
    if threads < 1 or events_per_thread < 1:
        raise ValueError("threads and events_per_thread must be at least 1")
    if db_path is not None:
        return _run(threads, events_per_thread, out, db_path, kept=True)
    with tempfile.TemporaryDirectory(prefix="nat-telemetry-demo-") as folder:
        return _run(threads, events_per_thread, out, os.path.join(folder, "telemetry.db"),
                    kept=False)


def _run(threads: int, events_per_thread: int, out: TextIO | None, db_path: str,
         *, kept: bool) -> int:
    stream = sys.stdout if out is None else out
    total = threads * events_per_thread
    with _telemetry_on_for_this_process(), _loopback_without_proxy(), \
            Collector(db_path) as collector:
        print(f"nat-telemetry demo: {threads} threads x {events_per_thread} commands "
              f"-> {collector.url}", file=stream)
        handler = NATTelemetryHandler(endpoint=collector.url, session_id=uuid.uuid4().hex)
        try:
            workers = [
                threading.Thread(target=_workload, args=(handler, index, events_per_thread),
                                 name=f"nat-telemetry-demo-{index}")
                for index in range(threads)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            handler.flush(timeout=_FLUSH_TIMEOUT_SECONDS)
        finally:
            handler.stop()
        stats = handler.stats()

    report = build_report(db_path)
    print("", file=stream)
    print(render_table(report), file=stream)
    print("", file=stream)
    if kept:
        print(f"database: {db_path} (look again with: nat-telemetry report --db {db_path})",
              file=stream)
    else:
        print("database: removed (keep one with: nat-telemetry demo --db PATH)", file=stream)
    shown = ("enqueued", "sent", "skipped", "pending", "dlq", "retries")
    dropped = sum(value for key, value in stats.items() if key.startswith("dropped_"))
    print("handler stats: " + " ".join(f"{key}={stats[key]}" for key in shown)
          + f" dropped={dropped}", file=stream)
    if stats["sent"] != total or report["events"] != total:
        print(f"warning: {report['events']} of {total} events reached the collector",
              file=stream)
        return 1
    return 0


def _workload(handler: NATTelemetryHandler, index: int, count: int) -> None:
    """One thread's share: ``count`` simulated commands, each reported as one event."""
    rng = random.Random(1000 + index)  # the same mix of outcomes on every run
    names = [(command, subcommand, work_ms) for command, subcommand, _, work_ms in _COMMANDS]
    weights = [weight for _, _, weight, _ in _COMMANDS]
    for _ in range(count):
        command, subcommand, work_ms = rng.choices(names, weights)[0]
        work = _simulated_work(rng, work_ms)
        try:
            # Exactly what an instrumented command line does; the outcome, the
            # exit code and the error class follow from how the block ends.
            with track_command(command, subcommand, handler=handler):
                work()
        except (KeyboardInterrupt, Exception):  # the simulated command's end, reported
            pass


def _simulated_work(rng: random.Random, work_ms: int) -> Callable[[], None]:
    seconds = rng.uniform(0.2, 1.5) * work_ms / 1000.0
    roll = rng.random()

    def work() -> None:
        time.sleep(seconds)
        if roll < 0.06:
            # Stands in for the user's Ctrl-C; track_command reports it as interrupted.
            raise KeyboardInterrupt
        if roll < 0.25:
            raise _ERRORS[int(roll * 100) % len(_ERRORS)]("simulated failure")

    return work


@contextlib.contextmanager
def _telemetry_on_for_this_process() -> Iterator[None]:
    """Telemetry on (and no dry run) while the demo runs; the previous state after.

    Assigning the attribute is what keeps the consent file unread:
    ``config`` only resolves ``TELEMETRY_ENABLED`` (reading the file) when it
    is read while unset.  ``vars()`` looks without triggering that.
    """
    settings = vars(config)
    previous_enabled = settings.get("TELEMETRY_ENABLED", _UNSET)
    previous_dry_run = config.NAT_TELEMETRY_DRY_RUN
    config.TELEMETRY_ENABLED = True
    config.NAT_TELEMETRY_DRY_RUN = False  # the demo posts to loopback only
    try:
        yield
    finally:
        config.NAT_TELEMETRY_DRY_RUN = previous_dry_run
        if previous_enabled is _UNSET:
            settings.pop("TELEMETRY_ENABLED", None)  # back to "resolve on first read"
        else:
            config.TELEMETRY_ENABLED = previous_enabled


@contextlib.contextmanager
def _loopback_without_proxy() -> Iterator[None]:
    """Keep an HTTP(S)_PROXY setting from routing the demo's POSTs away.

    ``requests`` sends even loopback URLs through a configured proxy unless
    ``NO_PROXY`` lists them, and a demo that fails on a laptop behind a
    corporate proxy teaches nothing.  Adds the loopback names while the demo
    runs, restores the variables after.
    """
    if not any(os.environ.get(name) for name in
               ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy")):
        yield
        return
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, current in saved.items():
        entries = [entry.strip() for entry in (current or "").split(",") if entry.strip()]
        entries += [host for host in ("127.0.0.1", "localhost", "::1") if host not in entries]
        os.environ[name] = ",".join(entries)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
