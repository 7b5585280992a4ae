"""What telemetry costs a command line tool: whole-process wall time against a bare interpreter.

    python benchmarks/cli_cost.py [--quick] [--pairs N] [--importtime] [--json PATH]

The tool is a script whose only work is one ``with track_command("tool", "x"):
pass`` block; the floor is a script that does ``import sys``.  Each row runs
them alternately (bare, tool, bare, tool, ...) after a few warm-up pairs and
reports the medians, the ratio of the two medians and their difference in ms:
a busy machine slows both, so the ratio from the same row is the figure to
read.  The rows: telemetry disabled by ``NAT_TELEMETRY_ENABLED=0``, by nobody
ever having answered (no consent file: the default) and by a consent file
saying "disabled"; enabled (by the variable) with a loopback collector that
answers, and the same enabled by a consent file instead; enabled against a
refused port; enabled against a socket that accepts and never answers; and
whether an event recorded while the endpoint was down reaches it after it
comes back, sent by a later run.  The consent-file rows use the file this
project writes (``nat-telemetry enable``/``disable``), in the run's
``$XDG_CONFIG_HOME``; they are not measured for the original package.

Every run is a fresh process in a scrubbed environment (scratch HOME and XDG
folders, no proxies, no CI or DO_NOT_TRACK variables, no PYTHON* variables but
PYTHONPATH), stdin on /dev/null and stdout/stderr captured: a run that leaves
a descriptor to a detached process would not return, and fails here.  Each
tool run gets a new, empty spool folder, as a user's spool usually is.  The
detached sender a run starts is awaited (up to ``--settle`` seconds) before
the next run; senders still alive then are idle (sleeping between retries, or
waiting on a silent socket, at low priority), are counted in the output, and
are all awaited before the next row.  Each enabled row accounts for every
run's event: delivered to the collector, waiting in a spool, or lost.

The interpreter timed is, by default, a venv made from ``--python`` without
the system site-packages, which it still sees through a plain path line in a
``.pth`` file: the packages are importable, but the ``.pth`` files of the
base site-packages do not run (on some machines one imports ``certifi``, and
with it ``pathlib``, ``tempfile``, ``re``..., at every start, which would
double the floor and give the tool those modules for free).  ``--as-is``
times ``--python`` itself.

``--importtime`` adds, for the disabled and the enabled path, the modules the
tool imports that a bare interpreter does not (``python -X importtime``,
medians of several runs), by self time, and the top-level imports by
cumulative time.  Each row is measured for ``track_command`` and for a tool's
own ``ToolTelemetry(...).track_command``; the original package
(``nvidia-nat-core``) is measured too when it is installed; it is detected,
never installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nat_telemetry.config import CI_ENV_VARS  # noqa: E402
from nat_telemetry.consent import write_persisted_consent  # noqa: E402
from nat_telemetry.spool import Spool  # noqa: E402

# (ratio to bare, added milliseconds): issue 12's goals on this kind of machine.
GOALS = {"disabled": (1.3, 3.0), "enabled": (1.8, 10.0)}
RUN_TIMEOUT = 15.0  # a run that takes this long held a descriptor or hung: a failure
SENDER_START_WAIT = 3.0  # a spooled batch and no sender after this: none was started
ROW_END_WAIT = 45.0  # a sender lives 30 s, plus its watchdog's grace
ORIGINAL_DIST = "nvidia-nat-core"
ORIGINAL_IMPORT = "from nat.utils.telemetry import track_command"
OURS_IMPORT = "from nat_telemetry import track_command"
PROXY_VARS = {"http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy"}
ROWS = (("disabled", "disabled by NAT_TELEMETRY_ENABLED=0"),
        ("never_asked", "disabled: never asked (no consent file)"),
        ("file_disabled", "disabled by the consent file"),
        ("answers", "enabled, endpoint answers"),
        ("file_answers", "enabled by the consent file, endpoint answers"),
        ("refused", "enabled, connection refused"),
        ("silent", "enabled, endpoint accepts and never answers"))
DISABLED_ROWS = frozenset({"disabled", "never_asked", "file_disabled"})
# The rows whose decision is a consent file, and what it says.
CONSENT_FILES = {"file_disabled": "disabled", "file_answers": "enabled"}


class Subject(NamedTuple):
    name: str
    import_line: str
    ours: bool = False  # reads this project's consent file


# A tool embedding the package: its own Tool, read from the same NAT_TELEMETRY_*
# variables and nat/ folders as the rows set up, so every row applies.
TOOL_IMPORT = ('from nat_telemetry import ToolTelemetry\n'
               'track_command = ToolTelemetry("nat", version="1.0").track_command')


def tool_script(subject: Subject, subcommand: str = "x") -> str:
    return f'{subject.import_line}\n\nwith track_command("tool", "{subcommand}"):\n    pass\n'


# ---------------------------------------------------------------- processes

def write_consent_file(scratch: Path, state: str) -> None:
    """The consent file ``nat-telemetry enable``/``disable`` writes, where a run
    given ``clean_env(scratch, ...)`` looks for it."""
    path = scratch / "config" / "nat" / "telemetry.toml"
    if not write_persisted_consent(state, path):
        raise RunFailed(f"could not write the consent file {path}")


def clean_env(scratch: Path, spool: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without what changes the outcome, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if key not in CI_ENV_VARS and key != "DO_NOT_TRACK"
           and key.lower() not in PROXY_VARS
           and not key.startswith(("NAT_", "PYTHON", "XDG_"))}
    env.update(HOME=str(scratch), XDG_CONFIG_HOME=str(scratch / "config"),
               XDG_STATE_HOME=str(scratch / "state"), XDG_CACHE_HOME=str(scratch / "cache"),
               PYTHONPATH=str(ROOT), NAT_TELEMETRY_SPOOL_DIR=str(spool))
    env.update(extra)
    return env


class RunFailed(Exception):
    pass


def timed_run(python: str, script: Path, env: dict[str, str]) -> float:
    """Wall time of ``python script`` until it exited and closed its pipes, in ms."""
    start = time.perf_counter()
    try:
        done = subprocess.run([python, str(script)], env=env, cwd=str(script.parent),
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=RUN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{script.name} did not return within {RUN_TIMEOUT:.0f} s "
                        "(a descriptor held by a child?)") from None
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0 or done.stderr:  # telemetry must print nothing
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RunFailed(f"{script.name} exited {done.returncode}: {' '.join(tail)}")
    return elapsed


class Collector:
    """``nat-telemetry collect`` in a process of its own, on loopback."""

    def __init__(self, python: str, env: dict[str, str], db: Path, port: int = 0) -> None:
        self.db = db
        self.process = subprocess.Popen(
            [python, "-m", "nat_telemetry", "collect", "--host", "127.0.0.1",
             "--port", str(port), "--db", str(db)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=str(db.parent))
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 15.0)
        line = self.process.stdout.readline() if ready else ""
        urls = [word for word in line.split() if word.startswith("http://")]
        if not urls:
            self.close()
            raise RunFailed(f"the collector did not start on port {port}")
        self.url = urls[0]

    def subcommands(self) -> list[str]:
        """The subcommand of every event stored so far."""
        with contextlib.closing(sqlite3.connect(str(self.db), timeout=1.0)) as db:
            rows = db.execute("SELECT parameters FROM events").fetchall()
        return [json.loads(row[0]).get("subcommand", "") for row in rows]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class SilentEndpoint:
    """A loopback socket that accepts connections and never reads or answers."""

    def __init__(self, limit: int = 1000) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1.1/events/json"
        self.held: list[socket.socket] = []
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set() and len(self.held) < self._limit:
            try:
                self.held.append(self.sock.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for sock in [*self.held, self.sock]:
            sock.close()


def refused_port() -> socket.socket:
    """A loopback port bound and not listening: connections are refused, and
    nobody else can take the port while the socket stays open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def clean_interpreter(python: str, folder: Path) -> str:
    """A venv of ``python`` seeing the base site-packages without running its .pth files."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    subprocess.run([python, "-m", "venv", "--without-pip", str(folder)], env=env,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=True)
    ask = "import sysconfig as s; print(s.get_path('purelib')); print(s.get_path('platlib'))"
    bases = subprocess.run([python, "-c", ask], env=env, capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    venv_python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    own = subprocess.run([str(venv_python), "-c", ask], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()[0]
    # A path line only adds the folder: the .pth files inside it are not processed.
    Path(own, "base-site-packages.pth").write_text("\n".join(dict.fromkeys(bases)) + "\n")
    return str(venv_python)


# ------------------------------------------------------------- the senders

def _flock_inodes() -> set[int] | None:
    """Inodes with an flock held on them (Linux), or None where it cannot be read."""
    try:
        with open("/proc/locks") as locks:
            fields = [line.split() for line in locks]
    except OSError:
        return None
    return {int(row[5].rsplit(":", 1)[1]) for row in fields if len(row) > 5 and "FLOCK" in row}


def waiting_events(spool: Path) -> int:
    """Events waiting in ``spool``, whatever their destination."""
    return sum(events for _, events, _, _ in Spool(str(spool)).summary().values())


def sender_state(spool: Path) -> str:
    """``none`` (nothing spooled, no sender), ``pending`` (spooled, no sender yet),
    ``running`` or ``done``.  Reads /proc/locks rather than trying a lock:
    holding it even briefly could turn a starting sender away."""
    locks = list(spool.glob("*.lock")) if spool.is_dir() else []
    held = _flock_inodes()
    waiting = waiting_events(spool)
    if held is None:  # no /proc/locks: the batches are what is left to watch
        return "running" if waiting else ("done" if locks else "none")
    inodes = set()
    for lock in locks:
        try:
            inodes.add(os.stat(lock).st_ino)
        except OSError:
            pass
    if inodes & held:
        return "running"
    return "pending" if waiting else ("done" if locks else "none")


def wait_sender(spool: Path, seconds: float) -> tuple[str, float]:
    """Poll until no sender runs for ``spool``, up to ``seconds`` for a running one
    and SENDER_START_WAIT for one not started yet: (last state, seconds waited)."""
    start = time.monotonic()
    while True:
        state, waited = sender_state(spool), time.monotonic() - start
        if (state in ("none", "done") or (state == "pending" and waited > SENDER_START_WAIT)
                or (state == "running" and waited > seconds)):
            return state, waited
        time.sleep(0.02)


# --------------------------------------------------------------- the rows

class Row(NamedTuple):
    key: str
    bare: list[float]
    tool: list[float]
    notes: list[str]

    @property
    def ratio(self) -> float:
        return statistics.median(self.tool) / statistics.median(self.bare)

    @property
    def added_ms(self) -> float:
        return statistics.median(self.tool) - statistics.median(self.bare)


def measure_row(key: str, python: str, folder: Path, scripts: tuple[Path, Path],
                extra: dict[str, str], pairs: int, warmup: int, settle: float,
                collector: Collector | None = None, consent: str | None = None) -> Row:
    bare_script, tool_script_path = scripts
    home, spools = folder / "home", folder / "spool"
    spools.mkdir(parents=True, mode=0o700)
    if consent is not None:
        write_consent_file(home, consent)
    # The collector is shared by rows: count only what this row delivers.
    before = collector.subcommands().count("x") if collector is not None else 0
    bare: list[float] = []
    tool: list[float] = []
    senders: list[Path] = []
    sender_times: list[float] = []
    outlived = no_sender = 0
    for index in range(warmup + pairs):
        spool = spools / f"run-{index:03d}"  # a new, empty spool for every run
        env = clean_env(home, spool, extra)
        bare_ms = timed_run(python, bare_script, env)
        tool_ms = timed_run(python, tool_script_path, env)
        state, waited = wait_sender(spool, settle)
        if state in ("running", "done"):
            senders.append(spool)
            if state == "running":
                outlived += 1
            else:
                sender_times.append(waited)
        elif state == "pending":
            no_sender += 1
        if index >= warmup:
            bare.append(bare_ms)
            tool.append(tool_ms)
    notes = []
    if key in DISABLED_ROWS:
        touched = sum(1 for path in spools.iterdir())
        notes.append("spool untouched" if not touched else f"spool created by {touched} runs!")
    if sender_times:
        notes.append(f"{len(sender_times)} sender(s) done a median "
                     f"{statistics.median(sender_times):.2f} s after the run returned")
    if outlived:
        notes.append(f"{outlived} sender(s) still alive {settle:g} s after their run "
                     "(idle, ran alongside later runs)")
    if no_sender:
        notes.append(f"{no_sender} run(s) spooled and started no sender")
    row_end = time.monotonic() + ROW_END_WAIT  # one bound for all of the row's senders
    lingering = [spool for spool in senders
                 if wait_sender(spool, row_end - time.monotonic())[0] == "running"]
    if lingering:
        notes.append(f"{len(lingering)} sender(s) still alive {ROW_END_WAIT:.0f} s after the row")
    if key not in DISABLED_ROWS:  # where every run's event went: a silent loss shows here
        runs = warmup + pairs
        stored = collector.subcommands().count("x") - before if collector is not None else 0
        waiting = sum(waiting_events(spool) for spool in spools.iterdir())
        lost = runs - stored - waiting
        notes.append(f"of {runs} events {stored} delivered, {waiting} waiting in spools"
                     + (f", {lost} LOST" if lost > 0 else ""))
    return Row(key, bare, tool, notes)


def offline_check(python: str, subject: Subject, folder: Path,
                  within: float) -> tuple[bool, str, str]:
    """Record an event against a refused port, let its sender give up, bring the
    endpoint up, run once more: does the first event arrive, and when?"""
    scripts = {}
    for name in ("offline", "online"):
        scripts[name] = folder / f"tool_{name}.py"
        scripts[name].write_text(tool_script(subject, name))
    spool, home = folder / "spool", folder / "home"
    reserved = refused_port()
    port = reserved.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1.1/events/json"
    enabled = {"NAT_TELEMETRY_ENABLED": "1"}
    offline_ms = timed_run(python, scripts["offline"],
                           clean_env(home, spool, {**enabled, "NAT_TELEMETRY_ENDPOINT": url}))
    state, waited = wait_sender(spool, ROW_END_WAIT)
    spooled = waiting_events(spool)
    reserved.close()
    env = clean_env(home, spool, {})
    try:
        collector = Collector(python, env, folder / "collector.db", port)
    except RunFailed:  # the port was taken meanwhile: the same check on another one
        collector = Collector(python, env, folder / "collector.db")
    try:
        online_ms = timed_run(python, scripts["online"], clean_env(
            home, spool, {**enabled, "NAT_TELEMETRY_ENDPOINT": collector.url}))
        returned = time.monotonic()
        seen: dict[str, float] = {}
        while time.monotonic() - returned < within and len(seen) < 2:
            for name in collector.subcommands():
                seen.setdefault(name, time.monotonic() - returned)
            time.sleep(0.05)
    finally:
        wait_sender(spool, ROW_END_WAIT)
        collector.close()
    found = {name: f"{seconds:.2f} s" for name, seconds in seen.items()}
    verdict = (f"arrived {found['offline']} after a later run"
               if "offline" in found else f"NOT arrived within {within:g} s")
    return ("offline" in found, verdict,
            f"offline run {offline_ms:.0f} ms, its sender {state} after {waited:.1f} s "
            f"leaving {spooled} event(s) spooled; collector started; later run "
            f"{online_ms:.0f} ms, its own event arrived "
            f"{found.get('online', f'not within {within:g} s')} after it exited")


def write_scripts(folder: Path, subject: Subject) -> tuple[Path, Path]:
    """The bare interpreter's script and the tool's, in a new ``folder``."""
    folder.mkdir()
    bare, tool = folder / "bare.py", folder / "tool.py"
    bare.write_text("import sys\n")
    tool.write_text(tool_script(subject))
    return bare, tool


def measure_subject(subject: Subject, python: str, folder: Path, pairs: int,
                    warmup: int, settle: float,
                    within: float) -> tuple[list[Row], tuple[bool, str, str]]:
    bare, tool = write_scripts(folder, subject)
    rows = []
    collector = Collector(python, clean_env(folder, folder, {}), folder / "collector.db")
    silent = SilentEndpoint()
    refused = refused_port()
    try:
        endpoints = {"answers": collector.url, "silent": silent.url,
                     "refused": f"http://127.0.0.1:{refused.getsockname()[1]}/v1.1/events/json"}
        endpoints["file_answers"] = collector.url
        for key, _label in ROWS:
            if key in CONSENT_FILES and not subject.ours:
                rows.append(Row(key, [], [], ["not measured: a consent file of this project"]))
                continue
            if key == "disabled":
                extra = {"NAT_TELEMETRY_ENABLED": "0"}
            elif key in DISABLED_ROWS:
                extra = {}
            elif key in CONSENT_FILES:
                extra = {"NAT_TELEMETRY_ENDPOINT": endpoints[key]}
            else:
                extra = {"NAT_TELEMETRY_ENABLED": "1", "NAT_TELEMETRY_ENDPOINT": endpoints[key]}
            print(f"  {subject.name}: {key} ...", file=sys.stderr, flush=True)
            try:
                rows.append(measure_row(
                    key, python, folder / key, (bare, tool), extra, pairs, warmup, settle,
                    collector if endpoints.get(key) == collector.url else None,
                    CONSENT_FILES.get(key)))
            except RunFailed as exc:
                rows.append(Row(key, [], [], [f"FAILED: {exc}"]))
    finally:
        collector.close()
        silent.close()
        refused.close()
    print(f"  {subject.name}: offline, then online ...", file=sys.stderr, flush=True)
    (folder / "offline").mkdir()
    try:
        return rows, offline_check(python, subject, folder / "offline", within)
    except RunFailed as exc:
        return rows, (False, "FAILED", str(exc))


# -------------------------------------------------------------- importtime

def importtime(python: str, subject: Subject, folder: Path, runs: int,
               top: int) -> list[str]:
    """The modules the tool imports and a bare interpreter does not, per path."""
    bare, tool = write_scripts(folder, subject)
    lines = []
    collector = Collector(python, clean_env(folder, folder, {}), folder / "collector.db")
    try:
        paths: list[tuple[str, Path, dict[str, str], str | None]] = [
            ("disabled", bare, {"NAT_TELEMETRY_ENABLED": "0"}, None),
            ("disabled by NAT_TELEMETRY_ENABLED=0", tool, {"NAT_TELEMETRY_ENABLED": "0"}, None)]
        if subject.import_line == OURS_IMPORT:
            paths += [("disabled: never asked (no consent file)", tool, {}, None),
                      ("disabled by the consent file", tool, {}, "disabled")]
        paths.append(("enabled, endpoint answers", tool,
                      {"NAT_TELEMETRY_ENABLED": "1", "NAT_TELEMETRY_ENDPOINT": collector.url},
                      None))
        baseline: set[str] = set()
        for index, (label, script, extra, consent) in enumerate(paths):
            samples: dict[str, tuple[int, list[int], list[int]]] = {}
            home = folder / f"home-{index}"  # a consent file of its own, or none
            if consent is not None:
                write_consent_file(home, consent)
            for run in range(runs):
                spool = folder / f"spool-{index}-{run}"
                stderr = _importtime_run(python, script, clean_env(home, spool, extra))
                for depth, name, own, total in stderr:
                    entry = samples.setdefault(name, (depth, [], []))
                    entry[1].append(own)
                    entry[2].append(total)
                wait_sender(spool, ROW_END_WAIT)
            if script is bare:
                baseline = set(samples)
                continue
            lines += _render_importtime(subject, label, samples, baseline, runs, top)
    finally:
        collector.close()
    return lines


def _importtime_run(python: str, script: Path,
                    env: dict[str, str]) -> list[tuple[int, str, int, int]]:
    done = subprocess.run([python, "-X", "importtime", str(script)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=True, cwd=str(script.parent))
    found = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "self" in parts[0]:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        found.append((depth, name.strip(), int(parts[0].split(":")[1]), int(parts[1])))
    return found


def _render_importtime(subject: Subject, label: str,
                       samples: dict[str, tuple[int, list[int], list[int]]],
                       baseline: set[str], runs: int, top: int) -> list[str]:
    added = {name: (depth, statistics.median(own), statistics.median(total))
             for name, (depth, own, total) in samples.items() if name not in baseline}
    total_self = sum(own for _, own, _ in added.values())
    lines = [f"\n{subject.name}, {label}: {len(added)} modules a bare interpreter does not "
             f"import, {total_self / 1000:.1f} ms of self time (medians of {runs} runs)",
             f"  {'self µs':>8}  {'cumul. µs':>9}  module (top {top} by self time)"]
    by_self = sorted(added.items(), key=lambda item: -item[1][1])[:top]
    lines += [f"  {own:>8.0f}  {total:>9.0f}  {name}" for name, (_, own, total) in by_self]
    lines.append("  top-level imports (depth 0) by cumulative time:")
    roots = sorted(((name, v) for name, v in added.items() if v[0] == 0),
                   key=lambda item: -item[1][2])[:top]
    lines += [f"  {own:>8.0f}  {total:>9.0f}  {name}" for name, (_, own, total) in roots]
    return lines


# ------------------------------------------------------------------ report

def _goal(key: str) -> tuple[float, float]:
    return GOALS["disabled" if key in DISABLED_ROWS else "enabled"]


def render(results: dict[str, tuple[list[Row], tuple[bool, str, str]]]) -> list[str]:
    lines = []
    labels = dict(ROWS)
    for name, (rows, (arrived, verdict, details)) in results.items():
        header = f"{name:46}{'bare ms':>8}{'tool ms':>9}{'ratio':>8}{'added ms':>10}   goal"
        lines += ["", header, "-" * (len(header) + 30)]
        for row in rows:
            if not row.tool:
                lines.append(f"{labels[row.key]:46}{'; '.join(row.notes)}")
                continue
            max_ratio, max_ms = _goal(row.key)
            met = row.ratio <= max_ratio and row.added_ms <= max_ms
            lines.append(
                f"{labels[row.key]:46}{statistics.median(row.bare):8.1f}"
                f"{statistics.median(row.tool):9.1f}{row.ratio:7.2f}×{row.added_ms:+10.1f}"
                f"   ≤ {max_ratio}× and ≤ +{max_ms:g} ms: {'met' if met else 'NOT met'}")
            bare_iqr, tool_iqr = _iqr(row.bare), _iqr(row.tool)
            noisy = bare_iqr > 0.15 * statistics.median(row.bare)
            lines.append(f"    IQR bare {bare_iqr:.1f}, tool {tool_iqr:.1f} ms"
                         f"{' (noisy: the machine was busy, rerun)' if noisy else ''}; "
                         + "; ".join(row.notes))
        lines.append(f"{'event recorded while offline':46}{verdict:35}"
                     f"   arrives later: {'met' if arrived else 'NOT met'}")
        lines.append(f"    {details}")
    return lines


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def code_version() -> str:
    """The commit measured, and whether the package had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "nat_telemetry"], capture_output=True, text=True, timeout=10,
                               check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = " with uncommitted changes to nat_telemetry/" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changed


