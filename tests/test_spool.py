"""The on-disk spool: atomic, bounded, claimed once, never raising.

Real files in temporary folders; concurrency between real processes; the
filesystem failures (read-only folder, a write cut short) are real too, made
in a forked child that drops its privileges or lowers its file size limit.
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
from support.helpers import subprocess_env

from nat_telemetry import _spoolfile
from nat_telemetry.spool import (
    DEFAULT_MAX_AGE_SECONDS,
    DROPPED_SPOOL_ERROR,
    DROPPED_SPOOL_EXPIRED,
    DROPPED_SPOOL_FULL,
    DROPPED_SPOOL_OVERSIZE,
    DROPPED_SPOOL_UNTRUSTED,
    STALE_CLAIM_SECONDS,
    Spool,
    default_spool_dir,
)

NS = 1_000_000_000


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


def drain(spool: Spool) -> list[bytes]:
    bodies = []
    for claim in spool.claim():
        bodies.append(claim.body)
        assert claim.complete()
    return bodies


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
    assert default_spool_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == "/s/nat/telemetry-spool"
    assert default_spool_dir({"HOME": "/h"}) == "/h/.local/state/nat/telemetry-spool"
    # A relative XDG_STATE_HOME is ignored, as the XDG spec asks.
    assert default_spool_dir({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == (
        "/h/.local/state/nat/telemetry-spool")


def test_environment_variable_overrides_or_turns_off(tmp_path: Path) -> None:
    env = {"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": str(tmp_path / "mine")}
    assert default_spool_dir(env) == str(tmp_path / "mine")
    for off in ("off", "OFF", "none", "0", "false", "no", "disabled", " off "):
        assert default_spool_dir({"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": off}) is None
    # Empty means unset: the default folder.
    assert default_spool_dir({"HOME": "/h", "NAT_TELEMETRY_SPOOL_DIR": ""}) == (
        "/h/.local/state/nat/telemetry-spool")


# ------------------------------------------------------------- write, claim


def test_write_then_claim_round_trip_with_private_modes(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    first = spool.write(b'{"events": [1, 2]}', 2)
    second = spool.write(b'{"resourceSpans": []}', 1, kind="otlp")
    assert first.written and second.written and first.reason is None
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    files = ready_files(spool_dir)
    assert len(files) == 2
    for name in files:
        assert stat.S_IMODE((spool_dir / name).stat().st_mode) == 0o600
    assert (spool_dir / files[0]).read_bytes().startswith(b"NATSPOOL 1 nemo 2 ")
    assert spool.summary()[:3] == (2, 3, sum((spool_dir / n).stat().st_size for n in files))

    claims = list(spool.claim())
    assert [(c.kind, c.events, c.body) for c in claims] == [
        ("nemo", 2, b'{"events": [1, 2]}'), ("otlp", 1, b'{"resourceSpans": []}')]
    assert ready_files(spool_dir) == []  # claimed: renamed away from the ready names
    assert spool.summary()[:2] == (2, 3)  # still pending until completed
    assert all(c.complete() for c in claims)
    assert spool.summary() == (0, 0, 0, None)
    assert spool.counters() == {"written_batches": 2, "written_events": 3}


def test_claims_come_oldest_first_and_honour_the_limit(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), clock_ns=clock)
    for n in range(5):
        spool.write(body(n), 1)
        clock.advance(1)
    assert spool.summary()[3] == pytest.approx((clock.now - 5 * NS) / NS)
    taken = list(spool.claim(limit=2))
    assert [json.loads(c.body)["n"] for c in taken] == [0, 1]
    assert taken[0].created_at < taken[1].created_at
    for claim in taken:
        claim.release()
    assert [json.loads(b)["n"] for b in drain(spool)] == [0, 1, 2, 3, 4]


def test_waiting_sees_only_unclaimed_batches_of_the_kind(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    assert not spool.waiting("nemo")  # no folder yet
    assert spool.write(body(1), 1).written
    assert spool.waiting("nemo") and not spool.waiting("otlp")
    (claim,) = spool.claim()
    assert not spool.waiting("nemo")  # claimed: another sender's work
    claim.release()
    assert spool.waiting("nemo")


def test_release_puts_back_and_a_context_manager_releases(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(body(1), 1)
    with next(spool.claim()) as claim:
        assert ready_files(spool_dir) == []
    assert claim.settled
    assert len(ready_files(spool_dir)) == 1
    claim = next(spool.claim())
    assert claim.complete() and not claim.complete() and not claim.release()


def test_invalid_arguments_are_a_programming_error(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    with pytest.raises(ValueError):
        spool.write(b"{}", 1, kind="csv")
    with pytest.raises(ValueError):
        spool.write(b"{}", 0)


# --------------------------------------------------------------------- caps


def test_event_cap_drops_oldest_first_and_counts(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_events=10)
    for n in range(6):
        result = spool.write(body(n), 3)  # 3 events a batch: three batches fit
        assert result.written
        assert result.evicted == ({} if n < 3 else {DROPPED_SPOOL_FULL: 3})
    assert [json.loads(b)["n"] for b in drain(spool)] == [3, 4, 5]
    counters = spool.counters()
    assert counters[DROPPED_SPOOL_FULL] == 9
    assert counters["written_events"] == 18 == 9 + 3 * 3


def test_byte_cap_drops_oldest_first_and_counts(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_bytes=1000)
    sizes = []
    for n in range(8):
        assert spool.write(body(n, size=200), 2).written
        sizes.append(spool.summary()[2])
    assert max(sizes) <= 1000
    remaining = [json.loads(b)["n"] for b in drain(spool)]
    assert remaining == list(range(8 - len(remaining), 8)) and len(remaining) >= 3
    assert spool.counters()[DROPPED_SPOOL_FULL] == 2 * (8 - len(remaining))


def test_age_cap_at_write_and_at_claim(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), max_age_seconds=60, clock_ns=clock)
    spool.write(body(0), 2)
    clock.advance(30)
    spool.write(body(1), 1)
    clock.advance(31)  # the first is now 61 s old
    result = spool.write(body(2), 4)
    assert result.evicted == {DROPPED_SPOOL_EXPIRED: 2}
    clock.advance(50)  # the second is 81 s old, the third 50 s
    assert [json.loads(b)["n"] for b in drain(spool)] == [2]
    assert spool.counters()[DROPPED_SPOOL_EXPIRED] == 3
    assert DEFAULT_MAX_AGE_SECONDS == 7 * 86400


def test_a_batch_over_a_cap_is_refused_and_counted(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir), max_events=5, max_bytes=500)
    spool.write(body(0), 1)
    too_many = spool.write(body(1), 6)
    too_big = spool.write(b"x" * 500, 1)
    for result in (too_many, too_big):
        assert not result.written and result.reason == DROPPED_SPOOL_OVERSIZE
    assert spool.counters()[DROPPED_SPOOL_OVERSIZE] == 7
    assert spool.summary()[:2] == (1, 1)  # nothing evicted for a batch that cannot fit


# ---------------------------------------------------------------- atomicity

WRITER = r"""
import sys
from nat_telemetry.spool import Spool
folder, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
spool = Spool(folder, max_events=10**6, max_bytes=10**9)
for n in range(count):
    body = (tag + ":" + str(n) + ":").encode() + b"y" * (n * 997 % 50000)
    assert spool.write(body, 1 + n % 3).written
