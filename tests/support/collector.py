"""Helpers for the collector's tests: events, envelopes, raw and plain HTTP clients."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import requests

from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.payload import QueuedEvent, build_payload
from nat_telemetry.retry import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = REPO_ROOT / "tests" / "data" / "envelope-example.json"


def make_event(ident: int = 0, **overrides: Any) -> CliCommandEvent:
    """A valid event; ``duration_ms`` carries ``ident`` so rows can be matched."""
    fields: dict[str, Any] = {
        "command": "run", "subcommand": "undefined", "task_status": "success",
        "duration_ms": ident, "exit_code": 0, "python_version": "3.11.7",
    }
    fields.update(overrides)
    return CliCommandEvent(**fields)


def make_envelope(count: int = 2, start: int = 0) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    queued = [QueuedEvent(make_event(start + i), now) for i in range(count)]
    return build_payload(queued, source_client_version="9.9.9", session_id="feedc0de")


def ids_in(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(row["parameters"]["durationMs"] for row in rows)


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy between us and loopback
    return session


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_answer(b"".join(chunks))


def parse_answer(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body) of one raw HTTP answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def outcome(session: requests.Session, url: str, body: Any) -> Any:
    """The status of one POST, or "drop" when the connection closed unanswered."""
    try:
        return session.post(url, json=body, timeout=5).status_code
    except requests.ConnectionError:
        return "drop"


def fast_policy(max_retries: int = 50) -> RetryPolicy:
    return RetryPolicy(max_retries, backoff_base=0.001, backoff_max=0.005)


def flush_all(handler: NATTelemetryHandler, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not handler.flush(timeout=2.0):
        assert time.monotonic() < deadline, handler.stats()


def child_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a child Python that imports nat_telemetry from this tree."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NAT_") and "proxy" not in key.lower()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NAT_TELEMETRY_CONSENT_FILE"] = str(tmp_path / "consent.toml")
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout`` passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.005)
