"""The collector under hostile clients: threads, memory and service time.

    python benchmarks/collector_under_load.py [--source DIR] [--idle 2000]
        [--trickle 300] [--big 0] [--nofile N] [--probes 5] [--seconds 90]

Starts ``nat-telemetry collect`` from ``--source`` (a checkout of the package;
default this one) in a process of its own on a free loopback port, then, from
this process, keeps ``--idle`` connections open that never send a byte,
``--trickle`` connections that send a request one byte per second (half of
them never finish their headers, half never finish a 1 MB body), and ``--big``
connections that send all but the last byte of a 1 MiB body and stall.  A
connection the collector closes is opened again (unless ``--once``), so the
load stays the same for the whole run.  Once the load is in place it measures, ``--probes``
times: how long a normal client (a fresh connection, one POST of a valid
envelope) takes to get its answer, and the collector's threads, resident
memory (now and peak) and CPU use, read from ``/proc`` (Linux only).

Loopback only; everything is bounded by ``--seconds``.  ``--nofile`` sets the
collector's soft descriptor limit (e.g. 1024, a common default).
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

HEADER_TRICKLE = b"POST /v1.1/events/json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10**6
BODY_TRICKLE = (b"POST /v1.1/events/json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                + b" " * 10**6)
BIG_LENGTH = 1_048_576 - 100
BIG = (b"POST /v1.1/events/json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
       b"Content-Type: application/json\r\nContent-Length: " + str(BIG_LENGTH).encode()
       + b"\r\n\r\n" + b" " * (BIG_LENGTH - 1))


def envelope() -> bytes:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    reference = json.loads((ROOT / "tests" / "data" / "envelope-example.json").read_text())
    reference["sentTs"] = stamp
    for event in reference["events"]:
        event["ts"] = stamp
    return json.dumps(reference).encode()


# ------------------------------------------------------------- the collector


class CollectorProcess:
    def __init__(self, source: Path, folder: str, nofile: int | None) -> None:
        def limit() -> None:
            if nofile:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "nat_telemetry", "collect", "--port", "0",
             "--db", os.path.join(folder, "load.db")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=folder,
            env={**os.environ, "PYTHONPATH": str(source)}, preexec_fn=limit,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        url = next(word for word in line.split() if word.startswith("http://"))
        self.port = int(url.split(":")[2].split("/")[0])
        self._cpu = (self.cpu_seconds(), time.monotonic())

    def status(self) -> dict[str, int]:
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("Threads", "VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0])
        fields["fds"] = len(os.listdir(f"/proc/{self.process.pid}/fd"))
        return fields

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            parts = stat.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_share(self) -> float:
        """CPU used since the last call, as a share of one core."""
        cpu, at = self.cpu_seconds(), time.monotonic()
        before_cpu, before_at = self._cpu
        self._cpu = (cpu, at)
        return (cpu - before_cpu) / max(1e-6, at - before_at)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------- the load


class Load:
    """Non-blocking hostile connections, reopened when the collector closes them."""

    def __init__(self, port: int, idle: int, trickle: int, big: int, reopen: bool) -> None:
        self.port = port
        self.reopen = reopen
        self.selector = selectors.DefaultSelector()
        self.plan = (["idle"] * idle + ["header"] * (trickle // 2)
                     + ["body"] * (trickle - trickle // 2) + ["big"] * big)
        self.sockets: dict[int, tuple[socket.socket, str, int, float]] = {}
        self.reopened = 0
        self.open_failures = 0
        self._pending = list(range(len(self.plan)))

    def _open(self, slot: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.open_failures += 1
            self._pending.append(slot)
            return
        # (socket, kind, bytes sent, next send time)
        self.sockets[slot] = (sock, self.plan[slot], 0, time.monotonic() + (slot % 10) / 10)
        self.selector.register(sock, selectors.EVENT_READ, slot)

    def _close(self, slot: int) -> None:
        sock = self.sockets.pop(slot)[0]
        self.selector.unregister(sock)
        sock.close()
        if self.reopen:
            self.reopened += 1
            self._pending.append(slot)

    def step(self, budget: float) -> None:
        """Open what is missing (a few hundred at a time), send what is due, reap closes."""
        for _ in range(min(300, len(self._pending))):
            self._open(self._pending.pop(0))
        now = time.monotonic()
        for slot, (sock, kind, sent, due) in list(self.sockets.items()):
            if kind == "idle" or due > now:
                continue
            data = {"header": HEADER_TRICKLE, "body": BODY_TRICKLE, "big": BIG}[kind]
            if kind == "big" or (kind == "body" and sent == 0):
                chunk = data[sent:] if kind == "big" else data[:data.index(b"\r\n\r\n") + 4]
            else:
                chunk = data[sent:sent + 1]
            try:
                count = sock.send(chunk) if chunk else 0
            except (BlockingIOError, InterruptedError):
                count = 0
            except OSError:
                self._close(slot)
                continue
            self.sockets[slot] = (sock, kind, sent + count, now + (1.0 if kind != "big" else 0.2))
        for key, _ in self.selector.select(timeout=budget):
            slot = key.data
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if slot in self.sockets:  # an answer (408, 503...) or a close: start again
                self._close(slot)

    def connected(self) -> int:
        return len(self.sockets)

    def close(self) -> None:
        for sock, *_ in self.sockets.values():
            sock.close()
        self.selector.close()


def serve_time(port: int, body: bytes, timeout: float) -> tuple[float, Any]:
    """Seconds until a fresh client gets its answer, and the status (or the error)."""
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("POST", "/v1.1/events/json", body,
                           {"Content-Type": "application/json"})
        status: Any = connection.getresponse().status
        connection.close()
    except OSError as exc:
        status = type(exc).__name__
    return time.monotonic() - started, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--trickle", type=int, default=300)
    parser.add_argument("--big", type=int, default=0)
    parser.add_argument("--nofile", type=int)
    parser.add_argument("--once", action="store_true",
                        help="do not open a connection again once the collector closed it")
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--json", type=Path, help="append the figures to this JSONL file")
    args = parser.parse_args()

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side holds them all
    body = envelope()
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as folder:
        collector = CollectorProcess(args.source, folder, args.nofile)
        load = Load(collector.port, args.idle, args.trickle, args.big, reopen=not args.once)
        try:
            settle_until = time.monotonic() + args.settle
            while time.monotonic() < settle_until:
                load.step(0.05)
            collector.cpu_share()
            probes = []
            for _ in range(args.probes):
                # The load keeps going while the probe waits: run it between tries.
                left = deadline - time.monotonic()
                if left <= 1:
                    break
                seconds, status = serve_time(collector.port, body, min(30.0, left))
                sample = collector.status()
                for _ in range(10):
                    load.step(0.05)
                probes.append({"seconds": round(seconds, 4), "status": status,
                               "connected": load.connected(),
                               "cpu": round(collector.cpu_share(), 2), **sample})
                print(json.dumps(probes[-1]), flush=True)
        finally:
            load.close()
            collector.stop()
    times = sorted(p["seconds"] for p in probes)
    summary = {
        "source": str(args.source), "idle": args.idle, "trickle": args.trickle, "big": args.big,
        "nofile": args.nofile, "reopen": not args.once, "probes": len(probes),
        "served": sum(1 for p in probes if p["status"] == 200),
        "serve_seconds_median": times[len(times) // 2] if times else None,
        "serve_seconds_max": times[-1] if times else None,
        "threads_max": max((p["Threads"] for p in probes), default=None),
        "rss_kib_max": max((p["VmRSS"] for p in probes), default=None),
        "rss_peak_kib": max((p["VmHWM"] for p in probes), default=None),
        "cpu_max": max((p["cpu"] for p in probes), default=None),
        "reopened": load.reopened,
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
