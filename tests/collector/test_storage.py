"""Storage: the SQLite file the collector writes, and what a 200 promises about it.

A ``200`` means the rows are in the file at the database's path.  These tests
delete or replace that file under a running collector, between two requests
of one keep-alive connection and in the middle of a write, and check every
acknowledged event in the file that is at the path afterwards.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from support.collector import http, make_envelope

from nat_telemetry.collector import Collector, init_database, storage


def test_existing_database_with_another_events_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (x TEXT)")
    with pytest.raises(ValueError, match="other columns"):
        Collector(path).start()


def ids_at(path: Path) -> list[int]:
    """The durationMs of every event stored in the file at ``path`` (read fresh)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT json_extract(parameters, '$.durationMs') FROM events")
        return sorted(row[0] for row in rows)
    finally:
        db.close()


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def post(session: requests.Session, url: str, start: int, count: int = 2) -> int:
    return session.post(url, json=make_envelope(count, start), timeout=5).status_code


@pytest.fixture
def live(tmp_path: Path) -> Any:
    collector = Collector(tmp_path / "live.db").start()
    yield collector
    collector.stop()


def test_a_deleted_database_is_created_again_before_acknowledging(live: Collector) -> None:
    session, path = http(), Path(live.db_path)  # one keep-alive connection throughout
    assert post(session, live.url, 0) == 200
    remove_database(path)
    assert post(session, live.url, 10) == 200
    # What was acknowledged after the deletion is in the file at the path now.
    assert path.exists() and ids_at(path) == [10, 11]
    assert live.stored_count() == 2


def test_a_database_renamed_over_the_path_receives_the_next_events(
    live: Collector, tmp_path: Path
) -> None:
    session, path = http(), Path(live.db_path)
    assert post(session, live.url, 0) == 200
    replacement = tmp_path / "replacement.db"
    init_database(replacement)
    os.replace(replacement, path)
    assert post(session, live.url, 20) == 200
    assert ids_at(path) == [20, 21]


def test_a_foreign_file_at_the_path_is_never_acknowledged(
    live: Collector, tmp_path: Path
) -> None:
    session, path = http(), Path(live.db_path)
    assert post(session, live.url, 0) == 200
    saved = tmp_path / "saved.db"
    os.replace(path, saved)
    path.write_text("somebody's notes, not a database\n" * 100)
    answer = session.post(live.url, json=make_envelope(2, 30), timeout=5)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert live.counts()["errors"]["storage"] == 1
    # Put a database back: the client's retry is stored there.
    os.replace(saved, path)
    assert post(session, live.url, 30) == 200
    assert ids_at(path) == [0, 1, 30, 31]
    assert live.counts()["stored_events"] == 4


def test_a_database_replaced_during_the_write_is_answered_503(
    live: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, path = http(), Path(live.db_path)
    assert post(session, live.url, 0) == 200
    replacement = tmp_path / "replacement.db"
    init_database(replacement)
    real_insert: Callable[..., None] = storage.insert_rows

    def insert_then_swap(db: sqlite3.Connection, rows: Any) -> None:
        real_insert(db, rows)
        monkeypatch.setattr(storage, "insert_rows", real_insert)  # once
        os.replace(replacement, path)  # another process renames a file over it

    monkeypatch.setattr(storage, "insert_rows", insert_then_swap)
    answer = session.post(live.url, json=make_envelope(2, 40), timeout=5)
    assert answer.status_code == 503  # the rows went into the file that was replaced
    assert live.counts()["stored_events"] == 2  # only the first request's
    assert post(session, live.url, 40) == 200  # the retry
    assert ids_at(path) == [40, 41]


def test_nothing_is_written_once_the_collector_stopped(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "stopped.db").start()
    collector.stop()
    Path(collector.db_path).unlink()
    # A request that outlived stop() must not bring a database back to life.
    with pytest.raises(sqlite3.Error, match="stopped"):
        collector.store.store([("r", "s", "1", "x86_64", "1.5", "nat_cli_command",
                                "2026-01-01T00:00:00.000Z", "{}")])
    assert not Path(collector.db_path).exists()
