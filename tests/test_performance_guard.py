"""Guards against gross performance regressions, not timing tests.

The real figures come from ``python benchmarks/run.py``.  These checks only
fail when something is an order of magnitude off (or structurally wrong, like
``requests`` imported at import time), so a noisy shared machine cannot make
them flake: each ratio is a median of interleaved runs against a floor
measured in the same process, and the allowed factor is several times the
measured one.
"""

from __future__ import annotations

import dataclasses
import queue
import statistics
import subprocess
import sys
import time
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


def _ratio(measure: Callable[[], None], floor: Callable[[], None], calls: int = 20_000) -> float:
    def timed(function: Callable[[], None]) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            function()
        return time.perf_counter() - start

    ratios = [timed(measure) / timed(floor) for _ in range(5)]
    return statistics.median(ratios)


def test_enqueue_is_not_grossly_slower_than_a_bare_queue_put(monkeypatch: Any) -> None:
    from nat_telemetry.handler import NATTelemetryHandler

    monkeypatch.setattr(config, "TELEMETRY_ENABLED", True, raising=False)
    event = CliCommandEvent(**FIELDS)
    handler = NATTelemetryHandler(endpoint="", flush_interval_seconds=3600,
                                  max_queue_size=10**7, max_buffer_size=10**7)
    bare: queue.Queue[Any] = queue.Queue()
    try:
        ratio = _ratio(lambda: handler.enqueue(event), lambda: bare.put_nowait((event, 1.0)))
    finally:
        handler.stop(timeout=1)
    assert ratio < 10, f"enqueue is {ratio:.1f}× a bare Queue.put_nowait (benchmark: ~0.9×)"


def test_construction_is_not_grossly_slower_than_a_plain_dataclass() -> None:
    @dataclasses.dataclass
    class Plain:
        command: str
        subcommand: str
        task_status: str
        duration_ms: int
        exit_code: int
        python_version: str

    ratio = _ratio(lambda: CliCommandEvent(**FIELDS), lambda: Plain(**FIELDS))
    assert ratio < 25, f"construction is {ratio:.1f}× a plain dataclass (benchmark: ~4×)"


def test_model_dump_is_not_grossly_slower_than_a_dict_copy() -> None:
    event = CliCommandEvent(**FIELDS)
    wire = event.model_dump(by_alias=True)
    ratio = _ratio(lambda: event.model_dump(by_alias=True), lambda: dict(wire))
    assert ratio < 10, f"model_dump is {ratio:.1f}× a dict copy"