"""


def test_concurrent_writers_never_expose_a_partial_file(spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir), max_events=10**6, max_bytes=10**9)
    assert spool.write(b"seed", 1).written  # the folder exists for the reader
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for name in os.listdir(spool_dir):
                if not name.endswith(".nsp"):
                    continue
                try:
                    _spoolfile.read_record(str(spool_dir / name), 10**9)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    problems.append(f"{name}: {exc}")

    def writer(tag: str) -> None:
        local = Spool(str(spool_dir), max_events=10**6, max_bytes=10**9)
        for n in range(40):
            assert local.write(f"{tag}:{n}:".encode() + b"z" * (n * 1499 % 40000), 1).written

    threads = [threading.Thread(target=reader)] + [
        threading.Thread(target=writer, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(spool_dir), f"p{i}", "40"],
                                 env=subprocess_env(tmp_path)) for i in range(3)]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    for thread in threads[1:]:
        thread.join(30)
    stop.set()
    threads[0].join(30)
    assert problems == []
    assert [n for n in os.listdir(spool_dir) if not n.endswith(".nsp")] == []  # no temp left
    tags = sorted(b.split(b":")[0].decode() + ":" + b.split(b":")[1].decode()
                  for b in drain(spool) if b != b"seed")
    assert tags == sorted(f"{k}{i}:{n}" for k in "tp" for i in range(3) for n in range(40))


# ------------------------------------------------------------------- claims

CLAIMER = r"""
import os, sys, time
from nat_telemetry.spool import Spool
folder, out, go = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 20
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
spool = Spool(folder)
with open(out, "wb") as sink:
    while True:
        got = 0
        for claim in spool.claim():
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
        assert spool.write(b"b%d" % n, 1).written
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}" for i in range(2)]
    children = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(spool_dir), str(out),
                                  str(go)], env=subprocess_env(tmp_path)) for out in outs]
    time.sleep(0.3)  # both interpreters started and waiting
    go.touch()
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    got = [out.read_bytes().split() for out in outs]
    assert set(got[0]).isdisjoint(got[1])
    assert sorted(got[0] + got[1]) == sorted(b"b%d" % n for n in range(300))
    assert spool.summary()[0] == 0


