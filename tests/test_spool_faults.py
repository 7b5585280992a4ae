"""A spool that cannot be used, files that are not files, endpoints no client can
send to, and what a detached sender is given of its caller's environment.

Each case runs real command lines (``track_command``, or a handler at exit)
against a real loopback endpoint: what would have been spooled is delivered
before the process exits, nothing waits on a FIFO, and nothing is retried
that can never be sent.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import BlackHole, LoopbackEndpoint
from support.helpers import event, subprocess_env, wait_until

from nat_telemetry import config, sender
from nat_telemetry.spool import Spool
from nat_telemetry.transport import destination_id

COMMAND_LINE = """
from nat_telemetry import track_command
with track_command("tool", "faulty"):
    pass
"""

HANDLER_APP = """
from nat_telemetry import CliCommandEvent, NATTelemetryHandler
handler = NATTelemetryHandler()
handler.enqueue(CliCommandEvent(command="app", task_status="success", python_version="3.11.7"))
"""


def run(tmp_path: Path, code: str, url: str, spool: str, *, limit_files: bool = False,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=url, NAT_TELEMETRY_SPOOL_DIR=spool)

    def no_file_may_grow() -> None:  # a full disk, as a writer sees it: EFBIG on every write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=timeout,
                            preexec_fn=no_file_may_grow if limit_files else None)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result


def unusable_spool(tmp_path: Path, how: str) -> str:
    if how == "a file in the way":
        (tmp_path / "in-the-way").write_text("not a folder")
        return str(tmp_path / "in-the-way" / "spool")
    if how == "writable by others":
        folder = tmp_path / "shared"
        folder.mkdir()
        folder.chmod(0o777)
        return str(folder)
    if how == "not a folder":
        (tmp_path / "spool-file").write_text("")
        return str(tmp_path / "spool-file")
    return str(tmp_path / "spool")  # "full": the child may not grow any file


@pytest.mark.parametrize("code", [COMMAND_LINE, HANDLER_APP], ids=["track_command", "handler"])
@pytest.mark.parametrize("how", ["a file in the way", "writable by others", "not a folder",
                                 "full"])
def test_what_an_unusable_spool_cannot_take_is_delivered_in_process(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint, code: str, how: str) -> None:
    spool = unusable_spool(tmp_path, how)
    run(tmp_path, code, loopback_endpoint.url, spool, limit_files=how == "full")
    # Delivered before the process exited: no sender could have done it.
    assert len(loopback_endpoint.events) == 1
    assert not Spool(spool).summary()


def test_status_says_why_the_spool_cannot_be_used(tmp_path: Path) -> None:
    spool = unusable_spool(tmp_path, "writable by others")
    env = subprocess_env(tmp_path, NAT_TELEMETRY_SPOOL_DIR=spool)
    result = subprocess.run([sys.executable, "-m", "nat_telemetry", "status", "--json"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout)["spool"]["problem"] == "writable by other users"
    text = subprocess.run([sys.executable, "-m", "nat_telemetry", "status"], env=env,
                          capture_output=True, text=True, timeout=30).stdout
    assert f"Spool cannot be used: {spool} is writable by other users" in text


# ------------------------------------------------------------------- FIFOs


def plant_fifos(spool: Path, url: str) -> list[Path]:
    spool.mkdir(mode=0o700)
    dest = destination_id(url)
    names = [f"{1:020d}.1.0.abcd.{dest}.1.99.nsp", f"{dest}.lock", f"{dest}.state",
             f"{dest}.backoff", f"{2:020d}.1.0.abcd.{dest}.1.99.nsp.claim.1.1"]
    for name in names:
        os.mkfifo(spool / name, 0o600)
    return [spool / name for name in names]


def test_fifos_in_place_of_every_spool_file_hang_nothing(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    spool = tmp_path / "spool"
    fifos = plant_fifos(spool, loopback_endpoint.url)
    started = time.monotonic()
    run(tmp_path, COMMAND_LINE, loopback_endpoint.url, str(spool), timeout=15)
    assert wait_until(lambda: len(loopback_endpoint.events) == 1, timeout=15)
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                         NAT_TELEMETRY_SPOOL_DIR=str(spool))
    for args in (["status"], ["status", "--json"]):
        result = subprocess.run([sys.executable, "-m", "nat_telemetry", *args], env=env,
                                capture_output=True, text=True, timeout=15)
        assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    # The batch-named FIFOs were removed as corrupt, the lock made a real file.
    assert not fifos[0].exists() and (spool / fifos[1].name).is_file()


def test_a_lock_that_cannot_be_used_is_reported_not_taken_for_busy(
        tmp_path: Path, loopback_endpoint: LoopbackEndpoint) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    blocked = spool / f"{destination_id(loopback_endpoint.url)}.lock"
    blocked.mkdir()
    (blocked / "keep").write_text("a folder that cannot be removed")
    assert Spool(str(spool)).write(b'{"identity": {}, "events": []}', 1,
                                   destination_id(loopback_endpoint.url)).written
    result = sender.run_sender(str(spool), loopback_endpoint.url, lifetime_seconds=5)
    assert (result["unusable_lock"], result["busy"]) == (1, 0)
    (state,) = Spool(str(spool)).states().values()
    assert state["failure"].startswith("lock: ")


# --------------------------------------------------------- unusable endpoints


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9/ingest\r\nX-Evil: 1",
                                      "http://127.0.0.1:9/in gest", "http://127.0.0.1:9/\x00",
                                      "https://bad\u00e9host\u0000.example/", "http://h/é"])
def test_an_endpoint_no_client_can_send_to_is_never_spooled_nor_retried(
        tmp_path: Path, endpoint: str, make_handler: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", endpoint)
    handler = make_handler()
    handler.enqueue(event())
    assert handler.flush(timeout=1) is True
    stats = handler.stats()
    assert (stats["dropped_bad_endpoint"], stats["retries"], stats["spooled"]) == (1, 0, 0)
    handler.stop()
    assert not (tmp_path / "spool").exists()


def test_a_command_line_with_an_unusable_endpoint_spools_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    result = run(tmp_path, COMMAND_LINE, "http://127.0.0.1:9/\x1b[2J", str(spool))
    assert not spool.exists()
    # Said once (logging's last resort prints a WARNING nobody configured a handler for).
    (line,) = result.stderr.splitlines()
    assert "contains white space or control characters" in line and "\x1b" not in line


# ------------------------------------------------------ the sender's environment


def test_a_sender_gets_an_allow_listed_environment(tmp_path: Path, black_hole: BlackHole) -> None:
    spool = tmp_path / "spool"
    Spool(str(spool)).write(b'{"identity": {}, "events": []}', 1, destination_id(black_hole.url))
    caller = {"PATH": "/usr/bin", "HOME": "/home/alice", "AWS_SECRET_ACCESS_KEY": "k",
              "GITHUB_TOKEN": "t", "OPENAI_API_KEY": "o", "DATABASE_URL": "postgres://u:p@h/db",
              "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "https_proxy": "http://proxy:3128",
              "NO_PROXY": "localhost", "DO_NOT_TRACK": "0", "NAT_TELEMETRY_ENABLED": "1",
              "NAT_TELEMETRY_TOKEN": "secret-token", "SSL_CERT_FILE": "/etc/ca.pem",
              "NAT_TELEMETRY_CONSENT_FILE": str(tmp_path / "consent.toml")}
    assert sender.start_detached_sender(str(spool), black_hole.url, token="secret-token",
                                        lifetime_seconds=5, environ=caller)
    child = sender._children[-1]
    pid = child if isinstance(child, int) else child.pid
    # Until the child has exec'd, its environ is empty or its parent's: read the sender's.
    environ = Path("/proc") / str(pid) / "environ"
    seen = wait_until(lambda: b"NAT_TELEMETRY_SENDER_ENDPOINT=" in environ.read_bytes()
                      and environ.read_bytes(), timeout=10)
    env = dict(item.split("=", 1) for item in seen.decode().split("\0") if item)
    assert env == {
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost", "DO_NOT_TRACK": "0", "NAT_TELEMETRY_ENABLED": "1",
        "NAT_TELEMETRY_SENDER_ENDPOINT": black_hole.url,
        "NAT_TELEMETRY_SENDER_TOKEN": "secret-token", "SSL_CERT_FILE": "/etc/ca.pem",
        "NAT_TELEMETRY_CONSENT_FILE": str(tmp_path / "consent.toml"),
    }
    os.kill(pid, signal.SIGTERM)
    sender._reap()
