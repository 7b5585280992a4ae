"""Many invocations of a tool, one spool: senders, delivery and ``status``, in real processes.

Every invocation here is a real interpreter running a one-``track_command``
tool at exit spooling its event and starting a detached sender when none is
alive for the destination.  The burst runs under a driver process that is the
burst's subreaper, so it can count (and reap) the senders too.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.endpoints import LoopbackEndpoint, Reply, refusing_port
from support.helpers import subprocess_env, wait_until

from nat_telemetry.spool import Spool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the burst driver is a subreaper (prctl, Linux only)")

TOOL = """\
import sys
from nat_telemetry import track_command

with track_command("fleet", sys.argv[1]):
    pass
"""

# Runs ``runs`` invocations of the tool, ``parallel`` at a time, as the
# subreaper of all of them; prints how many other processes (senders) it
# reaped and when (time.monotonic(), one clock for every process here) the
# last invocation exited and the last sender was gone.
DRIVER = """\
import ctypes, json, os, sys, time

if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise SystemExit("prctl failed")
tool, runs, parallel, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
running, started, senders = set(), 0, 0
while started < runs or running:
    while started < runs and len(running) < parallel:
        running.add(os.spawnv(os.P_NOWAIT, sys.executable,
                              [sys.executable, tool, f"{tag}-{started}"]))
        started += 1
    pid, status = os.wait()
    if pid in running:
        running.discard(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"an invocation exited with {status}")
    else:
        senders += 1
last_run = time.monotonic()
while True:  # the senders still alive: each ends within its bounded lifetime
    try:
        os.wait()
    except ChildProcessError:
        break
    senders += 1
print(json.dumps({"senders": senders, "last_run": last_run, "all_gone": time.monotonic()}))
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield Fleet(tmp_path)


