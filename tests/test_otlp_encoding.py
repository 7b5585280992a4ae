"""nat_telemetry.otlp's encoder, checked by OTLP's reference protobuf bindings.

Every body is parsed strictly (an unknown or misspelt field fails) by
``google.protobuf.json_format`` into ``ExportLogsServiceRequest``, and every
field of the result is checked, for generated events, times and names.
"""

from __future__ import annotations

import json
import operator
import string
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from support.helpers import REPO_ROOT, event
from support.otlp_receiver import any_value, attributes_of

import nat_telemetry
from nat_telemetry import config
from nat_telemetry.events import CliCommandEvent, NemoSourceEnum, TaskStatusEnum, ValidationError
from nat_telemetry.otlp import encode_logs, encode_logs_body, host_arch
from nat_telemetry.payload import QueuedEvent

EXAMPLE_PATH = REPO_ROOT / "tests" / "data" / "otlp-logs-example.json"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MOMENT = datetime(2026, 11, 22, 10, 18, 40, 513000, tzinfo=timezone.utc)
INT64 = range(-(2**63), 2**63)
UINT64_MAX = 2**64 - 1

RESOURCE_KEYS = ["service.name", "service.version", "host.arch", "telemetry.sdk.name",
                 "telemetry.sdk.version"]
RECORD_FIELDS = {"time_unix_nano", "observed_time_unix_nano", "body", "attributes", "event_name"}

PROPERTY = settings(
    max_examples=150, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def parse(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    json_format.Parse(body.decode("utf-8"), request)  # strict: unknown fields raise
    return request


def set_fields(message: Any) -> set[str]:
    return {field.name for field, _ in message.ListFields()}


def expected_nanos(moment: datetime) -> int:
    """Nanoseconds since the epoch, worked out another way than the encoder does."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return min(max((moment - EPOCH) // timedelta(microseconds=1) * 1000, 0), UINT64_MAX)


def expected_value(value: Any) -> Any:
    """What a parameter reads back as: an int64 stays an int, a wider int becomes text."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        return str(value)
    return value


def check_request(request: ExportLogsServiceRequest, batch: list[QueuedEvent], *,
                  service_name: str, service_version: str, session_id: str) -> None:
    """Every field of the parsed request, and that nothing else is set."""
    assert set_fields(request) == {"resource_logs"}
    (resource_logs,) = request.resource_logs
    assert set_fields(resource_logs) == {"resource", "scope_logs"}  # no schema_url
    assert set_fields(resource_logs.resource) == {"attributes"}
    resource_attributes = resource_logs.resource.attributes
    assert [kv.key for kv in resource_attributes] == RESOURCE_KEYS
    assert all(kv.value.WhichOneof("value") == "string_value" for kv in resource_attributes)
    assert attributes_of(resource_logs.resource) == {
        "service.name": service_name,
        "service.version": service_version,
        "host.arch": host_arch(),
        "telemetry.sdk.name": "nat-telemetry",
        "telemetry.sdk.version": nat_telemetry.__version__,
    }
    (scope_logs,) = resource_logs.scope_logs
    assert set_fields(scope_logs) == {"scope", "log_records"}
    assert set_fields(scope_logs.scope) == {"name"}
    assert scope_logs.scope.name == "nat_telemetry"
    records = scope_logs.log_records
    assert len(records) == len(batch)
    for record, queued in zip(records, batch):
        nanos = expected_nanos(queued.timestamp)
        assert set_fields(record) == RECORD_FIELDS - ({"time_unix_nano", "observed_time_unix_nano"}
                                                      if nanos == 0 else set())
        assert record.time_unix_nano == record.observed_time_unix_nano == nanos
        assert record.event_name == "nat_cli_command"
        assert record.body.WhichOneof("value") == "string_value"
        assert record.body.string_value == "nat_cli_command"
        parameters = queued.event.model_dump(by_alias=True)
        assert [kv.key for kv in record.attributes] == [*parameters, "session.id"]
        expected = {key: expected_value(value) for key, value in parameters.items()}
        expected["session.id"] = session_id
        read_back = {kv.key: any_value(kv.value) for kv in record.attributes}
        assert read_back == expected
        for kv in record.attributes:  # ints are ints, not numbers-as-text
            kind = kv.value.WhichOneof("value")
            assert kind == ("int_value" if isinstance(read_back[kv.key], int) else "string_value")


# ---------------------------------------------------------------- strategies

# Built from alphabets and numbers rather than from_regex: several times faster.
TOKENS = st.text(string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=64)
IDENTIFIERS = st.builds(operator.add, st.sampled_from(string.ascii_letters + "_"),
                        st.text(string.ascii_letters + string.digits + "_", max_size=9))
ERROR_CLASSES = st.lists(IDENTIFIERS, min_size=1, max_size=4).map(".".join)
SMALL = st.integers(0, 999).map(str)
PYTHON_VERSIONS = st.builds(
    lambda major, minor, micro, pre, plus: f"{major}.{minor}{micro}{pre}{plus}",
    SMALL, SMALL, st.sampled_from(["", ".0", ".12", ".999"]),
    st.sampled_from(["", "a1", "b2", "rc1", "rc999"]), st.sampled_from(["", "+"]))
WIDE_INTS = st.one_of(st.integers(-1000, 100_000), st.integers(-(2**63), 2**63 - 1),
                      st.sampled_from([-(2**63), 2**63 - 1]))
ZONES = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                         timezone(-timedelta(hours=9, minutes=45))])


