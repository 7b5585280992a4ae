"""Hostile clients over real loopback sockets: idle, trickling, too many, too big.

Each test gives the collector small limits so it runs in about a second.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from support.collector import child_env, http, make_envelope, parse_answer, wait_for

from nat_telemetry.collector import Collector

POST_HEAD = "POST /v1.1/events/json HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    """Send ``data`` one byte every ``every`` seconds until done, stopped or closed."""
    for index in range(len(data)):
        if stop.wait(every):
            return
        try:
            sock.sendall(data[index:index + 1])
        except OSError:
            return


def end_child(proc: subprocess.Popen[str], timeout: float) -> None:
    """Close a child collector's stdin (it stops), killing it if it takes too long."""
    proc.stdin.close()  # type: ignore[union-attr]
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def post_once(url: str) -> tuple[int, float]:
    """(status, seconds) of one POST on a fresh connection."""
    started = time.monotonic()
    with http() as session:  # closed at once: no idle connection is left behind
        status = session.post(url, json=make_envelope(1), timeout=5).status_code
    return status, time.monotonic() - started


# ---------------------------------------------------------------- deadline


def test_a_trickled_request_line_is_answered_408_at_the_deadline(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(request_timeout=0.5)
    stop = threading.Event()
    with connect(collector.port) as sock:
        started = time.monotonic()
        sender = threading.Thread(target=trickle, args=(sock, b"POST /v1.1/events/json HT" * 10,
                                                         0.05, stop))
        sender.start()
        try:
            answer = read_until_closed(sock)
        finally:
            stop.set()
            sender.join()
        elapsed = time.monotonic() - started
    # Every byte arrived well within a per-read timeout; the deadline is wall-clock.
    assert 0.45 <= elapsed < 2.0
    status, headers, body = parse_answer(answer)
    assert status == 408 and headers["connection"] == "close"
    assert "within 0.5 s" in json.loads(body)["error"]
    counts = collector.counts()
    assert counts["rejected"]["timeout"] == 1 and counts["requests"] == 1
    assert counts["connections"]["timed_out"] == 1


def test_a_trickled_body_is_answered_408_and_stores_nothing(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(request_timeout=0.5)
    body = json.dumps(make_envelope(1)).encode()
    stop = threading.Event()
    with connect(collector.port) as sock:
        sock.sendall(POST_HEAD.format(len(body)).encode())
        sender = threading.Thread(target=trickle, args=(sock, body, 0.02, stop))
        sender.start()
        try:
            answer = read_until_closed(sock)
        finally:
            stop.set()
            sender.join()
    assert parse_answer(answer)[0] == 408
    assert collector.stored_count() == 0
    assert collector.counts()["rejected"]["timeout"] == 1


def test_a_silent_connection_is_closed_without_an_answer(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(request_timeout=0.3)
    with connect(collector.port) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    counts = collector.counts()
    assert counts["requests"] == 0  # nothing was asked, nothing is counted as a request
    assert counts["connections"]["timed_out"] == 1


def test_an_idle_keep_alive_connection_gets_a_fresh_deadline_per_request(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(request_timeout=0.3)
    session = http()
    for _ in range(3):  # 0.45 s in all: longer than one deadline, each request within its own
        assert session.post(collector.url, json=make_envelope(1), timeout=5).status_code == 200
        time.sleep(0.15)
    assert collector.counts()["connections"]["accepted"] == 1


def test_an_http_0_9_get_is_answered_at_once_and_counted(ingest: Collector) -> None:
    with connect(ingest.port, timeout=2.0) as sock:
        sock.sendall(b"GET /\r\n")  # HTTP/0.9: no headers will follow
        status, headers, _ = parse_answer(read_until_closed(sock))
    assert status == 405 and headers["allow"] == "POST"
    counts = ingest.counts()
    assert counts["rejected"]["method_not_allowed"] == 1 and counts["requests"] == 1


def test_an_endless_header_is_refused_with_431(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector()
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    with connect(collector.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        sender = threading.Thread(target=lambda: _send_quietly(sock, line * 1000))  # 1 MB
        sender.start()
        answer = read_until_closed(sock)
        sender.join()
    assert parse_answer(answer)[0] == 431
    assert collector.counts()["rejected"]["too_large"] == 1


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the collector stopped reading: that is the point
        sock.sendall(data)


# ---------------------------------------------------------- connection cap


def test_idle_connections_beyond_the_cap_make_room_for_a_client(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(max_connections=4, request_timeout=30)
    threads_before = threading.active_count()
    idle = [connect(collector.port) for _ in range(40)]
    try:
        time.sleep(0.3)
        # One thread per connection, never more connections than the cap.
        assert threading.active_count() - threads_before <= 4
        assert collector.open_connections() <= 4
        status, seconds = post_once(collector.url)
        assert status == 200 and seconds < 2.0
        assert collector.counts()["connections"]["evicted"] >= 36
    finally:
        for sock in idle:
            sock.close()


def test_tricklers_beyond_the_cap_make_room_for_a_client(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(max_connections=4, request_timeout=30)
    stop = threading.Event()
    socks = [connect(collector.port) for _ in range(12)]
    senders = [threading.Thread(target=trickle, args=(sock, b"POST / HTTP/1.1\r\n" * 50, 0.2,
                                                      stop)) for sock in socks]
    for sender in senders:
        sender.start()
    try:
        time.sleep(0.4)
        status, seconds = post_once(collector.url)
        assert status == 200 and seconds < 2.0
        counts = collector.counts()
        assert counts["connections"]["evicted"] >= 8
        assert counts["errors"]["evicted"] >= 1  # partly sent requests, counted as cut short
    finally:
        stop.set()
        for sender in senders:
            sender.join()
        for sock in socks:
            sock.close()


def test_when_every_connection_is_busy_new_ones_wait_in_the_backlog(
    start_collector: Callable[..., Collector]
) -> None:
    # Two slow requests hold both slots; nothing may be evicted, so the third
    # connection waits (not refused, not served early) and is served after them.
    collector = start_collector(max_connections=2, delay_ms=400)
    results: list[tuple[int, float]] = []  # (status, when it was answered)
    lock = threading.Lock()

    def client() -> None:
        status, _ = post_once(collector.url)
        with lock:
            results.append((status, time.monotonic()))

    clients = [threading.Thread(target=client) for _ in range(2)]
    for thread in clients:
        thread.start()
    # Both requests read and being answered (late): neither may make room now.
    assert wait_for(lambda: collector.counts()["faults"]["delay"] == 2)
    third = post_once(collector.url)
    third_answered = time.monotonic()
    for thread in clients:
        thread.join()
    assert [status for status, _ in results] == [200, 200]
    # Served only once a slot was free, then delayed its own 0.4 s.  (Served at once,
    # it would have been answered moments after the others.)
    assert third[0] == 200 and third[1] >= 0.4
    assert third_answered - max(answered for _, answered in results) >= 0.3
    # No request was cut to make room.  (A connection idle after its answer may be
    # closed for the third before its client's own close arrives: that is not one.)
    assert collector.counts()["errors"]["evicted"] == 0


# ------------------------------------------------------- bytes in flight


def test_bodies_wait_for_the_budget_and_answer_503_at_the_deadline(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(max_body=2000, max_inflight=2000, request_timeout=0.4)
    # The waiter connects first, so its deadline comes before the holder's.
    waiter = connect(collector.port)
    time.sleep(0.05)
    holder = connect(collector.port)
    try:
        holder.sendall(POST_HEAD.format(1800).encode() + b" " * 10)  # takes 1800 of 2000
        time.sleep(0.1)
        waiter.sendall(POST_HEAD.format(1800).encode())  # must wait: 1800 + 1800 > 2000
        status, headers, body = parse_answer(read_until_closed(waiter))
        assert status == 503 and headers["retry-after"] == "1"
        assert "busy" in json.loads(body)["error"]
        assert collector.budget.used <= 2000
        assert parse_answer(read_until_closed(holder))[0] == 408
    finally:
        holder.close()
        waiter.close()
    counts = collector.counts()
    assert counts["errors"]["busy"] == 1 and counts["rejected"]["timeout"] == 1
    assert collector.budget.used == 0  # everything taken was given back
    assert post_once(collector.url)[0] == 200


def test_max_inflight_must_hold_one_body(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        Collector(tmp_path / "x.db", max_body=2000, max_inflight=1000)


# --------------------------------------------------------- in a subprocess

COLLECT_IN_CHILD = r"""
import os, resource, sys, time
from nat_telemetry.collector import Collector

soft = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
collector = Collector(sys.argv[1]).start()
if sys.argv[3] == "host":  # the program around the collector takes every descriptor left
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        for fd in taken[:4]:
            os.close(fd)
print(collector.url, flush=True)
for line in sys.stdin:  # "cpu": the CPU seconds used so far
    print(time.process_time(), flush=True)
collector.stop()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="resource.setrlimit is POSIX")
@pytest.mark.parametrize("taken_by", ["connections", "host"])
def test_out_of_descriptors_never_spins_and_still_serves(tmp_path: Path, taken_by: str) -> None:
    # "connections": idle clients beyond what the limit allows; "host": the
    # process around the collector took the descriptors, so accept() fails.
    proc = subprocess.Popen(
        [sys.executable, "-c", COLLECT_IN_CHILD, str(tmp_path / "fd.db"), "64", taken_by],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(tmp_path))
    assert proc.stdin is not None and proc.stdout is not None
    idle: list[socket.socket] = []
    try:
        url = proc.stdout.readline().strip()
        port = int(url.split(":")[2].split("/")[0])
        idle = [connect(port) for _ in range(80)]  # more than the child has descriptors for

        def cpu() -> float:
            proc.stdin.write("cpu\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return float(proc.stdout.readline())  # type: ignore[union-attr]

        time.sleep(0.2)
        before, started = cpu(), time.monotonic()
        time.sleep(0.5)
        share = (cpu() - before) / (time.monotonic() - started)
        assert share < 0.3, f"the collector used {share:.0%} of a core doing nothing"
        status, seconds = post_once(url)
        assert status == 200 and seconds < 3.0
    finally:
        for sock in idle:
            sock.close()
        end_child(proc, timeout=10)
    assert proc.returncode == 0


MEMORY_CHILD = r"""
import sys
from nat_telemetry.collector import Collector

def peak_kib():  # this process's own peak (ru_maxrss would include the parent's, from fork)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

collector = Collector(sys.argv[1]).start()
print(collector.url, flush=True)
for line in sys.stdin:  # "rss": the peak resident size so far, in KiB
    print(peak_kib(), flush=True)
collector.stop()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_many_near_complete_bodies_are_not_all_held_in_memory(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "mem.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(tmp_path))
    assert proc.stdin is not None and proc.stdout is not None

    def peak_kib() -> int:
        proc.stdin.write("rss\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        return int(proc.stdout.readline())  # type: ignore[union-attr]

    length = 1_048_576 - 100
    socks: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline().split(":")[2].split("/")[0])
        before = peak_kib()
        # 48 clients each send all but the last byte of a 1 MiB body: 48 MiB
        # offered at once, no body ever complete.
        pending = {}
        for _ in range(48):
            sock = connect(port)
            sock.sendall(POST_HEAD.format(length).encode())
            sock.setblocking(False)
            socks.append(sock)
            pending[sock] = memoryview(b" " * (length - 1))
        deadline = time.monotonic() + 3.0
        while pending and time.monotonic() < deadline:
            for sock, rest in list(pending.items()):
                try:
                    sent = sock.send(rest[:262144])
                except BlockingIOError:
                    continue
                pending[sock] = rest[sent:]
                if not pending[sock]:
                    del pending[sock]
            time.sleep(0.001)
        time.sleep(0.3)
        grown_mib = (peak_kib() - before) / 1024
        # The default budget is 8 MiB of bodies; without one, all 48 are read.
        assert grown_mib < 24, f"the collector grew by {grown_mib:.0f} MiB"
    finally:
        for sock in socks:
            sock.close()
        end_child(proc, timeout=15)
