"""The report: numbers checked on a known data set, rendering, and the CLI."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from nat_telemetry.cli import main
from nat_telemetry.collector import Collector, init_database
from nat_telemetry.collector.report import ReportError, build_report, percentile, render_table
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.payload import QueuedEvent, build_payload

# (session, command, subcommand, status, duration, error class, python)
KNOWN = [
    ("s1", "run", "undefined", "success", 10, "undefined", "3.11.7"),
    ("s1", "run", "undefined", "success", 20, "undefined", "3.11.7"),
    ("s2", "run", "undefined", "success", 30, "undefined", "3.11.7"),
    ("s2", "run", "undefined", "failure", 40, "ValueError", "3.11.7"),
    ("s2", "run", "undefined", "interrupted", -1, "KeyboardInterrupt", "3.12.1"),
    ("s3", "info", "list-components", "success", 5, "undefined", "3.12.1"),
    ("s3", "info", "list-components", "failure", 7, "ValueError", "3.12.1"),
    ("s3", "info", "list-components", "failure", 9, "OSError", "3.9.18"),
    ("s3", "eval", "undefined", "completed", -1, "undefined", "3.11.7"),
]


def _insert(db_path: Path, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Rows of (session, name, parameters), stored the way the collector stores them."""
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO events (received_at, session_id, client_ver, cpu_architecture,"
            " schema_version, name, ts, parameters) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f"2026-11-22T10:00:{i:02d}.000Z", session, "1.0", "x86_64", "1.5", name,
              "2026-11-22T09:59:00.000Z", json.dumps(parameters))
             for i, (session, name, parameters) in enumerate(rows)],
        )


@pytest.fixture
def known_db(tmp_path: Path) -> Path:
    path = tmp_path / "known.db"
    init_database(path)
    rows = [
        (session, "nat_cli_command", {
            "nemoSource": "agent_toolkit", "command": command, "subcommand": subcommand,
            "taskStatus": status, "durationMs": duration, "exitCode": 0,
            "errorClass": error, "pythonVersion": python,
        })
        for session, command, subcommand, status, duration, error, python in KNOWN
    ]
    rows.append(("s4", "custom_event", {"widgets": 3}))
    _insert(path, rows)
    return path


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([4, 8, 15, 16], 50) == 8  # rank ceil(2.0) = 2
    assert percentile([4, 8, 15, 16], 95) == 16  # rank ceil(3.8) = 4
    assert percentile([42], 95) == 42
    assert percentile([3, 9], 0) == 3
    assert percentile([], 50) is None


def test_numbers_on_a_known_data_set(known_db: Path) -> None:
    report = build_report(known_db)
    assert report["database"] == str(known_db.resolve())
    assert report["events"] == 10
    assert report["sessions"] == 4
    assert report["event_names"] == {"nat_cli_command": 9, "custom_event": 1}
    assert report["first_received_at"] == "2026-11-22T10:00:00.000Z"
    assert report["last_received_at"] == "2026-11-22T10:00:09.000Z"
    assert report["outcomes"] == {"success": 4, "failure": 3, "interrupted": 1, "other": 1}
    # Measured durations (the -1s left out): 5 7 9 10 20 30 40.
    assert report["duration_ms"] == {"measured": 7, "p50": 10, "p95": 40,
                                     "method": "nearest-rank"}
    assert report["commands"] == [
        {"command": "run", "subcommand": "undefined", "events": 5, "success": 3,
         "failure": 1, "interrupted": 1, "other": 0,
         "duration_p50_ms": 20, "duration_p95_ms": 40},
        {"command": "info", "subcommand": "list-components", "events": 3, "success": 1,
         "failure": 2, "interrupted": 0, "other": 0,
         "duration_p50_ms": 7, "duration_p95_ms": 9},
        {"command": "eval", "subcommand": "undefined", "events": 1, "success": 0,
         "failure": 0, "interrupted": 0, "other": 1,
         "duration_p50_ms": None, "duration_p95_ms": None},
    ]
    assert report["error_classes"] == [
        {"error_class": "ValueError", "events": 2},
        {"error_class": "KeyboardInterrupt", "events": 1},
        {"error_class": "OSError", "events": 1},
    ]
    assert report["python_versions"] == [
        {"python_version": "3.11.7", "events": 5},
        {"python_version": "3.12.1", "events": 3},
        {"python_version": "3.9.18", "events": 1},
    ]
    json.dumps(report)  # JSON-ready as it is


