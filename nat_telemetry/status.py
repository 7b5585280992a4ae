"""Seeing and changing the decision, for any tool: ``status [--json]``, ``enable``,
``disable`` and ``reset``.

:func:`gather` collects the state as plain data (what ``status --json`` prints) and
:func:`render` turns it into the lines ``status`` shows.  Looking changes nothing (the
spool folder is listed, never created), and every value from a setting is shown with its
control characters escaped, so an endpoint or a path cannot forge a line or drive the
terminal.  The commands say where the effective answer comes from: a variable silently
overriding a saved "no" is the surprise an opt-in system must not spring.
``nat-telemetry`` mounts them for the NeMo Agent Toolkit (:mod:`.cli`); a tool embedding
the package runs them with :func:`tool_main` or mounts them in click, Typer or argparse
(the adapters at the end, the only place click and typer are imported).
"""

from __future__ import annotations

import math
import os
import sys
import time

from . import _process, config
from .config import LOGS_PATH, destination_id, endpoint_problem, printable, redact
from .outcome import EXIT_CODE_INTERRUPTED

# The rest is imported where needed: a tool mounting the commands loads this at every start.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any, Protocol

    import click
    import typer

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

    class ToolTelemetry(Protocol):  # what the adapters use of track.ToolTelemetry
        tool: config.Tool
        mounted: set[str]

        def main(self, argv: Sequence[str] | None = None) -> int: ...

        def record(self, command: str, subcommand: str, task_status: str, exit_code: int,
                   error_class: str, duration_ms: int) -> None: ...

__all__ = ["ENVELOPE_ADDS", "add_argparse_commands", "add_consent_commands", "click_group",
           "gather", "printable", "render", "run_parser", "tool_main", "tracked_click_group",
           "typer_app"]

# What the envelope adds to each event's own fields (see payload).
ENVELOPE_ADDS = ("sessionId (random per process)", "timestamps", "cpuArchitecture",
                 "clientVer")
_FAILURES = {"refused": "connection refused", "timeout": "timed out",
             "tls": "TLS certificate verification failed", "dns": "host name not found",
             "connection": "connection failed", "no answer": "no answer"}


def _utc(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _moment(value: Any, kind: str | None = None) -> dict[str, Any]:
    """``{"at", "unix"}`` of a recorded time (``kind`` too, for a failure)."""
    fine = type(value) in (int, float) and math.isfinite(value) and value > 0
    unix = float(value) if fine else None
    found: dict[str, Any] = {"at": _utc(unix), "unix": unix}
    if kind is not None:
        found["kind"] = printable(kind) if unix is not None and kind else None
    return found


def _spool(tool: config.Tool, current: str) -> dict[str, Any]:
    from .spool import Spool

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
            "endpoint": redact(state.get("endpoint", "")) or None,
            "batches": files, "events": events, "oldest": _utc(oldest), "oldest_unix": oldest,
            "last_delivery": _moment(state.get("delivered_at")),
            "last_failure": _moment(state.get("failed_at"), state.get("failure", "")),
        })
    return info


def _endpoint_hint(endpoint: str) -> str | None:
    """A word for a usable endpoint likely not meant: a plain ``http(s)://`` URL of
    an OTLP logs receiver is sent the NeMo envelope, not OTLP."""
    from urllib.parse import urlsplit

    scheme = endpoint.partition("://")[0].lower()
    if scheme not in ("http", "https") or endpoint_problem(endpoint) is not None:
        return None
    if not urlsplit(endpoint).path.rstrip("/").endswith(LOGS_PATH):
        return None
    return (f"the path ends in {LOGS_PATH}, as an OTLP receiver's does, but a plain "
            f"{scheme}:// URL is sent the NeMo envelope; for OTLP write otlp+{scheme}://")


