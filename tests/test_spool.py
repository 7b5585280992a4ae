"""The on-disk spool: atomic, bounded, claimed once, per destination, never raising.

Real files in temporary folders; concurrency between real processes; the
filesystem failures (read-only folder, a write cut short) are real too, made
in a forked child that drops its privileges or lowers its file size limit.
Bodies are opaque to the spool, so most tests write small byte strings; the
batch encoding has tests of its own.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from support.helpers import renames, subprocess_env

from nat_telemetry import config
from nat_telemetry.spool import (
    DEFAULT_MAX_AGE_SECONDS,
    DROPPED_SPOOL_ERROR,
    DROPPED_SPOOL_EXPIRED,
    DROPPED_SPOOL_FULL,
    DROPPED_SPOOL_OVERSIZE,
    DROPPED_SPOOL_UNTRUSTED,
    STALE_CLAIM_SECONDS,
    Spool,
    decode_batch,
    encode_batch,
    open_regular,
    pid_alive,
    read_small,
    write_atomically,
)
from nat_telemetry.transport import destination_id

NS = 1_000_000_000
# Two destinations, named as the handler and the sender name them.
HERE = destination_id("https://telemetry.example/ingest")
THERE = destination_id("otlp+https://collector.example", "token")


class Clock:
    """A wall clock in nanoseconds that moves only when told."""

    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NS)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool"


def body(n: int, size: int = 20) -> bytes:
    return json.dumps({"n": n, "pad": "x" * size}).encode()


def ready_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".nsp"))


def drain(spool: Spool, destination: str = HERE) -> list[bytes]:
    bodies = []
    for claim in spool.claim(destination):
        bodies.append(claim.body)
        assert claim.complete()
    return bodies


def totals(spool: Spool) -> tuple[int, int, int]:
    """Files, events and bytes over every destination."""
    found = spool.summary().values()
    return (sum(f[0] for f in found), sum(f[1] for f in found), sum(f[2] for f in found))


def ready_name(created_ns: int, destination: str = HERE, events: int = 1, size: int = 9,
               pid: int = 0, seq: int = 0) -> str:
    """A batch's file name, as the spool writes it."""
    return f"{created_ns:020d}.{pid}.{seq}.0badf00d.{destination}.{events}.{size}.nsp"


def header(destination: str, events: int, created_ns: int, length: int,
           version: int = 2) -> bytes:
    return b"NATSPOOL %d %s %d %d %d\n" % (version, destination.encode(), events, created_ns,
                                           length)


def plant(folder: Path, data: bytes, destination: str = HERE, events: int = 1,
          seq: int = 0) -> Path:
    """A file named like a batch (one second old) holding ``data``."""
    path = folder / ready_name(time.time_ns() - NS, destination, events, len(data), seq=seq)
    path.write_bytes(data)
    return path


def whole(path: Path) -> str | None:
    """Why a batch file is not whole (header, body and name agreeing), or None."""
    data = path.read_bytes()
    head, newline, rest = data.partition(b"\n")
    fields = head.split(b" ")
    parts = path.name.split(".")
    if not newline or len(fields) != 6 or fields[:2] != [b"NATSPOOL", b"2"]:
        return f"bad header {head[:60]!r}"
    if int(fields[5]) != len(rest) or int(parts[6]) != len(data):
        return f"{len(data)} bytes, header says body {fields[5]!r}, name says {parts[6]}"
    if fields[2].decode() != parts[4] or fields[3].decode() != parts[5]:
        return "header and name disagree"
    return None