@st.composite
def cli_events(draw: st.DrawFn) -> CliCommandEvent:
    return CliCommandEvent(
        nemo_source=draw(st.sampled_from([m.value for m in NemoSourceEnum])),
        command=draw(TOKENS),
        subcommand=draw(TOKENS),
        task_status=draw(st.sampled_from([m.value for m in TaskStatusEnum])),
        duration_ms=draw(WIDE_INTS.filter(lambda n: n >= -1)),
        exit_code=draw(WIDE_INTS),
        error_class=draw(ERROR_CLASSES),
        python_version=draw(PYTHON_VERSIONS),
    )


# A day past the epoch: no offset can take it before 1970 (checked apart).
MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2500, 1, 1),
                       timezones=ZONES)
BATCHES = st.lists(st.builds(QueuedEvent, cli_events(), MOMENTS), min_size=1, max_size=6)


@PROPERTY
@given(batch=BATCHES, service_name=st.text(max_size=30), service_version=st.text(max_size=20),
       session_id=st.text(max_size=40))
def test_reference_parser_reads_back_every_field(
    batch: list[QueuedEvent], service_name: str, service_version: str, session_id: str,
) -> None:
    body = encode_logs_body(batch, service_name=service_name, service_version=service_version,
                            session_id=session_id)
    request = parse(body)
    check_request(request, batch, service_name=service_name,
                  service_version=service_version, session_id=session_id)
    # The canonical proto3 JSON of what was parsed is exactly what was sent:
    # lowerCamelCase names, 64-bit integers as strings, no stray defaults.
    assert json_format.MessageToDict(request) == json.loads(body)
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode("utf-8")


# ------------------------------------------------------------------ examples


def example_batch() -> list[QueuedEvent]:
    return [
        QueuedEvent(event(duration_ms=1234), MOMENT),
        QueuedEvent(event(subcommand="eval", task_status="failure", duration_ms=87, exit_code=1,
                          error_class="ValueError"), MOMENT + timedelta(milliseconds=250)),
    ]


def test_the_documented_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "CPU_ARCHITECTURE", "x86_64")
    expected = json.loads(EXAMPLE_PATH.read_text())
    # The library's own version is whatever it is today.
    sdk_version = expected["resourceLogs"][0]["resource"]["attributes"][4]
    assert sdk_version["key"] == "telemetry.sdk.version"
    sdk_version["value"]["stringValue"] = nat_telemetry.__version__
    request = encode_logs(example_batch(), service_version="1.4.0",
                          session_id="nat-3f2a9c1e")
    assert request == expected
    check_request(parse(json.dumps(request).encode()), example_batch(),
                  service_name=config.CLIENT_ID, service_version="1.4.0",
                  session_id="nat-3f2a9c1e")


def test_body_is_compact_json_of_the_request() -> None:
    kwargs: dict[str, Any] = {"service_name": "svc", "service_version": "1", "session_id": "s"}
    body = encode_logs_body(example_batch(), **kwargs)
    assert b" " not in body and b"\n" not in body
    assert json.loads(body) == encode_logs(example_batch(), **kwargs)


def test_service_name_defaults_to_the_client_id() -> None:
    request = encode_logs(example_batch(), service_version="1", session_id="s")
    resource = request["resourceLogs"][0]["resource"]["attributes"]
    assert resource[0] == {"key": "service.name", "value": {"stringValue": config.CLIENT_ID}}


def test_an_empty_batch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        encode_logs([], service_version="1", session_id="s")


