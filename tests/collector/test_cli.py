"""``nat-telemetry collect``: options, a real process serving until SIGTERM, one-line errors."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.collector import child_env, http, make_envelope

from nat_telemetry.cli import main


@pytest.mark.parametrize("options", [
    ["--fail-rate", "-0.1"], ["--fail-rate", "1.5"], ["--drop-rate", "nan"],
    ["--port", "70000"], ["--port", "http"], ["--fail-status", "200"],
    ["--delay-ms", "-5"], ["--max-body", "0"],
])
def test_collect_rejects_invalid_options(options: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["collect", *options])
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def _first_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output from the collector"
    return proc.stdout.readline()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_collect_command_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nat_telemetry", "collect", "--port", "0", "--db", str(db),
         "--delay-ms", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(tmp_path),
    )
    try:
        line = _first_line(proc)
        found = re.search(r"(http://127\.0\.0\.1:\d+/v1\.1/events/json)", line)
        assert found, line
        assert str(db) in line and "delay 1 ms" in line
        answer = http().post(found.group(1), json=make_envelope(2), timeout=5)
        assert answer.json() == {"accepted": 2}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped: 1 request, 2 events stored" in out
    assert "Traceback" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def test_collect_on_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "nat_telemetry", "collect", "--port", str(port),
             "--db", str(tmp_path / "x.db")],
            capture_output=True, text=True, timeout=20, env=child_env(tmp_path),
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot listen on" in result.stderr


def test_collect_refuses_a_file_that_is_not_a_database(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n" * 100)
    assert main(["collect", "--port", "0", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use database" in err
