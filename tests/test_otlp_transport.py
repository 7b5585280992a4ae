"""The OTLP transport: chosen from the endpoint, encoding, answers, partial success.

What the handler does with an OTLP endpoint end to end is in
test_otlp_end_to_end.py; here are the transport's own rules, against the
reference receiver on a real loopback socket where an answer matters, and
the handler's counting of a partial success.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from support.helpers import REPO_ROOT, assert_balanced, event
from support.otlp_receiver import Answer, OTLPReceiver, attributes_of

from nat_telemetry import config
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.http import RequestsClient, Response, UrllibClient
from nat_telemetry.payload import QueuedEvent
from nat_telemetry.transport import (
    Delivery,
    DryRun,
    HttpTransport,
    OtlpDryRun,
    OtlpTransport,
    Outcome,
    Transport,
    transport_for,
)

MakeHandler = Callable[..., NATTelemetryHandler]


def batch(*durations: int) -> list[QueuedEvent]:
    now = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    return [QueuedEvent(event(duration_ms=d), now) for d in durations]


def parsed(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    json_format.Parse(body.decode("utf-8"), request)
    return request


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as server:
        yield server


# --------------------------------------------------------------- the choice


@pytest.mark.parametrize("endpoint, logs_url", [
    ("otlp+http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/logs"),
    ("otlp+https://collector.example:4318/", "https://collector.example:4318/v1/logs"),
    ("OTLP+HTTP://h:4318/custom/path", "http://h:4318/custom/path"),
    ("otlp+http://u:pw@h:4318", "http://u:pw@h:4318/v1/logs"),
])
def test_an_otlp_endpoint_gets_the_otlp_transport(endpoint: str, logs_url: str) -> None:
    transport = transport_for(endpoint, dry_run=False)
    assert type(transport) is OtlpTransport and isinstance(transport, HttpTransport)
    # The spool keeps the endpoint itself: a later sender reads the kind from it.
    assert transport.spool_endpoint == endpoint
    assert transport.logs_url == logs_url


def test_other_urls_keep_the_nemo_transport() -> None:
    transport = transport_for("http://h/v1.1/events/json", dry_run=False)
    assert type(transport) is HttpTransport
    assert transport.spool_endpoint == "http://h/v1.1/events/json"
    assert type(transport_for("otlp+http://h:4318", dry_run=True)) is OtlpDryRun
    assert type(transport_for("http://h/x", dry_run=True)) is DryRun


def test_choosing_it_imports_neither_the_encoder_nor_urllib() -> None:
    # A command line that only spools at exit must not pay for urllib.parse
    # (~8 ms without site); the encoder comes with the first batch.
    code = (
        "import sys; sys.path.append(sys.argv[1])\n"
        "from datetime import datetime, timezone\n"
        "from nat_telemetry.transport import transport_for\n"
        "from nat_telemetry.payload import QueuedEvent\n"
        "from nat_telemetry.events import CliCommandEvent\n"
        "t = transport_for('otlp+http://127.0.0.1:4318')\n"
        "chosen = [m in sys.modules for m in ('nat_telemetry.otlp', 'urllib.parse')]\n"
        "e = CliCommandEvent(command='x', task_status='success', duration_ms=1,\n"
        "                    python_version='3.11.7')\n"
        "t.encode([QueuedEvent(e, datetime.now(timezone.utc))], source_client_version='1',\n"
        "         session_id='s')\n"
        "encoded = [m in sys.modules for m in ('nat_telemetry.otlp', 'urllib.parse')]\n"
        "print(chosen, encoded)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO_ROOT)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[False,", "False]", "[True,", "False]"]


# --------------------------------------------------------------- encoding


def test_the_body_is_an_export_logs_request_named_after_the_client_by_default() -> None:
    body = OtlpTransport("otlp+http://h:4318").encode(
        batch(1, 2), source_client_version="3.1", session_id="sess")
    request = parsed(body)
    (resource_logs,) = request.resource_logs
    resource = attributes_of(resource_logs.resource)
    assert (resource["service.name"], resource["service.version"]) == (config.CLIENT_ID, "3.1")
    records = resource_logs.scope_logs[0].log_records
    assert [attributes_of(r)["durationMs"] for r in records] == [1, 2]
    assert {attributes_of(r)["session.id"] for r in records} == {"sess"}


def test_a_caller_names_the_service() -> None:
    body = OtlpTransport("otlp+http://h:4318", service_name="mytool").encode(
        batch(1), source_client_version="1", session_id="s")
    resource = attributes_of(parsed(body).resource_logs[0].resource)
    assert resource["service.name"] == "mytool"


# --------------------------------------------------------------- answers


@pytest.fixture(params=[RequestsClient, UrllibClient])
def otlp_transport(request: pytest.FixtureRequest,
                   receiver: OTLPReceiver) -> Iterator[OtlpTransport]:
    transport = OtlpTransport(receiver.endpoint, client=request.param())
    yield transport
    transport.close()


@pytest.mark.parametrize("answer, delivery", [
    (Answer(), Delivery(Outcome.SENT, None, 0)),
    (Answer.partial(2), Delivery(Outcome.SENT, None, 2)),
    (Answer.unavailable("4"), Delivery(Outcome.TRANSIENT, "4", 0, "http 503")),
    (Answer.throttled("7"), Delivery(Outcome.TRANSIENT, "7", 0, "http 429")),
    (Answer(413), Delivery(Outcome.TOO_LARGE, None, 0, "http 413")),
    (Answer(400, error_message="bad"), Delivery(Outcome.REJECTED, None, 0, "http 400")),
    (Answer.dropped(), Delivery(Outcome.TRANSIENT, None, 0, "connection")),
])
def test_each_answer_becomes_a_delivery(
        otlp_transport: OtlpTransport, receiver: OTLPReceiver, answer: Answer,
        delivery: Delivery) -> None:
    receiver.script(answer)
    body = otlp_transport.encode(batch(1, 2, 3), source_client_version="1", session_id="s")
    assert otlp_transport.send(body, 2.0) == delivery
    (export,) = receiver.exports
    assert (export.path, export.content_type, export.error) == ("/v1/logs", "application/json",
                                                                None)


class RecordingClient:
    """Records what the transport asks of its client, answers as told."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str] | None]] = []

    def post(self, url: str, body: bytes, timeout: float,
             headers: dict[str, str] | None = None) -> Any:
        self.calls.append((url, headers))
        return self.answer

    def close(self) -> None:
        pass


