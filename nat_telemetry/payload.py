"""The wire envelope: a batch of events in the NeMo Usage Telemetry format.

Every field that could identify a person, a device or an organisation is
hard-coded to ``"undefined"`` (and every GDPR field to ``"None"``).  The only
values taken from the running process are the client version, the CPU
architecture, the session id and the events themselves.  Changing any of
that is a privacy decision, not a refactoring.
"""

from __future__ import annotations

import time

from . import config

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from typing import Any

    from .events import TelemetryEvent

__all__ = [
    "ENVELOPE_KEYS",
    "EVENT_KEYS",
    "EVENT_PROTOCOL",
    "GDPR_FIELDS",
    "IDENTITY_FIELDS",
    "TEXT_FIELDS",
    "QueuedEvent",
    "build_payload",
    "envelope",
    "format_epoch",
    "format_timestamp",
    "split_epoch",
]

EVENT_PROTOCOL = "1.6"

# Fields that could identify a person, a device or an organisation: always
# "undefined".  The GDPR fields: always "None".
IDENTITY_FIELDS = (
    "browserType", "deviceId", "deviceMake", "deviceModel", "deviceOS", "deviceOSVersion",
    "deviceType", "externalUserId", "idpId", "integrationId", "productName", "productVersion",
    "userId",
)
GDPR_FIELDS = (
    "deviceGdprBehOptIn", "deviceGdprFuncOptIn", "deviceGdprTechOptIn",
    "gdprBehOptIn", "gdprFuncOptIn", "gdprTechOptIn",
)
# The envelope's other text fields, filled from the running client.
TEXT_FIELDS = (
    "clientId", "clientType", "clientVariant", "clientVer", "cpuArchitecture",
    "eventProtocol", "eventSchemaVer", "eventSysVer", "sessionId",
)
# Every key of the envelope, in the reference order; and of each event in it.
ENVELOPE_KEYS = (
    *sorted((*IDENTITY_FIELDS, *GDPR_FIELDS, *TEXT_FIELDS, "sentTs"), key=str.lower),
    "events",
)
EVENT_KEYS = ("ts", "parameters", "name")


class _DataclassFields:
    """``__dataclass_fields__``, made on first use.

    :class:`QueuedEvent` behaves as the dataclass it is documented to be
    (``dataclasses.fields``, ``asdict`` and ``replace`` work on it) without
    importing :mod:`dataclasses`, which pulls in :mod:`inspect` and costs a
    command line more than the whole handler.
    """

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        import dataclasses

        shadow = dataclasses.make_dataclass(owner.__name__, [
            ("event", "TelemetryEvent"),
            ("timestamp", "datetime"),
            ("retry_count", "int", dataclasses.field(default=0)),
        ])
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
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, QueuedEvent)
        return ((self.event, self.timestamp, self.retry_count)
                == (other.event, other.timestamp, other.retry_count))


# The "YYYY-MM-DDTHH:MM:SS" part of the last second formatted: the events of a
# batch were mostly accepted within the same second.  One tuple, replaced
# whole, so threads never see half of an update.
_last_second: tuple[int, str] = (-1, "")


def _format(epoch_second: int, microsecond: int) -> str:
    global _last_second
    cached_second, prefix = _last_second
    if epoch_second != cached_second:
        t = time.gmtime(epoch_second)
        prefix = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                  f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
        _last_second = (epoch_second, prefix)
    return f"{prefix}.{microsecond // 1000:03d}Z"


def split_epoch(seconds: float) -> tuple[int, int]:
    """``(second, microsecond)`` of a ``time.time()`` value, as
    ``datetime.fromtimestamp(seconds, timezone.utc)`` has them: the fraction
    rounded to microseconds half to even, the second floored."""
    whole = int(seconds)
    microsecond = round((seconds - whole) * 1e6)  # the fraction's split is exact
    if microsecond >= 1_000_000:
        whole, microsecond = whole + 1, microsecond - 1_000_000
    elif microsecond < 0:
        whole, microsecond = whole - 1, microsecond + 1_000_000
    return whole, microsecond


