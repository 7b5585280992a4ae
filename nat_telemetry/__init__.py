"""Anonymous, consent-gated command-line usage telemetry.

Events are validated dataclasses (:mod:`.events`), batched into the NeMo Usage
Telemetry envelope (:mod:`.payload`) and sent by one daemon worker thread per
:class:`NATTelemetryHandler`.  Nothing is collected unless the user opted in
(:mod:`.consent`); see :mod:`.config` for the environment variables.

The public names below are loaded on first use, so ``import nat_telemetry``
in a program that never records anything costs next to nothing.

``nat_telemetry.TELEMETRY_ENABLED`` reads the live flag in :mod:`.config`; a
copy taken with ``from nat_telemetry import TELEMETRY_ENABLED`` does not follow
later changes (the consent prompt may flip it).
"""

from __future__ import annotations

import sys

from . import config

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from .consent import (
        ConsentState,
        maybe_prompt_for_consent,
        read_persisted_consent,
        write_persisted_consent,
    )
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
    from .track import ToolTelemetry, track_command
else:
    Any = object

__version__ = "0.1.0"


class _Package(type(config)):  # type: ignore[misc]
    """Assigning ``nat_telemetry.TELEMETRY_ENABLED`` sets the live flag in config."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "TELEMETRY_ENABLED":
            config.TELEMETRY_ENABLED = bool(value)
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# public name -> the submodule that defines it
_EXPORTS = {
    "ConsentState": "consent",
    "maybe_prompt_for_consent": "consent",
    "read_persisted_consent": "consent",
    "write_persisted_consent": "consent",
    "CliCommandEvent": "events",
    "NemoSourceEnum": "events",
    "TaskStatusEnum": "events",
    "TelemetryEvent": "events",
    "ValidationError": "events",
    "NATTelemetryHandler": "handler",
    "QueuedEvent": "payload",
    "build_payload": "payload",
    "resolve_subcommand": "subcommand",
    "ToolTelemetry": "track",
    "track_command": "track",
}

__all__ = [
    "TELEMETRY_ENABLED",
    "CliCommandEvent",
    "ConsentState",
    "NATTelemetryHandler",
    "NemoSourceEnum",
    "QueuedEvent",
    "TaskStatusEnum",
    "TelemetryEvent",
    "ToolTelemetry",
    "ValidationError",
    "__version__",
    "build_payload",
    "config",
    "maybe_prompt_for_consent",
    "read_persisted_consent",
    "resolve_subcommand",
    "track_command",
    "write_persisted_consent",
]


def __getattr__(name: str) -> Any:
    if name == "TELEMETRY_ENABLED":
        return config.TELEMETRY_ENABLED  # live: never cached here
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__ rather than importlib: importing importlib costs a command line more.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
