"""A decorated generator function is timed across its whole iteration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from nat_telemetry import NATTelemetryHandler, track_command
from nat_telemetry.transport import Delivery, Outcome, Transport

MakeHandler = Callable[..., NATTelemetryHandler]


class Recorder(Transport):
    """A caller's own transport: keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def encode(self, batch: Any, **_: Any) -> bytes:
        self.events += [queued.event for queued in batch]
        return b"{}"

    def send(self, body: bytes, timeout: float) -> Delivery:
        return Delivery(Outcome.SENT)


def recorded(handler: NATTelemetryHandler) -> list[Any]:
    assert handler.flush(timeout=5)
    assert isinstance(handler.transport, Recorder)
    events, handler.transport.events = handler.transport.events, []
    return events


def test_generator_is_timed_across_its_iteration(make_handler: MakeHandler) -> None:
    handler = make_handler(flush_interval_seconds=3600, transport=Recorder())

    @track_command("stream", handler=handler)
    def numbers() -> Iterator[int]:
        for n in range(3):
            time.sleep(0.02)
            yield n

    iterator = numbers()
    assert recorded(handler) == []  # calling it records nothing yet
    assert list(iterator) == [0, 1, 2]
    [event] = recorded(handler)
    assert event.task_status == "success" and event.exit_code == 0
    assert event.duration_ms >= 50  # the iteration, not the call that made the generator


def test_generator_failure_is_recorded_and_raised(make_handler: MakeHandler) -> None:
    handler = make_handler(flush_interval_seconds=3600, transport=Recorder())

    @track_command("stream", handler=handler)
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("secret detail")

    with pytest.raises(ValueError, match="secret detail"):
        list(broken())
    [event] = recorded(handler)
    assert (event.task_status, event.exit_code, event.error_class) == ("failure", 1, "ValueError")


def test_generator_closed_early_counts_as_success(make_handler: MakeHandler) -> None:
    handler = make_handler(flush_interval_seconds=3600, transport=Recorder())

    @track_command("stream", handler=handler)
    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    iterator = endless()
    assert next(iterator) == 0
    iterator.close()
    [event] = recorded(handler)
    assert event.task_status == "success"


def test_generator_return_value_is_kept(make_handler: MakeHandler) -> None:
    handler = make_handler(flush_interval_seconds=3600, transport=Recorder())

    @track_command("stream", handler=handler)
    def with_result() -> Iterator[int]:
        yield 1
        return 42

    iterator = with_result()
    next(iterator)
    with pytest.raises(StopIteration) as stop:
        next(iterator)
    assert stop.value.value == 42