class Fleet:
    """The tool, the driver, one spool and one environment for all of them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tool = tmp_path / "tool.py"
        self.tool.write_text(TOOL)
        self.driver = tmp_path / "driver.py"
        self.driver.write_text(DRIVER)
        self.spool = tmp_path / "spool"
        self.tmp_path = tmp_path

    def env(self, endpoint: str, **extra: str) -> dict[str, str]:
        env = subprocess_env(self.tmp_path, NAT_TELEMETRY_ENDPOINT=endpoint,
                             NAT_TELEMETRY_SPOOL_DIR=str(self.spool), **extra)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            env.pop(name, None)  # the trust a machine has by default, nothing added
        return env

    def burst(self, endpoint: str, runs: int, parallel: int, tag: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, str(self.driver), str(self.tool), str(runs),
                               str(parallel), tag], env=self.env(endpoint),
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # telemetry prints nothing in a tool's output
        return dict(json.loads(done.stdout))

    def run(self, endpoint: str, tag: str, **extra: str) -> None:
        done = subprocess.run([sys.executable, str(self.tool), tag],
                              env=self.env(endpoint, **extra), capture_output=True,
                              text=True, timeout=30)
        assert (done.returncode, done.stderr) == (0, "")

    def status(self, endpoint: str, **extra: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "nat_telemetry", "status", "--json"],
                              env=self.env(endpoint, **extra), capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def status_text(self, endpoint: str, **extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "nat_telemetry", "status"],
                              env=self.env(endpoint, **extra), capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def waiting(self) -> int:
        """Events waiting in the spool, whatever their destination."""
        return sum(events for _, events, _, _ in Spool(str(self.spool)).summary().values())


def subcommands(endpoint: LoopbackEndpoint, tag: str) -> list[str]:
    names = [str(e.get("parameters", {}).get("subcommand", "")) for e in endpoint.all_events]
    return [name for name in names if name.startswith(f"{tag}-")]


def test_a_burst_starts_a_few_senders_and_delivers_each_event_once(
        fleet: Fleet, loopback_endpoint: LoopbackEndpoint) -> None:
    runs = 24
    result = fleet.burst(loopback_endpoint.url, runs, 4, "burst")
    delivered = subcommands(loopback_endpoint, "burst")
    assert sorted(delivered) == sorted(f"burst-{n}" for n in range(runs))  # each once
    # One sender takes the batches of the runs that end while it is alive;
    # a new one starts only when none is.
    assert 1 <= result["senders"] <= 4, result
    # Within seconds of the last run (~5 s is the goal; room for a loaded machine).
    assert max(loopback_endpoint.times()) - result["last_run"] < 10
    assert fleet.waiting() == 0
    # And then no process of ours is left: each sender went once it was idle.
    assert result["all_gone"] - result["last_run"] < 15


def test_a_run_that_ends_while_a_sender_is_busy_is_taken_by_that_sender(
        fleet: Fleet, loopback_endpoint: LoopbackEndpoint) -> None:
    # The first answer takes a second: the first run's sender is still busy
    # (holding the destination's lock) when the second run spools its event.
    loopback_endpoint.script(Reply(200, delay=1.0))
    fleet.run(loopback_endpoint.url, "late-0")
    wait_until(lambda: loopback_endpoint.requests >= 1, timeout=10)
    fleet.run(loopback_endpoint.url, "late-1")
    ended = time.monotonic()
    wait_until(lambda: len(subcommands(loopback_endpoint, "late")) == 2, timeout=10)
    assert time.monotonic() - ended < 10
    assert sorted(subcommands(loopback_endpoint, "late")) == ["late-0", "late-1"]
    # The sender removes a batch once its answer is read: moments after the
    # collector has seen it.
    assert wait_until(lambda: fleet.waiting() == 0, timeout=10)


def test_offline_then_online_one_later_run_delivers_everything(
        fleet: Fleet) -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/ingest"
        for n in range(3):
            fleet.run(url, f"offline-{n}")
        # Each run's sender found the port refusing and left the events waiting.
        info = wait_until(lambda: _settled(fleet.status(url), 3), timeout=30)
        assert info["last_failure"]["kind"] == "refused"

    endpoint = LoopbackEndpoint(port=port)
    try:
        fleet.run(url, "online-0")
        wait_until(lambda: len(subcommands(endpoint, "offline")) == 3
                   and subcommands(endpoint, "online") == ["online-0"], timeout=15)
        assert sorted(subcommands(endpoint, "offline")) == [f"offline-{n}" for n in range(3)]
        assert wait_until(lambda: fleet.waiting() == 0, timeout=10)
        assert fleet.status(url)["last_delivery"]["at"] is not None
    finally:
        endpoint.close()


def _settled(info: dict[str, Any], events: int) -> dict[str, Any] | None:
    """``info`` once ``events`` wait and a failure has been noted for them."""
    if info["spool"]["events"] == events and info["last_failure"]["kind"] is not None:
        return info
    return None


@pytest.mark.parametrize("answer", [401, 403])
def test_status_names_an_http_refusal_with_its_code(
        fleet: Fleet, loopback_endpoint: LoopbackEndpoint, answer: int) -> None:
    loopback_endpoint.set_default(answer)
    url = loopback_endpoint.url.replace("://", "://user:pa55word@") + "?key=s3cret"
    fleet.run(url, "refused-0", NAT_TELEMETRY_TOKEN="t0ken-value")
    info = wait_until(lambda: _noted(fleet.status(url, NAT_TELEMETRY_TOKEN="t0ken-value")),
                      timeout=15)
    assert info["last_failure"]["kind"] == f"http {answer}"
    text = fleet.status_text(url, NAT_TELEMETRY_TOKEN="t0ken-value")
    assert f": HTTP status {answer}" in text
    for shown in (json.dumps(info), text):
        for secret in ("pa55word", "s3cret", "t0ken-value"):
            assert secret not in shown


def test_status_names_a_refused_port(fleet: Fleet) -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/ingest"
        fleet.run(url, "refused-0")
        info = wait_until(lambda: _noted(fleet.status(url)), timeout=30)
        assert info["last_failure"]["kind"] == "refused"
        assert ": connection refused" in fleet.status_text(url)


def test_status_names_a_certificate_it_cannot_verify(fleet: Fleet) -> None:
    ca = trustme.CA()  # a private CA this machine was never told about
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    endpoint = LoopbackEndpoint(tls=context, host="localhost")
    try:
        fleet.run(endpoint.url, "tls-0")
        info = wait_until(lambda: _noted(fleet.status(endpoint.url)), timeout=15)
        assert info["last_failure"]["kind"] == "tls"
        assert ": TLS certificate verification failed" in fleet.status_text(endpoint.url)
        assert endpoint.requests == 0  # nothing was sent to a peer it could not verify
        assert fleet.waiting() == 1
    finally:
        endpoint.close()


def _noted(info: dict[str, Any]) -> dict[str, Any] | None:
    return info if info["last_failure"]["kind"] is not None else None
