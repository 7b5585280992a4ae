"""The collector's fault mix (``Collector(faults=[Fault(...), ...])``), over real sockets."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from nat_telemetry.collector import Collector, Fault
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.payload import QueuedEvent, build_payload

from .conftest import FAULT_MIX, FAULT_SEED


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def factory(**options: Any) -> Collector:
        collector = Collector(tmp_path / f"mix-{len(started)}.db", **options)
        started.append(collector)
        return collector.start()

    yield factory
    for collector in started:
        collector.stop()


def envelope(ident: int) -> dict[str, Any]:
    event = CliCommandEvent(command="mix", task_status="success", python_version="3.11.7",
                            duration_ms=ident)
    return build_payload([QueuedEvent(event, datetime.now(timezone.utc))],
                         source_client_version="1.0.0", session_id="mix")


def post(session: requests.Session, url: str, ident: int) -> tuple[Any, float, str | None]:
    """(status or "drop", seconds the answer took, Retry-After)."""
    began = time.monotonic()
    try:
        answer = session.post(url, json=envelope(ident), timeout=5)
    except requests.ConnectionError:
        return "drop", time.monotonic() - began, None
    return answer.status_code, time.monotonic() - began, answer.headers.get("Retry-After")


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy between us and loopback
    return session


def run(collector: Collector, count: int) -> list[tuple[Any, float, str | None]]:
    session = http()
    try:
        return [post(session, collector.url, n) for n in range(count)]
    finally:
        session.close()


@pytest.mark.parametrize(("faults", "message"), [
    ([Fault(0.5, "explode")], "kind"),
    ([Fault(1.5, "fail")], "rate"),
    ([Fault(-0.1, "drop")], "rate"),
    ([Fault(0.6, "fail"), Fault(0.5, "drop")], "sum of rates"),
    ([Fault(0.1, "fail", status=200)], "status"),
    ([Fault(0.1, "fail", retry_after=-1)], "retry_after"),
    ([Fault(0.1, "slow", delay_ms=-5)], "delay_ms"),
])
def test_invalid_mixes_are_refused(tmp_path: Path, faults: list[Fault], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Collector(tmp_path / "x.db", faults=faults)


def test_plain_tuples_are_faults(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "x.db", faults=[(0.2, "fail", 429, 3), (0.1, "slow")])
    assert collector.faults == (Fault(0.2, "fail", 429, 3), Fault(0.1, "slow"))


def test_the_issue_mix_in_proportion_and_replayable(start: Callable[..., Collector]) -> None:
    first = start(faults=FAULT_MIX, seed=FAULT_SEED)
    outcomes = run(first, 300)
    again = run(start(faults=FAULT_MIX, seed=FAULT_SEED), 300)
    assert [o[0] for o in outcomes] == [o[0] for o in again]  # one sender: same sequence

    statuses = Counter(o[0] for o in outcomes)
    assert set(statuses) == {200, 503, 429, "drop"}
    # 30 % / 5 % / 5 % of 300, give or take what a fair coin does.
    assert 60 <= statuses[503] <= 120 and 5 <= statuses[429] <= 30
    assert 5 <= statuses["drop"] <= 30
    assert all(o[2] == "1" for o in outcomes if o[0] == 429)  # Retry-After on every 429
    assert all(o[2] is None for o in outcomes if o[0] in (200, 503))

    counts = first.counts()
    assert counts["fail_statuses"] == {503: statuses[503], 429: statuses[429]}
    assert counts["faults"]["fail"] == statuses[503] + statuses[429]
    assert counts["faults"]["drop"] == statuses["drop"]
    slow = counts["faults"]["delay"]
    assert 1 <= slow <= 15  # 2 % of 300
    assert sum(1 for o in outcomes if o[1] >= 0.1) >= slow  # slow answers really were late
    assert counts["accepted_events"] == counts["stored_events"] == statuses[200]
    buckets = (counts["accepted_requests"] + counts["faults"]["fail"] + counts["faults"]["drop"]
               + counts["faults"]["drop_after_store"])
    assert buckets == counts["requests"] == 300


def test_slow_answers_are_stored_and_answered_late(start: Callable[..., Collector]) -> None:
    collector = start(faults=[Fault(1.0, "slow", delay_ms=150)])
    outcomes = run(collector, 3)
    assert [o[0] for o in outcomes] == [200] * 3
    assert all(o[1] >= 0.15 for o in outcomes)
    assert collector.stored_count() == 3
    assert collector.counts()["faults"]["delay"] == 3


def test_a_mixed_drop_honours_drop_after_store(start: Callable[..., Collector]) -> None:
    collector = start(faults=[Fault(1.0, "drop")], drop_after_store=True)
    assert [o[0] for o in run(collector, 2)] == ["drop", "drop"]
    counts = collector.counts()
    assert counts["faults"]["drop_after_store"] == 2 and counts["faults"]["drop"] == 0
    assert counts["stored_then_dropped_events"] == collector.stored_count() == 2


def test_single_rate_options_win_over_the_mix(start: Callable[..., Collector]) -> None:
    collector = start(fail_rate=1.0, fail_status=500, faults=[Fault(1.0, "fail", status=429)])
    assert [o[0] for o in run(collector, 3)] == [500] * 3
    assert collector.counts()["fail_statuses"] == {500: 3}
