"""Fixtures only; the code they use lives in ``tests/support`` (see tests/README.md).

* every test runs with telemetry enabled, no endpoint, no dry run, no session
  prefix, no proxy and a consent file of its own (autouse);
* ``make_handler`` builds handlers with test-friendly defaults and stops them
  all at teardown, so no worker thread outlives its test;
* ``fake_endpoint`` scripts HTTP answers with ``responses`` (no sockets);
* ``loopback_endpoint`` is a real loopback HTTP server that records what it
  gets, ``black_hole`` a port that accepts connections and never answers,
  ``refused_url`` a port that refuses connections;
* ``dependency_mode`` runs a test with and without the optional dependencies.

Test modules import helpers from ``support.helpers`` and ``support.endpoints``,
not from here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import responses
from support.endpoints import BlackHole, FakeEndpoint, LoopbackEndpoint, refusing_port
from support.helpers import (
    PROXY_VARS,
    assert_balanced,
)

from nat_telemetry import _process, config, consent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

# The suite also runs under CI, where CI=true would keep telemetry off and the
# prompt away: every test (and every child it starts) begins outside CI and
# without DO_NOT_TRACK; the tests of those rules set them themselves.
for _name in (*config.CI_ENV_VARS, config.DO_NOT_TRACK_ENV_VAR):
    os.environ.pop(_name, None)


# -------------------------------------------------------- isolation fixtures


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home, XDG folder and consent file (returned); no NAT_TELEMETRY_ENABLED."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    consent_file = tmp_path / "conf" / "telemetry.toml"
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(consent_file))
    monkeypatch.delenv(consent.TELEMETRY_ENV_VAR, raising=False)
    return consent_file


@pytest.fixture(autouse=True)
def telemetry_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enabled, no endpoint, no dry run, no prefix, private consent file, no proxy,
    and nothing said once yet."""
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", True, raising=False)
    monkeypatch.setenv("NAT_TELEMETRY_CONSENT_FILE", str(tmp_path / "consent" / "telemetry.toml"))
    # No spool unless a test asks for one (spool_dir=, or the variable).
    monkeypatch.setenv("NAT_TELEMETRY_SPOOL_DIR", "off")
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "")
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", False)
    monkeypatch.setattr(config, "SESSION_PREFIX", None)
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    # What the process said once, each test hears again (tests run in any order).
    monkeypatch.setattr(_process, "_said", set())


class HandlerRegistry:
    """Every handler a test built; ``stop_all`` is safe to call repeatedly."""

    def __init__(self) -> None:
        self.handlers: list[NATTelemetryHandler] = []

    def stop_all(self) -> None:
        for handler in self.handlers:
            handler.stop(timeout=1)


@pytest.fixture(autouse=True)
def handler_registry() -> Iterator[HandlerRegistry]:
    """Stops every handler ``make_handler`` built, then checks its books balance."""
    registry = HandlerRegistry()
    yield registry
    registry.stop_all()
    for handler in registry.handlers:
        assert_balanced(handler.stats())


@pytest.fixture
def make_handler(handler_registry: HandlerRegistry) -> Callable[..., NATTelemetryHandler]:
    """``make_handler(**kwargs)``: a handler with short timeouts, stopped at teardown.

    Defaults: flush every 60 s (so only the threshold or flush() sends), 0.3 s
    request timeout, 0.5 s shutdown budget, and a retry policy with 10-50 ms
    backoff (built from ``max_retries`` unless ``retry_policy`` is given).
    """

    def factory(**kwargs: Any) -> NATTelemetryHandler:
        kwargs.setdefault("flush_interval_seconds", 60.0)
        kwargs.setdefault("request_timeout_seconds", 0.3)
        kwargs.setdefault("shutdown_timeout_seconds", 0.5)
        if "retry_policy" not in kwargs:
            kwargs["retry_policy"] = RetryPolicy(
                kwargs.get("max_retries", 3), backoff_base=0.01, backoff_max=0.05
            )
        handler = NATTelemetryHandler(**kwargs)
        handler_registry.handlers.append(handler)
        return handler

    return factory


@pytest.fixture
def fake_endpoint(handler_registry: HandlerRegistry) -> Iterator[FakeEndpoint]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        endpoint = FakeEndpoint(mock)
        yield endpoint
        # Stop the test's handlers while the mock is still in place: a final
        # flush must never reach the real network.
        handler_registry.stop_all()


# --------------------------------------------------------- loopback endpoint


@pytest.fixture
def loopback_endpoint(handler_registry: HandlerRegistry) -> Iterator[LoopbackEndpoint]:
    server = LoopbackEndpoint()
    yield server
    handler_registry.stop_all()  # while the server still answers
    server.close()


# ------------------------------------------------------ black hole, refused


@pytest.fixture
def black_hole(handler_registry: HandlerRegistry) -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()  # first: a POST stuck in the hole fails at once
    handler_registry.stop_all()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on a loopback port that refuses connections for the whole test."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}/ingest"


# ------------------------------------------------------- dependency modes

# The third-party modules the package can do without (see nat_telemetry.config,
# .consent and .http): hidden in "stdlib" mode.
OPTIONAL_MODULES = ("requests", "tomli_w", "tomli", "tomllib")


@pytest.fixture(params=["installed", "stdlib"])
def dependency_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    handler_registry: HandlerRegistry,
) -> Iterator[str]:
    """Run a test with the optional dependencies ("installed") and without ("stdlib").

    "stdlib" puts None in ``sys.modules`` for ``requests``, ``tomli_w``,
    ``tomli`` and ``tomllib`` and every submodule of theirs already imported,
    so any import of them raises ImportError and the standard-library
    fallbacks are really used.  The transport choice is forgotten before the
    test (and restored after) so it is made again under the test's conditions.
    Handlers are stopped while the mode still holds.
    """
    import sys

    from nat_telemetry import http as http_client

    monkeypatch.setattr(http_client, "_default_class", None)
    if request.param == "stdlib":
        prefixes = tuple(f"{name}." for name in OPTIONAL_MODULES)
        for name in list(sys.modules):
            if name in OPTIONAL_MODULES or name.startswith(prefixes):
                monkeypatch.setitem(sys.modules, name, None)
        for name in OPTIONAL_MODULES:
            monkeypatch.setitem(sys.modules, name, None)
    yield request.param
    handler_registry.stop_all()
