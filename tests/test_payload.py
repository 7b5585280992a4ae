"""Tests for nat_telemetry.payload: the wire envelope."""

import contextlib
import dataclasses
import getpass
import json
import os
import platform
import re
import socket
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import pytest

from nat_telemetry import config
from nat_telemetry.events import CliCommandEvent, Field, TelemetryEvent
from nat_telemetry.payload import QueuedEvent, build_payload, format_timestamp

HERE = Path(__file__).resolve().parent
# The copy inside the repository is the one the tests use (the repository is
# self-contained); the shared design folder beside the repository is the source.
REFERENCE_PATH = HERE / "data" / "envelope-example.json"
SHARED_REFERENCE_PATH = (
    Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "envelope-example.json"
)

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

IDENTITY_FIELDS = [
    "browserType",
    "deviceId",
    "deviceMake",
    "deviceModel",
    "deviceOS",
    "deviceOSVersion",
    "deviceType",
    "externalUserId",
    "idpId",
    "integrationId",
    "productName",
    "productVersion",
    "userId",
]
GDPR_FIELDS = [
    "deviceGdprBehOptIn",
    "deviceGdprFuncOptIn",
    "deviceGdprTechOptIn",
    "gdprBehOptIn",
    "gdprFuncOptIn",
    "gdprTechOptIn",
]
# Keys whose value depends on the moment or the machine.
VARIABLE_KEYS = {"sentTs", "clientVer", "cpuArchitecture", "sessionId", "events"}