HOLDER = r"""
import sys, time
from nat_telemetry.spool import Spool
claims = list(Spool(sys.argv[1]).claim(limit=1))
print(len(claims), flush=True)
time.sleep(60)
"""


def test_a_claim_whose_owner_was_killed_is_reclaimed(spool_dir: Path, tmp_path: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"orphan", 1)
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(spool_dir)],
                             stdout=subprocess.PIPE, env=subprocess_env(tmp_path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"1"
        assert list(spool.claim()) == []  # a live owner keeps its claim
        assert spool.summary()[:2] == (1, 1)
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
    owner.write(b"stuck", 1)
    held = list(owner.claim())  # this pid, alive: only age can free it
    assert len(held) == 1
    other = Spool(str(spool_dir), clock_ns=clock)
    clock.advance(STALE_CLAIM_SECONDS - 1)
    assert list(other.claim()) == []
    clock.advance(2)
    assert drain(other) == [b"stuck"]
    assert other.counters()["spool_reclaimed"] == 1
    assert not held[0].complete()  # it was taken from under the stale owner


# ------------------------------------------------------- corrupt and foreign


def plant(folder: Path, data: bytes, events: int = 1, kind: str = "nemo") -> str:
    name = _spoolfile.ready_name(time.time_ns() - NS, 0, kind, events, len(data))
    (folder / name).write_bytes(data)
    return name


def test_corrupt_files_are_deleted_and_counted_never_raised(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"good", 1)
    plant(spool_dir, b"not a spool file at all")
    plant(spool_dir, _spoolfile.header("nemo", 1, 1, 100) + b"short")  # truncated body
    plant(spool_dir, _spoolfile.header("nemo", 2, 1, 2) + b"{}")  # header disagrees with name
    plant(spool_dir, b"NATSPOOL 0 nemo 1 1 2\n{}")  # an unknown older version
    plant(spool_dir, b"")
    recent = time.time_ns() - NS
    (spool_dir / _spoolfile.ready_name(recent, 0, "nemo", 1, 9)).symlink_to("/etc/hostname")
    (spool_dir / _spoolfile.ready_name(recent, 1, "nemo", 1, 9)).mkdir()
    assert drain(spool) == [b"good"]
    assert spool.counters()["spool_corrupt"] == 7
    assert ready_files(spool_dir) == []


def test_newer_format_and_foreign_files_are_left_alone(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    spool.write(b"good", 1)
    future = plant(spool_dir, b"NATSPOOL 2 nemo 1 1 2 extra\n{}")
    for name in ("notes.txt", "a.b.c.d.e.f.g.h", ".hidden"):
        (spool_dir / name).write_text("mine")
    assert drain(spool) == [b"good"]
    assert spool.counters()["spool_foreign"] == 1
    assert sorted(os.listdir(spool_dir)) == sorted([future, "notes.txt", "a.b.c.d.e.f.g.h",
                                                    ".hidden"])
    assert spool.clear() == 1  # the newer-format batch is ours by name
    assert sorted(os.listdir(spool_dir)) == [".hidden", "a.b.c.d.e.f.g.h", "notes.txt"]


def test_an_abandoned_temporary_file_is_removed_once_stale(spool_dir: Path) -> None:
    clock = Clock()
    spool = Spool(str(spool_dir), clock_ns=clock)
    spool.write(b"x", 1)
    tmp = spool_dir / _spoolfile.tmp_name(0)
    tmp.write_bytes(b"NATSPOOL 1 ne")
    spool.write(b"y", 1)
    assert tmp.exists()  # maybe a writer still at work
    clock.advance(STALE_CLAIM_SECONDS + 1)
    spool.write(b"z", 1)
    assert not tmp.exists()


# ------------------------------------------------------- untrusted, failing


def test_a_folder_writable_by_others_is_not_used(spool_dir: Path) -> None:
    spool_dir.mkdir(parents=True)
    spool_dir.chmod(0o777)
    spool = Spool(str(spool_dir))
    plant(spool_dir, _spoolfile.header("nemo", 1, 1, 2) + b"{}")
    result = spool.write(b"{}", 3)
    assert not result.written and result.reason == DROPPED_SPOOL_UNTRUSTED
    assert list(spool.claim()) == [] and not spool.available()
    assert spool.counters() == {DROPPED_SPOOL_UNTRUSTED: 3}
    assert len(ready_files(spool_dir)) == 1  # planted one untouched, nothing written


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
    result = spool.write(b"{}", 1)
    assert not result.written and result.reason == DROPPED_SPOOL_UNTRUSTED
    assert list(spool.claim()) == []


def test_a_read_only_folder_gives_a_result_not_an_exception(shared_base: Path) -> None:
    folder = shared_base / "spool"
    folder.mkdir(mode=0o500)

    def attempt() -> tuple[bool, str | None, str | None, list[str]]:
        if os.geteuid() == 0:  # root writes anywhere: become an ordinary user
            os.chown(folder, 65534, 65534)
            os.setgid(65534)
            os.setuid(65534)
        spool = Spool(str(folder))
        result = spool.write(b"{}", 2)
        claimed = list(spool.claim())
        return result.written, result.reason, result.error, [repr(c) for c in claimed]

    written, reason, error, claimed = in_forked_child(attempt)
    assert (written, reason, claimed) == (False, DROPPED_SPOOL_ERROR, [])
    assert error is not None and "PermissionError" in error
    assert os.listdir(folder) == []


def test_a_write_cut_short_leaves_nothing_behind(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    assert spool.write(b"small", 1).written

    def attempt() -> tuple[bool, str | None]:
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # SIGXFSZ is ignored
        result = spool.write(b"x" * 100_000, 1)
        return result.written, result.reason

    assert in_forked_child(attempt) == (False, DROPPED_SPOOL_ERROR)
    assert len(os.listdir(spool_dir)) == 1  # the earlier batch, and no temporary file
    assert drain(spool) == [b"small"]


def test_a_path_that_cannot_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for folder in (tmp_path / "file", tmp_path / "file" / "spool"):
        spool = Spool(str(folder))
        result = spool.write(b"{}", 1)
        assert not result.written and result.reason == DROPPED_SPOOL_ERROR
        assert list(spool.claim()) == [] and spool.summary() == (0, 0, 0, None)
        assert spool.clear() == 0


def test_a_missing_folder_is_created_only_by_a_write(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    assert list(spool.claim()) == [] and spool.summary() == (0, 0, 0, None)
    assert not spool.available() and not spool_dir.exists()
    assert spool.write(b"{}", 1).written and spool.available()


# -------------------------------------------------------------------- clear


def test_clear_deletes_every_batch_and_the_folder(spool_dir: Path) -> None:
    spool = Spool(str(spool_dir))
    for n in range(3):
        spool.write(body(n), 2)
    held = next(spool.claim())
    (spool_dir / "sender.lock").write_text("")
    assert spool.clear() == 6
    assert not spool_dir.exists()
    assert not held.complete() and not held.release()  # gone; never raises
    assert spool.clear() == 0
