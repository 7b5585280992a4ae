"""The test OTLP receiver itself, over a real loopback socket with urllib."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any

import pytest
from support.helpers import event
from support.otlp_receiver import Answer, OTLPReceiver, as_answer, attributes_of

from nat_telemetry.otlp import encode_logs_body, rejected_log_records
from nat_telemetry.payload import QueuedEvent

MOMENT = datetime(2026, 11, 22, 10, 18, 40, 513000, tzinfo=timezone.utc)


def body_of(*durations: int) -> bytes:
    batch = [QueuedEvent(event(duration_ms=d), MOMENT) for d in durations]
    return encode_logs_body(batch, service_version="1.0", session_id="s")


def post(url: str, body: bytes, content_type: str = "application/json",
         **headers: str) -> tuple[int, dict[str, str], bytes]:
    """POST and return (status, headers, body), error statuses included."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=3) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def receiver() -> Any:
    with OTLPReceiver() as server:
        yield server


def test_accepts_an_encoded_body_and_records_every_log_record(receiver: OTLPReceiver) -> None:
    status, headers, answer = post(receiver.url, body_of(1, 2, 3))
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {}
    assert rejected_log_records(answer) == 0
    (export,) = receiver.exports
    assert export.error is None and export.request is not None
    assert [attributes_of(r)["durationMs"] for r in receiver.accepted_records] == [1, 2, 3]
    assert [r.event_name for r in receiver.log_records] == ["nat_cli_command"] * 3


def test_addresses(receiver: OTLPReceiver) -> None:
    assert receiver.port > 0
    assert receiver.endpoint == f"otlp+http://127.0.0.1:{receiver.port}"
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/v1/logs"


def test_unavailable_with_a_google_rpc_status_body(receiver: OTLPReceiver) -> None:
    receiver.script(Answer.unavailable())
    status, headers, answer = post(receiver.url, body_of(1))
    assert status == 503
    assert "Retry-After" not in headers
    assert json.loads(answer)["code"] == 14
    assert receiver.log_records and not receiver.accepted_records


def test_throttled_with_retry_after(receiver: OTLPReceiver) -> None:
    receiver.script(Answer.throttled("7"))
    status, headers, _ = post(receiver.url, body_of(1))
    assert (status, headers["Retry-After"]) == (429, "7")
    assert post(receiver.url, body_of(2))[0] == 200  # the script is used up
    assert [attributes_of(r)["durationMs"] for r in receiver.accepted_records] == [2]


def test_partial_success_names_the_rejected_count(receiver: OTLPReceiver) -> None:
    receiver.script(Answer.partial(2, "two too many"))
    status, _, answer = post(receiver.url, body_of(1, 2, 3))
    assert status == 200
    assert json.loads(answer) == {"partialSuccess": {"rejectedLogRecords": "2",
                                                     "errorMessage": "two too many"}}
    assert rejected_log_records(answer) == 2
    assert len(receiver.log_records) == 3
    assert [attributes_of(r)["durationMs"] for r in receiver.accepted_records] == [1]


def test_a_dropped_connection_gets_no_answer(receiver: OTLPReceiver) -> None:
    receiver.script("drop")
    with pytest.raises(OSError):  # RemoteDisconnected, or a reset
        post(receiver.url, body_of(1))
    assert receiver.requests == 1 and not receiver.accepted_records
    assert post(receiver.url, body_of(2))[0] == 200


def test_delay_holds_the_answer(receiver: OTLPReceiver) -> None:
    receiver.script(Answer(delay=0.2))
    request = urllib.request.Request(receiver.url, data=body_of(1), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(OSError):  # socket.timeout / TimeoutError, or a URLError around it
        urllib.request.urlopen(request, timeout=0.05)
    assert receiver.wait_for_requests(1)


def test_a_body_the_reference_parser_refuses_is_a_400(receiver: OTLPReceiver) -> None:
    status, _, answer = post(receiver.url, b'{"resourceLogs": [{"nonsense": 1}]}')
    assert status == 400
    assert json.loads(answer)["code"] == 3
    (export,) = receiver.exports
    assert export.request is None and export.error
    assert post(receiver.url, b"not json")[0] == 400
    # int64 out of range: the reference parser refuses it too
    too_big = body_of(1).replace(b'"intValue":"1"', b'"intValue":"9223372036854775808"')
    assert post(receiver.url, too_big)[0] == 400


def test_a_fault_is_answered_even_to_a_bad_body(receiver: OTLPReceiver) -> None:
    receiver.script(503)
    assert post(receiver.url, b"not json")[0] == 503


def test_wrong_path_content_type_or_method(receiver: OTLPReceiver) -> None:
    base = f"http://127.0.0.1:{receiver.port}"
    assert post(base + "/v1/traces", body_of(1))[0] == 404
    assert post(receiver.url, body_of(1), content_type="application/x-protobuf")[0] == 415
    assert post(receiver.url, body_of(1), content_type="application/json; charset=utf-8")[0] == 200
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(receiver.url, timeout=3)
    info.value.close()
    assert info.value.code == 405
    assert len(receiver.accepted_records) == 1


def test_gzip_bodies_are_accepted(receiver: OTLPReceiver) -> None:
    status, _, _ = post(receiver.url, gzip.compress(body_of(5)), **{"Content-Encoding": "gzip"})
    assert status == 200
    assert [attributes_of(r)["durationMs"] for r in receiver.accepted_records] == [5]


def test_an_oversized_body_is_refused_unread() -> None:
    with OTLPReceiver(max_body=100) as small:
        assert post(small.url, body_of(*range(10)))[0] == 413
        assert small.requests == 0


def test_concurrent_posts_are_all_recorded(receiver: OTLPReceiver) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def send(d: int) -> None:
        status = post(receiver.url, body_of(d))[0]
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send, args=(d,)) for d in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert statuses == [200] * 8
    assert receiver.wait_for_requests(8, timeout=0.1)
    assert sorted(attributes_of(r)["durationMs"] for r in receiver.accepted_records) == list(
        range(8))


def test_wait_for_requests_is_bounded(receiver: OTLPReceiver) -> None:
    assert receiver.wait_for_requests(1, timeout=0.05) is False


def test_stop_closes_the_port() -> None:
    with OTLPReceiver() as server:
        port = server.port
        assert post(server.url, body_of(1))[0] == 200
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(1)
        sock.connect(("127.0.0.1", port))
    server.stop()  # a second stop is harmless


def test_as_answer() -> None:
    assert as_answer(429) == Answer(429)
    assert as_answer("drop").drop
    with pytest.raises(TypeError):
        as_answer(True)
