"""Is this request body a telemetry envelope the collector may store?

Strict on purpose, because this is where a client that leaks something gets
caught: every key of the reference envelope is required and no other key is
accepted (the schema is ``additionalProperties: false``), every identity field
must be ``"undefined"`` and every GDPR field ``"None"``, and each event's
parameters go through its event class's ``model_validate``.  The keys, the
fields and the rules of the free-text fields (short names and versions, never
a path or a sentence) are the ones :mod:`..payload` builds envelopes from.
Every JSON integer must fit in 64 bits: a 4,000-digit number is refused before
it is even converted, and never reaches the database or a report.

A body is accepted whole or not at all: :func:`parse_envelope` either returns
one row per event or raises :class:`EnvelopeRejected` naming every problem
found (up to ten).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .._rules import INT64_MAX, INT64_MIN
from ..events import TelemetryEvent
from ..payload import (
    ENVELOPE_KEYS,
    EVENT_KEYS,
    GDPR_FIELDS,
    IDENTITY_FIELDS,
    TEXT_FIELDS,
    envelope_text_problem,
    format_timestamp,
)

__all__ = [
    "REJECT_REASONS",
    "EnvelopeRejected",
    "Row",
    "known_event_types",
    "parse_envelope",
]

# Why a request was not stored; each is a key of Collector.counts()["rejected"].
REJECT_REASONS = (
    "bad_request", "bad_json", "invalid_envelope", "invalid_event",
    "too_large", "length_required", "method_not_allowed", "timeout", "unauthorized",
)

# (received_at, session_id, client_ver, cpu_architecture, schema_version, name, ts, parameters)
Row = tuple[str, ...]

_ENVELOPE_KEY_SET = frozenset(ENVELOPE_KEYS)
# One message naming a thousand broken events helps nobody.
_MAX_PROBLEMS = 10
_MAX_MESSAGE_LENGTH = 2000

# [0-9], not \d: \d also matches other scripts' digits.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_TIMESTAMP_RULE = "a UTC timestamp like '2026-11-22T10:18:40.513Z'"


class _OutOfRange:
    """Stands for a JSON integer outside the 64-bit range (it is never converted)."""

    def __repr__(self) -> str:
        return "<an integer outside the 64-bit range>"


_OUT_OF_RANGE = _OutOfRange()


def _bounded_int(text: str) -> int | _OutOfRange:
    # At most 19 digits (and a sign) before converting: int() of a long digit
    # string costs time quadratic in its length.
    if len(text) > 20:
        return _OUT_OF_RANGE
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else _OUT_OF_RANGE


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class EnvelopeRejected(Exception):
    """A request body that will not be stored; ``reason`` is a ``counts()`` key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def known_event_types() -> dict[str, type[TelemetryEvent]]:
    """Event name -> class, for every :class:`TelemetryEvent` subclass defined so far.

    Breadth first, first definition wins: the package's own classes (direct
    subclasses, defined at import) keep their names even if a later subclass
    reuses one.
    """
    found: dict[str, type[TelemetryEvent]] = {}
    pending = list(TelemetryEvent.__subclasses__())
    while pending:
        cls = pending.pop(0)
        name = cls.__dict__.get("_event_name")
        if isinstance(name, str):
            found.setdefault(name, cls)
        pending.extend(cls.__subclasses__())
    return found