class OldResponse(NamedTuple):  # what a caller's client written before bodies answers
    status: int
    retry_after: str | None


def test_the_token_goes_to_the_logs_url() -> None:
    client = RecordingClient(Response(200, None, b'{"partialSuccess":{"rejectedLogRecords":"1"}}'))
    transport = OtlpTransport("otlp+https://h:4318", client, token="tok")  # type: ignore[arg-type]
    assert transport.send(b"{}", 1.0) == Delivery(Outcome.SENT, None, 1)
    assert client.calls == [("https://h:4318/v1/logs", {"Authorization": "Bearer tok"})]


def test_a_client_answering_without_a_body_rejects_nothing() -> None:
    client = RecordingClient(OldResponse(200, None))
    transport = OtlpTransport("otlp+http://h:4318", client)  # type: ignore[arg-type]
    assert transport.send(b"{}", 1.0) == Delivery(Outcome.SENT, None, 0)
    assert client.calls == [("http://h:4318/v1/logs", None)]


def test_an_endpoint_without_a_logs_url_is_reported_once_and_dropped(
        make_handler: MakeHandler, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    unusable = "otlp+http://user:pw@127.0.0.1:0"  # port 0: never a URL
    with pytest.raises(ValueError, match="bad port") as refused:
        make_handler(endpoint=unusable)  # given by the caller: refused at once
    assert "pw" not in str(refused.value)
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", unusable)  # configured: said once
    h = make_handler()
    with caplog.at_level(logging.WARNING):
        for round_ in range(2):
            h.enqueue(event(duration_ms=round_))
            h.flush()
    stats = h.stats()
    assert stats["dropped_bad_endpoint"] == 2 and stats["sent"] == 0
    assert_balanced(stats)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "bad port" in warning and "pw" not in warning


def test_a_dry_run_shows_the_otlp_body_and_url(
        make_handler: MakeHandler, capsys: pytest.CaptureFixture[str]) -> None:
    h = make_handler(endpoint="otlp+http://user:pw@127.0.0.1:4318")
    h.transport = transport_for("otlp+http://user:pw@127.0.0.1:4318", dry_run=True)
    h.enqueue(event(duration_ms=9))
    h.flush()
    (line,) = capsys.readouterr().err.splitlines()
    prefix = f"{DryRun.PREFIX}POST http://***@127.0.0.1:4318/v1/logs: "
    assert line.startswith(prefix)
    request = parsed(line[len(prefix):].encode())
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert attributes_of(record)["durationMs"] == 9
    assert h.stats()["skipped"] == 1


# --------------------------------------------------------------- partial success


class Answering(Transport):
    """Takes every body and answers with ``delivery``."""

    def __init__(self, delivery: Any) -> None:
        self.delivery = delivery
        self.sizes: list[int] = []

    def send(self, body: bytes, timeout: float) -> Any:
        self.sizes.append(len(json.loads(body)["events"]))
        return self.delivery


@pytest.mark.parametrize("rejected, sent", [(0, 5), (2, 3), (5, 0), (99, 0), (-3, 5)])
def test_a_partial_success_settles_the_rejected_events_as_dropped(
        make_handler: MakeHandler, rejected: int, sent: int) -> None:
    transport = Answering(Delivery(Outcome.SENT, None, rejected))
    h = make_handler(transport=transport)
    for i in range(5):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    stats = h.stats()
    assert (stats["sent"], stats["dropped_rejected"]) == (sent, 5 - sent)
    assert stats["retries"] == 0 and transport.sizes == [5]
    assert_balanced(stats)


def test_a_partial_success_counts_against_each_batch(make_handler: MakeHandler) -> None:
    transport = Answering(Delivery(Outcome.SENT, None, 1))
    h = make_handler(transport=transport, max_batch_size=2)
    for i in range(5):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    stats = h.stats()
    assert transport.sizes == [2, 2, 1]
    assert (stats["sent"], stats["dropped_rejected"]) == (2, 3)
    assert_balanced(stats)


def test_a_transport_answering_a_plain_pair_still_works(make_handler: MakeHandler) -> None:
    h = make_handler(transport=Answering((Outcome.SENT, None)))
    h.enqueue(event())
    assert h.flush() is True
    assert h.stats()["sent"] == 1
    assert_balanced(h.stats())
