"""The public Collector: options checked up front, addressing, a final stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from support.collector import http, make_envelope

from nat_telemetry.collector import Collector


@pytest.mark.parametrize(("option", "value"), [
    ("fail_rate", 1.5), ("fail_rate", -0.1), ("drop_rate", 2.0), ("port", 70000),
    ("fail_status", 200), ("delay_ms", -1), ("max_body", 0), ("retry_after", -3),
])
def test_constructor_rejects_out_of_range_options(tmp_path: Path, option: str,
                                                  value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        Collector(tmp_path / "x.db", **{option: value})


def test_url_needs_a_port(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _ = Collector(tmp_path / "x.db").url


def test_stop_is_idempotent_and_final(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "x.db")
    with collector:
        url = collector.url
        assert http().post(url, json=make_envelope(1), timeout=5).status_code == 200
    collector.stop()
    with pytest.raises(requests.ConnectionError):
        http().post(url, json=make_envelope(1), timeout=2)
    with pytest.raises(RuntimeError):
        collector.start()
