"""Validation: the reference envelope, every rejection path, problems named at once.

Bodies go over real loopback sockets to a real Collector; nothing is mocked.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from support.collector import REFERENCE, http, make_envelope

from nat_telemetry.collector import (
    ENVELOPE_KEYS,
    GDPR_FIELDS,
    IDENTITY_FIELDS,
    Collector,
    EnvelopeRejected,
    known_event_types,
    parse_envelope,
)
from nat_telemetry.events import CliCommandEvent


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


def test_parse_envelope_reports_the_reason() -> None:
    with pytest.raises(EnvelopeRejected) as rejected:
        parse_envelope(b"null", known_event_types())
    assert rejected.value.reason == "invalid_envelope"
