"""Where the collector keeps events: one SQLite file, one row per event.

WAL mode, so ``report`` can read while ``collect`` writes; one transaction per
request, so a request is stored whole or not at all.

An acknowledgement must mean the rows are in the file at the database's
path, not in a file that was deleted or renamed away while it was open (SQLite
keeps writing to an open file whatever happens to its name).  So
:class:`Store`, the collector's one writing connection, compares the path's
device and inode with those of the file it opened, before writing (and opens
the path again when they differ) and after committing (and then refuses to
acknowledge).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Union

__all__ = [
    "EVENT_COLUMNS",
    "DatabaseMoved",
    "Store",
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


class DatabaseMoved(sqlite3.OperationalError):
    """The file at the database's path is not (or no longer) the one written to."""


def connect(db_path: StrPath, *, shared: bool = False) -> sqlite3.Connection:
    """A connection for writing: explicit transactions, crash-safe WAL commits.

    ``shared``: usable from any thread (the caller serialises its use).
    """
    # isolation_level=None: the transactions are explicit (BEGIN IMMEDIATE takes
    # the write lock up front, so a busy database waits in busy_timeout instead
    # of failing half-way through a request).
    db = sqlite3.connect(os.fspath(db_path), timeout=BUSY_TIMEOUT_SECONDS,
                         isolation_level=None, check_same_thread=not shared)
    # NORMAL is crash-safe in WAL mode; only a power loss can lose the last commits.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def schema_problem(db: sqlite3.Connection, path: str) -> str | None:
    """Why the file's ``events`` table is not ours (None when it is, or is missing)."""
    columns = tuple(row[1] for row in db.execute("PRAGMA table_info(events)"))
    if columns and columns != EVENT_COLUMNS:
        return f"{path} has an 'events' table with other columns ({', '.join(columns)})"
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
            raise ValueError(f"{problem}; use a new --db file")
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


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


class Store:
    """The collector's one writing connection, and proof it still writes the path's file.

    Every request's rows go through :meth:`store`, one at a time (SQLite has a
    single writer anyway), so the check and the write cannot interleave.

    SQLite finds a database's write-ahead log by name (``<path>-wal``), so the
    log of a file that was renamed away would be read into the file renamed
    over it.  Before it lets go of a moved file, the store checkpoints that
    file's log into it (emptying the log at the path); a log it could not
    empty is set aside as ``<path>-wal.stale`` rather than replayed.
    """

    def __init__(self, db_path: StrPath) -> None:
        self.path = os.fspath(db_path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # of the file open now
        self._wal_identity: tuple[int, int] | None = None  # of its log, kept after closing
        self._closed = False

    def open(self) -> None:
        """Create the table if needed and connect; ``sqlite3.Error`` if unusable."""
        with self._lock:
            self._open()

    def store(self, rows: Sequence[Sequence[str]]) -> None:
        """Insert ``rows`` into the file at the path, or raise ``sqlite3.Error``.

        :class:`DatabaseMoved` when the file was replaced or deleted while the
        rows were being written: they may sit in the old file, so they must
        not be acknowledged (the next call writes to the new one).
        """
        with self._lock:
            if self._closed:  # a request that outlived the collector's stop
                raise sqlite3.OperationalError("the collector has stopped")
            if self._db is None or _identity(self.path) != self._identity:
                self._open()  # deleted or replaced while idle: write to what is there now
            assert self._db is not None
            insert_rows(self._db, rows)
            if _identity(self.path) != self._identity:
                self._close()
                raise DatabaseMoved(f"{self.path} was replaced or deleted while the events "
                                    "were written; they were not kept")

    def close(self) -> None:
        """Checkpoint and close; later :meth:`store` calls fail (nothing reopens the file)."""
        with self._lock:
            self._closed = True
            self._close()

    def _open(self) -> None:
        self._close()
        self._set_aside_stale_wal()
        try:
            init_database(self.path)
        except ValueError as exc:  # a foreign file now sits at the path
            raise DatabaseMoved(str(exc)) from None
        for _ in range(3):
            before = _identity(self.path)
            db = connect(self.path, shared=True)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the file is open now
            if before is not None and _identity(self.path) == before:
                self._db, self._identity = db, before
                self._wal_identity = _identity(self.path + "-wal")
                return
            db.close()  # renamed while we opened it: try again
        raise DatabaseMoved(f"{self.path} keeps changing; cannot tell which file to write")

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                # Into the file this connection has open, wherever it is now.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db, self._identity = None, None

    def _set_aside_stale_wal(self) -> None:
        wal = self.path + "-wal"
        if self._wal_identity is None or _identity(wal) != self._wal_identity:
            return  # not the log of a file we had open
        with contextlib.suppress(OSError):
            if os.path.getsize(wal) > 0:
                os.replace(wal, wal + ".stale")
                with contextlib.suppress(OSError):
                    os.replace(self.path + "-shm", self.path + "-shm.stale")


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
