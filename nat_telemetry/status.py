"""Everything a user may want to check about telemetry, in one place.

:func:`gather` collects it as plain data (what ``status --json`` prints);
:func:`render` turns that into the lines ``status`` shows.  Nothing here
changes anything: the spool folder is listed, never created.  Every value that
comes from a setting is shown with its control characters escaped, so an
endpoint or a path cannot forge a line or drive the terminal.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from . import config
from .config import destination_id, endpoint_problem, redact
from .consent import ConsentState, read_consent_record, resolve_consent
from .spool import Spool

__all__ = ["ENVELOPE_ADDS", "gather", "printable", "render"]

# What the envelope adds to each event's own fields (see payload).
ENVELOPE_ADDS = ("sessionId (random per process)", "timestamps", "cpuArchitecture",
                 "clientVer")
_RECOGNISED_VALUES = ("1", "true", "yes", "0", "false", "no", "")
_FAILURES = {"refused": "connection refused", "timeout": "timed out",
             "tls": "TLS certificate verification failed", "dns": "host name not found",
             "connection": "connection failed", "no answer": "no answer"}


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\r``, ``\\x1b``...)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _event_fields() -> list[str]:
    from .events import CliCommandEvent

    return [info.alias or name for name, info in CliCommandEvent.model_fields.items()]


def _utc(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _stamp(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) \
        and value > 0 else None


def _moment(value: Any, kind: str | None = None) -> dict[str, Any]:
    """``{"at", "unix"}`` of a recorded time (``kind`` too, for a failure)."""
    unix = _stamp(value)
    found: dict[str, Any] = {"at": _utc(unix), "unix": unix}
    if kind is not None:
        found["kind"] = printable(kind) if unix is not None and kind else None
    return found


def _spool(tool: config.Tool, current: str) -> dict[str, Any]:
    folder = tool.spool_dir()
    info: dict[str, Any] = {"enabled": folder is not None, "dir": folder and printable(folder),
                            "batches": 0, "events": 0, "bytes": 0, "oldest": None,
                            "oldest_unix": None, "off_because": None, "problem": None,
                            "destinations": []}
    if folder is None:
        value = os.environ.get(tool.var("SPOOL_DIR"))
        info["off_because"] = (printable(f"{tool.var('SPOOL_DIR')}={value!r}") if value
                               else "no home folder to keep it in")
        return info
    spool = Spool(folder)
    problem = spool.problem()
    if problem is not None and problem[1] != "not created yet":
        info["problem"] = problem[1]
    waiting, states = spool.summary(), spool.states()
    for name in sorted(set(waiting) | set(states), key=lambda n: (n != current, n)):
        files, events, size, oldest = waiting.get(name, (0, 0, 0, None))
        state = states.get(name, {})
        info["batches"] += files
        info["events"] += events
        info["bytes"] += size
        if oldest is not None and (info["oldest_unix"] is None or oldest < info["oldest_unix"]):
            info["oldest_unix"], info["oldest"] = oldest, _utc(oldest)
        info["destinations"].append({
            "id": name, "current": name == current,
            "endpoint": printable(redact(state.get("endpoint", ""))) or None,
            "batches": files, "events": events, "oldest": _utc(oldest), "oldest_unix": oldest,
            "last_delivery": _moment(state.get("delivered_at")),
            "last_failure": _moment(state.get("failed_at"), state.get("failure", "")),
        })
    return info


def gather(tool: config.Tool | None = None) -> dict[str, Any]:
    """The state of ``tool``'s telemetry in this process's environment, as JSON-ready data."""
    tool = config.NAT if tool is None else tool
    decision = resolve_consent(tool=tool)
    record = read_consent_record(tool=tool)
    variable = tool.var("ENABLED")
    env_value = os.environ.get(variable)
    endpoint = tool.endpoint
    info: dict[str, Any] = {
        "enabled": decision.enabled,
        "rule": decision.rule,
        "detail": printable(decision.detail),
        "do_not_track": config.do_not_track(),
        "ci": config.ci_env_var(),
        "env_var": {"name": variable, "value": env_value and printable(env_value),
                    "recognised": env_value is None
                    or env_value.strip().lower() in _RECOGNISED_VALUES},
        "consent_file": {
            "path": printable(record.path), "exists": record.exists, "consent": record.consent
            and printable(record.consent), "prompt_version": record.prompt_version
            and printable(record.prompt_version), "current_prompt_version": config.PROMPT_VERSION,
            "counts_as": record.state.value, "note": printable(record.why),
        },
        "endpoint": redact(endpoint) if endpoint else None,
        "endpoint_problem": endpoint_problem(endpoint),
        "dry_run": tool.dry_run,
        "collected": {"event": _event_fields(), "envelope": list(ENVELOPE_ADDS)},
    }
    info["spool"] = _spool(tool, destination_id(endpoint, tool.token()))
    mine = [d for d in info["spool"]["destinations"] if d["current"]]
    info["last_delivery"] = mine[0]["last_delivery"] if mine else _moment(None)
    info["last_failure"] = mine[0]["last_failure"] if mine else _moment(None, "")
    return info


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


def _failure(moment: dict[str, Any], now: float) -> str:
    kind = moment["kind"] or ""
    words = _FAILURES.get(kind) or (f"HTTP status {kind[5:]}" if kind.startswith("http ")
                                    else kind)
    return f"{_when(moment['at'], moment['unix'], now)}: {words}"


def _spool_lines(info: dict[str, Any]) -> list[str]:
    spool, now = info["spool"], time.time()
    if not spool["enabled"]:
        lines = [f"Spool: off ({spool['off_because']})"]
    elif spool["events"] == 0:
        lines = [f"Spool: empty ({spool['dir']})"]
    else:
        count = spool["events"]
        lines = [f"Spool: {count} event{'s' if count != 1 else ''} waiting in {spool['dir']} "
                 f"(oldest from {_when(spool['oldest'], spool['oldest_unix'], now)})"]
    if spool["problem"]:
        lines.append(f"Spool cannot be used: {spool['dir']} is {spool['problem']}; events are "
                     "sent before the command exits instead, within its shutdown budget")
    for destination in spool["destinations"]:
        if destination["current"]:
            continue
        parts = [f"{destination['events']} waiting"]
        if destination["last_delivery"]["at"]:
            parts.append("last delivery " + _when(destination["last_delivery"]["at"],
                                                  destination["last_delivery"]["unix"], now))
        if destination["last_failure"]["at"]:
            parts.append("last failure " + _failure(destination["last_failure"], now))
        lines.append(f"  for {destination['endpoint'] or destination['id']}: "
                     + "; ".join(parts))
    delivered, failed = info["last_delivery"], info["last_failure"]
    lines.append("Last successful delivery: " + (
        "never recorded" if delivered["at"] is None
        else _when(delivered["at"], delivered["unix"], now)))
    if failed["at"] is not None and (delivered["unix"] is None
                                     or failed["unix"] > delivered["unix"]):
        lines.append("Last failure: " + _failure(failed, now))
    return lines


def _file_line(info: dict[str, Any]) -> str:
    """The consent file, and what it says, in words."""
    record = info["consent_file"]
    if not record["path"]:
        return f"({record['note']})"  # no location at all
    state = ConsentState(record["counts_as"])
    text = str(record["path"])
    if state is not ConsentState.NEVER_ASKED:
        text += f" (saved: {state.value}"
        if record["prompt_version"] != config.PROMPT_VERSION:
            text += f", under prompt version {record['prompt_version']!r}; {record['note']}"
        return text + ")"
    if record["consent"] is None and not record["exists"]:
        return text + " (no decision saved)"
    return f"{text} ({record['note']})"


def render(info: dict[str, Any], prog: str) -> list[str]:
    """The lines of ``status``; ``prog`` is the command that changes the decision."""
    lines = [f"Telemetry is {'enabled' if info['enabled'] else 'disabled'}."]
    rule, detail, env = info["rule"], info["detail"], info["env_var"]
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
        lines.append(f"Record a decision with `{prog} enable` or `{prog} disable`.")
    return lines
