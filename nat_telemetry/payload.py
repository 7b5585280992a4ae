"""The wire envelope: a batch of events in the NeMo Usage Telemetry format.

Every field that could identify a person, a device or an organisation is
hard-coded to ``"undefined"`` (and every GDPR field to ``"None"``).  The only
values taken from the running process are the client version, the CPU
architecture, the session id and the events themselves.  Changing any of
that is a privacy decision, not a refactoring.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Sequence

from . import config
from .events import TelemetryEvent

__all__ = ["EVENT_PROTOCOL", "QueuedEvent", "build_payload", "format_timestamp"]

EVENT_PROTOCOL = "1.6"


@dataclasses.dataclass
class QueuedEvent:
    """An accepted event, when it was accepted, and how often sending it failed."""

    event: TelemetryEvent
    timestamp: datetime
    retry_count: int = 0


def format_timestamp(moment: Optional[datetime] = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (a naive datetime is taken as UTC)."""
    if moment is None:
        moment = datetime.now(timezone.utc)
    elif moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
            f"{moment.microsecond // 1000:03d}Z")


def build_payload(
    events: Sequence[QueuedEvent],
    *,
    source_client_version: str,
    session_id: str = "undefined",
) -> Dict[str, Any]:
    """The envelope for one POST; ``ValueError`` when ``events`` is empty."""
    if not events:
        raise ValueError("build_payload needs at least one event")
    return {
        "browserType": "undefined",
        "clientId": config.CLIENT_ID,
        "clientType": "Native",
        "clientVariant": "Release",
        "clientVer": source_client_version,
        "cpuArchitecture": config.CPU_ARCHITECTURE,
        "deviceGdprBehOptIn": "None",
        "deviceGdprFuncOptIn": "None",
        "deviceGdprTechOptIn": "None",
        "deviceId": "undefined",
        "deviceMake": "undefined",
        "deviceModel": "undefined",
        "deviceOS": "undefined",
        "deviceOSVersion": "undefined",
        "deviceType": "undefined",
        "eventProtocol": EVENT_PROTOCOL,
        "eventSchemaVer": events[0].event._schema_version,
        "eventSysVer": config.NAT_TELEMETRY_VERSION,
        "externalUserId": "undefined",
        "gdprBehOptIn": "None",
        "gdprFuncOptIn": "None",
        "gdprTechOptIn": "None",
        "idpId": "undefined",
        "integrationId": "undefined",
        "productName": "undefined",
        "productVersion": "undefined",
        "sentTs": format_timestamp(),
        "sessionId": session_id,
        "userId": "undefined",
        "events": [
            {
                "ts": format_timestamp(queued.timestamp),
                "parameters": queued.event.model_dump(by_alias=True),
                "name": queued.event._event_name,
            }
            for queued in events
        ],
    }
