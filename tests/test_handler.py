"""Tests for NATTelemetryHandler at unit level: HTTP answers mocked with ``responses``.

Anything about real sockets, timeouts and many threads lives in
test_handler_loopback.py; interpreter exit and fork in test_exit_and_fork.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any, Callable, ClassVar

import pytest
import requests
from support.endpoints import FakeEndpoint, Reply
from support.helpers import REPO_ROOT, assert_balanced, event, ids, wait_until

from nat_telemetry import config
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.retry import RetryPolicy

MakeHandler = Callable[..., NATTelemetryHandler]

STATS_KEYS = {
    "enqueued", "sent", "skipped", "retries", "pending", "dlq",
    "dropped_disabled", "dropped_invalid", "dropped_buffer_full", "dropped_rejected",
    "dropped_too_large", "dropped_retries_exhausted", "dropped_dlq_full", "dropped_shutdown",
    "dropped_bad_endpoint", "dropped_revoked", "spooled", "dropped_spool_full",
    "dropped_spool_expired", "dropped_spool_oversize", "dropped_spool_untrusted",
    "dropped_spool_error",
}


def _highest(lo: float, hi: float) -> float:
    return hi


def slow_policy(max_retries: int = 3, seconds: float = 5.0) -> RetryPolicy:
    """Backoff of exactly ``seconds``: the worker leaves the DLQ alone; flush() does not."""
    return RetryPolicy(max_retries, backoff_base=seconds, backoff_max=seconds, rng=_highest)


def worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "nat-telemetry-worker" and t.is_alive()}


def only(h: NATTelemetryHandler, **expected: int) -> None:
    """Stats equal ``expected`` for the given keys and zero for every other counter."""
    stats = h.stats()
    assert_balanced(stats)
    wanted = dict.fromkeys(STATS_KEYS, 0)
    wanted.update(expected)
    assert stats == wanted


# ------------------------------------------------------------------ answers


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_sent(make_handler: MakeHandler, fake_endpoint: FakeEndpoint, status: int) -> None:
    fake_endpoint.set_default(status)
    h = make_handler(endpoint=fake_endpoint.url)
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=3, sent=3)
    assert fake_endpoint.requests == 1
    assert ids(fake_endpoint.events) == [0, 1, 2]
    envelope = fake_endpoint.envelopes[0]
    assert envelope["events"][0]["name"] == "nat_cli_command"
    assert envelope["events"][0]["parameters"]["command"] == "nat"


@pytest.mark.parametrize("status", [400, 401, 404, 422, 301, 302])
def test_4xx_and_3xx_are_rejected_without_retry(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, status: int
) -> None:
    fake_endpoint.set_default(status)
    h = make_handler(endpoint=fake_endpoint.url)
    h.enqueue(event(duration_ms=1))
    h.enqueue(event(duration_ms=2))
    assert h.flush() is True  # nothing left to send
    assert h.flush() is True
    time.sleep(0.1)  # a (wrong) backoff retry would use this time
    assert fake_endpoint.requests == 1
    only(h, enqueued=2, dropped_rejected=2)


def test_redirect_is_not_followed(make_handler: MakeHandler, fake_endpoint: FakeEndpoint) -> None:
    fake_endpoint.set_default(Reply(307, {"Location": "http://elsewhere.test/steal"}))
    h = make_handler(endpoint=fake_endpoint.url)
    h.enqueue(event())
    h.flush()
    assert fake_endpoint.requests == 1  # responses would refuse elsewhere.test anyway
    only(h, enqueued=1, dropped_rejected=1)


def test_413_splits_until_batches_fit(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.responder = lambda envelope: 413 if len(envelope["events"]) > 2 else 200
    h = make_handler(endpoint=fake_endpoint.url)
    for i in range(7):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=7, sent=7)
    # Every event accepted exactly once, in order, never in a batch over the limit.
    assert ids(fake_endpoint.events) == list(range(7))
    ok_sizes = [len(r.envelope["events"]) for r in fake_endpoint.records if r.reply.ok]
    assert max(ok_sizes) <= 2
    # 7 -> (3 -> 1 + 2) + (4 -> 2 + 2): seven POSTs.
    assert fake_endpoint.requests == 7


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_413_for_every_size_drops_each_event_as_too_large(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, count: int
) -> None:
    fake_endpoint.set_default(413)
    h = make_handler(endpoint=fake_endpoint.url)
    for i in range(count):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=count, dropped_too_large=count)
    # Halving to single events is a full binary tree with `count` leaves.
    assert fake_endpoint.requests == 2 * count - 1
    # Each event was tried on its own exactly once before being given up.
    singles = [env["events"][0] for env in fake_endpoint.envelopes if len(env["events"]) == 1]
    assert sorted(ids(singles)) == list(range(count))


def test_413_then_transient_keeps_the_untried_half(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    # 4 events: 413, then the first half 200, the second half 503.
    fake_endpoint.script(413, 200, 503)
    h = make_handler(endpoint=fake_endpoint.url, retry_policy=slow_policy())
    for i in range(4):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is False
    only(h, enqueued=4, sent=2, dlq=2, retries=2)
    assert h.flush() is True
    only(h, enqueued=4, sent=4, retries=2)
    assert ids(fake_endpoint.events) == [0, 1, 2, 3]


TRANSIENT = [
    408, 429, 500, 502, 503, 504,
    requests.ConnectionError("connection refused"),
    requests.ReadTimeout("read timed out"),
]


@pytest.mark.parametrize("failure", TRANSIENT, ids=lambda f: str(f) if isinstance(f, int)
                         else type(f).__name__)
def test_transient_failure_goes_to_dlq_and_is_sent_after_recovery(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, failure: Any
) -> None:
    fake_endpoint.script(failure)
    h = make_handler(endpoint=fake_endpoint.url, retry_policy=slow_policy())
    h.enqueue(event(duration_ms=1))
    h.enqueue(event(duration_ms=2))
    assert h.flush() is False
    only(h, enqueued=2, dlq=2, retries=2)
    assert h.flush() is True
    only(h, enqueued=2, sent=2, retries=2)
    assert fake_endpoint.requests == 2
    assert ids(fake_endpoint.all_events) == [1, 2, 1, 2]
    assert ids(fake_endpoint.events) == [1, 2]


def test_dlq_is_retried_by_the_worker_without_flush(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.script(503, 500)
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=1)
    h.enqueue(event(duration_ms=7))
    assert wait_until(lambda: h.stats()["sent"] == 1)
    only(h, enqueued=1, sent=1, retries=2)
    assert fake_endpoint.requests == 3


def test_dlq_retry_does_not_wait_for_the_timed_flush_when_backoff_is_already_over(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    # A zero backoff has expired by the time the worker decides how long to
    # sleep; the DLQ must still be retried now, not at the next timed flush (60 s).
    fake_endpoint.script(503)
    policy = RetryPolicy(3, backoff_base=0.01, backoff_max=0.01, rng=lambda lo, hi: 0.0)
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=1, retry_policy=policy)
    h.start()
    time.sleep(0.05)  # let the worker reach its idle wait
    h.enqueue(event(duration_ms=7))
    assert wait_until(lambda: h.stats()["sent"] == 1, timeout=3.0)
    only(h, enqueued=1, sent=1, retries=1)


@pytest.mark.parametrize("max_retries", [3, 0], ids=["dlq-waiting", "dlq-empty"])
def test_worker_sleeps_while_backing_off_past_a_timed_flush(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, max_retries: int
) -> None:
    # The timed flush (every 0.1 s) falls due inside a 5 s Retry-After: the
    # worker must sleep until the backoff deadline, not spin on the CPU.
    fake_endpoint.script(Reply(503, {"Retry-After": "5"}))
    h = make_handler(endpoint=fake_endpoint.url, flush_interval_seconds=0.1, max_queue_size=1,
                     max_retries=max_retries)
    h.enqueue(event())
    assert wait_until(lambda: h.stats()["dlq"] + h.stats()["dropped_retries_exhausted"] == 1)
    time.sleep(0.15)  # the timed flush is now overdue
    cpu_before = time.process_time()
    time.sleep(0.5)
    cpu_used = time.process_time() - cpu_before
    assert cpu_used < 0.1, f"worker burnt {cpu_used:.2f}s of CPU in 0.5s of backoff"
    assert fake_endpoint.requests == 1


def test_dlq_is_drained_before_newer_events(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.script(503)
    h = make_handler(endpoint=fake_endpoint.url, max_batch_size=4, retry_policy=slow_policy())
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is False
    only(h, enqueued=3, dlq=3, retries=3)
    time.sleep(0.005)  # newer events get a later millisecond timestamp
    for i in range(10, 13):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=6, sent=6, retries=3)
    after_recovery = [r.envelope["events"] for r in fake_endpoint.records[1:]]
    assert [ids(batch) for batch in after_recovery] == [[0, 1, 2, 10], [11, 12]]
    stamps = [e["ts"] for batch in after_recovery for e in batch]
    assert stamps == sorted(stamps)
    assert stamps[2] < stamps[3]  # the old events really are older


def test_retries_exhausted_after_exactly_max_retries_plus_one_attempts(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.set_default(503)
    h = make_handler(endpoint=fake_endpoint.url, max_retries=2, max_queue_size=3)
    assert h.max_retries == 2
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    assert wait_until(lambda: h.stats()["dropped_retries_exhausted"] == 3)
    time.sleep(0.2)  # room for a (wrong) fourth attempt
    assert fake_endpoint.requests == 3
    assert [ids(env["events"]) for env in fake_endpoint.envelopes] == [[0, 1, 2]] * 3
    only(h, enqueued=3, dropped_retries_exhausted=3, retries=6)
    assert h.flush() is True


def test_max_retries_zero_gives_up_after_one_attempt(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.set_default(500)
    h = make_handler(endpoint=fake_endpoint.url, max_retries=0)
    h.enqueue(event())
    assert h.flush() is True
    assert fake_endpoint.requests == 1
    only(h, enqueued=1, dropped_retries_exhausted=1)


def test_full_dlq_drops_the_oldest(make_handler: MakeHandler, fake_endpoint: FakeEndpoint) -> None:
    fake_endpoint.script(503)
    h = make_handler(endpoint=fake_endpoint.url, max_dlq_size=2, retry_policy=slow_policy())
    for i in range(4):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is False
    only(h, enqueued=4, dlq=2, dropped_dlq_full=2, retries=4)
    assert h.flush() is True
    assert ids(fake_endpoint.events) == [2, 3]
    only(h, enqueued=4, sent=2, dropped_dlq_full=2, retries=4)


def test_max_batch_size_is_respected(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    h = make_handler(endpoint=fake_endpoint.url, max_batch_size=3)
    for i in range(7):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    assert fake_endpoint.batch_sizes() == [3, 3, 1]
    assert ids(fake_endpoint.events) == list(range(7))
    only(h, enqueued=7, sent=7)


def test_max_batch_size_is_respected_by_early_flushes(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=5, max_batch_size=2)
    for i in range(23):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    assert max(fake_endpoint.batch_sizes()) <= 2
    assert sorted(ids(fake_endpoint.events)) == list(range(23))
    only(h, enqueued=23, sent=23)


def test_retry_after_holds_back_every_post(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.script(Reply(429, {"Retry-After": "1"}))
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=1)  # backoff alone: 10-50 ms
    h.enqueue(event(duration_ms=0))
    assert wait_until(lambda: fake_endpoint.requests >= 1)
    for i in range(1, 4):  # each reaches max_queue_size and wakes the worker
        h.enqueue(event(duration_ms=i))
        time.sleep(0.05)
    assert wait_until(lambda: h.stats()["sent"] == 4, timeout=5.0)
    times = fake_endpoint.times()
    assert times[1] - times[0] >= 1.0
    assert ids(fake_endpoint.envelopes[1]["events"])[0] == 0  # the DLQ went first
    only(h, enqueued=4, sent=4, retries=1)


def test_backoff_blocks_early_flush_until_its_deadline(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.script(503)
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=2,
                     retry_policy=slow_policy(seconds=0.5))
    h.enqueue(event(duration_ms=0))
    h.enqueue(event(duration_ms=1))
    assert wait_until(lambda: h.stats()["dlq"] == 2)
    h.enqueue(event(duration_ms=2))
    h.enqueue(event(duration_ms=3))  # max_queue_size reached while backing off
    assert wait_until(lambda: h.stats()["sent"] == 4)
    times = fake_endpoint.times()
    assert len(times) == 2
    assert times[1] - times[0] >= 0.5
    assert ids(fake_endpoint.envelopes[1]["events"]) == [0, 1, 2, 3]
    only(h, enqueued=4, sent=4, retries=2)


def test_flush_ignores_backoff(make_handler: MakeHandler, fake_endpoint: FakeEndpoint) -> None:
    fake_endpoint.script(503)
    h = make_handler(endpoint=fake_endpoint.url, retry_policy=slow_policy(seconds=30.0))
    h.enqueue(event())
    assert h.flush() is False
    started = time.monotonic()
    assert h.flush() is True
    assert time.monotonic() - started < 5.0
    only(h, enqueued=1, sent=1, retries=1)


def test_flush_is_false_while_the_endpoint_keeps_failing(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    fake_endpoint.set_default(500)
    h = make_handler(endpoint=fake_endpoint.url, retry_policy=slow_policy(max_retries=10))
    h.enqueue(event())
    assert h.flush() is False
    assert h.flush() is False
    assert fake_endpoint.requests == 2
    only(h, enqueued=1, dlq=1, retries=2)
    h.stop()  # the final flush tries once more, then gives up what is left
    assert fake_endpoint.requests == 3
    # Nothing retries after the final flush: its failure is not counted a retry.
    only(h, enqueued=1, dropped_shutdown=1, retries=2)


def test_flush_with_nothing_to_do(make_handler: MakeHandler, fake_endpoint: FakeEndpoint) -> None:
    h = make_handler(endpoint=fake_endpoint.url)
    assert h.flush() is True  # never started
    h.start()
    assert h.flush(timeout=2) is True
    assert fake_endpoint.requests == 0


def test_a_broken_event_is_dropped_and_the_worker_survives(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    class BrokenEvent(CliCommandEvent):
        _event_name: ClassVar[str] = "broken_event"

        def model_dump(self, by_alias: bool = False) -> dict[str, Any]:
            raise RuntimeError("cannot serialise")

    h = make_handler(endpoint=fake_endpoint.url)
    h.enqueue(BrokenEvent(command="x", task_status="success", python_version="3.11.7"))
    assert h.flush() is True
    h.enqueue(event(duration_ms=5))
    assert h.flush() is True
    assert ids(fake_endpoint.events) == [5]
    only(h, enqueued=2, sent=1, dropped_rejected=1)


# ------------------------------------------------------------ sinks, gates


def test_empty_endpoint_skips_without_http(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    h = make_handler(endpoint="")
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=3, skipped=3)
    assert fake_endpoint.requests == 0


def test_default_endpoint_is_empty_and_skips(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    h = make_handler()
    h.enqueue(event())
    assert h.flush() is True
    only(h, enqueued=1, skipped=1)
    assert fake_endpoint.requests == 0


def test_dry_run_skips_without_http(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", True)
    h = make_handler(endpoint=fake_endpoint.url)
    h.enqueue(event())
    h.enqueue(event())
    assert h.flush() is True
    only(h, enqueued=2, skipped=2)
    assert fake_endpoint.requests == 0


def test_stdout_endpoint_writes_one_json_line_per_batch_to_stderr(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, capfd: pytest.CaptureFixture[str]
) -> None:
    h = make_handler(endpoint="stdout", max_batch_size=2, session_id="sess-1")
    for i in range(3):
        h.enqueue(event(duration_ms=i))
    assert h.flush() is True
    only(h, enqueued=3, sent=3)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    envelopes = [json.loads(line) for line in lines]
    assert [ids(env["events"]) for env in envelopes] == [[0, 1], [2]]
    assert all(env["sessionId"] == "sess-1" and env["clientId"] == config.CLIENT_ID
               for env in envelopes)
    assert fake_endpoint.requests == 0


def test_endpoint_none_reads_config_at_send_time(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_handler()  # constructed while config says "" (send nothing)
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", fake_endpoint.url)
    h.enqueue(event(duration_ms=1))
    assert h.flush() is True
    assert ids(fake_endpoint.events) == [1]
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", "")
    h.enqueue(event(duration_ms=2))
    assert h.flush() is True
    assert fake_endpoint.requests == 1
    only(h, enqueued=2, sent=1, skipped=1)


def test_disabled_flag_is_read_live(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_handler(endpoint=fake_endpoint.url)
    h.enqueue(event(duration_ms=1))
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", False)
    h.enqueue(event(duration_ms=2))
    h.enqueue(event(duration_ms=3))
    stats = h.stats()
    assert (stats["enqueued"], stats["dropped_disabled"]) == (1, 2)
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", True)
    h.enqueue(event(duration_ms=4))
    assert h.flush() is True
    assert ids(fake_endpoint.events) == [1, 4]
    only(h, enqueued=2, sent=2, dropped_disabled=2)


def test_disabled_handler_starts_no_worker(
    make_handler: MakeHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "TELEMETRY_ENABLED", False)
    before = worker_threads()
    h = make_handler()
    h.enqueue(event())
    assert worker_threads() <= before  # nothing new alive
    only(h, dropped_disabled=1)


@pytest.mark.parametrize("bad", ["x", None, 42, {"command": "nat"}, CliCommandEvent])
def test_invalid_events_are_dropped_without_raising(make_handler: MakeHandler, bad: Any) -> None:
    before = worker_threads()
    h = make_handler()
    h.enqueue(bad)
    h.enqueue(bad)
    only(h, dropped_invalid=2)
    assert worker_threads() <= before  # nothing new alive


def test_enqueue_after_stop_counts_as_dropped_shutdown(make_handler: MakeHandler) -> None:
    never_started = make_handler()
    never_started.stop()
    never_started.enqueue(event())
    only(never_started, enqueued=1, dropped_shutdown=1)

    used = make_handler()
    used.enqueue(event())
    used.stop()
    used.enqueue(event())
    used.enqueue(event())
    only(used, enqueued=3, skipped=1, dropped_shutdown=2)


def test_full_buffer_drops(make_handler: MakeHandler) -> None:
    h = make_handler(max_buffer_size=3)
    for i in range(5):
        h.enqueue(event(duration_ms=i))
    only(h, enqueued=5, pending=3, dropped_buffer_full=2)
    assert h.flush() is True
    only(h, enqueued=5, skipped=3, dropped_buffer_full=2)
    h.enqueue(event())  # room again
    only(h, enqueued=6, pending=1, skipped=3, dropped_buffer_full=2)


def test_first_enqueue_starts_the_worker_lazily(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    before = worker_threads()
    h = make_handler(endpoint=fake_endpoint.url, max_queue_size=1)
    assert worker_threads() <= before  # nothing new alive
    h.enqueue(event(duration_ms=9))
    started = worker_threads() - before
    assert len(started) == 1
    assert next(iter(started)).daemon
    # No start(), no flush(): the threshold alone gets it sent.
    assert wait_until(lambda: h.stats()["sent"] == 1)
    assert ids(fake_endpoint.events) == [9]


def test_stop_is_idempotent(make_handler: MakeHandler) -> None:
    before = worker_threads()
    h = make_handler()
    h.enqueue(event())
    h.stop()
    first = h.stats()
    h.stop()
    h.stop(timeout=0)
    assert h.stats() == first
    only(h, enqueued=1, skipped=1)
    assert worker_threads() <= before  # nothing new alive


def test_stop_of_a_never_started_handler(make_handler: MakeHandler) -> None:
    h = make_handler()
    h.stop()
    h.stop()
    only(h)
    assert h.flush() is True


def test_context_manager_starts_and_stops(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    before = worker_threads()
    with make_handler(endpoint=fake_endpoint.url) as h:
        assert len(worker_threads() - before) == 1  # started by __enter__
        h.enqueue(event(duration_ms=1))
        h.enqueue(event(duration_ms=2))
    assert worker_threads() <= before  # nothing new alive
    assert ids(fake_endpoint.events) == [1, 2]  # the final flush of stop()
    only(h, enqueued=2, sent=2)


def test_start_after_stop_starts_again(make_handler: MakeHandler,
                                       fake_endpoint: FakeEndpoint) -> None:
    h = make_handler(endpoint=fake_endpoint.url)
    with h:
        h.enqueue(event(duration_ms=1))
    h.enqueue(event(duration_ms=2))  # stopped, not started again: dropped
    with h:  # a second block starts a new worker and delivers
        h.enqueue(event(duration_ms=3))
    assert ids(fake_endpoint.events) == [1, 3]
    only(h, enqueued=3, sent=2, dropped_shutdown=1)
    h.start()
    h.enqueue(event(duration_ms=4))
    assert h.flush(timeout=5)
    assert ids(fake_endpoint.events) == [1, 3, 4]


def test_start_is_idempotent(make_handler: MakeHandler) -> None:
    before = worker_threads()
    h = make_handler()
    h.start()
    h.start()
    assert len(worker_threads() - before) == 1


@pytest.mark.parametrize(("prefix", "session", "expected"), [
    ("ci-", "abc", "ci-abc"),
    (None, "abc", "abc"),
    ("ci-", "undefined", "ci-undefined"),
])
def test_session_prefix_from_config(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch,
    prefix: str | None, session: str, expected: str,
) -> None:
    monkeypatch.setattr(config, "SESSION_PREFIX", prefix)
    h = make_handler(endpoint=fake_endpoint.url, session_id=session)
    assert h.session_id == expected
    h.enqueue(event())
    assert h.flush() is True
    assert fake_endpoint.envelopes[0]["sessionId"] == expected


def test_source_client_version_goes_on_the_wire(
    make_handler: MakeHandler, fake_endpoint: FakeEndpoint
) -> None:
    h = make_handler(endpoint=fake_endpoint.url, source_client_version="9.8.7")
    h.enqueue(event())
    assert h.flush() is True
    assert fake_endpoint.envelopes[0]["clientVer"] == "9.8.7"


def test_stats_has_exactly_the_documented_keys(make_handler: MakeHandler) -> None:
    h = make_handler()
    assert set(h.stats()) == STATS_KEYS
    assert all(isinstance(v, int) for v in h.stats().values())


# -------------------------------------------------------------------- async


def test_async_shims_and_async_with(make_handler: MakeHandler, fake_endpoint: FakeEndpoint) -> None:
    h = make_handler(endpoint=fake_endpoint.url)

    async def main() -> bool:
        async with h:
            h.enqueue(event(duration_ms=1))
            flushed = await h.aflush(timeout=5)
            h.enqueue(event(duration_ms=2))
        return flushed

    assert asyncio.run(main()) is True
    assert ids(fake_endpoint.events) == [1, 2]
    only(h, enqueued=2, sent=2)

    other = make_handler(endpoint=fake_endpoint.url)

    async def explicit() -> None:
        await other.astart()
        other.enqueue(event(duration_ms=3))
        assert await other.aflush() is True
        await other.astop()
        await other.astop()

    asyncio.run(explicit())
    only(other, enqueued=1, sent=1)


def test_astop_does_not_block_the_event_loop(make_handler: MakeHandler, black_hole: Any) -> None:
    h = make_handler(endpoint=black_hole.url, request_timeout_seconds=0.3)
    h.enqueue(event())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> float:
        task = asyncio.ensure_future(ticker())
        started = time.monotonic()
        await h.astop(timeout=0.5)
        elapsed = time.monotonic() - started
        task.cancel()
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed >= 0.25  # the final flush really waited on the black hole
    assert elapsed < 0.5 + 1.0
    assert ticks >= 5
    assert_balanced(h.stats())


# -------------------------------------------------------------- construction


@pytest.mark.parametrize("kwargs", [
    {"flush_interval_seconds": 0},
    {"flush_interval_seconds": -1},
    {"max_queue_size": 0},
    {"max_retries": -1},
    {"request_timeout_seconds": 0},
    {"shutdown_timeout_seconds": -0.1},
    {"max_buffer_size": 0},
    {"max_dlq_size": -1},
    {"max_batch_size": 0},
])
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NATTelemetryHandler(**kwargs)


def test_constructor_defaults() -> None:
    h = NATTelemetryHandler()
    assert (h.flush_interval_seconds, h.max_queue_size, h.max_retries,
            h.request_timeout_seconds, h.shutdown_timeout_seconds, h.max_buffer_size,
            h.max_dlq_size, h.max_batch_size, h.endpoint, h.session_id) == (
        120.0, 50, 3, 2.0, 2.0, 10_000, 1_000, 500, None, "undefined")
    assert isinstance(h.source_client_version, str) and h.source_client_version
    h.stop()


def test_import_does_not_import_requests() -> None:
    code = ("import sys, nat_telemetry\n"
            "h = nat_telemetry.NATTelemetryHandler(endpoint='')\n"
            "print('requests' in sys.modules, 'asyncio' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
