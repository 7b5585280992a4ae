"""Anonymous, consent-gated command-line usage telemetry.

Events are validated dataclasses (:mod:`.events`), batched into the NeMo Usage
Telemetry envelope (:mod:`.payload`) and sent by one daemon worker thread per
:class:`NATTelemetryHandler`.  Nothing is collected unless the user opted in
(:mod:`.consent`); see :mod:`.config` for the environment variables.

``nat_telemetry.TELEMETRY_ENABLED`` reads the live flag in :mod:`.config`; a
copy taken with ``from nat_telemetry import TELEMETRY_ENABLED`` does not follow
later changes (the consent prompt may flip it).
"""

from __future__ import annotations

from typing import Any

from . import config
from .consent import ConsentState, maybe_prompt_for_consent
from .events import (
    CliCommandEvent,
    NemoSourceEnum,
    TaskStatusEnum,
    TelemetryEvent,
    ValidationError,
)
from .handler import NATTelemetryHandler
from .payload import QueuedEvent, build_payload
from .subcommand import resolve_subcommand
from .track import track_command

__version__ = "0.1.0"

__all__ = [
    "TELEMETRY_ENABLED",
    "CliCommandEvent",
    "ConsentState",
    "NATTelemetryHandler",
    "NemoSourceEnum",
    "QueuedEvent",
    "TaskStatusEnum",
    "TelemetryEvent",
    "ValidationError",
    "__version__",
    "build_payload",
    "maybe_prompt_for_consent",
    "resolve_subcommand",
    "track_command",
]


def __getattr__(name: str) -> Any:
    if name == "TELEMETRY_ENABLED":
        return config.TELEMETRY_ENABLED
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