def in_forked_child(function: Callable[[], Any]) -> Any:
    """Run ``function`` in a forked child and return what it returned (pickled)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            try:
                result: Any = ("ok", function())
            except BaseException as exc:
                result = ("raised", repr(exc))
            os.write(write_end, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    assert status == "ok", value
    return value


# ------------------------------------------------------------------ location


def test_default_folder_follows_xdg_then_home() -> None:
    spool_dir = config.NAT.spool_dir
    assert spool_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == "/s/nat/telemetry-spool"
    assert spool_dir({"HOME": "/h"}) == "/h/.local/state/nat/telemetry-spool"
    # A relative XDG_STATE_HOME is ignored, as the XDG spec asks.
    assert spool_dir({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == (
        "/h/.local/state/nat/telemetry-spool")
    # Another tool has a folder of its own.
    assert config.Tool("mytool").spool_dir({"HOME": "/h"}) == (
        "/h/.local/state/mytool/telemetry-spool")


def test_a_tilde_in_the_variable_is_the_given_home(monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = config.NAT.spool_dir
    assert spool_dir({"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": "~/spool"}) == "/h/spool"
    # No home folder known at all: no spool, never a folder named "~" here.
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(config.os.path, "expanduser", lambda path: path)
    assert spool_dir({"NAT_TELEMETRY_SPOOL_DIR": "~/spool"}) is None


def test_environment_variable_overrides_or_turns_off(tmp_path: Path) -> None:
    spool_dir = config.NAT.spool_dir
    env = {"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": str(tmp_path / "mine")}
    assert spool_dir(env) == str(tmp_path / "mine")
    for off in ("off", "OFF", "none", "0", "false", "no", "disabled", " off "):
        assert spool_dir({"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": off}) is None
    # Empty means unset: the default folder.
    assert spool_dir({"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": ""}) == (
        "/h/.local/state/nat/telemetry-spool")
    # A tool reads its own variable only.
    other = {"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": "off",
             "MYTOOL_TELEMETRY_SPOOL_DIR": str(tmp_path / "its")}
    assert config.Tool("mytool").spool_dir(other) == str(tmp_path / "its")


# ------------------------------------------------------------- write, claim


def test_write_then_claim_round_trip_with_private_modes(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    first = spool.write(b'{"events": [1, 2]}', 2, HERE)
    second = spool.write(b'{"events": [3]}', 1, THERE)
    assert first.written and second.written and first.reason is None
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    files = ready_files(spool_dir)
    assert len(files) == 2
    for name in files:
        assert stat.S_IMODE((spool_dir / name).stat().st_mode) == 0o600
        assert whole(spool_dir / name) is None
    assert first.path is not None
    here_file = Path(first.path)
    assert here_file.read_bytes().startswith(b"NATSPOOL 2 " + HERE.encode() + b" 2 ")
    assert f".{HERE}.2.{here_file.stat().st_size}.nsp" in here_file.name
    summary = spool.summary()
    assert {d: s[:3] for d, s in summary.items()} == {
        HERE: (1, 2, here_file.stat().st_size),
        THERE: (1, 1, Path(str(second.path)).stat().st_size)}
    assert summary[HERE][3] == pytest.approx(time.time(), abs=60)

    claims = list(spool.claim(HERE))
    assert [(c.destination, c.events, c.body) for c in claims] == [
        (HERE, 2, b'{"events": [1, 2]}')]
    assert ready_files(spool_dir) == [Path(str(second.path)).name]  # claimed: renamed away
    assert spool.summary()[HERE][:2] == (1, 2)  # still pending until completed
    assert all(c.complete() for c in claims)
    assert list(spool.summary()) == [THERE]
    assert drain(spool, THERE) == [b'{"events": [3]}']
    assert spool.summary() == {}
    assert spool.counters() == {"written_batches": 2, "written_events": 3}


def test_a_claim_for_one_destination_never_takes_another_ones_batch(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    for n in range(6):
        assert spool.write(body(n), 1, HERE if n % 2 else THERE).written
    # Not even a corrupt batch of the other destination is touched.
    foreign = plant(spool_dir, b"not a batch", THERE, seq=99)
    with renames() as renamed:
        taken = [json.loads(b)["n"] for b in drain(spool, HERE)]
    assert taken == [1, 3, 5]
    assert renamed and all(f".{HERE}." in name for name in renamed)
    assert foreign.exists() and "spool_corrupt" not in spool.counters()
    assert {d: s[:2] for d, s in spool.summary().items()} == {THERE: (4, 4)}
    assert not spool.waiting(HERE) and spool.waiting(THERE)
    assert list(spool.claim("0123456789abcdef")) == []  # nobody's batches
    assert [json.loads(b)["n"] for b in drain(spool, THERE)[:3]] == [0, 2, 4]


def test_a_folder_that_cannot_be_listed_yields_no_claim_and_says_why(
        spool_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(str(spool_dir))
    assert spool.write(body(0), 1, HERE).written

    def unlistable(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    with monkeypatch.context() as patched:
        patched.setattr(os, "listdir", unlistable)
        with caplog.at_level("DEBUG", logger="nat_telemetry"):
            assert list(spool.claim(HERE)) == []
    assert "spool could not be listed" in caplog.text and "Permission denied" in caplog.text
    assert [json.loads(b)["n"] for b in drain(spool, HERE)] == [0]  # still there, for later


def test_claims_come_oldest_first_and_honour_the_limit(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), clock_ns=clock)
    for n in range(5):
        spool.write(body(n), 1, HERE)
        clock.advance(1)
    assert spool.summary()[HERE][3] == pytest.approx((clock.now - 5 * NS) / NS)
    taken = list(spool.claim(HERE, limit=2))
    assert [json.loads(c.body)["n"] for c in taken] == [0, 1]
    assert taken[0].created_at < taken[1].created_at
    for claim in taken:
        claim.release()
    assert [json.loads(b)["n"] for b in drain(spool)] == [0, 1, 2, 3, 4]


def test_waiting_sees_only_unclaimed_batches_of_the_destination(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), clock_ns=clock)
    assert not spool.waiting(HERE)  # no folder yet
    assert spool.write(body(1), 1, HERE).written
    assert spool.waiting(HERE) and not spool.waiting(THERE)
    (claim,) = spool.claim(HERE)
    assert not spool.waiting(HERE)  # claimed: another sender's work
    claim.release()
    assert spool.waiting(HERE)
    # Only batches spooled at or after a time, when asked.
    assert spool.waiting(HERE, since_ns=clock.now)
    assert not spool.waiting(HERE, since_ns=clock.now + 1)


def test_release_puts_back_and_a_context_manager_releases(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(body(1), 1, HERE)
    with next(spool.claim(HERE)) as claim:
        assert ready_files(spool_dir) == []
    assert claim.settled
    assert len(ready_files(spool_dir)) == 1
    claim = next(spool.claim(HERE))
    assert claim.complete() and not claim.complete() and not claim.release()


@pytest.mark.parametrize("destination", ["", "nemo/x", "a b", "a.b", "caf\u00e9", "../x"])
def test_a_destination_is_letters_and_digits(spool_dir: Path, destination: str) -> None:
    with pytest.raises(ValueError):
        Spool(str(spool_dir)).write(b"{}", 1, destination)
    assert not spool_dir.exists()


def test_a_batch_without_events_is_a_programming_error(spool_dir: Path) -> None:
    with pytest.raises(ValueError):
        Spool(str(spool_dir)).write(b"{}", 0, HERE)


# -------------------------------------------------------------------- batches


def test_a_batch_body_round_trips() -> None:
    identity = {"session_id": "s-1", "client_version": "1.2.3", "product": ["tool", "2.0"]}
    records = [["nat_cli_command", None, 1_700_000_000.25, 0, {"command": "run"}],
               ["custom", "1.0", 1_700_000_001.5, 2, {"caf\u00e9": "\u2603 \"quoted\""}]]
    encoded = encode_batch(identity, records)
    assert decode_batch(encoded) == (identity, records)
    assert json.loads(encoded) == {"identity": identity, "events": records}


@pytest.mark.parametrize("text", [b"", b"not json", b"[]", b'{"identity": {}}',
                                  b'{"identity": 1, "events": []}',
                                  b'{"identity": {}, "events": {}}', b"\xff\xfe"])
def test_a_body_that_is_not_a_batch_is_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        decode_batch(text)


# --------------------------------------------------------------------- caps


def test_event_cap_drops_oldest_first_whatever_the_destination(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_events=10)
    for n in range(6):
        result = spool.write(body(n), 3, HERE if n % 2 else THERE)  # three batches fit
        assert result.written
        assert result.evicted == ({} if n < 3 else {DROPPED_SPOOL_FULL: 3})
    assert [json.loads(b)["n"] for b in drain(spool, HERE)] == [3, 5]
    assert [json.loads(b)["n"] for b in drain(spool, THERE)] == [4]
    counters = spool.counters()
    assert counters[DROPPED_SPOOL_FULL] == 9
    assert counters["written_events"] == 18 == 9 + 3 * 3


def test_byte_cap_drops_oldest_first_and_counts(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_bytes=1000)
    sizes = []
    for n in range(8):
        assert spool.write(body(n, size=200), 2, HERE).written
        sizes.append(totals(spool)[2])
    assert max(sizes) <= 1000
    remaining = [json.loads(b)["n"] for b in drain(spool)]
    assert remaining == list(range(8 - len(remaining), 8)) and len(remaining) >= 3
    assert spool.counters()[DROPPED_SPOOL_FULL] == 2 * (8 - len(remaining))


def test_age_cap_at_write_and_at_claim(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), max_age_seconds=60, clock_ns=clock)
    spool.write(body(0), 2, HERE)
    clock.advance(30)
    spool.write(body(1), 1, HERE)
    spool.write(body(9), 5, THERE)
    clock.advance(31)  # the first is now 61 s old
    result = spool.write(body(2), 4, HERE)
    assert result.evicted == {DROPPED_SPOOL_EXPIRED: 2}
    clock.advance(50)  # the second and the other destination's are 81 s old, the third 50 s
    assert [json.loads(b)["n"] for b in drain(spool)] == [2]
    # A batch nobody sends to any more ages out all the same.
    assert spool.counters()[DROPPED_SPOOL_EXPIRED] == 2 + 1 + 5
    assert spool.summary() == {}
    assert DEFAULT_MAX_AGE_SECONDS == 7 * 86400


def test_a_batch_over_a_cap_is_refused_and_counted(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_events=5, max_bytes=500)
    spool.write(body(0), 1, HERE)
    too_many = spool.write(body(1), 6, HERE)
    too_big = spool.write(b"x" * 500, 1, HERE)
    for result in (too_many, too_big):
        assert not result.written and result.reason == DROPPED_SPOOL_OVERSIZE
    assert spool.counters()[DROPPED_SPOOL_OVERSIZE] == 7
    assert totals(spool)[:2] == (1, 1)  # nothing evicted for a batch that cannot fit


# ---------------------------------------------------------------- atomicity

WRITER = r"""
import sys
from nat_telemetry.spool import Spool
folder, tag, count, destination = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spool = Spool(folder, max_events=10**6, max_bytes=10**9)
for n in range(count):
    body = (tag + ":" + str(n) + ":").encode() + b"y" * (n * 997 % 50000)
    assert spool.write(body, 1 + n % 3, destination).written
