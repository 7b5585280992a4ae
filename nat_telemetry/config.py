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
``DO_NOT_TRACK``
    ``1``/``true`` (any case): telemetry is off whatever else says, and
    nobody is asked (the Console Do Not Track convention).
``CI`` and the other variables in :data:`CI_ENV_VARS`
    a CI run: nobody is asked, and only ``NAT_TELEMETRY_ENABLED`` can turn
    telemetry on.

This module imports nothing of the package: everything else builds on it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Callable

CLIENT_ID = "184482118588404"
NAT_TELEMETRY_VERSION = "nat-telemetry/1.0"
STDOUT_ENDPOINT_SENTINEL = "stdout"
DEFAULT_NAT_TELEMETRY_ENDPOINT = ""

TELEMETRY_ENV_VAR = "NAT_TELEMETRY_ENABLED"
ENDPOINT_ENV_VAR = "NAT_TELEMETRY_ENDPOINT"
DRY_RUN_ENV_VAR = "NAT_TELEMETRY_DRY_RUN"
SESSION_PREFIX_ENV_VAR = "NAT_SESSION_PREFIX"
CONSENT_FILE_ENV_VAR = "NAT_TELEMETRY_CONSENT_FILE"
DO_NOT_TRACK_ENV_VAR = "DO_NOT_TRACK"
TOKEN_ENV_VAR = "NAT_TELEMETRY_TOKEN"
# Set by the common CI services (any non-empty value but "false"/"0" counts).
CI_ENV_VARS = (
    "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL", "TF_BUILD",
    "TEAMCITY_VERSION", "TRAVIS", "CODEBUILD_BUILD_ID", "BITBUCKET_BUILD_NUMBER",
    "BUILD_ID", "DRONE", "APPVEYOR", "SEMAPHORE", "BITRISE_IO", "HEROKU_TEST_RUN_ID",
)

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
NAT_TELEMETRY_ENDPOINT: str = os.environ.get(ENDPOINT_ENV_VAR, DEFAULT_NAT_TELEMETRY_ENDPOINT)
NAT_TELEMETRY_DRY_RUN: bool = is_truthy(os.environ.get(DRY_RUN_ENV_VAR))
SESSION_PREFIX: str | None = os.environ.get(SESSION_PREFIX_ENV_VAR) or None

# A handler's defaults (see handler.NATTelemetryHandler), here so that
# track_command's in-memory recorder follows the same ones without importing
# the handler.
DEFAULT_FLUSH_INTERVAL_SECONDS: float = 120.0
DEFAULT_MAX_QUEUE_SIZE: int = 50
DEFAULT_MAX_RETRIES: int = 3
DEFAULT_REQUEST_TIMEOUT_SECONDS: float = 2.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: float = 2.0
DEFAULT_MAX_BUFFER_SIZE: int = 10_000
DEFAULT_MAX_DLQ_SIZE: int = 1_000
DEFAULT_MAX_BATCH_SIZE: int = 500


def prefixed_session_id(session_id: str) -> str:
    """``session_id`` as sent: with ``NAT_SESSION_PREFIX`` in front, when set."""
    prefix = SESSION_PREFIX
    return f"{prefix}{session_id}" if prefix else session_id


def do_not_track() -> bool:
    """``DO_NOT_TRACK`` is set to ``1`` or ``true`` (any case)."""
    value = os.environ.get(DO_NOT_TRACK_ENV_VAR)
    return value is not None and value.strip().lower() in ("1", "true")


def ci_env_var() -> str | None:
    """The first CI variable that says this is a CI run, or None."""
    for name in CI_ENV_VARS:
        value = os.environ.get(name)
        if value and value.strip().lower() not in ("0", "false"):
            return name
    return None


def environment_decision() -> tuple[bool, str, str] | None:
    """``(enabled, rule, detail)`` when the environment alone decides, else None.

    The first three rules of consent, in order: ``DO_NOT_TRACK`` (off);
    ``NAT_TELEMETRY_ENABLED`` when set; a CI run (off: only the variable turns
    telemetry on there).  After them come the consent file and the default
    (see :func:`.consent.resolve_consent`).
    """
    if do_not_track():
        return False, "DO_NOT_TRACK", f"{DO_NOT_TRACK_ENV_VAR}={os.environ[DO_NOT_TRACK_ENV_VAR]!r}"
    setting = os.environ.get(TELEMETRY_ENV_VAR)
    if setting is not None:
        return is_truthy(setting), "environment", f"{TELEMETRY_ENV_VAR}={setting!r}"
    ci = ci_env_var()
    if ci is not None:
        return False, "CI", (f"{ci} is set: a CI run, where only {TELEMETRY_ENV_VAR} "
                             "can turn telemetry on")
    return None


TELEMETRY_ENABLED: bool  # resolved on first read by __getattr__ below

# Set by the package (see __init__): how TELEMETRY_ENABLED is resolved.  A
# hook rather than an import keeps this module a leaf; consent builds on it.
resolve_enabled: Callable[[], bool] | None = None


def __getattr__(name: str) -> object:
    # Only called while TELEMETRY_ENABLED has never been set: resolve it once,
    # then store it so later reads are plain attribute lookups.
    if name == "TELEMETRY_ENABLED":
        value = resolve_enabled() if resolve_enabled is not None else False
        globals().setdefault("TELEMETRY_ENABLED", value)
        return globals()["TELEMETRY_ENABLED"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
