"""Fault injection through the single-rate options, over real sockets.

The fault mix (``faults=[Fault(...)]``) is exercised in tests/stress.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from support.collector import (
    fast_policy,
    flush_all,
    http,
    ids_in,
    make_envelope,
    make_event,
    outcome,
)

from nat_telemetry.collector import Collector, Fault
from nat_telemetry.handler import NATTelemetryHandler


def test_fail_rate_one_answers_503_and_stores_nothing(
    start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector(fail_rate=1.0, seed=1)
    session = http()
    answers = [session.post(collector.url, json=make_envelope(2), timeout=5) for _ in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert "Retry-After" not in answers[0].headers
    assert "injected fault" in answers[0].json()["error"]
    assert collector.stored_count() == 0
    counts = collector.counts()
    assert counts["faults"]["fail"] == 5 and counts["requests"] == 5


def test_429_with_retry_after(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(fail_rate=1.0, fail_status=429, retry_after=7)
    answer = http().post(collector.url, json=make_envelope(1), timeout=5)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


def test_drop_closes_without_an_answer(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        http().post(collector.url, json=make_envelope(2), timeout=5)
    assert collector.stored_count() == 0
    counts = collector.counts()
    assert counts["faults"]["drop"] == 1 and counts["stored_events"] == 0


def test_drop_after_store_stores_then_drops(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(drop_rate=1.0, drop_after_store=True)
    with pytest.raises(requests.ConnectionError):
        http().post(collector.url, json=make_envelope(2), timeout=5)
    assert collector.stored_count() == 2
    counts = collector.counts()
    assert counts["faults"]["drop_after_store"] == 1
    assert counts["stored_then_dropped_events"] == counts["stored_events"] == 2
    assert counts["accepted_events"] == 0


def test_delay_holds_every_answer(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(delay_ms=150)
    session = http()
    started = time.monotonic()
    assert session.post(collector.url, json=make_envelope(1), timeout=5).status_code == 200
    assert session.post(collector.url, data=b"nope", timeout=5).status_code == 400
    assert time.monotonic() - started >= 0.3
    assert collector.counts()["faults"]["delay"] == 2


def test_same_seed_replays_the_same_faults(start_collector: Callable[..., Collector]) -> None:
    def run(seed: int) -> list[Any]:
        collector = start_collector(fail_rate=0.4, drop_rate=0.2, seed=seed)
        session = http()
        return [outcome(session, collector.url, make_envelope(1)) for _ in range(40)]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert {200, 503, "drop"} <= set(first)
    assert first != other


def test_counts_reconcile_with_a_handler_under_faults(
    start_collector: Callable[..., Collector], handlers: list[NATTelemetryHandler]
) -> None:
    collector = start_collector(fail_rate=0.2, drop_rate=0.3, drop_after_store=True, seed=3)
    handler = NATTelemetryHandler(endpoint=collector.url, max_batch_size=5,
                                  retry_policy=fast_policy())
    handlers.append(handler)
    for i in range(60):
        handler.enqueue(make_event(i))
    flush_all(handler)

    stats, counts, rows = handler.stats(), collector.counts(), collector.rows()
    assert stats["sent"] == 60 and stats["retries"] > 0
    assert counts["accepted_events"] == 60
    assert counts["faults"]["fail"] > 0 and counts["faults"]["drop_after_store"] > 0
    # Every duplicate in the database is an event stored by a dropped request.
    assert len(rows) == counts["stored_events"] == 60 + counts["stored_then_dropped_events"]
    assert sorted(set(ids_in(rows))) == list(range(60))
    assert len(rows) - 60 == counts["stored_then_dropped_events"] > 0
    buckets = (counts["accepted_requests"] + sum(counts["rejected"].values())
               + sum(counts["errors"].values()) + counts["faults"]["fail"]
               + counts["faults"]["drop"] + counts["faults"]["drop_after_store"])
    assert buckets == counts["requests"]


def test_single_rate_options_are_entries_of_the_one_plan(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "x.db", drop_rate=0.5, fail_rate=0.5, fail_status=429,
                          retry_after=2, faults=[Fault(0.3, "slow", delay_ms=5)], seed=4)
    plan = collector.fault_plan
    assert plan.entries == (Fault(0.5, "drop"), Fault(0.5, "fail", 429, 2),
                            Fault(0.3, "slow", delay_ms=5))
    decisions = [plan.decide() for _ in range(400)]
    # Each rate is its share of all requests: together they leave none unfaulted,
    # and the mix behind them is never reached.
    actions = {decision.action for decision in decisions}
    assert actions == {"drop", "fail"}
    assert 150 <= sum(d.action == "drop" for d in decisions) <= 250
    assert all(d.status == 429 and d.retry_after == 2 for d in decisions if d.action == "fail")


def test_a_plan_draws_once_per_request(tmp_path: Path) -> None:
    mixed = Collector(tmp_path / "a.db", faults=[Fault(0.5, "fail")], seed=11).fault_plan
    plain = Collector(tmp_path / "b.db", fail_rate=0.5, seed=11).fault_plan
    # The same draws, whichever way the same fault was asked for.
    assert [mixed.decide() for _ in range(50)] == [plain.decide() for _ in range(50)]