"""


def test_concurrent_writers_never_expose_a_partial_file(spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir), max_events=10**6, max_bytes=10**9)
    assert spool.write(b"seed", 1, HERE).written  # the folder exists for the reader
    problems: list[str] = []
    looked: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for name in os.listdir(spool_dir):
                if not name.endswith(".nsp"):
                    continue
                try:
                    problem = whole(spool_dir / name)
                except FileNotFoundError:
                    continue
                looked.append(1)
                if problem is not None:
                    problems.append(f"{name}: {problem}")

    def writer(tag: str) -> None:
        local = Spool(str(spool_dir), max_events=10**6, max_bytes=10**9)
        for n in range(40):
            assert local.write(f"{tag}:{n}:".encode() + b"z" * (n * 1499 % 40000), 1,
                               HERE).written

    threads = [threading.Thread(target=reader)] + [
        threading.Thread(target=writer, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(spool_dir), f"p{i}", "40",
                                  HERE], env=subprocess_env(tmp_path)) for i in range(3)]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    for thread in threads[1:]:
        thread.join(30)
    stop.set()
    threads[0].join(30)
    assert problems == [] and looked
    assert [n for n in os.listdir(spool_dir) if not n.endswith(".nsp")] == []  # no temp left
    tags = sorted(b.split(b":")[0].decode() + ":" + b.split(b":")[1].decode()
                  for b in drain(spool) if b != b"seed")
    assert tags == sorted(f"{k}{i}:{n}" for k in "tp" for i in range(3) for n in range(40))


def test_write_atomically_replaces_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "x.state"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_atomically(str(tmp_path), "x.state", b"new" * 1000, fsync=True)
    assert target.read_bytes() == b"new" * 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileNotFoundError):
        write_atomically(str(tmp_path / "missing"), "x.state", b"")
    assert sorted(os.listdir(tmp_path)) == ["x.state"]  # no temporary file left


# ------------------------------------------------------------------- claims

CLAIMER = r"""
import os, sys, time
from nat_telemetry.spool import Spool
folder, out, go, destination = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
deadline = time.monotonic() + 20
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
spool = Spool(folder)
with open(out, "wb") as sink:
    while True:
        got = 0
        for claim in spool.claim(destination):
            sink.write(claim.body + b"\n")
            claim.complete()
            got += 1
        if not got:
            break