@pytest.mark.parametrize(("moment", "nanos"), [
    (datetime(2026, 11, 22, 10, 18, 40, 513001), 1_795_342_720_513_001_000),  # naive: UTC
    (datetime(2026, 11, 22, 11, 18, 40, 513001, tzinfo=timezone(timedelta(hours=1))),
     1_795_342_720_513_001_000),
    (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc), 1000),
    (datetime(1970, 1, 1, tzinfo=timezone.utc), 0),
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc), 0),  # before the epoch: unknown
    (datetime(1, 1, 1), 0),
    (datetime(2554, 7, 21, 23, 34, 33, 709551), 18_446_744_073_709_551_000),  # last in range
    (datetime(9999, 12, 31, 23, 59, 59, 999999), UINT64_MAX),  # clamped
])
def test_times_are_exact_and_clamped_to_fixed64(moment: datetime, nanos: int) -> None:
    batch = [QueuedEvent(event(), moment)]
    body = encode_logs_body(batch, service_version="1", session_id="s")
    record = parse(body).resource_logs[0].scope_logs[0].log_records[0]
    assert record.time_unix_nano == record.observed_time_unix_nano == nanos
    assert json.loads(body)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0][
        "timeUnixNano"] == str(nanos)


def test_int64_bounds_travel_as_ints_and_nothing_wider_can_be_an_event() -> None:
    batch = [QueuedEvent(event(duration_ms=2**63 - 1, exit_code=-(2**63)), MOMENT)]
    records = parse(encode_logs_body(batch, service_version="1", session_id="s")
                    ).resource_logs[0].scope_logs[0].log_records
    (only,) = (attributes_of(r) for r in records)
    assert (only["durationMs"], only["exitCode"]) == (2**63 - 1, -(2**63))
    with pytest.raises(ValidationError):
        event(duration_ms=2**63)
    with pytest.raises(ValidationError):
        event(exit_code=-(2**63) - 1)


@pytest.mark.parametrize(("machine", "arch"), [
    ("x86_64", "amd64"), ("AMD64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64"),
    ("armv7l", "arm32"), ("i686", "x86"), ("ppc64le", "ppc64"), ("s390x", "s390x"),
    ("riscv64", "riscv64"),  # no well-known value: passed on as it is
])
def test_host_arch_uses_opentelemetry_values(
    monkeypatch: pytest.MonkeyPatch, machine: str, arch: str,
) -> None:
    monkeypatch.setattr(config, "CPU_ARCHITECTURE", machine)
    request = encode_logs(example_batch(), service_version="1", session_id="s")
    assert request["resourceLogs"][0]["resource"]["attributes"][2] == {
        "key": "host.arch", "value": {"stringValue": arch}}


def test_nothing_from_the_machine_or_the_user_beyond_the_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The body holds the parameters, names, versions, arch, session and times: no more."""
    monkeypatch.setattr(config, "CPU_ARCHITECTURE", "x86_64")
    body = encode_logs_body(example_batch(), service_version="1.4.0", session_id="nat-3f2a9c1e")
    request = json.loads(body)
    strings = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                strings.add(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        else:
            strings.add(str(node))

    walk(request)
    allowed_values = {value for queued in example_batch()
                      for value in map(str, queued.event.model_dump(by_alias=True).values())}
    allowed_values |= set(RESOURCE_KEYS) | {
        config.CLIENT_ID, "1.4.0", "amd64", "nat-telemetry", nat_telemetry.__version__,
        "nat_telemetry", "nat_cli_command", "session.id", "nat-3f2a9c1e",
        str(expected_nanos(MOMENT)), str(expected_nanos(MOMENT + timedelta(milliseconds=250))),
    }
    structure = {"resourceLogs", "resource", "attributes", "key", "value", "stringValue",
                 "intValue", "scopeLogs", "scope", "name", "logRecords", "timeUnixNano",
                 "observedTimeUnixNano", "body", "eventName"}
    parameter_keys = set(example_batch()[0].event.model_dump(by_alias=True))
    assert strings <= allowed_values | structure | parameter_keys, (
        strings - allowed_values - structure - parameter_keys)


def test_an_unencodable_parameter_is_a_type_error() -> None:
    class Odd:
        event = event()
        timestamp = MOMENT

    odd: Any = Odd()
    odd.event = type("E", (), {"_event_name": "x",
                               "model_dump": lambda self, by_alias=False: {"k": object()}})()
    with pytest.raises(TypeError, match="object"):
        encode_logs([odd], service_version="1", session_id="s")
