"""Who may write: a bearer token, compared in constant time; no open door beyond loopback."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from support.collector import child_env, http, make_envelope

from nat_telemetry.cli import main
from nat_telemetry.collector import Collector, ingest

TOKEN = "s3cret-Token_v1.0~+/=="


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_required_and_checked(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(token=TOKEN)
    session = http()
    for headers in ({}, bearer("wrong"), bearer(TOKEN[:-1]), {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        answer = session.post(collector.url, json=make_envelope(1), headers=headers, timeout=5)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in answer.text
    answer = session.post(collector.url, json=make_envelope(2), headers=bearer(TOKEN), timeout=5)
    assert answer.json() == {"accepted": 2}
    counts = collector.counts()
    assert counts["rejected"]["unauthorized"] == 5 and counts["stored_events"] == 2
    assert collector.stored_count() == 2


def test_without_the_token_even_the_method_is_not_discussed(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(token=TOKEN)
    assert http().get(collector.url, timeout=5).status_code == 401
    assert http().get(collector.url, headers=bearer(TOKEN), timeout=5).status_code == 405


def test_the_token_is_compared_in_constant_time(start_collector: Callable[..., Collector],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[Any, Any]] = []
    real = ingest.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ingest.hmac, "compare_digest", spy)
    collector = start_collector(token=TOKEN)
    assert http().post(collector.url, json=make_envelope(1), headers=bearer("nope"),
                       timeout=5).status_code == 401
    assert compared == [(b"nope", TOKEN.encode())]


@pytest.mark.parametrize("token", ["", "has space", "line\nbreak", "é", "x" * 5000])
def test_a_token_no_header_can_carry_is_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValueError, match="token must be"):
        Collector(tmp_path / "x.db", token=token)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org", ""])
def test_beyond_loopback_a_token_is_required_unless_insecure(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="give a token"):
        Collector(tmp_path / "x.db", host=host)
    Collector(tmp_path / "x.db", host=host, token=TOKEN)  # constructed only: never bound here
    Collector(tmp_path / "x.db", host=host, insecure=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_needs_no_token(tmp_path: Path, host: str) -> None:
    Collector(tmp_path / "x.db", host=host)


def test_collect_refuses_to_listen_beyond_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAT_TELEMETRY_COLLECTOR_TOKEN", raising=False)
    db = tmp_path / "x.db"
    assert main(["collect", "--host", "0.0.0.0", "--port", "0", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--token" in err and "--insecure" in err
    assert not db.exists()  # refused before anything was bound or created


def test_collect_never_shows_a_refused_token(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--port", "0", "--db", str(tmp_path / "x.db"),
                 "--token", "no spaces allowed"]) == 2
    err = capsys.readouterr().err
    assert "token must be" in err and "no spaces allowed" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_collect_takes_its_token_from_the_environment(tmp_path: Path) -> None:
    env = child_env(tmp_path)
    env["NAT_TELEMETRY_COLLECTOR_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "nat_telemetry", "collect", "--port", "0",
         "--db", str(tmp_path / "env.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(10), "no output from the collector"
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
        assert url and "token required" in line, line
        session = http()
        assert session.post(url.group(1), json=make_envelope(1), timeout=5).status_code == 401
        assert session.post(url.group(1), json=make_envelope(1), headers=bearer(TOKEN),
                            timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert TOKEN not in line + out + err