"""


def test_two_processes_claiming_at_once_send_each_file_once(
        spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir))
    for n in range(300):
        assert spool.write(b"b%d" % n, 1, HERE).written
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}" for i in range(2)]
    children = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(spool_dir), str(out),
                                  str(go), HERE], env=subprocess_env(tmp_path)) for out in outs]
    time.sleep(0.3)  # both interpreters started and waiting
    go.touch()
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    got = [out.read_bytes().split() for out in outs]
    assert set(got[0]).isdisjoint(got[1])
    assert sorted(got[0] + got[1]) == sorted(b"b%d" % n for n in range(300))
    assert spool.summary() == {}


HOLDER = r"""
import sys, time
from nat_telemetry.spool import Spool
claims = list(Spool(sys.argv[1]).claim(sys.argv[2], limit=1))
print(len(claims), flush=True)
time.sleep(60)
"""


def test_a_claim_whose_owner_was_killed_is_reclaimed(spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"orphan", 1, HERE)
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(spool_dir), HERE],
                             stdout=subprocess.PIPE, env=subprocess_env(tmp_path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"1"
        assert list(spool.claim(HERE)) == []  # a live owner keeps its claim
        assert spool.summary()[HERE][:2] == (1, 1)
        assert not spool.waiting(HERE)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert drain(spool) == [b"orphan"]
    assert spool.counters()["spool_reclaimed"] == 1


def test_a_claim_older_than_the_stale_bound_is_reclaimed(spool_dir: Path) -> None:
    clock = Clock()
    owner = Spool(str(spool_dir), clock_ns=clock)
    owner.write(b"stuck", 1, HERE)
    held = list(owner.claim(HERE))  # this pid, alive: only age can free it
    assert len(held) == 1
    other = Spool(str(spool_dir), clock_ns=clock)
    clock.advance(STALE_CLAIM_SECONDS - 1)
    assert list(other.claim(HERE)) == []
    clock.advance(2)
    assert drain(other) == [b"stuck"]
    assert other.counters()["spool_reclaimed"] == 1
    assert not held[0].complete()  # it was taken from under the stale owner


def test_pid_alive_tells_a_reaped_process_from_a_live_one() -> None:
    assert pid_alive(os.getpid()) and pid_alive(1)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    assert not pid_alive(int(child.stdout))


# ------------------------------------------------------- corrupt and foreign


def test_corrupt_files_are_deleted_and_counted_never_raised(
        spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"good", 1, HERE)
    created = time.time_ns() - NS
    planted = [
        plant(spool_dir, b"not a spool file at all", seq=1),
        plant(spool_dir, header(HERE, 1, created, 100) + b"short", seq=2),  # truncated body
        plant(spool_dir, header(HERE, 2, created, 2) + b"{}", seq=3),  # events disagree
        plant(spool_dir, header(THERE, 1, created, 2) + b"{}", seq=4),  # destination disagrees
        plant(spool_dir, header(HERE, 1, created, 2, version=1) + b"{}", seq=5),  # older format
        plant(spool_dir, b"", seq=6),
    ]
    huge = plant(spool_dir, header(HERE, 1, created, 3 * 1024 * 1024), seq=7)
    with open(huge, "ab") as grow:  # larger than any batch can be (sparse)
        grow.truncate(3 * 1024 * 1024 + 100)
    planted.append(huge)
    target = tmp_path / "target"
    target.write_bytes(b"not ours")
    link = spool_dir / ready_name(created, seq=8)
    link.symlink_to(target)
    folder = spool_dir / ready_name(created, seq=9)
    folder.mkdir()
    fifo = spool_dir / ready_name(created, seq=10)
    os.mkfifo(fifo)  # never waited on
    planted += [link, folder, fifo]
    if os.geteuid() == 0:  # a whole batch, but written by another user
        other = plant(spool_dir, header(HERE, 1, created, 2) + b"{}", seq=11)
        os.chown(other, 65534, 65534)
        planted.append(other)
    assert drain(spool) == [b"good"]
    assert spool.counters()["spool_corrupt"] == len(planted)
    assert ready_files(spool_dir) == [] and os.listdir(spool_dir) == []
    assert target.read_bytes() == b"not ours"  # the link went, not what it pointed to


def test_newer_format_and_foreign_files_are_left_alone(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"good", 1, HERE)
    future = plant(spool_dir, header(HERE, 1, 1, 2, version=3) + b"{}")
    foreign = ("notes.txt", "a.b.c.d.e.f.g.h", ".hidden", "my-notes.lock", "x.y.z.nsp")
    for name in foreign:
        (spool_dir / name).write_text("mine")
    assert drain(spool) == [b"good"]
    assert spool.counters()["spool_foreign"] == 1
    assert sorted(os.listdir(spool_dir)) == sorted([future.name, *foreign])
    assert future.read_bytes().startswith(b"NATSPOOL 3 ")
    assert spool.clear() == 1  # the newer-format batch is ours by name
    assert sorted(os.listdir(spool_dir)) == sorted(foreign)


def test_an_abandoned_temporary_file_is_removed_once_stale(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), clock_ns=clock)
    spool.write(b"x", 1, HERE)
    tmp = spool_dir / ".0.0.0badf00d.tmp"
    tmp.write_bytes(b"NATSPOOL 2 ne")
    spool.write(b"y", 1, HERE)
    assert tmp.exists()  # maybe a writer still at work
    clock.advance(STALE_CLAIM_SECONDS + 1)
    spool.write(b"z", 1, HERE)
    assert not tmp.exists()


def test_open_regular_never_waits_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "x.state"
    os.mkfifo(fifo)  # nobody writes: an ordinary open would block for ever
    for flags in (os.O_RDONLY, os.O_RDWR):
        with pytest.raises(IsADirectoryError):
            open_regular(str(fifo), flags)
    with pytest.raises(OSError):
        read_small(str(fifo))
    with pytest.raises(IsADirectoryError):
        read_small(str(tmp_path))
    (tmp_path / "small").write_bytes(b"x" * 100)
    assert read_small(str(tmp_path / "small"), 10) == b"x" * 10


# ------------------------------------------------------- untrusted, failing


def test_a_folder_writable_by_others_is_not_used(spool_dir: Path) -> None:
    spool_dir.mkdir(parents=True)
    spool_dir.chmod(0o777)
    spool = Spool(str(spool_dir))
    plant(spool_dir, header(HERE, 1, 1, 2) + b"{}")
    result = spool.write(b"{}", 3, HERE)
    assert not result.written and result.reason == DROPPED_SPOOL_UNTRUSTED
    assert spool.problem() == (DROPPED_SPOOL_UNTRUSTED, "writable by other users")
    assert list(spool.claim(HERE)) == [] and not spool.available()
    assert spool.counters() == {DROPPED_SPOOL_UNTRUSTED: 3}
    assert len(ready_files(spool_dir)) == 1  # planted one untouched, nothing written
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o777  # not "fixed" behind the user


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A folder another user can traverse (tmp_path's parents are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="spool-test-"))
    base.chmod(0o755)
    yield base
    for root, dirs, _files in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_folder_of_another_user_is_not_used(shared_base: Path) -> None:
    folder = shared_base / "spool"
    folder.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
    else:
        folder = Path("/")  # root's, and never writable here
    spool = Spool(str(folder))
    result = spool.write(b"{}", 1, HERE)
    assert not result.written and result.reason == DROPPED_SPOOL_UNTRUSTED
    assert spool.problem() == (DROPPED_SPOOL_UNTRUSTED, "not owned by this user")
    assert list(spool.claim(HERE)) == []


def test_a_read_only_folder_gives_a_result_not_an_exception(shared_base: Path) -> None:
    folder = shared_base / "spool"
    folder.mkdir(mode=0o500)

    def attempt() -> tuple[bool, str | None, str | None, list[str]]:
        if os.geteuid() == 0:  # root writes anywhere: become an ordinary user
            os.chown(folder, 65534, 65534)
            os.setgid(65534)
            os.setuid(65534)
        spool = Spool(str(folder))
        result = spool.write(b"{}", 2, HERE)
        claimed = list(spool.claim(HERE))
        return result.written, result.reason, result.error, [repr(c) for c in claimed]

    written, reason, error, claimed = in_forked_child(attempt)
    assert (written, reason, claimed) == (False, DROPPED_SPOOL_ERROR, [])
    assert error == "not writable"
    assert os.listdir(folder) == []


def test_a_write_cut_short_leaves_nothing_behind(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    assert spool.write(b"small", 1, HERE).written

    def attempt() -> tuple[bool, str | None, str | None]:
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # SIGXFSZ is ignored
        result = spool.write(b"x" * 100_000, 1, HERE)
        return result.written, result.reason, result.error

    written, reason, error = in_forked_child(attempt)
    assert (written, reason) == (False, DROPPED_SPOOL_ERROR)
    assert error is not None and error.startswith("OSError")
    assert len(os.listdir(spool_dir)) == 1  # the earlier batch, and no temporary file
    assert drain(spool) == [b"small"]


def test_a_path_that_cannot_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for folder in (tmp_path / "file", tmp_path / "file" / "spool"):
        spool = Spool(str(folder))
        result = spool.write(b"{}", 1, HERE)
        assert not result.written and result.reason == DROPPED_SPOOL_ERROR
        problem = spool.problem(create=True)
        assert problem is not None and problem[0] == DROPPED_SPOOL_ERROR
        assert list(spool.claim(HERE)) == [] and spool.summary() == {}
        assert not spool.waiting(HERE) and spool.states() == {}
        spool.note(HERE, "https://example.invalid/x")
        assert spool.clear() == 0
    assert Spool(str(tmp_path / "file")).problem() == (DROPPED_SPOOL_ERROR, "not a folder")
    assert (tmp_path / "file").read_text() == ""


def test_a_missing_folder_is_created_only_by_a_write(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    assert list(spool.claim(HERE)) == [] and spool.summary() == {}
    assert spool.problem() == (DROPPED_SPOOL_ERROR, "not created yet")
    spool.note(HERE, "https://example.invalid/x")  # status never creates it either
    assert not spool.available() and not spool_dir.exists()
    assert spool.write(b"{}", 1, HERE).written and spool.available()
    assert spool.problem() is None


# ------------------------------------------------------------------ states


def test_notes_record_the_last_delivery_and_failure_per_destination(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"{}", 1, HERE)
    before = time.time()
    spool.note(HERE, "https://***@telemetry.example/ingest?***")
    spool.note(THERE, "otlp+https://collector.example", "timeout")
    states = spool.states()
    assert set(states) == {HERE, THERE}
    assert states[HERE]["endpoint"] == "https://***@telemetry.example/ingest?***"
    assert before <= states[HERE]["delivered_at"] <= time.time()
    assert "failure" not in states[HERE] and "failed_at" not in states[HERE]
    assert states[THERE]["failure"] == "timeout" and "delivered_at" not in states[THERE]
    # A failure keeps the last delivery's time; a delivery keeps the last failure.
    spool.note(HERE, "https://***@telemetry.example/ingest?***", "http 503")
    again = spool.states()[HERE]
    assert again["delivered_at"] == states[HERE]["delivered_at"]
    assert (again["failure"], again["failed_at"] >= before) == ("http 503", True)
    assert stat.S_IMODE((spool_dir / f"{HERE}.state").stat().st_mode) == 0o600
    assert totals(spool)[:2] == (1, 1)  # the batches are not touched


def test_an_unreadable_state_is_left_out(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"{}", 1, HERE)
    (spool_dir / "aaaa.state").write_text("not json")
    (spool_dir / "bbbb.state").write_text("[1, 2]")
    os.mkfifo(spool_dir / "cccc.state")
    (spool_dir / "dddd.state").write_text(json.dumps(
        {"endpoint": 3, "failure": "refused", "failed_at": "yesterday", "delivered_at": 5,
         "extra": "x"}))
    assert spool.states() == {"dddd": {"failure": "refused", "delivered_at": 5}}


# -------------------------------------------------------------------- clear


def test_clear_deletes_every_batch_the_senders_files_and_the_folder(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    for n in range(3):
        spool.write(body(n), 2, HERE)
    spool.write(body(3), 5, THERE)
    held = next(spool.claim(HERE))
    for suffix in ("lock", "pid", "backoff"):
        (spool_dir / f"{HERE}.{suffix}").write_text("")
    spool.note(THERE, "https://example.invalid/x")
    (spool_dir / ".0.0.0badf00d.tmp").write_bytes(b"NATSPOOL")
    assert spool.clear() == 11
    assert not spool_dir.exists()
    assert not held.complete() and not held.release()  # gone; never raises
    assert spool.clear() == 0
