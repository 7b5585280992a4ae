"""The loopback collector: round trips, every rejection path, fault injection, CLI.

Everything here talks to a real Collector over real loopback sockets; nothing
about the server is mocked.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from nat_telemetry import config
from nat_telemetry.cli import main
from nat_telemetry.collector import (
    ENVELOPE_KEYS,
    GDPR_FIELDS,
    IDENTITY_FIELDS,
    INGEST_PATH,
    Collector,
    EnvelopeRejected,
    known_event_types,
    parse_envelope,
)
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.payload import QueuedEvent, build_payload
from nat_telemetry.retry import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE = REPO_ROOT / "tests" / "data" / "envelope-example.json"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_UNSET: Any = object()


# ----------------------------------------------------------------- helpers


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
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
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
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NAT_") and "proxy" not in key.lower()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NAT_TELEMETRY_CONSENT_FILE"] = str(tmp_path / "consent.toml")
    return env


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def telemetry_on() -> Iterator[None]:
    """Telemetry enabled for the handlers in these tests, restored afterwards."""
    settings = vars(config)
    before = settings.get("TELEMETRY_ENABLED", _UNSET)
    dry_run = config.NAT_TELEMETRY_DRY_RUN
    config.TELEMETRY_ENABLED = True
    config.NAT_TELEMETRY_DRY_RUN = False
    yield
    config.NAT_TELEMETRY_DRY_RUN = dry_run
    if before is _UNSET:
        settings.pop("TELEMETRY_ENABLED", None)
    else:
        config.TELEMETRY_ENABLED = before


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """``start_collector(**options)``: a started Collector, stopped at teardown."""
    started: list[Collector] = []

    def factory(**options: Any) -> Collector:
        collector = Collector(tmp_path / f"c{len(started)}.db", **options).start()
        started.append(collector)
        return collector

    yield factory
    for collector in started:
        collector.stop()


@pytest.fixture
def ingest(start_collector: Callable[..., Collector]) -> Collector:
    return start_collector()


@pytest.fixture
def handlers() -> Iterator[list[NATTelemetryHandler]]:
    made: list[NATTelemetryHandler] = []
    yield made
    for handler in made:
        handler.stop(timeout=1)


# ------------------------------------------------------------- the schema


def test_envelope_keys_are_the_reference_keys() -> None:
    reference = json.loads(REFERENCE.read_text())
    assert list(ENVELOPE_KEYS) == list(reference)
    assert set(ENVELOPE_KEYS) == set(make_envelope())
    for key in IDENTITY_FIELDS:
        assert reference[key] == "undefined"
    for key in GDPR_FIELDS:
        assert reference[key] == "None"


def test_reference_envelope_parses_to_rows() -> None:
    rows = parse_envelope(REFERENCE.read_bytes(), known_event_types(), "2026-01-01T00:00:00.000Z")
    assert len(rows) == 2
    received_at, session, client_ver, arch, schema, name, ts, parameters = rows[1]
    assert (received_at, session, client_ver, arch, schema, name, ts) == (
        "2026-01-01T00:00:00.000Z", "0123456789abcdef0123456789abcdef", "1.9.0", "x86_64",
        "1.5", "nat_cli_command", "2026-11-22T10:18:40.513Z")
    assert json.loads(parameters)["errorClass"] == "ValueError"


def test_event_names_come_from_the_event_classes() -> None:
    assert known_event_types()["nat_cli_command"] is CliCommandEvent


def test_parameters_given_by_field_name_are_stored_by_alias() -> None:
    envelope = make_envelope(1)
    envelope["events"][0]["parameters"] = {"command": "run", "task_status": "success",
                                           "python_version": "3.12.1"}
    rows = parse_envelope(json.dumps(envelope).encode(), known_event_types())
    assert json.loads(rows[0][-1]) == {
        "nemoSource": "agent_toolkit", "command": "run", "subcommand": "undefined",
        "taskStatus": "success", "durationMs": -1, "exitCode": -1,
        "errorClass": "undefined", "pythonVersion": "3.12.1"}


# -------------------------------------------------------------- round trip


def test_round_trip_one_handler(ingest: Collector, handlers: list[NATTelemetryHandler]) -> None:
    handler = NATTelemetryHandler(endpoint=ingest.url, session_id="s-one",
                                  source_client_version="1.2.3")
    handlers.append(handler)
    sent = [make_event(i, subcommand=f"sub{i}") for i in range(7)]
    for item in sent:
        handler.enqueue(item)
    assert handler.flush(timeout=5)

    assert ingest.url.endswith(INGEST_PATH)
    rows = ingest.rows()
    assert [row["parameters"] for row in rows] == [e.model_dump(by_alias=True) for e in sent]
    for row in rows:
        assert row["session_id"] == "s-one"
        assert row["client_ver"] == "1.2.3"
        assert row["cpu_architecture"] == config.CPU_ARCHITECTURE
        assert row["schema_version"] == "1.5"
        assert row["name"] == "nat_cli_command"
        assert TIMESTAMP.fullmatch(row["ts"]) and TIMESTAMP.fullmatch(row["received_at"])
    counts = ingest.counts()
    assert counts["accepted_events"] == counts["stored_events"] == 7
    assert counts["requests"] == counts["accepted_requests"] >= 1
    assert handler.stats()["sent"] == 7


def test_round_trip_concurrent_handlers_and_threads(
    ingest: Collector, handlers: list[NATTelemetryHandler]
) -> None:
    n_handlers, n_threads, per_thread = 3, 4, 40
    for index in range(n_handlers):
        handlers.append(NATTelemetryHandler(endpoint=ingest.url, session_id=f"s{index}",
                                            max_batch_size=25))

    def produce(handler: NATTelemetryHandler, base: int) -> None:
        for i in range(per_thread):
            handler.enqueue(make_event(base + i))

    threads = [
        threading.Thread(target=produce, args=(handler, (h * n_threads + t) * per_thread))
        for h, handler in enumerate(handlers) for t in range(n_threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for handler in handlers:
        flush_all(handler)

    total = n_handlers * n_threads * per_thread
    assert ids_in(ingest.rows()) == list(range(total))  # each exactly once
    counts = ingest.counts()
    assert counts["accepted_events"] == counts["stored_events"] == total
    assert sum(handler.stats()["sent"] for handler in handlers) == total
    assert counts["requests"] == counts["accepted_requests"]
    with sqlite3.connect(ingest.db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sessions = {row[0] for row in db.execute("SELECT DISTINCT session_id FROM events")}
    assert sessions == {"s0", "s1", "s2"}


def test_keep_alive_connection_survives_a_rejection(ingest: Collector) -> None:
    session = http()
    assert session.post(ingest.url, data=b"{oops", timeout=5).status_code == 400
    assert session.post(ingest.url, json=make_envelope(3), timeout=5).json() == {"accepted": 3}
    assert ingest.stored_count() == 3


def test_any_path_is_accepted(ingest: Collector) -> None:
    url = f"http://127.0.0.1:{ingest.port}/somewhere/else"
    assert http().post(url, json=make_envelope(1), timeout=5).json() == {"accepted": 1}


# ---------------------------------------------------------------- rejection


def _envelope_with(change: Callable[[dict[str, Any]], None]) -> bytes:
    envelope = make_envelope(2)
    change(envelope)
    return json.dumps(envelope).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(envelope: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = envelope
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda envelope: envelope.pop(key)


REJECTIONS = [
    ("bad JSON", b'{"events": [', "bad_json", "invalid JSON"),
    ("not UTF-8", b"\xff\xfe{}", "bad_json", "not UTF-8"),
    ("not an object", b"[1, 2]", "invalid_envelope", "must be a JSON object, got array"),
    ("missing key", _envelope_with(_delete("sessionId")), "invalid_envelope",
     "missing envelope key 'sessionId'"),
    ("identity field", _envelope_with(_set("userId", "alice")), "invalid_envelope",
     "field 'userId' must be 'undefined'"),
    ("device id", _envelope_with(_set("deviceId", "a1b2")), "invalid_envelope",
     "field 'deviceId' must be 'undefined'"),
    ("GDPR field", _envelope_with(_set("gdprBehOptIn", "true")), "invalid_envelope",
     "field 'gdprBehOptIn' must be 'None'"),
    ("unknown envelope key", _envelope_with(_set("hostName", "laptop")), "invalid_envelope",
     "unknown envelope key 'hostName'"),
    ("session not text", _envelope_with(_set("sessionId", 42)), "invalid_envelope",
     "field 'sessionId' must be a string"),
    ("bad sentTs", _envelope_with(_set("sentTs", "yesterday")), "invalid_envelope",
     "field 'sentTs' must be a UTC timestamp"),
    ("empty events", _envelope_with(_set("events", [])), "invalid_envelope",
     "field 'events' must be a non-empty array"),
    ("events not a list", _envelope_with(_set("events", {"a": 1})), "invalid_envelope",
     "field 'events' must be a non-empty array"),
    ("event not an object", _envelope_with(_set("events.1", "run")), "invalid_event",
     "events[1] must be an object, got string"),
    ("unknown event name", _envelope_with(_set("events.1.name", "x")), "invalid_event",
     "events[1]: unknown event name 'x'"),
    ("invalid parameters", _envelope_with(_set("events.1.parameters.command", "/home/alice")),
     "invalid_event", "events[1].parameters: 1 validation error for CliCommandEvent: command"),
    ("unknown parameter", _envelope_with(_set("events.0.parameters.hostname", "laptop")),
     "invalid_event", "events[0].parameters: 1 validation error for CliCommandEvent: hostname"),
    ("bool as int", _envelope_with(_set("events.0.parameters.exitCode", True)),
     "invalid_event", "exit_code: must be an integer"),
    ("bad ts", _envelope_with(_set("events.0.ts", "2026-11-22 10:18:40")), "invalid_event",
     "events[0].ts must be a UTC timestamp"),
    ("impossible ts", _envelope_with(_set("events.0.ts", "2026-13-22T10:18:40.513Z")),
     "invalid_event", "events[0].ts must be a UTC timestamp"),
    ("unknown event key", _envelope_with(_set("events.0.user", "alice")), "invalid_event",
     "events[0]: unknown key 'user'"),
    ("missing event key", _envelope_with(lambda e: e["events"][0].pop("ts")), "invalid_event",
     "events[0]: missing key 'ts'"),
]


@pytest.mark.parametrize(("body", "reason", "message"),
                         [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS])
def test_rejected_bodies_store_nothing(ingest: Collector, body: bytes, reason: str,
                                       message: str) -> None:
    answer = http().post(ingest.url, data=body, timeout=5,
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert message in answer.json()["error"]
    assert ingest.stored_count() == 0
    counts = ingest.counts()
    assert counts["rejected"][reason] == 1 and counts["requests"] == 1
    assert counts["stored_events"] == 0


def test_every_problem_is_named_at_once(ingest: Collector) -> None:
    def break_it(envelope: dict[str, Any]) -> None:
        envelope["userId"] = "alice"
        envelope["productName"] = "acme"
        del envelope["clientId"]

    error = http().post(ingest.url, data=_envelope_with(break_it), timeout=5).json()["error"]
    assert "missing envelope key 'clientId'" in error
    assert "field 'userId' must be 'undefined'" in error
    assert "field 'productName' must be 'undefined'" in error


def test_too_large_is_answered_413_without_reading(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(max_body=2000)
    small = json.dumps(make_envelope(1)).encode()
    assert len(small) < 2000
    assert http().post(collector.url, data=small, timeout=5).status_code == 200
    # 4 MB: far more than the socket buffers; the client must still get the 413.
    answer = http().post(collector.url, data=b"x" * 4_000_000, timeout=10)
    assert answer.status_code == 413
    assert "exceeds the limit of 2000 bytes" in answer.json()["error"]
    assert answer.headers["Connection"] == "close"
    big = json.dumps(make_envelope(30)).encode()
    assert http().post(collector.url, data=big, timeout=5).status_code == 413
    assert collector.stored_count() == 1
    assert collector.counts()["rejected"]["too_large"] == 2


def test_a_handler_splits_batches_the_collector_finds_too_large(
    start_collector: Callable[..., Collector], handlers: list[NATTelemetryHandler]
) -> None:
    collector = start_collector(max_body=3000)
    handler = NATTelemetryHandler(endpoint=collector.url)
    handlers.append(handler)
    for i in range(40):
        handler.enqueue(make_event(i))
    assert handler.flush(timeout=5)
    assert ids_in(collector.rows()) == list(range(40))
    assert collector.counts()["rejected"]["too_large"] >= 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(ingest: Collector, method: str) -> None:
    answer = http().request(method, ingest.url, data=json.dumps(make_envelope(1)), timeout=5)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert f"method {method} not allowed" in answer.json()["error"]
    assert ingest.stored_count() == 0
    assert ingest.counts()["rejected"]["method_not_allowed"] == 1


def test_head_is_405_without_a_body(ingest: Collector) -> None:
    answer = http().head(ingest.url, timeout=5)
    assert answer.status_code == 405 and answer.headers["Allow"] == "POST"


def test_missing_content_length_is_411(ingest: Collector) -> None:
    status, _, body = raw_exchange(
        ingest.port, f"POST {INGEST_PATH} HTTP/1.1\r\nHost: x\r\n\r\n{{}}".encode())
    assert status == 411
    assert "Content-Length header is required" in json.loads(body)["error"]
    assert ingest.stored_count() == 0
    assert ingest.counts()["rejected"]["length_required"] == 1


def test_chunked_body_is_411(ingest: Collector) -> None:
    chunks = iter([json.dumps(make_envelope(1)).encode()])
    answer = http().post(ingest.url, data=chunks, timeout=5)  # a generator: chunked
    assert answer.status_code == 411
    assert "Transfer-Encoding is not supported" in answer.json()["error"]
    assert ingest.stored_count() == 0


@pytest.mark.parametrize("length", ["abc", "-1", "1_0", "+5"])
def test_invalid_content_length_is_400(ingest: Collector, length: str) -> None:
    status, _, body = raw_exchange(
        ingest.port,
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
    assert status == 400
    assert "invalid Content-Length" in json.loads(body)["error"]
    assert ingest.counts()["rejected"]["bad_request"] == 1


def test_malformed_request_line_gets_a_json_400(ingest: Collector) -> None:
    status, headers, body = raw_exchange(ingest.port, b"NONSENSE\r\n\r\n")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]


def test_client_hanging_up_mid_body_stores_nothing(ingest: Collector) -> None:
    with socket.create_connection(("127.0.0.1", ingest.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"a\":")
    deadline = time.monotonic() + 3
    while ingest.counts()["errors"]["incomplete_body"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ingest.stored_count() == 0


def test_existing_database_with_another_events_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (x TEXT)")
    with pytest.raises(ValueError, match="other columns"):
        Collector(path).start()


@pytest.mark.parametrize(("option", "value"), [
    ("fail_rate", 1.5), ("fail_rate", -0.1), ("drop_rate", 2.0), ("port", 70000),
    ("fail_status", 200), ("delay_ms", -1), ("max_body", 0), ("retry_after", -3),
])
def test_constructor_rejects_out_of_range_options(tmp_path: Path, option: str,
                                                  value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        Collector(tmp_path / "x.db", **{option: value})


def test_url_needs_a_port(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _ = Collector(tmp_path / "x.db").url


# ----------------------------------------------------------- fault injection


def test_fail_rate_one_answers_503_and_stores_nothing(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(fail_rate=1.0, seed=1)
    session = http()
    answers = [session.post(collector.url, json=make_envelope(2), timeout=5) for _ in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert "Retry-After" not in answers[0].headers
    assert "injected fault" in answers[0].json()["error"]
    assert collector.stored_count() == 0
    counts = collector.counts()
    assert counts["faults"]["fail"] == 5 and counts["requests"] == 5


def test_429_with_retry_after(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(fail_rate=1.0, fail_status=429, retry_after=7)
    answer = http().post(collector.url, json=make_envelope(1), timeout=5)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


def test_drop_closes_without_an_answer(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        http().post(collector.url, json=make_envelope(2), timeout=5)
    assert collector.stored_count() == 0
    counts = collector.counts()
    assert counts["faults"]["drop"] == 1 and counts["stored_events"] == 0


def test_drop_after_store_stores_then_drops(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(drop_rate=1.0, drop_after_store=True)
    with pytest.raises(requests.ConnectionError):
        http().post(collector.url, json=make_envelope(2), timeout=5)
    assert collector.stored_count() == 2
    counts = collector.counts()
    assert counts["faults"]["drop_after_store"] == 1
    assert counts["stored_then_dropped_events"] == counts["stored_events"] == 2
    assert counts["accepted_events"] == 0


def test_delay_holds_every_answer(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(delay_ms=150)
    session = http()
    started = time.monotonic()
    assert session.post(collector.url, json=make_envelope(1), timeout=5).status_code == 200
    assert session.post(collector.url, data=b"nope", timeout=5).status_code == 400
    assert time.monotonic() - started >= 0.3
    assert collector.counts()["faults"]["delay"] == 2


def test_same_seed_replays_the_same_faults(start_collector: Callable[..., Collector]) -> None:
    def run(seed: int) -> list[Any]:
        collector = start_collector(fail_rate=0.4, drop_rate=0.2, seed=seed)
        session = http()
        return [outcome(session, collector.url, make_envelope(1)) for _ in range(40)]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert {200, 503, "drop"} <= set(first)
    assert first != other


def test_counts_reconcile_with_a_handler_under_faults(
    start_collector: Callable[..., Collector], handlers: list[NATTelemetryHandler]
) -> None:
    collector = start_collector(fail_rate=0.2, drop_rate=0.3, drop_after_store=True, seed=3)
    handler = NATTelemetryHandler(endpoint=collector.url, max_batch_size=5,
                                  retry_policy=fast_policy())
    handlers.append(handler)
    for i in range(60):
        handler.enqueue(make_event(i))
    flush_all(handler)

    stats, counts, rows = handler.stats(), collector.counts(), collector.rows()
    assert stats["sent"] == 60 and stats["retries"] > 0
    assert counts["accepted_events"] == 60
    assert counts["faults"]["fail"] > 0 and counts["faults"]["drop_after_store"] > 0
    # Every duplicate in the database is an event stored by a dropped request.
    assert len(rows) == counts["stored_events"] == 60 + counts["stored_then_dropped_events"]
    assert sorted(set(ids_in(rows))) == list(range(60))
    assert len(rows) - 60 == counts["stored_then_dropped_events"] > 0
    buckets = (counts["accepted_requests"] + sum(counts["rejected"].values())
               + sum(counts["errors"].values()) + counts["faults"]["fail"]
               + counts["faults"]["drop"] + counts["faults"]["drop_after_store"])
    assert buckets == counts["requests"]


def test_stop_is_idempotent_and_final(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "x.db")
    with collector:
        url = collector.url
        assert http().post(url, json=make_envelope(1), timeout=5).status_code == 200
    collector.stop()
    with pytest.raises(requests.ConnectionError):
        http().post(url, json=make_envelope(1), timeout=2)
    with pytest.raises(RuntimeError):
        collector.start()


# --------------------------------------------------------------------- CLI


@pytest.mark.parametrize("options", [
    ["--fail-rate", "-0.1"], ["--fail-rate", "1.5"], ["--drop-rate", "nan"],
    ["--port", "70000"], ["--port", "http"], ["--fail-status", "200"],
    ["--delay-ms", "-5"], ["--max-body", "0"],
])
def test_collect_rejects_invalid_options(options: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["collect", *options])
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def _first_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output from the collector"
    return proc.stdout.readline()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_collect_command_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nat_telemetry", "collect", "--port", "0", "--db", str(db),
         "--delay-ms", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(tmp_path),
    )
    try:
        line = _first_line(proc)
        found = re.search(r"(http://127\.0\.0\.1:\d+/v1\.1/events/json)", line)
        assert found, line
        assert str(db) in line and "delay 1 ms" in line
        answer = http().post(found.group(1), json=make_envelope(2), timeout=5)
        assert answer.json() == {"accepted": 2}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped: 1 request, 2 events stored" in out
    assert "Traceback" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def test_collect_on_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "nat_telemetry", "collect", "--port", str(port),
             "--db", str(tmp_path / "x.db")],
            capture_output=True, text=True, timeout=20, env=child_env(tmp_path),
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot listen on" in result.stderr


def test_collect_refuses_a_file_that_is_not_a_database(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n" * 100)
    assert main(["collect", "--port", "0", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use database" in err


def test_parse_envelope_reports_the_reason() -> None:
    with pytest.raises(EnvelopeRejected) as rejected:
        parse_envelope(b"null", known_event_types())
    assert rejected.value.reason == "invalid_envelope"
