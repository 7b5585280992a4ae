"""Everything a user may want to check about telemetry, in one place.

:func:`gather` collects it as plain data (what ``nat-telemetry status --json``
prints); :func:`render` turns that into the lines ``nat-telemetry status``
shows.  Nothing here changes anything: the spool folder is listed, never
created.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from . import _consent_file, config
from .consent import ConsentState, read_consent_record, resolve_consent
from .endpoint import endpoint_problem, redact

__all__ = ["ENVELOPE_ADDS", "gather", "last_delivery", "render"]

# What the envelope adds to each event's own fields (see payload).
ENVELOPE_ADDS = ("sessionId (random per process)", "timestamps", "cpuArchitecture",
                 "clientVer")
_RECOGNISED_VALUES = ("1", "true", "yes", "0", "false", "no", "")


def _event_fields() -> list[str]:
    from .events import CliCommandEvent

    # The wire names, in the order events are sent (alias None: the field's own name).
    return [info.alias or name for name, info in CliCommandEvent.model_fields.items()]


def _utc(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def last_delivery(folder: str | None) -> float | None:
    """When the spool in ``folder`` last saw a delivery; None when never recorded
    (or when what is recorded is not a time)."""
    if folder is None:
        return None
    from . import spool

    stamp = spool.last_delivery(folder)
    return stamp if stamp is not None and math.isfinite(stamp) and stamp > 0 else None


def _spool() -> tuple[dict[str, Any], str | None]:
    from .spool import SPOOL_DIR_ENV_VAR, Spool, default_spool_dir

    folder = default_spool_dir()
    info: dict[str, Any] = {"enabled": folder is not None, "dir": folder, "batches": 0,
                            "events": 0, "bytes": 0, "oldest": None, "oldest_unix": None,
                            "off_because": None}
    if folder is None:
        value = os.environ.get(SPOOL_DIR_ENV_VAR)
        info["off_because"] = (f"{SPOOL_DIR_ENV_VAR}={value!r}" if value
                               else "no home folder to keep it in")
        return info, None
    batches, events, size, oldest = Spool(folder).summary()
    info.update(batches=batches, events=events, bytes=size, oldest=_utc(oldest),
                oldest_unix=oldest)
    return info, folder


def gather() -> dict[str, Any]:
    """The state of telemetry for this process's environment, as JSON-ready data."""
    decision = resolve_consent()
    record = read_consent_record()
    env_value = os.environ.get(config.TELEMETRY_ENV_VAR)
    endpoint = config.NAT_TELEMETRY_ENDPOINT
    problem = endpoint_problem(endpoint)
    info: dict[str, Any] = {
        "enabled": decision.enabled,
        "rule": decision.rule,
        "detail": decision.detail,
        "do_not_track": config.do_not_track(),
        "ci": config.ci_env_var(),
        "env_var": {
            "name": config.TELEMETRY_ENV_VAR,
            "value": env_value,
            "recognised": env_value is None
            or env_value.strip().lower() in _RECOGNISED_VALUES,
        },
        "consent_file": {
            "path": record.path,
            "exists": record.exists,
            "consent": record.consent,
            "prompt_version": record.prompt_version,
            "current_prompt_version": _consent_file.PROMPT_VERSION,
            "counts_as": record.state.value,
            "note": record.why,
        },
        "endpoint": redact(endpoint) if endpoint else None,
        "endpoint_problem": problem,
        "dry_run": config.NAT_TELEMETRY_DRY_RUN,
        "collected": {"event": _event_fields(), "envelope": list(ENVELOPE_ADDS)},
    }
    info["spool"], folder = _spool()
    delivered = last_delivery(folder)
    info["last_delivery"] = {"at": _utc(delivered), "unix": delivered}
    return info


def _word(enabled: bool | None) -> str:
    return "enabled" if enabled else "disabled"


def _when(stamp: str, unix: float, now: float) -> str:
    """``2024-05-01 12:00:00 UTC (3 h ago)``."""
    text = stamp.replace("T", " ").replace("Z", " UTC")
    age = now - unix
    if age < 0:
        return text
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if age >= size:
            return f"{text} ({int(age // size)} {unit} ago)"
    return f"{text} ({int(age)} s ago)"


def _spool_lines(info: dict[str, Any]) -> list[str]:
    spool, now = info["spool"], time.time()
    if not spool["enabled"]:
        line = f"Spool: off ({spool['off_because']})"
    elif spool["events"] == 0:
        line = f"Spool: empty ({spool['dir']})"
    else:
        count = spool["events"]
        line = (f"Spool: {count} event{'s' if count != 1 else ''} waiting in {spool['dir']} "
                f"(oldest from {_when(spool['oldest'], spool['oldest_unix'], now)})")
    delivered = info["last_delivery"]
    last = ("never recorded" if delivered["at"] is None
            else _when(delivered["at"], delivered["unix"], now))
    return [line, f"Last successful delivery: {last}"]


def _file_line(info: dict[str, Any]) -> str:
    """The consent file, and what it says, in words."""
    record = info["consent_file"]
    if not record["path"]:
        return f"({record['note']})"  # no location at all
    state = ConsentState(record["counts_as"])
    text = str(record["path"])
    if state is not ConsentState.NEVER_ASKED:
        text += f" (saved: {state.value}"
        if record["prompt_version"] != _consent_file.PROMPT_VERSION:
            text += f", under prompt version {record['prompt_version']!r}; {record['note']}"
        return text + ")"
    if record["consent"] is None and not record["exists"]:
        return text + " (no decision saved)"
    return f"{text} ({record['note']})"


def render(info: dict[str, Any], prog: str) -> list[str]:
    """The lines of ``nat-telemetry status``."""
    lines = [f"Telemetry is {_word(info['enabled'])}."]
    rule, detail = info["rule"], info["detail"]
    env = info["env_var"]
    file_line = _file_line(info)
    if rule == "DO_NOT_TRACK":
        lines.append(f"Source: {detail} (Do Not Track: always off, never asks)")
    elif rule == "environment":
        lines.append(f"Source: environment variable {detail}")
        if not env["recognised"]:
            lines.append(f"Note: {env['value']!r} is not one of 1/true/yes (on) or "
                         "0/false/no (off); it counts as off.")
    elif rule == "CI":
        lines.append(f"Source: CI ({detail}); never asks")
    elif rule == "consent file":
        lines.append(f"Source: consent file {file_line}")
    else:
        lines.append("Source: default (never asked)")
    if rule != "consent file":
        suffix = f"; not used while {env['name']} is set." if rule == "environment" else ""
        lines.append(f"Consent file: {file_line}{suffix}")
    if info["endpoint"] is None:
        lines.append("Endpoint: none set (events are built, then dropped: nothing is sent)")
    else:
        problem = info["endpoint_problem"]
        lines.append(f"Endpoint: {info['endpoint']}" + (f" (unusable: {problem})" if problem
                                                       else ""))
    lines.append(f"Dry run: {'on (nothing is sent)' if info['dry_run'] else 'off'}")
    collected = info["collected"]
    lines.append("Collected per event: " + ", ".join(collected["event"]))
    lines.append("Added per batch: " + ", ".join(collected["envelope"]))
    lines += _spool_lines(info)
    if rule == "default":
        lines.append(f"Record a decision with `{prog} enable` or `{prog} disable`; "
                     f"an interactive `{prog} run` asks.")
    return lines