def original_subject(python: str, import_line: str) -> tuple[Subject | None, str]:
    """The original package as a subject when it is installed and importable."""
    code = (f"import importlib.metadata as m; print(m.version({ORIGINAL_DIST!r})); "
            f"{import_line}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{ORIGINAL_DIST}: skipped ({last})"
    version = done.stdout.strip()
    return Subject(f"{ORIGINAL_DIST} {version}", import_line), ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 pairs and 1 warm-up per row")
    parser.add_argument("--pairs", type=int, help="measured pairs per row (default 15)")
    parser.add_argument("--warmup", type=int, help="warm-up pairs per row (default 3)")
    parser.add_argument("--settle", type=float, default=2.0, metavar="S",
                        help="wait up to S seconds for a run's sender before the next run")
    parser.add_argument("--within", type=float, default=10.0, metavar="S",
                        help="how long the offline event may take to arrive (default 10)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    parser.add_argument("--as-is", action="store_true",
                        help="time --python itself, not a clean venv made from it")
    parser.add_argument("--original-import", default=ORIGINAL_IMPORT, metavar="LINE",
                        help="how the original package's track_command is imported")
    parser.add_argument("--importtime", action="store_true",
                        help="also print where import time goes (python -X importtime)")
    parser.add_argument("--top", type=int, default=15, help="modules per importtime list")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    pairs = args.pairs or (5 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    python = os.path.realpath(args.python)  # a shim script would be timed too

    measured = code_version()  # before the runs: the files may change while they last
    results: dict[str, tuple[list[Row], tuple[bool, str, str]]] = {}
    extra_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cli-cost-") as scratch:
        if not args.as_is:
            python = clean_interpreter(python, Path(scratch) / "venv")
        subjects = [Subject("this project (nat_telemetry)", OURS_IMPORT, ours=True),
                    Subject("this project, as a tool embeds it (ToolTelemetry)", TOOL_IMPORT,
                            ours=True)]
        original, skipped = original_subject(python, args.original_import)
        if original is not None:
            subjects.append(original)
        version = subprocess.run([python, "-c", "import platform, sys; print("
                                  "platform.python_version(), sys.base_prefix)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        for index, subject in enumerate(subjects):
            results[subject.name] = measure_subject(
                subject, python, Path(scratch) / f"s{index}", pairs, warmup, args.settle,
                args.within)
        if args.importtime:
            for index, subject in enumerate(subjects):
                extra_lines += importtime(python, subject, Path(scratch) / f"i{index}",
                                          3 if args.quick else 7, args.top)

    print(f"Python {version} on {platform.machine()}, {os.cpu_count()} CPU(s), "
          + ("as is" if args.as_is else "a venv without the system site-packages' .pth files")
          + f"; whole-process wall time, medians of {pairs} alternating pairs (bare, tool) "
          f"per row after {warmup} warm-up pair(s); code: {measured}")
    print("bare: `import sys`; tool: one `with track_command(\"tool\", \"x\"): pass` block; "
          "each tool run gets a new, empty spool folder, and its detached sender is awaited "
          f"up to {args.settle:g} s before the next run; ratio and added ms from the same row")
    print("goals (issue 12): disabled ≤ 1.3× bare and ≤ +3 ms; enabled, whatever the endpoint "
          "does, ≤ 1.8× and ≤ +10 ms; an event recorded offline arrives later")
    if skipped:
        print(skipped)
    if extra_lines:
        extra_lines.insert(0, "\nimport time (python -X importtime; a module loaded through "
                           "importlib.import_module, e.g. a lazily exported name, is not "
                           "listed itself: its imports show at depth 0)")
    print("\n".join(render(results) + extra_lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            name: {"rows": [dict(row._asdict(), ratio=row.ratio, added_ms=row.added_ms)
                            for row in rows],
                   "offline": dict(zip(("arrived", "verdict", "details"), offline))}
            for name, (rows, offline) in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
