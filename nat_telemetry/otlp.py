"""OTLP/HTTP with JSON encoding: the same events, for an OpenTelemetry pipeline.

An endpoint ``otlp+http://host:4318`` (or ``otlp+https://...``) asks for the
events as OpenTelemetry logs instead of the NeMo envelope.  This is the pure
half of that, the request body and how many records the answer says were
rejected; :class:`~.transport.OtlpTransport` does the I/O.

The body follows the OTLP protobuf JSON mapping (lowerCamelCase field names,
64-bit integers as decimal strings) and is written by hand, so exporting needs
no OpenTelemetry package.  It carries what the NeMo envelope carries and
nothing more: the client's (or the embedding tool's) name and version, the CPU
architecture, the session id and each event's name, time and parameters.
"""

from __future__ import annotations

from . import config
from ._rules import INT64_MAX, INT64_MIN

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from typing import Any

    from .payload import QueuedEvent

__all__ = [
    "CONTENT_TYPE", "SCOPE_NAME", "SDK_NAME", "encode_logs", "encode_logs_body", "host_arch",
    "rejected_log_records",
]

CONTENT_TYPE = "application/json"
SCOPE_NAME = "nat_telemetry"
SDK_NAME = "nat-telemetry"

# OpenTelemetry's well-known host.arch values for what os.uname() reports;
# anything else is passed on as it is.
_HOST_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "aarch64": "arm64", "arm64": "arm64", "armv8l": "arm64",
    "armv7l": "arm32", "armv7": "arm32", "armv6l": "arm32", "arm": "arm32",
    "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "x86": "x86",
    "ppc": "ppc32", "ppc64": "ppc64", "ppc64le": "ppc64", "s390x": "s390x", "ia64": "ia64",
}


# ------------------------------------------------------------------ encoding

def _any_value(value: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue`` for one event parameter."""
    if isinstance(value, str):
        return {"stringValue": str(value)}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return {"intValue": str(int(value))}
        # Out of int64 a receiver would refuse the whole request: keep the
        # number, as text, and let the rest of the batch through.
        return {"stringValue": str(int(value))}
    if isinstance(value, float):
        return {"doubleValue": value}
    raise TypeError(f"cannot encode a parameter of type {type(value).__name__} as OTLP")


def _attribute(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": _any_value(value)}


def _unix_nano(moment: datetime) -> str:
    """``moment`` (naive: UTC) in nanoseconds since the epoch, as OTLP's fixed64 in
    JSON (a string), clamped to fixed64's range (0 means "unknown" to OTLP).
    Computed from the exact timedelta, not a float timestamp, so microseconds survive
    for any date."""
    from datetime import datetime, timedelta, timezone

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    micros = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return str(min(max(micros * 1_000, 0), 2**64 - 1))


def host_arch() -> str:
    """This machine's CPU architecture as an OpenTelemetry ``host.arch`` value."""
    machine = config.CPU_ARCHITECTURE
    return _HOST_ARCH.get(machine.lower(), machine)


def encode_logs(events: Sequence[QueuedEvent], *, service_name: str | None = None,
                service_version: str, session_id: str) -> dict[str, Any]:
    """One ``ExportLogsServiceRequest`` (as JSON-ready data) for a batch of events:
    one resource (``service.name`` is the client id unless given), one scope, one
    log record per event.  ``ValueError`` when ``events`` is empty."""
    if not events:
        raise ValueError("encode_logs needs at least one event")
    from . import __version__

    resource = [
        _attribute("service.name", config.CLIENT_ID if service_name is None else service_name),
        _attribute("service.version", service_version),
        _attribute("host.arch", host_arch()),
        _attribute("telemetry.sdk.name", SDK_NAME),
        _attribute("telemetry.sdk.version", __version__),
    ]
    session = _attribute("session.id", session_id)
    log_records = []
    for queued in events:
        name, when = queued.event._event_name, _unix_nano(queued.timestamp)
        attributes = [_attribute(key, value)
                      for key, value in queued.event.model_dump(by_alias=True).items()]
        attributes.append(session)
        log_records.append({
            "timeUnixNano": when,
            "observedTimeUnixNano": when,
            "body": {"stringValue": name},
            "attributes": attributes,
            "eventName": name,
        })
    return {
        "resourceLogs": [{
            "resource": {"attributes": resource},
            "scopeLogs": [{"scope": {"name": SCOPE_NAME}, "logRecords": log_records}],
        }]
    }


def encode_logs_body(events: Sequence[QueuedEvent], *, service_name: str | None = None,
                     service_version: str, session_id: str) -> bytes:
    """:func:`encode_logs` as compact JSON bytes, ready to POST."""
    from . import _process

    # A worker's first POST: imported under the fork guard, as every such import.
    json = _process.import_guarded("json")
    request = encode_logs(events, service_name=service_name,
                          service_version=service_version, session_id=session_id)
    text: str = json.dumps(request, separators=(",", ":"))
    return text.encode("utf-8")


# ------------------------------------------------------------------- answers

# Longer than any uint64/int64 in decimal: such a "number" is garbage.
_MAX_DIGITS = 20


def rejected_log_records(response_body: bytes) -> int:
    """How many log records a 2xx answer says were rejected (OTLP partial success).

    Reads ``partialSuccess.rejectedLogRecords`` (a string or a number; the proto
    field names too).  Never raises: an unreadable answer or a negative count
    gives 0.  The count is as the receiver wrote it: the caller bounds it.
    """
    try:
        import json

        answer = json.loads(response_body)
        if not isinstance(answer, dict):
            return 0
        partial = answer.get("partialSuccess", answer.get("partial_success"))
        if not isinstance(partial, dict):
            return 0
        count = partial.get("rejectedLogRecords", partial.get("rejected_log_records"))
        if isinstance(count, str):
            text = count.strip()
            readable = text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS
            return int(text) if readable else 0
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        if isinstance(count, int) and not isinstance(count, bool):
            return max(count, 0)
        return 0
    except Exception:  # the answer is the receiver's business; ours is to carry on
        return 0
