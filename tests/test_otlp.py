"""OTLP endpoints (nat_telemetry.transport), partial-success answers and import cost
(nat_telemetry.otlp)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from support.helpers import subprocess_env

from nat_telemetry.otlp import rejected_log_records
from nat_telemetry.transport import destination, endpoint_problem, logs_url

# ------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(("endpoint", "url"), [
    ("otlp+http://host:4318", "http://host:4318/v1/logs"),
    ("otlp+http://host:4318/", "http://host:4318/v1/logs"),
    ("otlp+https://h/custom/path", "https://h/custom/path"),
    ("otlp+https://h/custom/path/", "https://h/custom/path/"),
    ("otlp+https://h", "https://h/v1/logs"),
    ("OTLP+HTTP://Host:4318", "http://Host:4318/v1/logs"),
    ("otlp+http://127.0.0.1:4318/v1/logs", "http://127.0.0.1:4318/v1/logs"),
    ("otlp+http://[::1]:4318", "http://[::1]:4318/v1/logs"),
    ("otlp+https://gw.example/otlp/v1/logs?tenant=a", "https://gw.example/otlp/v1/logs?tenant=a"),
    ("otlp+https://gw.example?tenant=a", "https://gw.example/v1/logs?tenant=a"),
    ("otlp+http://h:4318/#frag", "http://h:4318/v1/logs"),
    # userinfo is kept for the transport; it is only ever hidden in messages
    ("otlp+http://u:p@h:4318", "http://u:p@h:4318/v1/logs"),
])
def test_otlp_logs_url(endpoint: str, url: str) -> None:
    assert endpoint_problem(endpoint) is None
    assert destination(endpoint, False) == "otlp"
    assert logs_url(endpoint) == url


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("otlp+grpc://host:4317", "not one this client can send to"),
    ("otlp://host:4318", "not one this client can send to"),
    ("host:4318", "not one this client can send to"),
    ("otlp+http:host:4318", "not one this client can send to"),
    ("otlp+http:/host", "not one this client can send to"),
    ("  otlp+http://host:4318", "not one this client can send to"),
    ("otlp+http://", "no host"),
    ("otlp+http:///v1/logs", "no host"),
    ("otlp+http://:4318", "no host"),
    ("otlp+http://host:99999", "bad port"),
    ("otlp+http://host:0", "bad port"),
    ("otlp+http://host:port", "bad port"),
    ("otlp+http://[::1", "invalid IPv6 address"),
    ("otlp+http://host:4318\n", "white space or control characters"),
    ("otlp+http://host/a b", "white space or control characters"),
    ("otlp+http://host/\r\nX-Injected: 1", "white space or control characters"),
])
def test_an_unusable_otlp_endpoint_names_its_problem(endpoint: str, problem: str) -> None:
    assert destination(endpoint, False) == "unusable"
    assert problem in (endpoint_problem(endpoint) or "")


@pytest.mark.parametrize("endpoint", [
    "otlp+http://alice:s3cr3t@:4318",
    "otlp+http://alice:s3cr3t@host:99999",
    "otlp+https://alice:s3cr3t@host:nope/v1/logs",
    "otlp+https://alice:s3cr3t@[::1/v1/logs",
    "otlp+http://alice:s3cr3t@host/a b",
    "otlp+grpc://alice:s3cr3t@host:4317",
    "otlp+http://alice:s3cr3t@host:4318\n",
    "otlp+http://host:99999/v1/logs?api_key=s3cr3t",
    "otlp+http:alice:s3cr3t@host",
    "alice:s3cr3t@host:4318",
    "alice:s3cr3t@host:4318/v1/logs",
])
def test_messages_never_repeat_credentials(endpoint: str) -> None:
    message = endpoint_problem(endpoint)
    assert message is not None
    assert "s3cr3t" not in message and "alice" not in message
    assert "***" in message


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("otlp+http://h", "otlp"),
    ("otlp+https://h", "otlp"),
    ("OTLP+HTTPS://h", "otlp"),
    (" otlp+http://h", "unusable"),
    ("otlp+grpc://h", "unusable"),
    ("otlp://h", "unusable"),
    ("http://h", "nemo"),
    ("https://otlp+http.example/", "nemo"),
    ("stdout", "stdout"),
    ("", "none"),
    ("otlphttp://h", "unusable"),
])
def test_what_an_endpoint_asks_for(endpoint: str, expected: str) -> None:
    assert destination(endpoint, False) == expected
    # A dry run shows what would be sent, with an endpoint or without one.
    dry = {"otlp": "otlp-dry-run", "nemo": "dry-run", "none": "dry-run"}.get(expected, expected)
    assert destination(endpoint, True) == dry


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(max_size=60).map("otlp+http://".__add__)))
def test_a_usable_otlp_endpoint_gives_a_usable_logs_url(endpoint: str) -> None:
    if destination(endpoint, False) != "otlp":
        return
    url = logs_url(endpoint)
    assert url.startswith(("http://", "https://"))
    assert destination(url, False) == "nemo"  # both HTTP clients can send to it


# ------------------------------------------------------------------- answers


@pytest.mark.parametrize(("body", "count"), [
    (b'{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"bad"}}', 3),
    (b'{"partialSuccess":{"rejectedLogRecords":3}}', 3),
    (b'{"partialSuccess":{"rejectedLogRecords":3.0}}', 3),
    (b'{"partial_success":{"rejected_log_records":"4"}}', 4),
    (b'{"partialSuccess":{"rejectedLogRecords":" 5 "}}', 5),
    (b'{"partialSuccess":{"rejectedLogRecords":"18446744073709551615"}}', 2**64 - 1),
    (b'{"partialSuccess":{"errorMessage":"just a warning"}}', 0),
    (b'{"partialSuccess":{}}', 0),
    (b"{}", 0),
    (b"", 0),
    (b"null", 0),
    (b"[]", 0),
    (b'"3"', 0),
    (b"not json", 0),
    (b"\xff\xfe\x00", 0),
    (b'{"partialSuccess":null}', 0),
    (b'{"partialSuccess":[3]}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":-2}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":"-2"}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":true}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":"1e3"}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":"\xd9\xa3"}}', 0),  # ARABIC-INDIC THREE
    (b'{"partialSuccess":{"rejectedLogRecords":2.5}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":NaN}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":Infinity}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":null}}', 0),
    (b'{"partialSuccess":{"rejectedLogRecords":"' + b"9" * 5000 + b'"}}', 0),
    (b"[" * 100_000 + b"]" * 100_000, 0),  # deep enough to exhaust the recursion limit
    (b'{"partialSuccess":{"rejectedLogRecords":"2"}', 0),  # truncated
])
def test_rejected_log_records(body: bytes, count: int) -> None:
    assert rejected_log_records(body) == count


@pytest.mark.parametrize("rejected", [0, 1, 7, 2**63 - 1])
def test_rejected_log_records_reads_the_reference_encoding(rejected: int) -> None:
    response = ExportLogsServiceResponse()
    response.partial_success.rejected_log_records = rejected
    response.partial_success.error_message = "rejected"
    for text in (json_format.MessageToJson(response),
                 json_format.MessageToJson(response, preserving_proto_field_name=True)):
        assert rejected_log_records(text.encode("utf-8")) == rejected


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from(["partialSuccess", "rejectedLogRecords",
                                                    "errorMessage", "x"]), inner, max_size=3),
                 max_leaves=12).map(lambda v: json.dumps(v).encode("utf-8")),
))
def test_rejected_log_records_never_raises(body: bytes) -> None:
    count = rejected_log_records(body)
    assert isinstance(count, int) and count >= 0


# --------------------------------------------------------------- import cost


def test_import_is_cheap(tmp_path: Path) -> None:
    """Beyond the package itself, importing the module loads nothing else."""
    code = ("import sys, nat_telemetry; before = set(sys.modules); import nat_telemetry.otlp; "
            "print(sorted(set(sys.modules) - before))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(tmp_path),
                            capture_output=True, text=True, timeout=30, check=True)
    loaded: list[Any] = json.loads(result.stdout.replace("'", '"'))
    assert loaded == ["nat_telemetry.otlp"]
