"""The wire envelope: a batch of events in the NeMo Usage Telemetry format.

Every field that could identify a person, a device or an organisation is
hard-coded to ``"undefined"`` (and every GDPR field to ``"None"``).  The only
values taken from the running process are the client version, the CPU
architecture, the session id, the events, and the name and version of a tool
that embeds this package (``productName``, ``productVersion``: ``"undefined"``
for the NeMo Agent Toolkit).  Changing any of that is a privacy decision, not a
refactoring.

:func:`dumps` writes the JSON of every body this package sends or spools.
"""

from __future__ import annotations

import time

from . import _rules, config

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from typing import Any

    from .events import TelemetryEvent


def _quote(text: str) -> str:
    """``text`` as a JSON string, as json writes it (``ensure_ascii``).  Names,
    versions and times need no escape: they are written here; anything else is
    escaped by json's own function, loaded then (a library load a command line's
    exit would otherwise pay for every batch)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    try:
        from _json import encode_basestring_ascii as escape
    except ImportError:  # pragma: no cover - an interpreter without json's accelerator
        from json.encoder import py_encode_basestring_ascii as escape
    quoted: str = escape(text)
    return quoted

__all__ = [
    "ENVELOPE_KEYS", "ENVELOPE_TEXT_RULES", "EVENT_KEYS", "EVENT_PROTOCOL", "GDPR_FIELDS",
    "IDENTITY_FIELDS", "TEXT_FIELDS", "QueuedEvent", "build_payload", "dumps",
    "envelope_text_problem", "format_timestamp",
]

EVENT_PROTOCOL = "1.6"

# Fields that could identify a person, a device or an organisation: always "undefined".
IDENTITY_FIELDS = (
    "browserType", "deviceId", "deviceMake", "deviceModel", "deviceOS", "deviceOSVersion",
    "deviceType", "externalUserId", "idpId", "integrationId", "userId",
)
GDPR_FIELDS = (
    "deviceGdprBehOptIn", "deviceGdprFuncOptIn", "deviceGdprTechOptIn",
    "gdprBehOptIn", "gdprFuncOptIn", "gdprTechOptIn",
)
# The envelope's other text fields, filled from the running client (and the tool).
TEXT_FIELDS = (
    "clientId", "clientType", "clientVariant", "clientVer", "cpuArchitecture",
    "eventProtocol", "eventSchemaVer", "eventSysVer", "productName", "productVersion",
    "sessionId",
)
# Every key of the envelope, in the reference order; and of each event in it.
ENVELOPE_KEYS = (
    *sorted((*IDENTITY_FIELDS, *GDPR_FIELDS, *TEXT_FIELDS, "sentTs"), key=str.lower),
    "events",
)
EVENT_KEYS = ("ts", "parameters", "name")


class _DataclassFields:
    """``__dataclass_fields__``, made on first use: :class:`QueuedEvent` works with
    ``dataclasses.fields``, ``asdict`` and ``replace`` without the handler importing
    :mod:`dataclasses`."""

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        import dataclasses

        shadow = dataclasses.make_dataclass(owner.__name__, [
            ("event", "TelemetryEvent"), ("timestamp", "datetime"),
            ("retry_count", "int", dataclasses.field(default=0))])
        fields: dict[str, Any] = getattr(shadow, "__dataclass_fields__")  # noqa: B009
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


class QueuedEvent:
    """An accepted event, when it was accepted, and how often sending it failed."""

    __slots__ = ("event", "retry_count", "timestamp")
    __dataclass_fields__ = _DataclassFields()
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value: as a dataclass

    def __init__(self, event: TelemetryEvent, timestamp: datetime, retry_count: int = 0) -> None:
        self.event = event
        self.timestamp = timestamp
        self.retry_count = retry_count

    def __repr__(self) -> str:
        return (f"QueuedEvent(event={self.event!r}, timestamp={self.timestamp!r}, "
                f"retry_count={self.retry_count!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueuedEvent) or other.__class__ is not self.__class__:
            return NotImplemented
        return ((self.event, self.timestamp, self.retry_count)
                == (other.event, other.timestamp, other.retry_count))


# The "YYYY-MM-DDTHH:MM:SS" of the last second formatted: a batch's events were
# mostly accepted within one second.  One tuple, replaced whole, for threads.
_last_second: tuple[int, str] = (-1, "")


def format_timestamp(moment: datetime | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (a naive datetime is taken as UTC; None: now)."""
    global _last_second
    if moment is None:
        now = time.time()
        second, millisecond = int(now // 1), int(now % 1 * 1000)
    else:
        if moment.tzinfo is None:
            from datetime import timezone

            moment = moment.replace(tzinfo=timezone.utc)
        second, millisecond = int(moment.timestamp() // 1), moment.microsecond // 1000
    cached_second, prefix = _last_second
    if second != cached_second:
        t = time.gmtime(second)
        prefix = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                  f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
        _last_second = (second, prefix)
    return f"{prefix}.{millisecond:03d}Z"


def build_payload(events: Sequence[QueuedEvent], *, source_client_version: str,
                  session_id: str = "undefined", product_name: str = "undefined",
                  product_version: str = "undefined") -> dict[str, Any]:
    """The envelope for one POST; ``ValueError`` when ``events`` is empty.

    ``product_name`` and ``product_version`` name the tool that embeds this
    package; they stay ``"undefined"`` for the NeMo Agent Toolkit.
    """
    if not events:
        raise ValueError("build_payload needs at least one event")
    fields: dict[str, Any] = dict.fromkeys(IDENTITY_FIELDS, "undefined")
    fields.update(dict.fromkeys(GDPR_FIELDS, "None"))
    fields.update(
        clientId=config.CLIENT_ID,
        clientType="Native",
        clientVariant="Release",
        clientVer=source_client_version,
        cpuArchitecture=config.CPU_ARCHITECTURE,
        eventProtocol=EVENT_PROTOCOL,
        eventSchemaVer=events[0].event._schema_version,
        eventSysVer=config.NAT_TELEMETRY_VERSION,
        productName=product_name,
        productVersion=product_version,
        sentTs=format_timestamp(),
        sessionId=session_id,
        events=[{"ts": format_timestamp(queued.timestamp),
                 "parameters": queued.event.model_dump(by_alias=True),
                 "name": queued.event._event_name} for queued in events],
    )
    # The reference order, so a body reads like the documented example.
    return {key: fields[key] for key in ENVELOPE_KEYS}


# ------------------------------------------------------------------ JSON

def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, the same string.

    Writing a batch is on a command line's exit path, where ``import json`` costs
    more than the writing: plain values are written here, quoted by json's own C
    function, and anything else is handed to :mod:`json`.
    """
    if isinstance(value, str):
        return _quote(value)
    if value is True or value is False or value is None:
        return "true" if value else "false" if value is False else "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and value - value == 0:  # finite: as json writes it
        return float.__repr__(value)
    if type(value) is dict and all(type(key) is str for key in value):
        return "{" + ",".join(_quote(key) + ":" + dumps(item)
                              for key, item in value.items()) + "}"
    if type(value) in (list, tuple):
        return "[" + ",".join(map(dumps, value)) + "]"
    import json  # other floats, str/int subclasses, other keys: json's own rules

    return json.dumps(value, separators=(",", ":"))


# ------------------------------------------------- envelope text field rules
# What each free-text field of the envelope may hold: short names and version
# numbers, never a path, a sentence or a user name.  The collector refuses
# envelopes that break them.

_NAME = "[A-Za-z0-9_.-]{1,32}"
_NAME_WORDS = "a name of 1 to 32 letters, digits, '-', '_' or '.'"
_VERSION = r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}"

# key -> (pattern matched in full, what it must be, in words)
ENVELOPE_TEXT_RULES: dict[str, tuple[str, str]] = {
    "clientId": (_rules.TOKEN, "1 to 64 letters, digits, '-', '_', '.' or ':'"),
    "clientType": (_NAME, _NAME_WORDS),
    "clientVariant": (_NAME, _NAME_WORDS),
    "productName": (_rules.TOOL_NAME,
                    "a tool's name: 1 to 64 lowercase letters, digits, '-' or '_'"),
    "productVersion": (_rules.VERSION, "a version such as '2.4.1' (1 to 64 characters)"),
    "clientVer": (_rules.VERSION,
                  "a version such as '1.2.3', '2.0rc1' or '0.1.dev3+g1a2b' (1 to 64 characters)"),
    "cpuArchitecture": (_NAME, "a machine name such as 'x86_64' or 'arm64'"),
    "eventProtocol": (_VERSION, "a version number such as '1.6'"),
    "eventSchemaVer": (_VERSION, "a version number such as '1.5'"),
    "eventSysVer": (r"[A-Za-z][A-Za-z0-9_.-]{0,63}/[0-9][A-Za-z0-9_.+-]{0,31}",
                    "a library and its version such as 'nat-telemetry/1.0'"),
    "sessionId": (_rules.SESSION_ID,
                  "1 to 128 letters, digits, '-', '_', '.' or ':' (no spaces or paths)"),
}


def envelope_text_problem(key: str, value: Any) -> str | None:
    """Why ``value`` may not be the envelope's ``key`` field; None when it may.
    ``KeyError`` for a key that is not one of :data:`TEXT_FIELDS`."""
    import re  # compiled patterns are cached by re itself

    pattern, wording = ENVELOPE_TEXT_RULES[key]
    if isinstance(value, str) and re.fullmatch(pattern, value) is not None:
        return None
    return f"must be a string: {wording}"
