"""Where the collector keeps events: one SQLite file, one row per event.

WAL mode, so ``report`` can read while ``collect`` writes; one transaction per
request, so a request is stored whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Sequence
from typing import Any, Union

__all__ = [
    "EVENT_COLUMNS",
    "connect",
    "init_database",
    "insert_rows",
    "read_rows",
    "row_count",
    "schema_problem",
]

StrPath = Union[str, "os.PathLike[str]"]

EVENT_COLUMNS = (
    "id", "received_at", "session_id", "client_ver", "cpu_architecture",
    "schema_version", "name", "ts", "parameters",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    session_id TEXT NOT NULL,
    client_ver TEXT NOT NULL,
    cpu_architecture TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    name TEXT NOT NULL,
    ts TEXT NOT NULL,
    parameters TEXT NOT NULL
)
"""
_INSERT = (
    "INSERT INTO events (received_at, session_id, client_ver, cpu_architecture,"
    " schema_version, name, ts, parameters) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# Writers queue on SQLite's lock; past this the request answers 503 (retryable).
BUSY_TIMEOUT_SECONDS = 10.0


def connect(db_path: StrPath) -> sqlite3.Connection:
    """A connection for writing: explicit transactions, crash-safe WAL commits."""
    # isolation_level=None: the transactions are explicit (BEGIN IMMEDIATE takes
    # the write lock up front, so a busy database waits in busy_timeout instead
    # of failing half-way through a request).
    db = sqlite3.connect(os.fspath(db_path), timeout=BUSY_TIMEOUT_SECONDS,
                         isolation_level=None)
    # NORMAL is crash-safe in WAL mode; only a power loss can lose the last commits.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def schema_problem(db: sqlite3.Connection, path: str) -> str | None:
    """Why the file's ``events`` table is not ours (None when it is, or is missing)."""
    columns = tuple(row[1] for row in db.execute("PRAGMA table_info(events)"))
    if columns and columns != EVENT_COLUMNS:
        return (f"{path} has an 'events' table with other columns "
                f"({', '.join(columns)}); use a new --db file")
    return None


def init_database(db_path: StrPath) -> None:
    """Create the ``events`` table (if missing) and switch the file to WAL mode.

    Raises ``ValueError`` when the file holds an ``events`` table of another
    shape, ``sqlite3.Error`` when it is not a database at all.
    """
    path = os.fspath(db_path)
    if path in ("", ":memory:"):
        # Every connection would get its own private, empty database.
        raise ValueError("the collector needs a database file, not an in-memory database")
    db = connect(path)
    try:
        # WAL: readers (report) never block the writers, writers never block readers.
        db.execute("PRAGMA journal_mode=WAL")
        problem = schema_problem(db, path)
        if problem:
            raise ValueError(problem)
        db.execute(_SCHEMA)
    finally:
        db.close()


def insert_rows(db: sqlite3.Connection, rows: Sequence[Sequence[str]]) -> None:
    """Insert ``rows`` in one transaction: all of them, or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_INSERT, rows)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def row_count(db_path: StrPath) -> int:
    """Rows in the database right now (a query, not a counter)."""
    db = connect(db_path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        db.close()


def read_rows(db_path: StrPath) -> list[dict[str, Any]]:
    """Every stored row, oldest first, ``parameters`` parsed."""
    db = connect(db_path)
    try:
        cursor = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id")
        out = [dict(zip(EVENT_COLUMNS, row)) for row in cursor]
    finally:
        db.close()
    for row in out:
        row["parameters"] = json.loads(row["parameters"])
    return out
