"""HTTPS with a private certificate authority, on every path, against a real server.

A company's TLS-inspecting proxy or a self-hosted collector signs with a CA of
its own, named by ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE``.
Whichever names it, the handler's worker (with ``requests`` and with
``urllib``), the detached sender a command line leaves behind, and a copy
vendored without any third-party package (``python -S``) all deliver to a
loopback HTTPS server whose certificate that CA signed; and all of them refuse
an unknown CA and a certificate for another host name, without spending the
events' retries on a configuration problem.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from support.endpoints import LoopbackEndpoint
from support.helpers import REPO_ROOT, event, subprocess_env, wait_until

from nat_telemetry import config
from nat_telemetry import http as http_client
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy
from nat_telemetry.spool import Spool

VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def https_endpoint(ca: trustme.CA, *names: str) -> LoopbackEndpoint:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    return LoopbackEndpoint(tls=context, host="localhost")


@pytest.fixture
def endpoint(ca: trustme.CA) -> Iterator[LoopbackEndpoint]:
    server = https_endpoint(ca, "localhost")
    yield server
    server.close()


@pytest.fixture
def other_host(ca: trustme.CA) -> Iterator[LoopbackEndpoint]:
    server = https_endpoint(ca, "telemetry.other.example")  # not "localhost"
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_trust_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in config.CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = subprocess_env(tmp_path, **extra)
    for name in config.CA_VARIABLES:
        if name not in extra:
            env.pop(name, None)
    return env


# ----------------------------------------------------------------- the rule


def test_the_rule_takes_the_strongest_variable_then_certifi(tmp_path: Path) -> None:
    env = {"SSL_CERT_FILE": "/c", "CURL_CA_BUNDLE": "/b", "REQUESTS_CA_BUNDLE": "/a"}
    assert config.ca_location(env, []) == "/a"
    assert config.ca_location({"SSL_CERT_FILE": "/c", "CURL_CA_BUNDLE": "/b"}, []) == "/b"
    assert config.ca_location({"SSL_CERT_DIR": "/d"}, []) == "/d"
    assert config.ca_location({"REQUESTS_CA_BUNDLE": ""}, []) is None  # empty: unset
    (tmp_path / "certifi").mkdir()
    (tmp_path / "certifi" / "cacert.pem").write_text("")
    assert config.ca_location({}, [str(tmp_path)]) == str(tmp_path / "certifi" / "cacert.pem")
    assert config.ca_location({}, [str(tmp_path / "nothing")]) is None  # the system's store


# ------------------------------------------------------------- the worker


@pytest.fixture(params=["requests", "urllib"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    chosen = http_client.RequestsClient if request.param == "requests" else http_client.UrllibClient
    monkeypatch.setattr(http_client, "_default_class", chosen)
    return str(request.param)


def handler_for(url: str) -> NATTelemetryHandler:
    return NATTelemetryHandler(endpoint=url, spool_dir=None, request_timeout_seconds=5,
                               retry_policy=RetryPolicy(3, backoff_base=0.01, backoff_max=0.02))


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_worker_delivers_with_the_ca_each_variable_names(
        endpoint: LoopbackEndpoint, ca_file: str, client: str, variable: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, ca_file)
    handler = handler_for(endpoint.url)
    handler.enqueue(event(duration_ms=7))
    try:
        assert handler.flush(timeout=10) is True
    finally:
        handler.stop(timeout=2)
    assert [e["parameters"]["durationMs"] for e in endpoint.events] == [7]
    assert handler.stats()["sent"] == 1


@pytest.mark.parametrize("which", ["unknown CA", "another host"])
def test_the_worker_refuses_and_keeps_the_events_retries(
        endpoint: LoopbackEndpoint, other_host: LoopbackEndpoint, ca_file: str, client: str,
        which: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    if which == "another host":
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # trusted, but named for another host
        url = other_host.url
    else:
        url = endpoint.url  # signed by a CA nobody trusts here (certifi's bundle is used)
    handler = handler_for(url)
    handler.enqueue(event())
    try:
        assert handler.flush(timeout=1.5) is False  # not delivered, and not given up either
        stats = handler.stats()
    finally:
        handler.stop(timeout=0.5)
    assert stats["dlq"] == 1 and stats["retries"] == 0 and stats["dropped_retries_exhausted"] == 0
    assert endpoint.requests == other_host.requests == 0  # no request ever left the handshake
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "certificate" in warnings[0].lower(), warnings


# ------------------------------------------- the detached sender, a vendored copy

TOOL = """
from nat_telemetry import track_command
with track_command("tool", "secure"):
    pass
