"""``nat-telemetry demo``: end to end in a subprocess, and consent left untouched."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nat_telemetry import config, consent
from nat_telemetry.cli import main
from nat_telemetry.collector.demo import run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSET: Any = object()


def _stored(db_path: str) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_demo_end_to_end_in_a_subprocess(tmp_path: Path) -> None:
    home, xdg, temp = tmp_path / "home", tmp_path / "xdg", tmp_path / "tmp"
    for folder in (home, xdg, temp):
        folder.mkdir()
    consent_file = tmp_path / "consent" / "telemetry.toml"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NAT_") and "proxy" not in key.lower()}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(xdg), TMPDIR=str(temp),
               NAT_TELEMETRY_CONSENT_FILE=str(consent_file),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "nat_telemetry", "demo"],
                            capture_output=True, text=True, timeout=20, env=env,
                            cwd=str(tmp_path))
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert elapsed < 20
    out = result.stdout
    assert "4 threads x 25 commands" in out
    assert re.search(r"^100 events from 1 session,", out, re.M), out
    assert "handler stats: enqueued=100 sent=100 " in out
    assert re.search(r"^COMMAND\s+SUBCOMMAND\s+EVENTS", out, re.M)
    assert "Traceback" not in result.stderr
    assert "database: removed (keep one with: nat-telemetry demo --db PATH)" in out
    assert list(temp.iterdir()) == []  # its temporary folder is gone
    # No consent decision was written anywhere.
    assert not consent_file.exists() and not consent_file.parent.exists()
    assert not (xdg / "nat").exists() and not (home / ".config").exists()
    assert not (tmp_path / "nat-telemetry.db").exists()


@pytest.fixture
def unresolved_consent() -> Iterator[None]:
    """``config.TELEMETRY_ENABLED`` as in a fresh process: not resolved yet."""
    settings = vars(config)
    before = settings.pop("TELEMETRY_ENABLED", _UNSET)
    yield
    settings.pop("TELEMETRY_ENABLED", None)
    if before is not _UNSET:
        settings["TELEMETRY_ENABLED"] = before


def test_demo_never_touches_consent_and_restores_the_process(
    unresolved_consent: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    touched: list[str] = []
    for name in ("resolve_initial_consent", "read_persisted_consent",
                 "write_persisted_consent", "maybe_prompt_for_consent", "prompt_user"):
        monkeypatch.setattr(consent, name,
                            lambda *args, _name=name, **kwargs: touched.append(_name))
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", True)
    # A proxy that does not exist: the demo must still reach its loopback collector.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    out = io.StringIO()
    assert run_demo(threads=3, events_per_thread=7, out=out) == 0

    assert touched == []
    assert "TELEMETRY_ENABLED" not in vars(config)  # still "resolve on first read"
    assert config.NAT_TELEMETRY_DRY_RUN is True
    assert "NO_PROXY" not in os.environ and "no_proxy" not in os.environ
    text = out.getvalue()
    assert "21 events from 1 session" in text
    assert "handler stats: enqueued=21 sent=21 " in text


def test_demo_keeps_the_database_it_is_given(tmp_path: Path) -> None:
    kept = tmp_path / "demo.db"
    out = io.StringIO()
    assert run_demo(threads=2, events_per_thread=3, out=out, db_path=str(kept)) == 0
    assert f"database: {kept} (look again with: nat-telemetry report --db {kept})" \
        in out.getvalue()
    assert _stored(str(kept)) == 6


def test_demo_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--threads", "0"])
    assert exited.value.code == 2
    assert "error: argument --threads" in capsys.readouterr().err


def test_demo_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    """`nat-telemetry demo | head -3`: no broken-pipe message when the reader leaves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen([sys.executable, "-m", "nat_telemetry", "demo"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # what head does after its lines
    _, stderr = child.communicate(timeout=60)
    assert first.startswith(b"nat-telemetry demo:")
    assert stderr == b""
    assert child.returncode in (0, 141)  # 141 once it wrote into the closed pipe
