"""Validation: the reference envelope, every rejection path, problems named at once.

Bodies go over real loopback sockets to a real Collector; nothing is mocked.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from support.collector import REFERENCE, http, make_envelope, make_event

from nat_telemetry import __version__
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
from nat_telemetry.payload import (
    ENVELOPE_TEXT_RULES,
    TEXT_FIELDS,
    QueuedEvent,
    build_payload,
    envelope_text_problem,
)


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
        envelope["productName"] = "Acme Corp"  # a name with a space: not a tool name
        del envelope["clientId"]

    error = http().post(ingest.url, data=_envelope_with(break_it), timeout=5).json()["error"]
    assert "missing envelope key 'clientId'" in error
    assert "field 'userId' must be 'undefined'" in error
    assert "field 'productName' must be a string: a tool's name" in error


def test_parse_envelope_reports_the_reason() -> None:
    with pytest.raises(EnvelopeRejected) as rejected:
        parse_envelope(b"null", known_event_types())
    assert rejected.value.reason == "invalid_envelope"


# ------------------------------------------------- bounds and text rules


def _body_with_duration(digits: str) -> bytes:
    # Written into the JSON text: the number never exists as a Python int here.
    text = json.dumps(make_envelope(1))
    return text.replace('"durationMs": 0', f'"durationMs": {digits}', 1).encode()


@pytest.mark.parametrize("number", ["9" * 4000, str(2**63), str(-(2**63) - 1), "1" + "0" * 30])
def test_integers_beyond_64_bits_are_refused_and_never_stored(ingest: Collector,
                                                              number: str) -> None:
    answer = http().post(ingest.url, data=_body_with_duration(number), timeout=5,
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "integer outside the 64-bit range in 'durationMs'" in answer.json()["error"]
    assert ingest.stored_count() == 0
    assert ingest.counts()["rejected"]["invalid_event"] == 1


def test_the_largest_64_bit_integer_is_a_number_like_any_other() -> None:
    rows = parse_envelope(_body_with_duration(str(2**63 - 1)), known_event_types())
    assert json.loads(rows[0][-1])["durationMs"] == 2**63 - 1


def test_non_finite_numbers_are_not_json() -> None:
    with pytest.raises(EnvelopeRejected) as rejected:
        parse_envelope(_body_with_duration("NaN"), known_event_types())
    assert rejected.value.reason == "bad_json" and "NaN" in rejected.value.message


# A path, a sentence and a user's address: what a free-text field must never carry.
LEAKS = ["/home/alice/project", "could not open the file", "alice@example.com"]


@pytest.mark.parametrize("key", TEXT_FIELDS)
@pytest.mark.parametrize("value", LEAKS)
def test_free_text_fields_take_names_and_versions_only(key: str, value: str) -> None:
    body = _envelope_with(_set(key, value))
    with pytest.raises(EnvelopeRejected) as rejected:
        parse_envelope(body, known_event_types())
    assert rejected.value.reason == "invalid_envelope"
    assert f"field {key!r} must be a string: " in rejected.value.message


def test_every_value_the_client_sends_passes_the_shared_rules() -> None:
    # The client's own values (config, its version, a prefixed random session
    # id) against the rules the collector applies: one source of truth.
    envelope = build_payload([QueuedEvent(make_event(1), datetime.now(timezone.utc))],
                             source_client_version=__version__,
                             session_id="ci-" + "0123456789abcdef" * 2)
    problems = {key: envelope_text_problem(key, envelope[key]) for key in TEXT_FIELDS}
    assert problems == dict.fromkeys(TEXT_FIELDS)
    for version in ("0.1.0", "2.0rc1", "1.0.post2", "0.1.dev3+g1a2b.dirty", "unknown"):
        assert envelope_text_problem("clientVer", version) is None
    assert set(ENVELOPE_TEXT_RULES) == set(TEXT_FIELDS)
