"""Benchmarks: what telemetry costs the host, each figure against a floor.

    python benchmarks/run.py [--quick] [--json PATH]

Every figure is the median of several repeats, and is printed next to a floor
measured in the same run, interleaved with it, so a busy machine slows both:
the ratio is the number to read, the absolute value is context.

What telemetry adds to a whole command line invocation (bare interpreter
against a ``track_command`` script, per endpoint behaviour, and offline
delivery) is measured by ``benchmarks/cli_cost.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nat_telemetry import (  # noqa: E402
    CliCommandEvent,
    NATTelemetryHandler,
    QueuedEvent,
    build_payload,
    config,
)

FIELDS = dict(command="run", subcommand="list-components", task_status="success",
              duration_ms=12, exit_code=0, error_class="undefined", python_version="3.11.7")


@dataclasses.dataclass
class PlainEvent:
    """The floor for construction: the same fields, no validation."""

    command: str
    subcommand: str
    task_status: str
    duration_ms: int
    exit_code: int
    error_class: str
    python_version: str
    nemo_source: str = "agent_toolkit"


@dataclasses.dataclass
class Row:
    name: str
    value: float
    unit: str
    floor_name: str
    floor: float
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.floor if self.floor else float("nan")


def per_call_us(function: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def paired(measure: Callable[[], float], floor: Callable[[], float],
           repeats: int) -> tuple[float, float]:
    """Medians of ``measure`` and ``floor``, run alternately ``repeats`` times."""
    values, floors = [], []
    for _ in range(repeats):
        values.append(measure())
        floors.append(floor())
    return statistics.median(values), statistics.median(floors)


# ----------------------------------------------------------------- hot paths

def bench_construction(calls: int, repeats: int) -> Row:
    value, floor = paired(lambda: per_call_us(lambda: CliCommandEvent(**FIELDS), calls),
                          lambda: per_call_us(lambda: PlainEvent(**FIELDS), calls), repeats)
    return Row("event construction + validation", value, "µs/event",
               "plain dataclass", floor, "≤ 2 µs")


def bench_model_dump(calls: int, repeats: int) -> Row:
    plain = PlainEvent(**FIELDS)

    def plain_dump() -> dict[str, Any]:
        return {"nemoSource": plain.nemo_source, "command": plain.command,
                "subcommand": plain.subcommand, "taskStatus": plain.task_status,
                "durationMs": plain.duration_ms, "exitCode": plain.exit_code,
                "errorClass": plain.error_class, "pythonVersion": plain.python_version}

    event = CliCommandEvent(**FIELDS)
    value, floor = paired(lambda: per_call_us(lambda: event.model_dump(by_alias=True), calls),
                          lambda: per_call_us(plain_dump, calls), repeats)
    return Row("model_dump(by_alias=True)", value, "µs/call", "dict literal from attributes",
               floor, "≤ 1 µs")


def bench_build_payload(calls: int, repeats: int) -> Row:
    now = datetime.now(timezone.utc)
    batch = [QueuedEvent(CliCommandEvent(**FIELDS), now) for _ in range(50)]
    parameters = [q.event.model_dump(by_alias=True) for q in batch]

    def floor_envelope() -> dict[str, Any]:
        return {"sessionId": "x", "events": [
            {"ts": "2026-01-01T00:00:00.000Z", "parameters": dict(p), "name": "nat_cli_command"}
            for p in parameters]}

    value, floor = paired(
        lambda: per_call_us(lambda: build_payload(batch, source_client_version="1"), calls),
        lambda: per_call_us(floor_envelope, calls), repeats)
    return Row("build_payload, 50 events", value, "µs/batch",
               "list of 50 pre-dumped dicts", floor)


def _quiet_handler(buffer: int) -> NATTelemetryHandler:
    # No endpoint and no early flush: the worker stays asleep, so the figure is
    # the producer's cost alone.
    return NATTelemetryHandler(endpoint="", flush_interval_seconds=3600,
                               max_queue_size=buffer + 1, max_buffer_size=buffer)


def bench_enqueue(calls: int, repeats: int) -> Row:
    event = CliCommandEvent(**FIELDS)

    def measure() -> float:
        handler = _quiet_handler(calls + 1)
        handler.enqueue(event)  # starts the worker outside the timed loop
        try:
            return per_call_us(lambda: handler.enqueue(event), calls)
        finally:
            handler.stop(timeout=0)

    def floor() -> float:
        bare: queue.Queue[Any] = queue.Queue()
        return per_call_us(lambda: bare.put_nowait((event, 1.0)), calls)

    value, floor_value = paired(measure, floor, repeats)
    return Row("enqueue()", value, "µs/call", "Queue.put_nowait(tuple)", floor_value, "≤ 1.3×")


def bench_threads(threads: int, calls: int, repeats: int) -> Row:
    event = CliCommandEvent(**FIELDS)
    per_thread = calls // threads

    def run(target: Callable[[], None]) -> float:
        barrier = threading.Barrier(threads + 1)

        def producer() -> None:
            barrier.wait()
            for _ in range(per_thread):
                target()

        workers = [threading.Thread(target=producer) for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        return per_thread * threads / (time.perf_counter() - start)

    def measure() -> float:
        handler = _quiet_handler(calls + 1)
        handler.enqueue(event)
        try:
            return run(lambda: handler.enqueue(event))
        finally:
            handler.stop(timeout=0)

    def floor() -> float:
        bare: queue.Queue[Any] = queue.Queue()
        return run(lambda: bare.put_nowait((event, 1.0)))

    value, floor_value = paired(measure, floor, repeats)
    return Row(f"enqueue throughput, {threads} thread(s)", value, "events/s",
               "Queue.put_nowait(tuple)", floor_value)


# ------------------------------------------------------------- end to end

class CollectorProcess:
    """``nat-telemetry collect`` in its own process, as a real ingest would be.

    In-process, the collector's threads would share the client's interpreter
    lock, and every microsecond the client spends would be taken from them.
    """

    def __init__(self, folder: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nat_telemetry", "collect", "--port", "0",
             "--db", os.path.join(folder, "bench.db")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = next(word for word in line.split() if word.startswith("http://"))

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def bench_end_to_end(events: int, repeats: int) -> Row:
    import requests

    event = CliCommandEvent(**FIELDS)
    now = datetime.now(timezone.utc)
    body = json.dumps(build_payload([QueuedEvent(event, now) for _ in range(50)],
                                    source_client_version="bench"),
                      separators=(",", ":")).encode()
    with tempfile.TemporaryDirectory() as folder, CollectorProcess(folder) as collector:
        def measure() -> float:
            handler = NATTelemetryHandler(endpoint=collector.url, max_queue_size=50,
                                          max_batch_size=50, flush_interval_seconds=3600,
                                          max_buffer_size=events + 1)
            start = time.perf_counter()
            for _ in range(events):
                handler.enqueue(event)
            handler.flush(timeout=120)
            elapsed = time.perf_counter() - start
            sent = handler.stats()["sent"]
            handler.stop(timeout=1)
            if sent != events:
                raise RuntimeError(f"only {sent} of {events} events delivered")
            return events / elapsed

        def floor() -> float:
            session = requests.Session()
            posts = events // 50
            start = time.perf_counter()
            for _ in range(posts):
                reply = session.post(collector.url, data=body, timeout=10,
                                     headers={"Content-Type": "application/json"})
                reply.raise_for_status()
            elapsed = time.perf_counter() - start
            session.close()
            return posts * 50 / elapsed

        value, floor_value = paired(measure, floor, repeats)
    return Row("end to end to the loopback collector (batches of 50)", value, "events/s",
               "bare requests POSTs of the same batches", floor_value, "≥ 20,000/s")


# ------------------------------------------------------------ whole process

def run_python(code: str, *args: str) -> float:
    """Wall time of a fresh interpreter running ``code``, in milliseconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, cwd=str(ROOT),
                   stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


