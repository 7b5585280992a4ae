"""What a collector stored, summed up in the numbers a maintainer looks at.

Usage telemetry exists to answer a few questions: which commands are used,
how often they fail or are interrupted and with which exception class, how
long they take, how many sessions and which Python versions run them.
:func:`build_report` computes those into a plain, JSON-ready dict (so it can be
tested, piped and diffed); :func:`render_table` lays the same dict out for a
terminal and computes nothing.

The database is opened read-only: a report never creates or changes a file,
and it can run while a collector is still writing (WAL mode).

Durations are summarised with the nearest-rank percentile: the value at rank
``ceil(p/100 * n)`` of the sorted durations, so every figure shown is a
duration that was actually measured.  ``durationMs == -1`` means "not
measured" and is left out.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

from .storage import schema_problem

__all__ = ["ReportError", "build_report", "percentile", "render_table", "summarize"]

PERCENTILE_METHOD = "nearest-rank"
_STATUSES = ("success", "failure", "interrupted")
_DEFAULT_TOP = 10

StrPath = Union[str, "os.PathLike[str]"]
# (received_at, session_id, name, parameters JSON), as stored by the collector.
StoredRow = Sequence[Any]


class ReportError(Exception):
    """The database cannot be reported on; the message says why, in one line."""


def percentile(sorted_values: Sequence[int], pct: float) -> int | None:
    """Nearest-rank percentile of ascending ``sorted_values``; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_report(db_path: StrPath, *, top: int = _DEFAULT_TOP) -> dict[str, Any]:
    """The report of the database at ``db_path``; :class:`ReportError` if unusable."""
    path = os.fspath(db_path)
    if not os.path.exists(path):
        raise ReportError(f"no database at {path}")
    if os.path.isdir(path):
        raise ReportError(f"{path} is a folder, not a database file")
    # mode=ro: reading must never create, convert or lock out a database.
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            if table is None:
                raise ReportError(f"{path} has no 'events' table: not a nat-telemetry database")
            problem = schema_problem(db, path)
            if problem:
                raise ReportError(f"{problem}: not a nat-telemetry database")
            rows = db.execute(
                "SELECT received_at, session_id, name, parameters FROM events ORDER BY id")
            report = summarize(rows, top=top)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
    report["database"] = str(Path(path).resolve())
    return report


def summarize(rows: Iterable[StoredRow], *, top: int = _DEFAULT_TOP) -> dict[str, Any]:
    """The report of stored rows ``(received_at, session_id, name, parameters JSON)``.

    Rows whose parameters are not a JSON object with a string ``command``
    count towards ``events``, ``sessions`` and ``event_names`` only.
    """
    total = 0
    sessions: set[str] = set()
    names: Counter[str] = Counter()
    outcomes: Counter[str] = Counter(dict.fromkeys((*_STATUSES, "other"), 0))
    durations: list[int] = []
    commands: dict[tuple[str, str], dict[str, Any]] = {}
    errors: Counter[str] = Counter()
    pythons: Counter[str] = Counter()
    first: str | None = None
    last: str | None = None

    for received_at, session_id, name, parameters in rows:
        total += 1
        sessions.add(session_id)
        names[name] += 1
        first = received_at if first is None else min(first, received_at)
        last = received_at if last is None else max(last, received_at)
        try:
            params = json.loads(parameters)
        except (TypeError, ValueError):
            continue  # a hand-edited row; the collector only stores valid JSON
        if not isinstance(params, dict):
            continue
        python = params.get("pythonVersion")
        if isinstance(python, str):
            pythons[python] += 1
        command = params.get("command")
        if not isinstance(command, str):
            continue
        subcommand = params.get("subcommand")
        key = (command, subcommand if isinstance(subcommand, str) else "undefined")
        entry = commands.get(key)
        if entry is None:
            entry = commands[key] = {"events": 0, "durations": [],
                                     **dict.fromkeys((*_STATUSES, "other"), 0)}
        entry["events"] += 1
        status = params.get("taskStatus")
        bucket = status if status in _STATUSES else "other"
        entry[bucket] += 1
        outcomes[bucket] += 1
        duration = params.get("durationMs")
        if type(duration) is int and duration >= 0:  # -1: not measured
            entry["durations"].append(duration)
            durations.append(duration)
        error_class = params.get("errorClass")
        if isinstance(error_class, str) and error_class != "undefined":
            errors[error_class] += 1

    durations.sort()
    command_rows = []
    for (command, subcommand), entry in commands.items():
        measured = sorted(entry.pop("durations"))
        command_rows.append({
            "command": command,
            "subcommand": subcommand,
            **entry,
            "duration_p50_ms": percentile(measured, 50),
            "duration_p95_ms": percentile(measured, 95),
        })
    command_rows.sort(key=lambda row: (-row["events"], row["command"], row["subcommand"]))

    return {
        "database": None,
        "events": total,
        "sessions": len(sessions),
        "first_received_at": first,
        "last_received_at": last,
        "event_names": dict(_by_count(names)),
        "outcomes": {key: outcomes[key] for key in (*_STATUSES, "other")},
        "duration_ms": {
            "measured": len(durations),
            "p50": percentile(durations, 50),
            "p95": percentile(durations, 95),
            "method": PERCENTILE_METHOD,
        },
        "commands": command_rows,
        "error_classes": [{"error_class": name, "events": count}
                          for name, count in _by_count(errors)[:top]],
        "python_versions": [{"python_version": name, "events": count}
                            for name, count in _by_count(pythons)],
    }