def gather(tool: config.Tool | None = None) -> dict[str, Any]:
    """The state of ``tool``'s telemetry in this process's environment, as JSON-ready data."""
    from .consent import read_consent_record, resolve_consent
    from .events import CliCommandEvent

    tool = config.NAT if tool is None else tool
    decision, record = resolve_consent(tool=tool), read_consent_record(tool=tool)
    variable, endpoint = tool.var("ENABLED"), tool.endpoint
    env_value = os.environ.get(variable)
    fields = [info.alias or name for name, info in CliCommandEvent.model_fields.items()]
    info: dict[str, Any] = {
        "enabled": decision.enabled, "rule": decision.rule, "detail": printable(decision.detail),
        "do_not_track": config.do_not_track(), "ci": config.ci_env_var(),
        "env_var": {"name": variable, "value": env_value and printable(env_value),
                    "recognised": config.is_truthy(env_value) or not config.is_set(env_value)},
        "consent_file": {
            "path": printable(record.path), "exists": record.exists,
            "consent": record.consent and printable(record.consent),
            "prompt_version": record.prompt_version and printable(record.prompt_version),
            "current_prompt_version": config.PROMPT_VERSION,
            "counts_as": record.state.value, "note": printable(record.why),
        },
        "endpoint": redact(endpoint) if endpoint else None,
        "endpoint_problem": endpoint_problem(endpoint),
        "endpoint_hint": _endpoint_hint(endpoint),
        "dry_run": tool.dry_run,
        "collected": {"event": fields, "envelope": list(ENVELOPE_ADDS)},
    }
    info["spool"] = _spool(tool, destination_id(endpoint, tool.token()))
    mine = [d for d in info["spool"]["destinations"] if d["current"]]
    info["last_delivery"] = mine[0]["last_delivery"] if mine else _moment(None)
    info["last_failure"] = mine[0]["last_failure"] if mine else _moment(None, "")
    return info


def _when(unix: float) -> str:
    """``2024-05-01 12:00:00 UTC (3 h ago)``."""
    text, age = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix)), time.time() - unix
    if age < 0:
        return text
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if age >= size:
            return f"{text} ({int(age // size)} {unit} ago)"
    return f"{text} ({int(age)} s ago)"


def _failure(moment: dict[str, Any]) -> str:
    kind = moment["kind"] or ""
    words = _FAILURES.get(kind) or (f"HTTP status {kind[5:]}" if kind.startswith("http ")
                                    else kind)
    return f"{_when(moment['unix'])}: {words}"


def _spool_lines(info: dict[str, Any]) -> list[str]:
    spool = info["spool"]
    if not spool["enabled"]:
        lines = [f"Spool: off ({spool['off_because']})"]
    elif spool["events"] == 0:
        lines = [f"Spool: empty ({spool['dir']})"]
    else:
        count = spool["events"]
        lines = [f"Spool: {count} event{'s' if count != 1 else ''} waiting in {spool['dir']} "
                 f"(oldest from {_when(spool['oldest_unix'])})"]
    if spool["problem"]:
        lines.append(f"Spool cannot be used: {spool['dir']} is {spool['problem']}; events are "
                     "sent before the command exits instead, within its shutdown budget")
    for destination in spool["destinations"]:
        delivered, failed = destination["last_delivery"], destination["last_failure"]
        if destination["current"]:
            continue
        parts = [f"{destination['events']} waiting"]
        if delivered["at"]:
            parts.append("last delivery " + _when(delivered["unix"]))
        if failed["at"]:
            parts.append("last failure " + _failure(failed))
        lines.append(f"  for {destination['endpoint'] or destination['id']}: "
                     + "; ".join(parts))
    delivered, failed = info["last_delivery"], info["last_failure"]
    lines.append("Last successful delivery: " + (
        "never recorded" if delivered["at"] is None else _when(delivered["unix"])))
    if failed["at"] is not None and (delivered["unix"] is None
                                     or failed["unix"] > delivered["unix"]):
        lines.append("Last failure: " + _failure(failed))
    return lines


def _file_line(info: dict[str, Any]) -> str:
    """The consent file, and what it says, in words."""
    from .consent import ConsentState

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


def render(info: dict[str, Any], prog: str, run: bool = True) -> list[str]:
    """The lines of ``status``; ``prog`` is the command that changes the decision
    (and, with ``run``, has a ``run`` command that asks)."""
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
        lines.append("Endpoint: none set (" + ("the dry run prints each payload to stderr"
                     if info["dry_run"] else "events are built, then dropped") + "; nothing "
                     "is sent)")
    else:
        problem, hint = info["endpoint_problem"], info["endpoint_hint"]
        lines.append(f"Endpoint: {info['endpoint']}" + (f" (unusable: {problem})" if problem
                                                       else f" (note: {hint})" if hint else ""))
    lines.append(f"Dry run: {'on (nothing is sent)' if info['dry_run'] else 'off'}")
    collected = info["collected"]
    lines.append("Collected per event: " + ", ".join(collected["event"]))
    lines.append("Added per batch: " + ", ".join(collected["envelope"]))
    lines += _spool_lines(info)
    if rule == "default":
        asks = f"; an interactive `{prog} run` asks" if run else ""
        lines.append(f"Record a decision with `{prog} enable` or `{prog} disable`{asks}.")
    return lines


