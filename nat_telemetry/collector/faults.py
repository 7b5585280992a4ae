"""Fault injection: which requests the collector fails, drops or answers late.

One mechanism.  A plan is an ordered list of :class:`Fault` entries, each
claiming a share (``rate``) of all requests, plus a delay added to every
answer.  Per request, one number is drawn from the plan's seeded generator and
walked through the entries in order: the first entry whose share it falls in
is the request's fault; past the last entry (or past a total share of 1) the
request is served normally.  The collector's single-rate options are sugar:
``drop_rate`` becomes a leading ``drop`` entry, ``fail_rate`` the next
``fail`` entry, then come the entries of ``faults``; so a drop wins over a
failure, and both win over the mix.

Draws happen in the order request bodies finish arriving: with a single sender
a seed replays the same run.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["FAULT_KINDS", "MIX_KINDS", "Decision", "Fault", "FaultPlan"]

# Keys of Collector.counts()["faults"].
FAULT_KINDS = ("fail", "drop", "drop_after_store", "delay")
# What a Fault may do.
MIX_KINDS = ("fail", "drop", "slow")


class Fault(NamedTuple):
    """One entry of a fault plan: ``rate`` of the requests get this fault.

    ``kind`` is ``"fail"`` (answer ``status``, with ``Retry-After:
    retry_after`` when given; nothing is stored), ``"drop"`` (close without an
    answer once the body was read; stored first when the collector has
    ``drop_after_store``) or ``"slow"`` (store and answer normally, ``delay_ms``
    late).  Counted in ``faults['fail']`` (and ``fail_statuses[status]``),
    ``faults['drop']`` or ``faults['drop_after_store']``, and
    ``faults['delay']`` on top.
    """

    rate: float
    kind: str
    status: int = 503
    retry_after: int | None = None
    delay_ms: int = 0


class Decision(NamedTuple):
    """The fault chosen for one request: ``action`` is ``""``, ``"fail"``,
    ``"drop"`` or ``"drop_after_store"``; ``delay_ms`` is added to the answer."""

    action: str = ""
    status: int = 503
    retry_after: int | None = None
    delay_ms: int = 0


NO_FAULT = Decision()


def check(ok: bool, name: str, value: object) -> None:
    """``ValueError`` naming the option when ``ok`` is false."""
    if not ok:
        raise ValueError(f"{name} out of range: {value!r}")


def as_faults(faults: Sequence[Fault | tuple[Any, ...]]) -> tuple[Fault, ...]:
    """``faults`` as checked :class:`Fault` entries (plain tuples are accepted)."""
    mix = tuple(Fault(*fault) for fault in faults)
    for fault in mix:
        check(fault.kind in MIX_KINDS, "faults kind", fault.kind)
        check(0.0 <= fault.rate <= 1.0, "faults rate", fault.rate)
        check(400 <= fault.status <= 599, "faults status", fault.status)
        check(fault.retry_after is None or fault.retry_after >= 0, "faults retry_after",
              fault.retry_after)
        check(fault.delay_ms >= 0, "faults delay_ms", fault.delay_ms)
    total = sum(fault.rate for fault in mix)
    check(total <= 1.0 + 1e-9, "faults (sum of rates)", total)
    return mix


class FaultPlan:
    """The ordered fault entries of one collector, and the generator that picks them."""

    def __init__(self, entries: Sequence[Fault], *, delay_ms: int = 0,
                 drop_after_store: bool = False, seed: int | None = None) -> None:
        self.entries = tuple(entry for entry in entries if entry.rate > 0)
        self.delay_ms = delay_ms
        self.drop_after_store = drop_after_store
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_options(
        cls, *, fail_rate: float = 0.0, fail_status: int = 503,
        retry_after: int | None = None, delay_ms: int = 0, drop_rate: float = 0.0,
        drop_after_store: bool = False, faults: Sequence[Fault] = (),
        seed: int | None = None,
    ) -> FaultPlan:
        """The plan the collector's options describe (see the module's docstring)."""
        entries = [Fault(drop_rate, "drop"),
                   Fault(fail_rate, "fail", fail_status, retry_after), *faults]
        return cls(entries, delay_ms=delay_ms, drop_after_store=drop_after_store, seed=seed)

    def decide(self) -> Decision:
        """The fault (if any) for the next request: one draw, whatever the plan."""
        with self._lock:
            draw = self._rng.random()
        for entry in self.entries:
            if draw < entry.rate:
                return self._decision(entry)
            draw -= entry.rate
        return NO_FAULT

    def _decision(self, entry: Fault) -> Decision:
        if entry.kind == "fail":
            return Decision("fail", entry.status, entry.retry_after)
        if entry.kind == "drop":
            return Decision("drop_after_store" if self.drop_after_store else "drop")
        return Decision(delay_ms=entry.delay_ms)