def parse_envelope(
    body: bytes,
    event_types: Mapping[str, type[TelemetryEvent]],
    received_at: str | None = None,
) -> list[Row]:
    """Validate one request body; return the rows to insert, one per event.

    Raises :class:`EnvelopeRejected` naming every problem found (up to ten):
    reason ``bad_json``, ``invalid_envelope`` or ``invalid_event``.
    """
    try:
        envelope = json.loads(body.decode("utf-8"), parse_int=_bounded_int,
                              parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise EnvelopeRejected("bad_json", f"body is not UTF-8: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise EnvelopeRejected("bad_json", f"invalid JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise EnvelopeRejected(
            "invalid_envelope", f"the envelope must be a JSON object, got {_json_type(envelope)}")

    problems = _envelope_problems(envelope)
    if problems:
        raise EnvelopeRejected("invalid_envelope", _join(problems))

    if received_at is None:
        received_at = format_timestamp()
    common = (received_at, envelope["sessionId"], envelope["clientVer"],
              envelope["cpuArchitecture"], envelope["eventSchemaVer"])
    rows: list[Row] = []
    for index, item in enumerate(envelope["events"]):
        found = _event_problems(index, item, event_types)
        if isinstance(found, list):
            problems += found
            if len(problems) >= _MAX_PROBLEMS:
                break
        elif not problems:
            rows.append(common + found)
    if problems:
        raise EnvelopeRejected("invalid_event", _join(problems))
    return rows


def _envelope_problems(envelope: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    missing = [key for key in ENVELOPE_KEYS if key not in envelope]
    if missing:
        problems.append(_named("missing envelope key", missing))
    unknown = sorted(str(key) for key in envelope if key not in _ENVELOPE_KEY_SET)
    if unknown:
        problems.append(_named("unknown envelope key", unknown))
    for key in IDENTITY_FIELDS:
        if key in envelope and envelope[key] != "undefined":
            problems.append(f"field {key!r} must be 'undefined'")
    for key in GDPR_FIELDS:
        if key in envelope and envelope[key] != "None":
            problems.append(f"field {key!r} must be 'None'")
    for key in TEXT_FIELDS:
        problem = envelope_text_problem(key, envelope[key]) if key in envelope else None
        if problem:
            problems.append(f"field {key!r} {problem}")
    if "sentTs" in envelope and not _is_timestamp(envelope["sentTs"]):
        problems.append(f"field 'sentTs' must be {_TIMESTAMP_RULE}")
    events = envelope.get("events")
    if "events" in envelope and (not isinstance(events, list) or not events):
        problems.append("field 'events' must be a non-empty array")
    return problems


def _event_problems(
    index: int, item: Any, event_types: Mapping[str, type[TelemetryEvent]]
) -> list[str] | tuple[str, str, str]:
    """The problems of one event, or its ``(name, ts, parameters JSON)``."""
    where = f"events[{index}]"
    if not isinstance(item, dict):
        return [f"{where} must be an object, got {_json_type(item)}"]
    problems: list[str] = []
    missing = [key for key in EVENT_KEYS if key not in item]
    if missing:
        problems.append(f"{where}: " + _named("missing key", missing))
    unknown = sorted(str(key) for key in item if key not in EVENT_KEYS)
    if unknown:
        problems.append(f"{where}: " + _named("unknown key", unknown))
    cls: type[TelemetryEvent] | None = None
    name = item.get("name")
    if "name" in item:
        if not isinstance(name, str):
            problems.append(f"{where}.name must be a string, got {_json_type(name)}")
        else:
            cls = event_types.get(name)
            if cls is None:
                problems.append(f"{where}: unknown event name {_short(name)}")
    ts = item.get("ts")
    if "ts" in item and not _is_timestamp(ts):
        problems.append(f"{where}.ts must be {_TIMESTAMP_RULE}")
    parameters = ""
    oversized = _oversized_parameters(item.get("parameters"))
    if oversized:
        problems.append(f"{where}.parameters: " + _named("integer outside the 64-bit range in",
                                                         oversized))
    elif cls is not None and "parameters" in item:
        try:
            event = cls.model_validate(item["parameters"])
        except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
            problems.append(f"{where}.parameters: {exc}")
        else:
            parameters = json.dumps(event.model_dump(by_alias=True), separators=(",", ":"))
    if problems:
        return problems
    assert isinstance(name, str) and isinstance(ts, str)
    return (name, ts, parameters)


def _oversized_parameters(parameters: Any) -> list[str]:
    if not isinstance(parameters, dict):
        return []
    return [str(key) for key, value in parameters.items() if value is _OUT_OF_RANGE]


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        return False
    try:
        # Not strptime: its first call imports a module, which needs a free
        # descriptor exactly when a flood of connections has taken them all.
        datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]),
                 int(value[11:13]), int(value[14:16]), int(value[17:19]))
    except ValueError:  # the right shape, but e.g. month 13
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _named(what: str, keys: list[str]) -> str:
    plural = "s" if len(keys) > 1 else ""
    return f"{what}{plural} " + ", ".join(_short(key) for key in keys)


def _join(problems: list[str]) -> str:
    text = "; ".join(problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        text += "; ..."
    if len(text) > _MAX_MESSAGE_LENGTH:
        text = text[: _MAX_MESSAGE_LENGTH - 3] + "..."
    return text