"""


def run_tool(tmp_path: Path, url: str, **extra: str) -> Path:
    spool = tmp_path / "spool"
    env = child_env(tmp_path, NAT_TELEMETRY_ENDPOINT=url, NAT_TELEMETRY_SPOOL_DIR=str(spool),
                    **extra)
    result = subprocess.run([sys.executable, "-c", TOOL], env=env, capture_output=True,
                            text=True, timeout=30, cwd=str(tmp_path))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return spool


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_detached_sender_delivers_with_the_ca_each_variable_names(
        tmp_path: Path, endpoint: LoopbackEndpoint, ca_file: str, variable: str) -> None:
    spool = run_tool(tmp_path, endpoint.url, **{variable: ca_file})
    assert wait_until(lambda: endpoint.events, timeout=15)
    assert [e["parameters"]["subcommand"] for e in endpoint.events] == ["secure"]
    assert wait_until(lambda: not Spool(str(spool)).summary(), timeout=10)


@pytest.mark.parametrize("which", ["unknown CA", "another host"])
def test_the_detached_sender_refuses_and_keeps_the_batch(
        tmp_path: Path, endpoint: LoopbackEndpoint, other_host: LoopbackEndpoint,
        ca_file: str, which: str) -> None:
    extra = {"SSL_CERT_FILE": ca_file} if which == "another host" else {}
    url = other_host.url if which == "another host" else endpoint.url
    spool = run_tool(tmp_path, url, **extra)
    # The sender stops at the certificate failure and records its kind for `status`.
    assert wait_until(lambda: any(state.get("failure") == "tls"
                                  for state in Spool(str(spool)).states().values()), timeout=15)
    (batches, events, _, _), = Spool(str(spool)).summary().values()
    assert (batches, events) == (1, 1)
    assert endpoint.requests == other_host.requests == 0


VENDORED = r"""
import sys
sys.path.insert(0, sys.argv[1])
from theirtool._vendor.nat_telemetry import CliCommandEvent, NATTelemetryHandler, config
assert "requests" not in sys.modules and "certifi" not in sys.modules
config.TELEMETRY_ENABLED = True
handler = NATTelemetryHandler(endpoint=sys.argv[2], spool_dir=None, request_timeout_seconds=5)
handler.enqueue(CliCommandEvent(command="vendored", task_status="success",
                                python_version="3.11.7"))
sent = handler.flush(timeout=5)
stats = handler.stats()
handler.stop(timeout=1)
for name in ("requests", "urllib3", "certifi"):
    try:
        __import__(name)
        raise SystemExit(f"{name} is importable: not a bare interpreter")
    except ImportError:
        pass
print(sent, stats["sent"], stats["retries"])
"""


@pytest.fixture(scope="module")
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vendored")
    target = root / "theirtool" / "_vendor" / "nat_telemetry"
    shutil.copytree(REPO_ROOT / "nat_telemetry", target,
                    ignore=shutil.ignore_patterns("__pycache__", "collector"))
    for folder in (root / "theirtool", root / "theirtool" / "_vendor"):
        (folder / "__init__.py").write_text("")
    return root


@pytest.mark.parametrize("variable", [*VARIABLES, None])
def test_a_vendored_copy_without_third_party_packages_follows_the_same_rule(
        vendored: Path, tmp_path: Path, endpoint: LoopbackEndpoint, other_host: LoopbackEndpoint,
        ca_file: str, variable: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in config.CA_VARIABLES
           and not k.startswith("NAT_") and k != "PYTHONPATH"}
    if variable is not None:
        env[variable] = ca_file
    for url, delivered in ((endpoint.url, variable is not None), (other_host.url, False)):
        result = subprocess.run([sys.executable, "-S", "-c", VENDORED, str(vendored), url],
                                env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == (["True", "1", "0"] if delivered else ["False", "0", "0"])
    assert endpoint.requests == (1 if variable is not None else 0)
    assert other_host.requests == 0
