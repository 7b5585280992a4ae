"""A handler pointed at an ``otlp+http://`` endpoint, against a real OTLP receiver.

Every event arrives once, as a log record the reference bindings parse, with
the same accounting as the NeMo path under 503, 429 with ``Retry-After``, a
dropped connection and a partial success; with ``requests`` and with the
standard library only; in-process, and from a process that exits at once and
leaves its event to the spool and the detached sender.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from support.helpers import assert_balanced, event, subprocess_env, wait_until
from support.otlp_receiver import Answer, OTLPReceiver, attributes_of

from nat_telemetry import config, http, sender
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.spool import Spool
from nat_telemetry.transport import destination_id, redact

MakeHandler = Callable[..., NATTelemetryHandler]


@pytest.fixture
def receiver(handler_registry: Any) -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as server:
        yield server
        handler_registry.stop_all()  # while the receiver still answers


def durations(receiver: OTLPReceiver) -> list[int]:
    return [attributes_of(record)["durationMs"] for record in receiver.accepted_records]


def flush_until_done(handler: NATTelemetryHandler, attempts: int = 8) -> bool:
    """Flush until nothing is left to send; bounded, backoff included."""
    for _ in range(attempts):
        if handler.flush(timeout=1.0) and handler.stats()["dlq"] == 0:
            return True
        wait_until(lambda: False, timeout=0.06)  # past the test policy's 50 ms backoff cap
    return False


def test_every_event_arrives_once_as_a_log_record(
    make_handler: MakeHandler, receiver: OTLPReceiver, dependency_mode: str,
) -> None:
    h = make_handler(endpoint=receiver.endpoint, session_id="s-1", source_client_version="2.0")
    for i in range(5):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    assert durations(receiver) == list(range(5))
    (export,) = receiver.exports
    assert export.path == "/v1/logs" and export.content_type == "application/json"
    resource = attributes_of(export.request.resource_logs[0].resource)  # type: ignore[union-attr]
    assert resource["service.version"] == "2.0"
    assert {attributes_of(r)["session.id"] for r in receiver.accepted_records} == {"s-1"}
    stats = h.stats()
    assert stats["sent"] == 5
    assert_balanced(stats)
    used = http.UrllibClient if dependency_mode == "stdlib" else http.RequestsClient
    assert http._default_class is used


def test_configured_through_the_environment_variable(
    make_handler: MakeHandler, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch,
    dependency_mode: str,
) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", receiver.endpoint)
    h = make_handler()
    h.enqueue(event(duration_ms=7))
    assert h.flush() is True
    assert durations(receiver) == [7]


def test_faults_have_the_same_accounting_as_the_nemo_path(
    make_handler: MakeHandler, receiver: OTLPReceiver, dependency_mode: str,
) -> None:
    receiver.script(Answer.unavailable(), Answer.throttled("0"), Answer.dropped(),
                    Answer.partial(1))
    h = make_handler(endpoint=receiver.endpoint, max_retries=5)
    for i in range(10):
        h.enqueue(event(duration_ms=i))
    assert flush_until_done(h)
    assert receiver.requests == 4
    stats = h.stats()
    # three failed attempts at the whole batch; then 9 kept and 1 rejected
    assert (stats["sent"], stats["dropped_rejected"], stats["retries"]) == (9, 1, 3 * 10)
    kept = durations(receiver)
    assert len(kept) == len(set(kept)) == 9 and set(kept) <= set(range(10))
    assert_balanced(stats)


def test_retry_after_is_honoured(
    make_handler: MakeHandler, receiver: OTLPReceiver, dependency_mode: str,
) -> None:
    receiver.script(Answer.throttled("1"))
    h = make_handler(endpoint=receiver.endpoint, max_queue_size=1)
    h.enqueue(event(duration_ms=1))
    assert receiver.wait_for_requests(1, timeout=1.0)
    assert wait_until(lambda: h.stats()["sent"] == 1, timeout=4.0)
    first, second = (export.at for export in receiver.exports)
    assert second - first >= 1.0
    assert durations(receiver) == [1]
    assert_balanced(h.stats())


def test_a_rejecting_receiver_drops_the_batch(
    make_handler: MakeHandler, receiver: OTLPReceiver, dependency_mode: str,
) -> None:
    receiver.default = Answer(400, error_message="bad data")
    h = make_handler(endpoint=receiver.endpoint)
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    h.flush()
    assert receiver.requests == 1
    stats = h.stats()
    assert (stats["sent"], stats["dropped_rejected"]) == (0, 3)
    assert_balanced(stats)


def test_a_process_configured_only_through_the_environment(
    tmp_path: Path, receiver: OTLPReceiver,
) -> None:
    code = (
        "import json\n"
        "from nat_telemetry import CliCommandEvent, NATTelemetryHandler\n"
        "with NATTelemetryHandler(session_id='child') as h:\n"
        "    for i in range(3):\n"
        "        h.enqueue(CliCommandEvent(command='nat', task_status='success',\n"
        "                                  duration_ms=i, python_version='3.11.7'))\n"
        "print(json.dumps(h.stats()))\n"
    )
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=receiver.endpoint)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 3
    assert durations(receiver) == [0, 1, 2]
    assert {attributes_of(r)["session.id"] for r in receiver.accepted_records} == {"child"}


TOOL = """\
import sys
from nat_telemetry import track_command
with track_command("tool", sys.argv[1]):
    print("done")
"""


def test_a_spooled_event_reaches_the_receiver_after_the_process_exits(
    tmp_path: Path, receiver: OTLPReceiver,
) -> None:
    spool = tmp_path / "spool"
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT=receiver.endpoint,
                         NAT_TELEMETRY_SPOOL_DIR=str(spool))
    result = subprocess.run([sys.executable, str(script), "deploy"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", ""), result.stderr
    assert receiver.wait_for_requests(1, timeout=10)
    # The detached sender took the destination's lock: the event went through the spool.
    destination = destination_id(receiver.endpoint, "")
    assert (spool / f"{destination}.lock").exists()
    assert wait_until(lambda: destination not in Spool(str(spool)).summary(), timeout=5)
    # The lock is free again: the sender is done.
    lock = wait_until(lambda: sender.acquire_lock(str(spool), destination), timeout=10)
    assert lock is not None
    lock.release()
    state = Spool(str(spool)).states()[destination]
    assert state["endpoint"] == redact(receiver.endpoint) and "delivered_at" in state
    assert "failure" not in state
    (export,) = receiver.exports
    assert (export.path, export.content_type, export.error) == ("/v1/logs", "application/json",
                                                                None)
    (record,) = receiver.accepted_records
    assert record.event_name == "nat_cli_command"
    attributes = attributes_of(record)
    assert (attributes["command"], attributes["subcommand"], attributes["taskStatus"]) == (
        "tool", "deploy", "success")
    assert isinstance(attributes["durationMs"], int) and attributes["session.id"]