def test_top_limits_the_error_classes(known_db: Path) -> None:
    assert [e["error_class"] for e in build_report(known_db, top=1)["error_classes"]] == [
        "ValueError"]


def test_table_rendering(known_db: Path) -> None:
    table = render_table(build_report(known_db))
    lines = table.splitlines()
    assert lines[1].startswith("10 events from 4 sessions")
    assert "outcomes: 4 success, 3 failure, 1 interrupted, 1 other" in lines
    assert "duration: p50 10 ms, p95 40 ms (nearest-rank, 7 measured)" in lines
    assert "other events: 1 custom_event" in lines
    header = next(line for line in lines if line.startswith("COMMAND"))
    assert header.split() == ["COMMAND", "SUBCOMMAND", "EVENTS", "SUCCESS", "FAILURE",
                              "INTERRUPTED", "OTHER", "P50", "MS", "P95", "MS"]
    rows = {line.split()[0]: line.split() for line in lines
            if line.split() and line.split()[0] in ("run", "info", "eval")}
    assert rows["run"] == ["run", "undefined", "5", "3", "1", "1", "0", "20", "40"]
    assert rows["eval"] == ["eval", "undefined", "1", "0", "0", "0", "1", "-", "-"]
    assert any(line.split() == ["ValueError", "2"] for line in lines)
    assert any(line.split() == ["3.9.18", "1"] for line in lines)
    table.encode("ascii")


def test_empty_database_reports_zero_events(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    init_database(path)
    report = build_report(path)
    assert report["events"] == 0 and report["commands"] == []
    assert report["duration_ms"]["p50"] is None
    assert main(["report", "--db", str(path)]) == 0
    assert "0 events" in capsys.readouterr().out


def test_missing_database_is_one_line_and_exit_1(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.db"
    with pytest.raises(ReportError, match="no database at"):
        build_report(path)
    assert main(["report", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no database at" in err and "Traceback" not in err
    assert not path.exists()  # a report never creates a database


@pytest.mark.parametrize("content", ["table", "text"])
def test_a_file_that_is_not_ours_is_an_error(tmp_path: Path, content: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.db"
    if content == "table":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE things (x)")
    else:
        path.write_text("just some notes\n" * 200)
    with pytest.raises(ReportError):
        build_report(path)
    assert main(["report", "--db", str(path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_json_format(known_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(known_db), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == build_report(known_db)


def test_unexpected_rows_do_not_break_the_report(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    init_database(path)
    _insert(path, [("s", "nat_cli_command", {"command": "run", "taskStatus": "weird",
                                             "durationMs": "12", "errorClass": 5})])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET parameters = 'not json' WHERE id = 1")
    _insert(path, [("s", "nat_cli_command", {"command": "run", "taskStatus": "weird",
                                             "durationMs": "12", "errorClass": 5})])
    report = build_report(path)
    assert report["events"] == 2
    assert report["outcomes"]["other"] == 1
    assert report["duration_ms"]["measured"] == 0
    assert report["error_classes"] == []



def test_report_reads_while_a_collector_writes(tmp_path: Path) -> None:
    session = requests.Session()
    session.trust_env = False  # no proxy between us and loopback
    now = datetime.now(timezone.utc)

    def post(url: str, count: int) -> int:
        queued = [QueuedEvent(CliCommandEvent(command="run", task_status="success",
                                              python_version="3.11.7"), now)
                  for _ in range(count)]
        envelope = build_payload(queued, source_client_version="1.0")
        return session.post(url, json=envelope, timeout=5).status_code

    with Collector(tmp_path / "live.db") as collector:
        assert post(collector.url, 3) == 200
        assert build_report(collector.db_path)["events"] == 3  # WAL: readers never block
        assert post(collector.url, 2) == 200
        assert build_report(collector.db_path)["events"] == 5


def test_an_events_table_of_another_shape_is_explained(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER, payload TEXT)")
    with pytest.raises(ReportError, match=r"'events' table with other columns \(id, payload\)"):
        build_report(path)
    assert main(["report", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "other columns (id, payload): not a nat-telemetry database" in err
