"""Endpoints that can never be sent to, and endpoints that carry credentials."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from support.helpers import REPO_ROOT, assert_balanced, event, subprocess_env

from nat_telemetry import config
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.transport import endpoint_problem, redact

MakeHandler = Callable[..., NATTelemetryHandler]
NOT_URLS = ["localhost:8765", "htp://x", "ftp://example.test/x", "http://[::1",
            "http://host:port/", "file:///etc/passwd", "http://", "http://a b/",
            "http://h\t/x", "http://h/x\x7f", "http://h/x?a=b c", "http://h/p\u00e4th",
            "http://\u00fcser:pw@h/x", "http://" + "\u00fc" * 64 + ".example/"]


@pytest.mark.parametrize("endpoint", NOT_URLS)
def test_an_endpoint_argument_that_is_not_a_url_is_a_value_error(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        NATTelemetryHandler(endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["", "stdout", "http://127.0.0.1:1/x", "https://h/v1",
                                      "otlp+http://h:4318", "http://u:p@h/x",
                                      "https://h/x?k=v#f", "http://b\u00fccher.example/x"])
def test_usable_endpoints_are_accepted(endpoint: str) -> None:
    assert endpoint_problem(endpoint) is None


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("htp://x", "is not one this client can send to"),
    ("http://a b/", "contains white space or control characters"),
    ("http://h/x\r\nX-Injected: 1", "contains white space or control characters"),
    ("http://[::1", "is not a valid URL: invalid IPv6 address"),
    ("http://h:65536", "is not a valid URL: bad port"),
    ("http://h:0", "is not a valid URL: bad port"),
    ("http://", "has no host"),
    ("http://h/p\u00e4th", "has characters outside ASCII"),
    ("http://" + "\u00fc" * 64 + ".example/", "has a host name no client can encode"),
])
def test_the_problem_is_named(endpoint: str, problem: str) -> None:
    assert problem in (endpoint_problem(endpoint) or "")


def test_an_unusable_configured_endpoint_is_reported_once_and_dropped_by_name(
    make_handler: MakeHandler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "localhost:8765")
    handler = make_handler()
    with caplog.at_level(logging.WARNING, logger="nat_telemetry"):
        for n in range(3):
            handler.enqueue(event(duration_ms=n))
            assert handler.flush(timeout=2) is True  # nothing retried
    stats = handler.stats()
    assert_balanced(stats)
    assert stats["dropped_bad_endpoint"] == 3 and stats["retries"] == 0 and stats["dlq"] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "localhost:8765" in warnings[0].getMessage()


@pytest.mark.parametrize("endpoint", ["http://alice:s3cret@host/x", "https://alice:s3cret@h:9/",
                                      "http://alice:s3cret@[::1", "alice:s3cret@host"])
def test_redaction_hides_the_userinfo(endpoint: str) -> None:
    assert "s3cret" not in redact(endpoint) and "alice" not in redact(endpoint)
    assert "s3cret" not in (endpoint_problem(endpoint) or "")


@pytest.mark.parametrize(("endpoint", "shown"), [
    ("https://h/x?api_key=s3cret", "https://h/x?***"),
    ("https://h?api_key=s3cret#part", "https://h?***"),
    ("https://h/x#s3cret", "https://h/x"),
    ("https://alice:s3cret@h/x?k=v", "https://***@h/x?***"),
    ("http://h/v1", "http://h/v1"),
])
def test_redaction_hides_the_query_and_drops_the_fragment(endpoint: str, shown: str) -> None:
    assert redact(endpoint) == shown


@pytest.mark.parametrize(("endpoint", "shown"), [
    ("http://h/a\x1b[31mred", "http://h/a\\x1b[31mred"),
    ("http://h/\u202eevil", "http://h/\\u202eevil"),
    ("http://h/x\r\nX-Injected: 1", "http://h/x\\r\\nX-Injected: 1"),
])
def test_redaction_escapes_control_characters(endpoint: str, shown: str) -> None:
    assert redact(endpoint) == shown
    assert redact(endpoint).isprintable()


def test_status_shows_the_endpoint_redacted_and_unusable(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path, NAT_TELEMETRY_ENDPOINT="http://alice:s3cret@[::1")
    result = subprocess.run([sys.executable, "-m", "nat_telemetry", "status", "--json"],
                            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert "s3cret" not in result.stdout + result.stderr
    info = json.loads(result.stdout)
    assert info["endpoint"] == "http://***@[::1"
    assert "not a valid URL" in info["endpoint_problem"]


def test_stdout_sink_writes_json_with_default_separators(
    make_handler: MakeHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = make_handler(endpoint="stdout")
    handler.enqueue(event(duration_ms=5))
    assert handler.flush(timeout=5)
    line = capsys.readouterr().err.strip()
    assert line == json.dumps(json.loads(line))  # ", " and ": ", as json.dumps writes
    assert '"durationMs": 5' in line