def format_epoch(seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for a ``time.time()`` value, without :mod:`datetime`.

    The same text as :func:`format_timestamp` of
    ``datetime.fromtimestamp(seconds, timezone.utc)``.
    """
    return _format(*split_epoch(seconds))


def format_timestamp(moment: datetime | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (a naive datetime is taken as UTC; None: now)."""
    if moment is None:
        return format_epoch(time.time())
    if moment.tzinfo is None:
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    epoch_second = int(moment.timestamp() // 1)  # floor, also before 1970
    return _format(epoch_second, moment.microsecond)


def envelope(events: list[dict[str, Any]], *, schema_version: str,
             source_client_version: str, session_id: str) -> dict[str, Any]:
    """The envelope around ``events`` (their wire form: ``ts``, ``parameters``, ``name``)."""
    fields: dict[str, Any] = dict.fromkeys(IDENTITY_FIELDS, "undefined")
    fields.update(dict.fromkeys(GDPR_FIELDS, "None"))
    fields.update(
        clientId=config.CLIENT_ID,
        clientType="Native",
        clientVariant="Release",
        clientVer=source_client_version,
        cpuArchitecture=config.CPU_ARCHITECTURE,
        eventProtocol=EVENT_PROTOCOL,
        eventSchemaVer=schema_version,
        eventSysVer=config.NAT_TELEMETRY_VERSION,
        sentTs=format_timestamp(),
        sessionId=session_id,
        events=events,
    )
    # The reference order, so a body reads like the documented example.
    return {key: fields[key] for key in ENVELOPE_KEYS}


def build_payload(
    events: Sequence[QueuedEvent],
    *,
    source_client_version: str,
    session_id: str = "undefined",
) -> dict[str, Any]:
    """The envelope for one POST; ``ValueError`` when ``events`` is empty."""
    if not events:
        raise ValueError("build_payload needs at least one event")
    return envelope(
        [
            {
                "ts": format_timestamp(queued.timestamp),
                "parameters": queued.event.model_dump(by_alias=True),
                "name": queued.event._event_name,
            }
            for queued in events
        ],
        schema_version=events[0].event._schema_version,
        source_client_version=source_client_version,
        session_id=session_id,
    )


# ------------------------------------------------- envelope text field rules
#
# What each of the envelope's free-text fields may hold: short names and
# version numbers, never a path, a sentence or a user name.  The collector
# refuses envelopes that break them; a client may check its own values with
# the same function before sending.

# key -> (pattern matched in full, what it must be, in words)
ENVELOPE_TEXT_RULES: dict[str, tuple[str, str]] = {
    "clientId": (r"[A-Za-z0-9_.:-]{1,64}", "1 to 64 letters, digits, '-', '_', '.' or ':'"),
    "clientType": (r"[A-Za-z0-9_.-]{1,32}", "a name of 1 to 32 letters, digits, '-', '_' or '.'"),
    "clientVariant": (r"[A-Za-z0-9_.-]{1,32}",
                      "a name of 1 to 32 letters, digits, '-', '_' or '.'"),
    "clientVer": (r"[A-Za-z0-9][A-Za-z0-9_.+!-]{0,63}",
                  "a version such as '1.2.3', '2.0rc1' or '0.1.dev3+g1a2b' (1 to 64 characters)"),
    "cpuArchitecture": (r"[A-Za-z0-9_.-]{1,32}", "a machine name such as 'x86_64' or 'arm64'"),
    "eventProtocol": (r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}", "a version number such as '1.6'"),
    "eventSchemaVer": (r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}", "a version number such as '1.5'"),
    "eventSysVer": (r"[A-Za-z][A-Za-z0-9_.-]{0,63}/[0-9][A-Za-z0-9_.+-]{0,31}",
                    "a library and its version such as 'nat-telemetry/1.0'"),
    "sessionId": (r"[A-Za-z0-9_.:-]{1,128}",
                  "1 to 128 letters, digits, '-', '_', '.' or ':' (no spaces or paths)"),
}
_ENVELOPE_TEXT_PATTERNS: dict[str, Any] = {}


def envelope_text_problem(key: str, value: Any) -> str | None:
    """Why ``value`` may not be the envelope's ``key`` field; None when it may.

    ``KeyError`` for a key that is not one of :data:`TEXT_FIELDS`.
    """
    pattern_text, wording = ENVELOPE_TEXT_RULES[key]
    pattern = _ENVELOPE_TEXT_PATTERNS.get(key)
    if pattern is None:
        import re  # here, so this section stands alone

        pattern = _ENVELOPE_TEXT_PATTERNS[key] = re.compile(pattern_text)
    if isinstance(value, str) and pattern.fullmatch(value) is not None:
        return None
    return f"must be a string: {wording}"
