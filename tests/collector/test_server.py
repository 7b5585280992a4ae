"""The HTTP side: round trips, keep-alive, and every refusal of a request's form."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from typing import Callable

import pytest
from support.collector import flush_all, http, ids_in, make_envelope, make_event, raw_exchange

from nat_telemetry import config
from nat_telemetry.collector import INGEST_PATH, Collector
from nat_telemetry.handler import NATTelemetryHandler

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


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