# ------------------------------------------------------------------ commands

def _err(prog: str, message: str) -> None:
    """One line on stderr, prefixed with the command's name."""
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)


def add_consent_commands(commands: Any, tool: config.Tool, prog: str) -> None:
    """Add ``status [--json]``, ``enable``, ``disable`` and ``reset`` for ``tool`` to
    ``commands`` (an argparse sub-parsers object); ``prog`` is how users type them."""
    overrides = f"{tool.var('ENABLED')}, when set, still overrides it."
    for name, func, words, description in (
        ("status", _cmd_status, "show whether telemetry is enabled and why (the default)",
         "Show whether anonymous usage telemetry is enabled and the rule that decides it "
         f"(DO_NOT_TRACK, a CI run, the {tool.var('ENABLED')} environment variable, the saved "
         "decision in the consent file, or the default: disabled, never asked), where events "
         "would go, and what each one contains."),
        ("enable", _cmd_enable, "allow anonymous usage telemetry and save that decision",
         "Allow anonymous usage telemetry: save the decision in the consent file and check "
         f"that it was saved. {overrides}"),
        ("disable", _cmd_disable, "turn anonymous usage telemetry off and save that decision",
         "Turn anonymous usage telemetry off: save the decision in the consent file, check that "
         f"it was saved, and delete the events waiting in the spool. {overrides}"),
        ("reset", _cmd_reset, "forget the decision (back to never asked) and empty the spool",
         "Delete the consent file, so telemetry is off and you are asked again, and delete the "
         "events waiting in the spool."),
    ):
        parser = commands.add_parser(name, help=words, description=description)
        parser.set_defaults(func=func, tool=tool, prog=prog, parser=parser, json=False)
        if name == "status":
            parser.add_argument("--json", action="store_true",
                                help="print the same as one JSON object, for scripts")


def tool_main(tool: config.Tool, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run ``tool``'s consent commands as ``prog``; returns the exit status.  Prints
    exactly what ``nat-telemetry`` prints, for the tool's file, spool, variables and name."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description="See and change your anonymous usage telemetry decision. "
        "Without a command, shows the current status.")
    add_consent_commands(parser.add_subparsers(dest="command", metavar="COMMAND"), tool, prog)
    try:
        return run_parser(parser, argv, tool, prog)
    except SystemExit as exc:  # --help, or a usage error: an exit status, not an exit
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None, tool: config.Tool,
               prog: str) -> int:
    """Parse ``argv`` with ``parser`` and run the command chosen (``status`` when none);
    every failure is one line on stderr and a non-zero status, never a traceback."""
    try:
        args, extra = parser.parse_known_args(argv)  # --help, usage errors: SystemExit
        if extra:  # the subcommand's own usage, not the top level's
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "func", None) is None:
            args.func, args.json, args.tool, args.prog = _cmd_status, False, tool, prog
        result = args.func(args)
        return 0 if result is None else int(result)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_CODE_INTERRUPTED
    except BrokenPipeError:
        return _process.reader_went_away()
    except Exception as exc:  # one line, never a traceback
        _process.debug("%s failed", prog, exc_info=True)
        _err(prog, f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}")
        return 1


def _consent_path(tool: config.Tool) -> tuple[Path | None, str]:
    """The consent file and how to show it; no path when none can be found."""
    from .consent import consent_file_path

    try:
        path = consent_file_path(tool=tool)
    except Exception as exc:  # e.g. no home folder
        return None, f"(no consent file location: {exc})"
    return path, printable(str(path))


def _cmd_status(args: argparse.Namespace) -> int:
    info = gather(args.tool)
    if args.json:
        import json

        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print("\n".join(render(info, args.prog, run=args.tool is config.NAT)))
    return 0