def load_reference():
    with REFERENCE_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def parse_ts(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def reference_queue(reference):
    return [
        QueuedEvent(CliCommandEvent.model_validate(item["parameters"]), parse_ts(item["ts"]))
        for item in reference["events"]
    ]


def build_reference_payload(reference):
    return build_payload(
        reference_queue(reference),
        source_client_version="1.9.0",
        session_id=reference["sessionId"],
    )


def queued(**overrides):
    data = {"command": "run", "task_status": "success", "python_version": "3.11.7"}
    data.update(overrides)
    return QueuedEvent(CliCommandEvent(**data), datetime(2026, 1, 2, 3, 4, 5, 678000))


def leaves(value):
    """Every scalar in a nested JSON-like structure (values only, not keys)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


@pytest.fixture(scope="module")
def reference():
    return load_reference()


# --------------------------------------------------------------------------- reference data


def test_reference_copy_matches_shared_reference():
    if not SHARED_REFERENCE_PATH.is_file():
        pytest.skip("shared design folder not beside the repository")
    assert json.loads(REFERENCE_PATH.read_text(encoding="utf-8")) == json.loads(
        SHARED_REFERENCE_PATH.read_text(encoding="utf-8")
    )


# --------------------------------------------------------------------------- envelope shape


def test_keys_are_exactly_the_reference_keys_in_order(reference):
    payload = build_reference_payload(reference)
    assert list(payload) == list(reference)
    for built, expected in zip(payload["events"], reference["events"]):
        assert list(built) == list(expected)
        assert list(built["parameters"]) == list(expected["parameters"])


def test_values_equal_the_reference(reference):
    payload = build_reference_payload(reference)
    for key, expected in reference.items():
        if key in VARIABLE_KEYS:
            continue
        assert payload[key] == expected, key
    assert payload["clientVer"] == "1.9.0"
    assert payload["sessionId"] == reference["sessionId"]
    assert payload["cpuArchitecture"] == config.CPU_ARCHITECTURE
    assert TS_RE.match(payload["sentTs"])


def test_events_equal_the_reference(reference):
    payload = build_reference_payload(reference)
    assert len(payload["events"]) == len(reference["events"]) == 2
    for built, expected in zip(payload["events"], reference["events"]):
        assert built["name"] == expected["name"] == "nat_cli_command"
        assert built["parameters"] == expected["parameters"]
        assert TS_RE.match(built["ts"])
        # The QueuedEvent timestamps were parsed from the reference: same text back.
        assert built["ts"] == expected["ts"]


def test_whole_payload_equals_reference_but_for_the_moment_and_machine(reference):
    payload = build_reference_payload(reference)
    expected = dict(reference)
    expected["sentTs"] = payload["sentTs"]
    expected["cpuArchitecture"] = config.CPU_ARCHITECTURE
    assert payload == expected


def test_identity_and_gdpr_fields(reference):
    payload = build_reference_payload(reference)
    assert sorted(IDENTITY_FIELDS + GDPR_FIELDS) == sorted(
        k for k in reference if reference[k] in ("undefined", "None")
    )
    for key in IDENTITY_FIELDS:
        assert payload[key] == "undefined", key
    for key in GDPR_FIELDS:
        assert payload[key] == "None", key


def test_constant_fields():
    payload = build_payload([queued()], source_client_version="2.0.0")
    assert payload["clientId"] == config.CLIENT_ID == "184482118588404"
    assert payload["clientType"] == "Native"
    assert payload["clientVariant"] == "Release"
    assert payload["eventProtocol"] == "1.6"
    assert payload["eventSysVer"] == config.NAT_TELEMETRY_VERSION == "nat-telemetry/1.0"
    assert payload["clientVer"] == "2.0.0"


def test_session_id_defaults_to_undefined():
    payload = build_payload([queued()], source_client_version="1.0")
    assert payload["sessionId"] == "undefined"


def test_session_id_is_passed_through():
    payload = build_payload([queued()], source_client_version="1.0", session_id="abc123")
    assert payload["sessionId"] == "abc123"


def test_a_tool_names_its_product_and_nothing_else_changes():
    batch = [queued()]
    plain = build_payload(batch, source_client_version="1.0")
    named = build_payload(batch, source_client_version="1.0", product_name="mytool",
                          product_version="2.3")
    assert (plain["productName"], plain["productVersion"]) == ("undefined", "undefined")
    assert (named["productName"], named["productVersion"]) == ("mytool", "2.3")
    assert list(named) == list(plain)
    same = {"productName", "productVersion", "sentTs"}
    assert {k: v for k, v in named.items() if k not in same} == {
        k: v for k, v in plain.items() if k not in same}


def test_source_client_version_is_keyword_only():
    with pytest.raises(TypeError):
        build_payload([queued()], "1.0")  # type: ignore[misc]
    with pytest.raises(TypeError):
        build_payload([queued()])  # type: ignore[call-arg]


def test_cpu_architecture_equals_config():
    payload = build_payload([queued()], source_client_version="1.0")
    assert payload["cpuArchitecture"] == config.CPU_ARCHITECTURE
    assert payload["cpuArchitecture"] == platform.uname().machine


def test_cpu_architecture_is_read_from_config_at_call_time(monkeypatch):
    monkeypatch.setattr(config, "CPU_ARCHITECTURE", "riscv64")
    assert build_payload([queued()], source_client_version="1.0")["cpuArchitecture"] == "riscv64"


class _FutureEvent(TelemetryEvent):
    _event_name: ClassVar[str] = "future_event"
    _schema_version: ClassVar[str] = "9.9"

    count: int = Field(0, alias="itemCount")


def test_event_schema_version_comes_from_first_event():
    future = QueuedEvent(_FutureEvent(count=2), datetime(2026, 1, 1))
    cli = queued()
    payload = build_payload([future, cli], source_client_version="1.0")
    assert payload["eventSchemaVer"] == "9.9"
    assert payload["events"][0] == {
        "ts": "2026-01-01T00:00:00.000Z",
        "parameters": {"itemCount": 2},
        "name": "future_event",
    }
    assert payload["events"][1]["name"] == "nat_cli_command"
    payload = build_payload([cli, future], source_client_version="1.0")
    assert payload["eventSchemaVer"] == "1.5"


def test_events_keep_their_order_and_timestamps():
    base = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    items = [
        QueuedEvent(
            CliCommandEvent(
                command=f"cmd{i}", task_status="success", python_version="3.12", exit_code=i
            ),
            base + timedelta(milliseconds=i),
        )
        for i in range(5)
    ]
    payload = build_payload(items, source_client_version="1.0")
    assert [e["parameters"]["command"] for e in payload["events"]] == [f"cmd{i}" for i in range(5)]
    assert [e["ts"] for e in payload["events"]] == [f"2026-03-04T05:06:07.00{i}Z" for i in range(5)]


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_empty_events_raise_value_error(empty):
    with pytest.raises(ValueError):
        build_payload(empty, source_client_version="1.0")


def test_build_payload_does_not_modify_the_queue():
    items = [queued(), queued(command="info")]
    snapshot = [dataclasses.replace(item) for item in items]
    build_payload(items, source_client_version="1.0")
    assert items == snapshot


def test_payload_serializes_with_json_dumps(reference):
    payload = build_reference_payload(reference)
    text = json.dumps(payload)
    assert json.loads(text) == payload
    json.dumps(payload, allow_nan=False, sort_keys=True)


def test_payload_values_are_plain_json_types_and_never_none(reference):
    payload = build_reference_payload(reference)
    for value in leaves(payload):
        assert type(value) in (str, int), (value, type(value))
    for item in payload["events"]:
        for key, value in item["parameters"].items():
            expected_type = int if key in ("durationMs", "exitCode") else str
            assert type(value) is expected_type, key


def test_each_payload_has_fresh_structures():
    items = [queued()]
    first = build_payload(items, source_client_version="1.0")
    first["events"][0]["parameters"]["command"] = "tampered"
    first["userId"] = "tampered"
    second = build_payload(items, source_client_version="1.0")
    assert second["events"][0]["parameters"]["command"] == "run"
    assert second["userId"] == "undefined"


# --------------------------------------------------------------------------- timestamps


def test_sent_ts_is_now_in_utc():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    payload = build_payload([queued()], source_client_version="1.0")
    after = datetime.now(timezone.utc)
    assert TS_RE.match(payload["sentTs"])
    assert before <= parse_ts(payload["sentTs"]) <= after


def test_format_timestamp_without_argument_is_now():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    text = format_timestamp()
    after = datetime.now(timezone.utc)
    assert TS_RE.match(text)
    assert before <= parse_ts(text) <= after


@pytest.mark.parametrize(
    "moment, expected",
    [
        (datetime(2026, 11, 22, 10, 18, 40, 513000, tzinfo=UTC), "2026-11-22T10:18:40.513Z"),
        # naive: taken as UTC, never as local time
        (datetime(2026, 11, 22, 10, 18, 40, 513000), "2026-11-22T10:18:40.513Z"),
        # aware, east of UTC
        (
            datetime(2026, 11, 22, 15, 48, 40, 513000, tzinfo=IST),
            "2026-11-22T10:18:40.513Z",
        ),
        # aware, west of UTC, crossing midnight and the year
        (
            datetime(2025, 12, 31, 20, 0, 0, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-01T01:00:00.000Z",
        ),
        # aware, east of UTC, crossing midnight backwards
        (
            datetime(2026, 3, 1, 0, 30, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-02-28T22:30:00.000Z",
        ),
        # milliseconds are truncated, never rounded
        (datetime(2026, 1, 1, 0, 0, 59, 999999, tzinfo=timezone.utc), "2026-01-01T00:00:59.999Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 999), "2026-01-01T00:00:00.000Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 1000), "2026-01-01T00:00:00.001Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 1999), "2026-01-01T00:00:00.001Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 0), "2026-01-01T00:00:00.000Z"),
        # zero padding
        (datetime(987, 6, 5, 4, 3, 2, 10000), "0987-06-05T04:03:02.010Z"),
    ],
)
def test_format_timestamp(moment, expected):
    assert format_timestamp(moment) == expected
    assert TS_RE.match(expected)


@pytest.fixture
def non_utc_local_time(monkeypatch):
    """Make the process's local time zone UTC-05:00 for the duration of a test."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "XST+05")
    time.tzset()
    try:
        assert datetime(2026, 1, 1, 12).astimezone().utcoffset() == timedelta(hours=-5)
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_naive_timestamp_is_utc_not_local_time(non_utc_local_time):
    naive = datetime(2026, 11, 22, 10, 18, 40, 513000)
    assert format_timestamp(naive) == "2026-11-22T10:18:40.513Z"
    payload = build_payload([QueuedEvent(queued().event, naive)], source_client_version="1.0")
    assert payload["events"][0]["ts"] == "2026-11-22T10:18:40.513Z"
    aware = datetime(2026, 11, 22, 5, 18, 40, 513000, tzinfo=timezone(timedelta(hours=-5)))
    assert format_timestamp(aware) == "2026-11-22T10:18:40.513Z"


def test_sent_ts_is_utc_under_a_non_utc_local_zone(non_utc_local_time):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    sent = parse_ts(build_payload([queued()], source_client_version="1.0")["sentTs"])
    assert before <= sent <= datetime.now(timezone.utc)


def test_event_ts_from_aware_non_utc_naive_and_truncated():
    tz = timezone(timedelta(hours=-7))
    event = CliCommandEvent(command="run", task_status="success", python_version="3.11.7")
    items = [
        QueuedEvent(event, datetime(2026, 6, 30, 20, 15, 0, 123456, tzinfo=tz)),
        QueuedEvent(event, datetime(2026, 7, 1, 3, 15, 0, 999999)),
    ]
    payload = build_payload(items, source_client_version="1.0")
    assert [e["ts"] for e in payload["events"]] == [
        "2026-07-01T03:15:00.123Z",
        "2026-07-01T03:15:00.999Z",
    ]


# --------------------------------------------------------------------------- QueuedEvent


def test_queued_event_defaults():
    event = CliCommandEvent(command="run", task_status="success", python_version="3.11.7")
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    item = QueuedEvent(event, moment)
    assert item.event is event
    assert item.timestamp is moment
    assert item.retry_count == 0
    assert [f.name for f in dataclasses.fields(QueuedEvent)] == [
        "event",
        "timestamp",
        "retry_count",
    ]
    assert QueuedEvent(event=event, timestamp=moment, retry_count=2).retry_count == 2


def test_queued_event_retry_count_is_mutable():
    item = queued()
    item.retry_count += 1
    assert item.retry_count == 1


# --------------------------------------------------------------------------- privacy


def _sensitive_strings():
    found = {}
    with contextlib.suppress(Exception):  # no user database entry
        found["user name"] = getpass.getuser()
    for var in ("USER", "LOGNAME", "USERNAME"):
        if os.environ.get(var):
            found[f"${var}"] = os.environ[var]
    found["hostname"] = socket.gethostname()
    found["home directory"] = str(Path.home())
    found["cwd"] = os.getcwd()
    found["python executable"] = sys.executable
    found["test file"] = __file__
    return {label: value for label, value in found.items() if value and value != "/"}


def test_payload_contains_no_user_host_or_path(reference):
    events = [
        CliCommandEvent(
            command="run",
            subcommand="list-components",
            task_status="failure",
            duration_ms=12,
            exit_code=1,
            error_class="ValueError",
            python_version=platform.python_version(),
        ),
        CliCommandEvent(command="info", task_status="success", python_version="3.12"),
    ]
    now = datetime.now(timezone.utc)
    payload = build_payload(
        [QueuedEvent(e, now) for e in events],
        source_client_version="1.9.0",
        session_id="0123456789abcdef0123456789abcdef",
    )
    values = [v for v in leaves(payload) if isinstance(v, str)]
    # Strings that are fixed by the wire format or chosen by this test: a sensitive
    # string that happens to be part of one of them cannot be told apart from it.
    chosen = {str(v) for v in leaves(reference)} | {
        "run",
        "list-components",
        "info",
        "ValueError",
        platform.python_version(),
        config.CPU_ARCHITECTURE,
    }
    checked = 0
    for label, secret in _sensitive_strings().items():
        if any(secret in known for known in chosen):
            continue
        checked += 1
        leaked = [v for v in values if secret in v]
        assert not leaked, f"{label} {secret!r} found in payload values {leaked!r}"
    assert checked >= 3
    # And the same for the serialized form, which is what goes on the wire.
    text = json.dumps(payload)
    for label, secret in _sensitive_strings().items():
        if len(secret) >= 3 and not any(secret in known for known in chosen):
            assert secret not in text, label
