"""Helpers every kind of test uses: events, books that balance, polling, child envs.

* ``event(**overrides)``: a valid ``CliCommandEvent`` (``duration_ms`` is a
  handy unique id), and ``ids(wire_events)`` to read those ids back;
* ``assert_balanced(stats)``: every accepted event is counted exactly once,
  over ``SETTLED_KEYS``;
* ``wait_until(predicate)``: bounded polling;
* ``subprocess_env(tmp_path)``: the environment of a child Python that imports
  ``nat_telemetry`` from this tree (``REPO_ROOT``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from nat_telemetry.events import CliCommandEvent

__all__ = [
    "PROXY_VARS",
    "REPO_ROOT",
    "SETTLED_KEYS",
    "assert_balanced",
    "event",
    "ids",
    "subprocess_env",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# Counters that are part of `enqueued` (dropped_disabled/dropped_invalid are not).
SETTLED_KEYS = (
    "sent",
    "skipped",
    "pending",
    "dlq",
    "dropped_buffer_full",
    "dropped_rejected",
    "dropped_too_large",
    "dropped_retries_exhausted",
    "dropped_dlq_full",
    "dropped_shutdown",
    "dropped_bad_endpoint",
    "dropped_revoked",
    "spooled",
    "dropped_spool_full",
    "dropped_spool_expired",
    "dropped_spool_oversize",
    "dropped_spool_untrusted",
    "dropped_spool_error",
)


def event(**overrides: Any) -> CliCommandEvent:
    """A valid CliCommandEvent; ``duration_ms`` is a handy unique id."""
    fields: dict[str, Any] = {
        "command": "nat",
        "subcommand": "run",
        "task_status": "success",
        "duration_ms": 0,
        "exit_code": 0,
        "python_version": "3.11.7",
    }
    fields.update(overrides)
    return CliCommandEvent(**fields)


def ids(wire_events: list[dict[str, Any]]) -> list[int]:
    """The ``durationMs`` of every wire event, in order."""
    return [e["parameters"]["durationMs"] for e in wire_events]


def assert_balanced(stats: dict[str, int]) -> None:
    """Every accepted event is counted exactly once."""
    settled = sum(stats[key] for key in SETTLED_KEYS)
    assert stats["enqueued"] == settled, stats
    assert all(value >= 0 for value in stats.values()), stats


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it is truthy; return its value, or the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@contextlib.contextmanager
def renames() -> Iterator[list[str]]:
    """The names of the files ``os.rename`` moves (a spool claim is one) while the block runs."""
    renamed: list[str] = []
    real_rename = os.rename

    def watching(source: Any, target: Any) -> None:
        renamed.append(os.path.basename(source))
        real_rename(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rename", watching)
        yield renamed


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a child Python that imports nat_telemetry from this tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and not k.startswith("NAT_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["NAT_TELEMETRY_ENABLED"] = "1"
    env["NAT_TELEMETRY_CONSENT_FILE"] = str(tmp_path / "child-consent.toml")
    # The in-process exit path; the spool's tests turn the spool on themselves.
    env["NAT_TELEMETRY_SPOOL_DIR"] = "off"
    env.update(extra)
    return env
