"""Storage: the SQLite file the collector writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nat_telemetry.collector import Collector


def test_existing_database_with_another_events_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (x TEXT)")
    with pytest.raises(ValueError, match="other columns"):
        Collector(path).start()