IMPORT_CHECK = "import sys, nat_telemetry; sys.exit(3 if 'requests' in sys.modules else 0)"
IMPORT_API = ("from nat_telemetry import CliCommandEvent, NATTelemetryHandler, "
              "track_command")


def bench_import(repeats: int) -> list[Row]:
    rows = []
    for label, code in (("import nat_telemetry", IMPORT_CHECK),
                        ("from nat_telemetry import CliCommandEvent, NATTelemetryHandler, "
                         "track_command", IMPORT_API)):
        value, floor = paired(lambda code=code: run_python(code),  # type: ignore[misc]
                              lambda: run_python("pass"), repeats)
        rows.append(Row(f"{label} (fresh interpreter)", value, "ms", "python -c pass", floor,
                        "≤ +15 ms" if code is IMPORT_CHECK else ""))
    return rows


EXIT_SCRIPT = """
import sys
from nat_telemetry import CliCommandEvent, NATTelemetryHandler, config
config.TELEMETRY_ENABLED = True
handler = NATTelemetryHandler(endpoint=sys.argv[1])
handler.enqueue(CliCommandEvent(command="run", task_status="success", python_version="3.11.7"))
"""


def bench_exit(repeats: int) -> list[Row]:
    # The floors: a bare interpreter, and the same script with no endpoint (it
    # builds and counts the event but sends nothing), whose difference from
    # the real runs is the time spent on the network at exit.
    bare = lambda: run_python("pass")  # noqa: E731
    silent = lambda: run_python(EXIT_SCRIPT, "")  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as folder, CollectorProcess(folder) as collector:
        value, floor = paired(lambda: run_python(EXIT_SCRIPT, collector.url), bare, repeats)
    rows.append(Row("enqueue one event and exit, responsive collector", value, "ms",
                    "python -c pass", floor, "≤ +150 ms"))

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    url = f"http://127.0.0.1:{hole.getsockname()[1]}/"
    try:
        value, floor = paired(lambda: run_python(EXIT_SCRIPT, url), silent, max(3, repeats // 3))
    finally:
        hole.close()
    rows.append(Row("enqueue one event and exit, endpoint never answers", value, "ms",
                    "same script, no endpoint", floor, "≤ +2,000 ms (shutdown bound)"))
    return rows


# ---------------------------------------------------------------- report

def render(rows: list[Row]) -> str:
    header = ("figure", "value", "unit", "floor", "ratio", "target")
    table = [header] + [
        (r.name, f"{r.value:,.3f}" if r.value < 100 else f"{r.value:,.0f}", r.unit,
         f"{r.floor_name}: " + (f"{r.floor:,.3f}" if r.floor < 100 else f"{r.floor:,.0f}"),
         f"{r.ratio:.2f}×", r.target)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    calls, repeats = (20_000, 5) if args.quick else (100_000, 9)
    config.TELEMETRY_ENABLED = True  # this process only; no consent file is read or written

    rows: list[Row] = [bench_construction(calls, repeats)]
    rows.append(bench_model_dump(calls, repeats))
    rows.append(bench_build_payload(max(100, calls // 100), repeats))
    rows.append(bench_enqueue(calls, repeats))
    for threads in (1, 4, 16):
        rows.append(bench_threads(threads, calls * 2, max(3, repeats // 2)))
    rows.append(bench_end_to_end(10_000 if args.quick else 50_000, max(3, repeats // 3)))
    rows += bench_import(20 if args.quick else 40)
    rows += bench_exit(5 if args.quick else 9)

    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPU(s); medians of repeats\n")
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