def _warn_about_environment(args: argparse.Namespace, enabled: bool) -> None:
    """Say so when the tool's variable decides instead of what was just done."""
    variable = args.tool.var("ENABLED")
    env_value = os.environ.get(variable)
    if env_value is None:
        return
    from_env = config.is_truthy(env_value)
    if from_env != enabled:
        _err(args.prog, f"warning: {variable}={env_value!r} is set and overrides this decision: "
             f"telemetry stays {'enabled' if from_env else 'disabled'} until you unset it")
    else:
        _err(args.prog, f"note: {variable}={env_value!r} is set and takes precedence over "
             "the saved decision until you unset it")


def _save_decision(args: argparse.Namespace, enabled: bool) -> int:
    from .consent import ConsentState, read_persisted_consent, write_persisted_consent

    state = ConsentState.ENABLED if enabled else ConsentState.DISABLED
    path, path_text = _consent_path(args.tool)
    saved = write_persisted_consent(state, tool=args.tool, change_command=args.prog)
    if not saved or read_persisted_consent(tool=args.tool) is not state:
        why = ("it is a folder, not a file" if path is not None and path.is_dir()
               else "check that its folder is writable and the disk is not full")
        _err(args.prog, f"could not save the decision to {path_text}: {why} (the previous "
             "decision is unchanged)")
        return 1
    print(f"Telemetry {state.value}. Decision saved to {path_text}.")
    _warn_about_environment(args, enabled)
    return 0


def _empty_spool(tool: config.Tool) -> tuple[str | None, int]:
    """Delete every event waiting in the spool (and the senders' files, the record of
    deliveries among them): ``(folder or None when off, events deleted)``."""
    from .spool import Spool

    folder = tool.spool_dir()
    return (None, 0) if folder is None else (folder, Spool(folder).clear())


def _events(count: int) -> str:
    return f"{count} event{'' if count == 1 else 's'}"


def _cmd_enable(args: argparse.Namespace) -> int:
    return _save_decision(args, True)


def _cmd_disable(args: argparse.Namespace) -> int:
    # Emptied even if the decision cannot be saved: "no" must stop what is queued.
    _, deleted = _empty_spool(args.tool)
    result = _save_decision(args, False)
    if deleted:
        print(f"Deleted {_events(deleted)} waiting in the spool.")
    return result


def _cmd_reset(args: argparse.Namespace) -> int:
    path, path_text = _consent_path(args.tool)
    if path is None:
        _err(args.prog, f"could not find the consent file {path_text}")
        return 1
    try:
        path.unlink()
        forgotten = f"Decision forgotten: deleted {path_text}."
    except FileNotFoundError:
        forgotten = f"No decision was saved ({path_text})."
    except OSError as exc:
        _err(args.prog, f"could not delete {path_text}: {exc.strerror or type(exc).__name__} "
             "(the decision is unchanged)")
        return 1
    folder, deleted = _empty_spool(args.tool)
    print(forgotten)
    print("Spool: off, nothing to empty." if folder is None
          else f"Spool emptied: {_events(deleted)} deleted.")
    prog = args.prog
    asks = (f", or answer the question an interactive `{prog} run` asks"
            if args.tool is config.NAT else "")
    print(f"Telemetry is off until you decide: `{prog} enable` or `{prog} disable`{asks}.")
    _warn_about_environment(args, False)
    return 0


# ------------------------------------------------- a tool's commands, mounted
#
# Each adapter runs the tool's consent commands through tool_main, so a click, Typer
# or argparse tool prints exactly what `nat-telemetry` prints.

_HELP = "See or change your anonymous usage telemetry decision."


