"""What a fleet of command lines costs: many runs, a few at a time, one spool.

    python benchmarks/fleet_cost.py [--runs N] [--parallel P] [--repeats R] [--json PATH]

The way ``make -j8`` or a test suite runs a tool: ``--runs`` invocations (120)
of a tool whose only work is one ``track_command`` block, ``--parallel`` (8) at
a time, all with one shared spool and telemetry on, against a loopback
collector that answers.  The floor is the same fleet of a bare ``import sys``
script.  This process is the fleet's subreaper (``PR_SET_CHILD_SUBREAPER``), so
the detached senders the runs start are reparented to it when their run exits,
and every process is reaped here with ``wait4``: the CPU figures count every
process of the fleet, senders included.  Each row is the median of
``--repeats`` fleets, bare and tool alternating.

Reported per fleet: CPU per invocation (user + system of every process, divided
by the runs), processes started per invocation, the wall time of the runs
(first start to last exit), how long after the last run the last event arrived,
events delivered, duplicated and left in the spool, and whether any process of
ours was still alive when the fleet was done.  Linux only (the subreaper).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from cli_cost import clean_env, clean_interpreter, code_version, waiting_events

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nat_telemetry.collector import Collector  # noqa: E402  (this tree's, in this process)

PR_SET_CHILD_SUBREAPER = 36
# The goals, as ratios to the bare fleet of the same run.
GOALS = {"cpu": 1.5, "processes": 1.1, "wall": 1.3}
DELIVERY_WAIT = 15.0  # an event not there this long after the last run counts as late
SENDERS_WAIT = 40.0  # a sender lives 30 s at most, plus its watchdog's grace


class Fleet(NamedTuple):
    cpu_ms_per_run: float
    sender_cpu_ms: float  # of that, the senders' (summed, not per run)
    processes_per_run: float
    wall_s: float
    arrived_after_s: float | None  # the last event, after the last run exited
    delivered: int
    duplicates: int
    left: int
    alive_after: int  # processes of ours not gone when the fleet was done


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def spawn(python: str, script: Path, env: dict[str, str], subcommand: str) -> int:
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    return os.posix_spawn(python, [python, str(script), subcommand], env,
                          file_actions=devnull)


def run_fleet(python: str, script: Path, env: dict[str, str], runs: int, parallel: int,
              collector: Collector | None, spool: Path, tag: str) -> Fleet:
    running: set[int] = set()
    cpu = sender_cpu = 0.0
    processes = 0
    started = time.monotonic()
    next_run = 0
    while next_run < runs or running:
        while next_run < runs and len(running) < parallel:
            running.add(spawn(python, script, env, f"{tag}-{next_run}"))
            processes += 1
            next_run += 1
        pid, status, usage = os.wait4(-1, 0)
        cpu += usage.ru_utime + usage.ru_stime
        if pid in running:
            running.discard(pid)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"a run of {script.name} failed: status {status}")
        else:
            processes += 1  # a sender, reparented here when its run exited
            sender_cpu += usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - started
    last_exit = time.monotonic()
    arrived_after = None
    names: list[str] = []
    if collector is not None:
        deadline = last_exit + DELIVERY_WAIT
        while time.monotonic() < deadline:
            names = subcommands(collector, tag)
            if len(set(names)) >= runs:
                arrived_after = time.monotonic() - last_exit
                break
            time.sleep(0.02)
    # Every sender still alive is reaped here: its CPU counts too.
    deadline = time.monotonic() + SENDERS_WAIT
    alive = 0
    while time.monotonic() < deadline:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            alive = 1
            time.sleep(0.02)
            continue
        cpu += usage.ru_utime + usage.ru_stime
        sender_cpu += usage.ru_utime + usage.ru_stime
        processes += 1
    if collector is not None:
        names = subcommands(collector, tag)
    return Fleet(cpu * 1000 / runs, sender_cpu * 1000, processes / runs, wall, arrived_after,
                 len(set(names)), len(names) - len(set(names)),
                 waiting_events(spool) if spool.exists() else 0,
                 alive if time.monotonic() >= deadline else 0)


def subcommands(collector: Collector, tag: str) -> list[str]:
    """The subcommand of every stored event of the fleet ``tag``."""
    found = [str(row["parameters"].get("subcommand", "")) for row in collector.rows()]
    return [name for name in found if name.startswith(f"{tag}-")]


def median_fleet(fleets: list[Fleet]) -> Fleet:
    def med(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return Fleet(*(med([getattr(f, name) for f in fleets]) for name in Fleet._fields))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=120)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("the fleet benchmark needs Linux (a subreaper)")
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="nat-telemetry-fleet-") as scratch:
        folder = Path(scratch)
        python = clean_interpreter(args.python, folder / "venv")
        bare = folder / "bare.py"
        bare.write_text("import sys\n")
        tool = folder / "tool.py"
        tool.write_text("import sys\nfrom nat_telemetry import track_command\n\n"
                        "with track_command('tool', sys.argv[1]):\n    pass\n")
        home = folder / "home"
        collector = Collector(folder / "collector.db").start()  # threads of this process
        try:
            bare_fleets, tool_fleets = [], []
            for repeat in range(args.repeats):
                spool = folder / f"spool-{repeat}"
                env = clean_env(home, spool, {"NAT_TELEMETRY_ENABLED": "1",
                                              "NAT_TELEMETRY_ENDPOINT": collector.url})
                bare_fleets.append(run_fleet(python, bare, env, args.runs, args.parallel,
                                             None, spool, f"bare{repeat}"))
                tool_fleets.append(run_fleet(python, tool, env, args.runs, args.parallel,
                                             collector, spool, f"r{repeat}"))
        finally:
            collector.stop()
    floor, ours = median_fleet(bare_fleets), median_fleet(tool_fleets)
    ratios = {"cpu": ours.cpu_ms_per_run / floor.cpu_ms_per_run,
              "processes": ours.processes_per_run / floor.processes_per_run,
              "wall": ours.wall_s / floor.wall_s}
    print(f"{args.runs} runs, {args.parallel} at a time, one spool, endpoint answers; "
          f"medians of {args.repeats} fleets; code {code_version()}")
    print(f"{'':36}{'bare':>10}{'tool':>10}{'ratio':>8}   goal")
    rows = (("CPU per invocation, senders included", "cpu", "cpu_ms_per_run", "ms"),
            ("processes started per invocation", "processes", "processes_per_run", ""),
            ("wall time of the runs", "wall", "wall_s", "s"))
    for label, key, field, unit in rows:
        met = "met" if ratios[key] <= GOALS[key] else "NOT met"
        print(f"{label:36}{getattr(floor, field):>8.2f}{unit:<2}{getattr(ours, field):>8.2f}"
              f"{unit:<2}{ratios[key]:>6.2f}×   ≤ {GOALS[key]}×: {met}")
    arrived = "never" if ours.arrived_after_s is None else f"{ours.arrived_after_s:.2f} s"
    print(f"events: {ours.delivered} delivered of {args.runs}, {ours.duplicates} duplicated, "
          f"{ours.left} left in the spool; the last arrived {arrived} after the last run; "
          f"processes of ours alive after the fleet: {ours.alive_after}; the senders' CPU: "
          f"{ours.sender_cpu_ms:.0f} ms in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"bare": bare_fleets, "tool": tool_fleets,
                                               "ratios": ratios}, indent=2, default=list))
    return 0 if all(ratios[k] <= GOALS[k] for k in GOALS) else 1


if __name__ == "__main__":
    sys.exit(main())
