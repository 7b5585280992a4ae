"""Guards against gross performance regressions that count work, never time it.

The real figures (microseconds per call, ratios to a plain dataclass or a bare
``Queue.put_nowait``) come from ``python benchmarks/run.py``.  These checks
count what a call does instead: the modules an import loads, and the Python
functions and built-ins one hot-path call runs (``sys.setprofile``), so a
loaded machine cannot make them flake.  The bounds are about twice the counts
measured; they fail when a hot path starts doing something structurally more
(a validation again, a deep copy, an import, a thread).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import nat_telemetry
from nat_telemetry import CliCommandEvent, config

ROOT = Path(__file__).resolve().parents[1]

FIELDS: dict[str, Any] = dict(command="run", subcommand="list", task_status="success",
                              duration_ms=12, exit_code=0, python_version="3.11.7")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=str(ROOT), check=True, timeout=60)
    return set(result.stdout.split())


def test_import_loads_neither_requests_nor_the_submodules() -> None:
    added = _modules_after("import nat_telemetry") - _modules_after("pass")
    assert "requests" not in added
    assert "nat_telemetry.handler" not in added  # public names load on first use
    assert "typing" not in added  # the cheapest import is the one not made


def test_using_the_api_still_does_not_import_requests() -> None:
    loaded = _modules_after(
        "from nat_telemetry import CliCommandEvent, NATTelemetryHandler, track_command\n"
        "NATTelemetryHandler(endpoint='')"
    )
    assert "nat_telemetry.handler" in loaded
    assert "requests" not in loaded  # only the first POST imports it


def test_every_public_name_resolves() -> None:
    for name in nat_telemetry.__all__:
        assert getattr(nat_telemetry, name) is not None, name
    assert set(dir(nat_telemetry)) >= set(nat_telemetry.__all__)


class Work:
    """What the calls of one function did, per call, on this thread."""

    def __init__(self, function: Callable[[], Any], calls: int = 200) -> None:
        function()  # warm: first-use work (a lazy import, a worker started) is not counted
        imports_before = set(sys.modules)
        threads_before = threading.active_count()
        python, builtin = _counted(function, calls)
        # What counting itself adds (the calls of ``function``, of setprofile: which
        # of these a profiler sees differs between Python versions), counted the same way.
        idle_python, idle_builtin = _counted(_nothing, calls)
        self.python = (python - idle_python) / calls
        self.builtin = (builtin - idle_builtin) / calls
        self.imported = sorted(set(sys.modules) - imports_before)
        self.threads = threading.active_count() - threads_before


def _nothing() -> None:
    pass


def _counted(function: Callable[[], Any], calls: int) -> tuple[int, int]:
    """The Python function calls and built-in calls of ``calls`` calls of ``function``."""
    python = builtin = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal python, builtin
        if event == "call":
            python += 1
        elif event == "c_call":
            builtin += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        for _ in range(calls):
            function()
    finally:
        sys.setprofile(previous)
    return python, builtin


def test_work_counting_sees_work() -> None:
    # The measure itself: one nested Python function and five built-in calls a call,
    # nothing for the measured function itself.
    def nested() -> None:
        for _ in range(5):
            len(FIELDS)

    def outer() -> None:
        nested()

    work = Work(outer)
    assert (work.python, work.builtin, work.imported, work.threads) == (1.0, 5.0, [], 0)


def test_enqueue_does_a_handful_of_calls(monkeypatch: Any) -> None:
    from nat_telemetry.handler import NATTelemetryHandler

    monkeypatch.setattr(config, "TELEMETRY_ENABLED", True, raising=False)
    event = CliCommandEvent(**FIELDS)
    handler = NATTelemetryHandler(endpoint="", flush_interval_seconds=3600,
                                  max_queue_size=10**7, max_buffer_size=10**7)
    try:
        work = Work(lambda: handler.enqueue(event))
    finally:
        handler.stop(timeout=1)
    # Measured: 5 Python functions and 8 built-ins a call (benchmark: ~0.9x a Queue.put).
    assert work.python <= 10, f"enqueue runs {work.python:.1f} Python functions a call"
    assert work.builtin <= 16, f"enqueue makes {work.builtin:.1f} built-in calls a call"
    assert (work.imported, work.threads) == ([], 0)  # nothing loaded, nothing started


def test_construction_runs_about_one_check_per_field() -> None:
    # Measured: the constructor and one check per field (benchmark: ~4x a plain dataclass).
    work = Work(lambda: CliCommandEvent(**FIELDS))
    assert work.python <= 2 * len(FIELDS) + 2, (
        f"construction runs {work.python:.1f} Python functions a call")
    assert work.builtin <= 2 * len(FIELDS), f"{work.builtin:.1f} built-in calls a call"
    assert work.imported == []


def test_model_dump_runs_no_function_per_field() -> None:
    event = CliCommandEvent(**FIELDS)
    # Measured: model_dump and the one generated function it calls, no built-in.
    work = Work(lambda: event.model_dump(by_alias=True))
    assert work.python <= 4, f"model_dump runs {work.python:.1f} Python functions a call"
    assert work.builtin <= 2, f"model_dump makes {work.builtin:.1f} built-in calls a call"
    assert work.imported == []
