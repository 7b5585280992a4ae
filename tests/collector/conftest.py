"""Fixtures of the collector's tests: started collectors and handlers, stopped after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from nat_telemetry import config
from nat_telemetry.collector import Collector
from nat_telemetry.handler import NATTelemetryHandler

_UNSET: Any = object()


@pytest.fixture(autouse=True)
def telemetry_on() -> Iterator[None]:
    """Telemetry enabled for the handlers in these tests, restored afterwards."""
    settings = vars(config)
    before = settings.get("TELEMETRY_ENABLED", _UNSET)
    dry_run = config.NAT_TELEMETRY_DRY_RUN
    config.TELEMETRY_ENABLED = True
    config.NAT_TELEMETRY_DRY_RUN = False
    yield
    config.NAT_TELEMETRY_DRY_RUN = dry_run
    if before is _UNSET:
        settings.pop("TELEMETRY_ENABLED", None)
    else:
        config.TELEMETRY_ENABLED = before


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """``start_collector(**options)``: a started Collector, stopped at teardown."""
    started: list[Collector] = []

    def factory(**options: Any) -> Collector:
        collector = Collector(tmp_path / f"c{len(started)}.db", **options).start()
        started.append(collector)
        return collector

    yield factory
    for collector in started:
        collector.stop()


@pytest.fixture
def ingest(start_collector: Callable[..., Collector]) -> Collector:
    return start_collector()


@pytest.fixture
def handlers() -> Iterator[list[NATTelemetryHandler]]:
    made: list[NATTelemetryHandler] = []
    yield made
    for handler in made:
        handler.stop(timeout=1)
