"""One spool, two destinations: a batch goes only where it was recorded for.

Two tools on one machine share the default spool.  Real command lines (each a
process with ``track_command``) record for two loopback endpoints, one of them
down: its batch is never delivered to the other, its sender never holds the
other's batches back, and it arrives at its own endpoint once that is back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from support.endpoints import LoopbackEndpoint, refusing_port
from support.helpers import subprocess_env, wait_until

from nat_telemetry.spool import Spool
from nat_telemetry.transport import destination_id

TOOL = """
import sys
from nat_telemetry import track_command
with track_command("tool", sys.argv[1]):
    pass
"""


def run(tmp_path: Path, spool: Path, url: str, subcommand: str) -> float:
    """Run one command line recording ``subcommand`` for ``url``; when it returned."""
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=url, NAT_TELEMETRY_SPOOL_DIR=str(spool))
    result = subprocess.run([sys.executable, "-c", TOOL, subcommand], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return time.monotonic()


def subcommands(endpoint: LoopbackEndpoint) -> list[str]:
    return sorted(e["parameters"]["subcommand"] for e in endpoint.events)


def test_a_batch_goes_only_to_its_own_destination(tmp_path: Path) -> None:
    spool = tmp_path / "shared-spool"
    b = LoopbackEndpoint()
    try:
        with refusing_port() as port_a:  # tool A's endpoint: down for now
            url_a = f"http://127.0.0.1:{port_a}/ingest"
            run(tmp_path, spool, url_a, "a-offline")
            assert wait_until(lambda: destination_id(url_a) in Spool(str(spool)).summary())
            # While A's batch waits (its sender retrying a refused port), B's arrive
            # at once, and only B's.
            for n in range(3):
                returned = run(tmp_path, spool, b.url, f"b-{n}")
                assert wait_until(lambda n=n: len(b.events) == n + 1, timeout=10)
                assert b.times()[-1] - returned < 5.0
        assert subcommands(b) == ["b-0", "b-1", "b-2"]
        a = LoopbackEndpoint(port=port_a)
        try:
            run(tmp_path, spool, url_a, "a-online")  # A's next run takes both
            assert wait_until(lambda: len(a.events) == 2, timeout=20)
            assert subcommands(a) == ["a-offline", "a-online"]
        finally:
            a.close()
        assert subcommands(b) == ["b-0", "b-1", "b-2"]  # nothing of A's ever reached B
        assert wait_until(lambda: not Spool(str(spool)).summary(), timeout=10)
    finally:
        b.close()


def test_a_batch_nobody_sends_to_ages_out(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"), max_age_seconds=0.2)
    assert spool.write(b'{"identity": {}, "events": []}', 1, destination_id("http://gone/")).written
    time.sleep(0.3)
    result = spool.write(b'{"identity": {}, "events": []}', 1, destination_id("http://new/"))
    assert result.written and result.evicted == {"dropped_spool_expired": 1}
    assert list(spool.summary()) == [destination_id("http://new/")]


def test_a_destination_is_named_without_its_credentials() -> None:
    endpoint = "https://alice:hunter2@telemetry.example/v1?api_key=s3cret"
    name = destination_id(endpoint, "token-123")
    assert len(name) == 16 and name.isalnum()
    assert name != destination_id(endpoint, "another-token")  # sent differently: apart
    assert name != destination_id("https://telemetry.example/v1", "token-123")
    for secret in ("alice", "hunter2", "s3cret", "token"):
        assert secret not in name
