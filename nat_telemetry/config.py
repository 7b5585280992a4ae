"""Settings read from the environment.

Everything here is read once, when the module is imported, except
``TELEMETRY_ENABLED``: it is resolved the first time somebody reads it (so
``import nat_telemetry`` never touches the consent file) and it stays a live,
assignable module attribute.  The consent prompt flips it for the rest of the
process; every consumer reads ``config.TELEMETRY_ENABLED`` at call time, never a
copy taken earlier.

Environment variables:

``NAT_TELEMETRY_ENABLED``
    ``1``/``true``/``yes`` (any case) enables, anything else disables; when
    unset, the persisted consent decides (see :mod:`.consent`), else off.
``NAT_TELEMETRY_ENDPOINT``
    ``""`` (default): build and validate payloads, send nothing.  ``stdout``:
    write each payload as one JSON line to stderr.  Anything else: the HTTP(S)
    URL payloads are POSTed to.
``NAT_TELEMETRY_DRY_RUN``
    truthy: log what would be POSTed, POST nothing.
``NAT_SESSION_PREFIX``
    prepended to every session id.
``NAT_TELEMETRY_CONSENT_FILE``
    where the consent decision is stored (see :mod:`.consent`).
"""

from __future__ import annotations

import os

CLIENT_ID = "184482118588404"
NAT_TELEMETRY_VERSION = "nat-telemetry/1.0"
STDOUT_ENDPOINT_SENTINEL = "stdout"
DEFAULT_NAT_TELEMETRY_ENDPOINT = ""

_TRUTHY = frozenset({"1", "true", "yes"})


def is_truthy(value: str | None) -> bool:
    """``1``, ``true`` or ``yes``, in any case, surrounding blanks ignored."""
    return value is not None and value.strip().lower() in _TRUTHY


def _cpu_architecture() -> str:
    # platform.uname() runs `uname -p` in a subprocess on some platforms; the
    # machine field alone comes straight from os.uname() where it exists.
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform

    return platform.machine()


CPU_ARCHITECTURE: str = _cpu_architecture()
NAT_TELEMETRY_ENDPOINT: str = os.environ.get(
    "NAT_TELEMETRY_ENDPOINT", DEFAULT_NAT_TELEMETRY_ENDPOINT
)
NAT_TELEMETRY_DRY_RUN: bool = is_truthy(os.environ.get("NAT_TELEMETRY_DRY_RUN"))
SESSION_PREFIX: str | None = os.environ.get("NAT_SESSION_PREFIX") or None

TELEMETRY_ENABLED: bool  # resolved on first read by __getattr__ below


def __getattr__(name: str) -> object:
    # Only called while TELEMETRY_ENABLED has never been set: resolve it once,
    # then store it so later reads are plain attribute lookups.
    if name == "TELEMETRY_ENABLED":
        from .consent import resolve_initial_consent

        value = resolve_initial_consent()
        globals().setdefault("TELEMETRY_ENABLED", value)
        return globals()["TELEMETRY_ENABLED"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