def _by_count(counter: Counter[str]) -> list[tuple[str, int]]:
    # Most frequent first; ties in name order, so the output is stable.
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


# ---------------------------------------------------------------- rendering


def render_table(report: dict[str, Any]) -> str:
    """The report as aligned plain-text tables (ASCII only, no trailing newline)."""
    lines = [f"nat-telemetry report: {report.get('database') or '(no database)'}"]
    total = report["events"]
    if not total:
        lines.append("0 events: nothing has been stored yet.")
        return "\n".join(lines)
    sessions = report["sessions"]
    lines.append(f"{total} event{_s(total)} from {sessions} session{_s(sessions)}, "
                 f"received {report['first_received_at']} to {report['last_received_at']}")
    outcomes = report["outcomes"]
    lines.append("outcomes: " + ", ".join(f"{outcomes[key]} {key}" for key in outcomes))
    duration = report["duration_ms"]
    if duration["measured"]:
        lines.append(f"duration: p50 {duration['p50']} ms, p95 {duration['p95']} ms "
                     f"({duration['method']}, {duration['measured']} measured)")
    else:
        lines.append("duration: none measured")
    others = {name: n for name, n in report["event_names"].items() if name != "nat_cli_command"}
    if others:
        lines.append("other events: " + ", ".join(f"{n} {name}" for name, n in others.items()))

    if report["commands"]:
        lines.append("")
        lines += _table(
            ("COMMAND", "SUBCOMMAND", "EVENTS", "SUCCESS", "FAILURE", "INTERRUPTED", "OTHER",
             "P50 MS", "P95 MS"),
            [(row["command"], row["subcommand"], row["events"], row["success"],
              row["failure"], row["interrupted"], row["other"],
              _dash(row["duration_p50_ms"]), _dash(row["duration_p95_ms"]))
             for row in report["commands"]],
        )
    lines.append("")
    if report["error_classes"]:
        lines += _table(("TOP ERROR CLASSES", "EVENTS"),
                        [(row["error_class"], row["events"]) for row in report["error_classes"]])
    else:
        lines.append("top error classes: none")
    if report["python_versions"]:
        lines.append("")
        lines += _table(("PYTHON VERSION", "EVENTS"),
                        [(row["python_version"], row["events"])
                         for row in report["python_versions"]])
    return "\n".join(lines)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(value) for value in row] for row in rows]
    # Numbers right-aligned, names left-aligned: a column is numeric if every
    # cell is a number or the "-" placeholder.
    numeric = [all(_numberish(row[i]) for row in cells) and bool(cells)
               for i in range(len(headers))]
    widths = [max([len(headers[i])] + [len(row[i]) for row in cells])
              for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])
                 for i, value in enumerate(values)]
        return "  ".join(parts).rstrip()

    return [line(headers)] + [line(row) for row in cells]


def _numberish(text: str) -> bool:
    return text == "-" or text.lstrip("-").isdigit()


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _s(count: int) -> str:
    return "" if count == 1 else "s"
