"""The exit path's JSON writer gives the bytes json.dumps gives."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from support.helpers import event

from nat_telemetry.payload import QueuedEvent, build_payload, dumps

PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(PLAIN)
def test_same_as_json_dumps_compact(value: Any) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_a_real_payload_is_the_same() -> None:
    moment = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    batch = [QueuedEvent(event(duration_ms=n), moment)
             for n in range(3)]
    payload = build_payload(batch, source_client_version="1.0", session_id="caf\u00e9 \u2028\"\\x")
    assert dumps(payload) == json.dumps(payload, separators=(",", ":"))


def test_other_values_follow_json_rules() -> None:
    value = {"a": 1.5, "b": (1, 2), "c": {1: "int key"}, "d": True.__class__(1)}
    assert dumps(value) == json.dumps(value, separators=(",", ":"))