def click_group(telemetry: ToolTelemetry, name: str) -> click.Group:
    """A click group with ``status [--json]``, ``enable``, ``disable`` and ``reset``."""
    import click

    @click.group(name=name, help=_HELP, invoke_without_command=True)
    @click.pass_context
    def group(ctx: Any) -> None:
        if ctx.invoked_subcommand is None:
            ctx.exit(telemetry.main([]))

    @group.command(help="Show whether telemetry is enabled and why.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def status(as_json: bool) -> None:
        sys.exit(telemetry.main(["status", "--json"] if as_json else ["status"]))

    for command, words in _DECISIONS:
        group.command(command, help=words)(_runner(sys.exit, telemetry, command))
    return group


_DECISIONS = (("enable", "Allow anonymous usage telemetry."),
              ("disable", "Turn telemetry off and empty the spool."),
              ("reset", "Forget the decision and empty the spool."))


def _runner(end: Any, telemetry: ToolTelemetry, command: str) -> Any:
    # A function of no parameters: Typer makes an option of every parameter,
    # a defaulted one included.
    return lambda: end(telemetry.main([command]))


def typer_app(telemetry: ToolTelemetry, name: str) -> typer.Typer:
    """A Typer app with ``status [--json]``, ``enable``, ``disable`` and ``reset``."""
    import typer

    app = typer.Typer(name=name, help=_HELP, add_completion=False)

    def end(code: int) -> None:
        raise typer.Exit(code)

    def run(argv: list[str]) -> None:
        end(telemetry.main(argv))

    def everything(ctx: Any) -> None:
        if ctx.invoked_subcommand is None:
            run([])

    def status(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")
               ) -> None:
        run(["status", "--json"] if as_json else ["status"])

    # Real objects, not the strings `from __future__ import annotations` leaves:
    # Typer reads the annotations to build its options.
    everything.__annotations__ = {"ctx": typer.Context, "return": None}
    status.__annotations__ = {"as_json": bool, "return": None}
    app.callback(invoke_without_command=True)(everything)
    app.command("status", help="Show whether telemetry is enabled and why.")(status)
    for command, words in _DECISIONS:
        app.command(command, help=words)(_runner(end, telemetry, command))
    return app


def add_argparse_commands(telemetry: ToolTelemetry, subparsers: _Subparsers, name: str
                          ) -> argparse.ArgumentParser:
    """Add ``name`` to an argparse sub-parsers object; ``args.func(args)`` runs it."""
    import argparse

    parser = subparsers.add_parser(name, help=_HELP, add_help=False, prefix_chars="\0")
    parser.add_argument("telemetry_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: telemetry.main(args.telemetry_args))
    return parser


def tracked_click_group(telemetry: ToolTelemetry, base: type[Any] | None = None) -> type[Any]:
    """A click group class that records every command invoked under it: the first
    name after the program as the command, the next as the subcommand when it is
    one the command's group registered (see :func:`~.subcommand.resolve_subcommand`).
    Typer's own copy of click is recognised as click is: by the names of the classes."""
    if base is None:
        import click

        base = click.Group
    from ._rules import is_token
    from .outcome import outcome_of
    from .subcommand import resolve_subcommand

    key = f"{__package__}.invoked"

    def record(invoked: Any, exc: BaseException | None, start: float) -> None:
        try:
            if (not invoked or not isinstance(invoked[0], str) or not is_token(invoked[0])
                    or invoked[0] in telemetry.mounted):
                return  # nothing invoked, a name not to send, or the consent commands
            name, command, rest = invoked
            names = getattr(command, "commands", None)
            sub = resolve_subcommand({name: list(names)}, name, [name, *rest]) if names else None
            # click's (and Typer's own) ways to end a command with a status, or Ctrl-C.
            code, kind = getattr(exc, "exit_code", None), type(exc).__name__
            ended = exc
            if isinstance(code, int) and (kind == "Exit" or any(
                    cls.__name__ == "ClickException" for cls in type(exc).__mro__)):
                ended = SystemExit(code) if code else None
            elif kind == "Abort":
                ended = KeyboardInterrupt()
            status, exit_code, error_class = outcome_of(ended)
            if ended is not exc and kind != "Exit":
                error_class = kind  # the click exception's class, not the one standing in
            duration_ms = max(0, int((time.perf_counter() - start) * 1000))
            telemetry.record(name, sub or "undefined", status, exit_code, error_class, duration_ms)
        except Exception:  # telemetry must not break the command
            _process.debug("could not record a click command", exc_info=True)

    class TrackedGroup(base):  # type: ignore[misc,valid-type]
        def resolve_command(self, ctx: Any, args: list[str]) -> Any:
            found = super().resolve_command(ctx, args)
            ctx.meta.setdefault(key, found)
            return found

        def invoke(self, ctx: Any) -> Any:
            start = time.perf_counter()
            try:
                result = super().invoke(ctx)
            except BaseException as exc:
                record(ctx.meta.get(key), exc, start)
                raise
            record(ctx.meta.get(key), None, start)
            return result

    return TrackedGroup
