"""The ``nat-telemetry`` command line (also ``python -m nat_telemetry``).

Two jobs.  ``status``, ``enable``, ``disable``, ``reset`` and ``schema`` let a
person see and change their telemetry decision without editing a file, say
plainly where the effective answer comes from (an environment variable
silently overriding a saved "no" is exactly the surprise an opt-in system must
not spring), and show what could ever be sent.
``run -- CMD`` instruments any program, shell pipelines included, with one
event naming the program (never its arguments), while staying out of its
way: the program keeps the terminal, and ``run`` exits with its exit code.

Every failure of this command is one readable line on stderr and a non-zero
exit status, never a traceback; argparse only, so there is nothing to install.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from . import _process, config
from ._process import reader_went_away
from ._rules import NAME_CHARACTERS
from .consent import (
    DEFAULT_CHANGE_COMMAND,
    DEFAULT_PRODUCT_NAME,
    TELEMETRY_ENV_VAR,
    ConsentState,
    consent_file_path,
    maybe_prompt_for_consent,
    read_persisted_consent,
    resolve_env_consent,
    write_persisted_consent,
)
from .events import CliCommandEvent, ValidationError
from .outcome import (
    EXIT_CODE_INTERRUPTED,
    FAILURE,
    SUCCESS,
    command_fields,
    outcome_of_returncode,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from .outcome import TaskStatus

try:  # the server side's commands, when its folder is there (a vendored copy may drop it)
    from .collector import cli as collector_cli
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith(f"{__package__}.collector"):
        raise  # something the collector needs is missing: say so, do not hide it
    collector_cli = None  # type: ignore[assignment]

__all__ = ["build_parser", "main"]


PROG = "nat-telemetry"

# Exit statuses of `run` when the program cannot be started, as in a shell.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2

_MAX_NAME_LENGTH = 64


def _err(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)


def _word(enabled: bool | None) -> str:
    return "enabled" if enabled else "disabled"


# ----------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__  # at call time: the package may still be importing us

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage and exercise anonymous, opt-in usage telemetry. "
        "Without a command, shows the current telemetry status.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    status = commands.add_parser(
        "status",
        help="show whether telemetry is enabled and why (the default)",
        description="Show whether anonymous usage telemetry is enabled and the rule that "
        f"decides it (DO_NOT_TRACK, a CI run, the {TELEMETRY_ENV_VAR} environment variable, "
        "the saved decision in the consent file, or the default: disabled, never asked), "
        "where events would go, and what each one contains.",
    )
    status.add_argument("--json", action="store_true",
                        help="print the same as one JSON object, for scripts")
    status.set_defaults(func=_cmd_status, json=False)

    enable = commands.add_parser(
        "enable",
        help="allow anonymous usage telemetry and save that decision",
        description="Allow anonymous usage telemetry: save the decision in the consent file "
        f"and check that it was saved. {TELEMETRY_ENV_VAR}, when set, still overrides it.",
    )
    enable.set_defaults(func=_cmd_enable)

    disable = commands.add_parser(
        "disable",
        help="turn anonymous usage telemetry off and save that decision",
        description="Turn anonymous usage telemetry off: save the decision in the consent file, "
        "check that it was saved, and delete the events waiting in the spool. "
        f"{TELEMETRY_ENV_VAR}, when set, still overrides it.",
    )
    disable.set_defaults(func=_cmd_disable)

    reset = commands.add_parser(
        "reset",
        help="forget the decision (back to never asked) and empty the spool",
        description="Delete the consent file, so telemetry is off and you are asked again at "
        "the next interactive `run`, and delete the events waiting in the spool.",
    )
    reset.set_defaults(func=_cmd_reset)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of every event and of the envelope",
        description="Print, as JSON, the JSON Schema (draft 2020-12) of everything a request "
        "can carry: {\"envelope\": ..., \"events\": {NAME: ...}}. With WHICH, only that "
        "schema: 'envelope' or an event name.",
    )
    schema.add_argument("which", nargs="?", metavar="WHICH",
                        help="'envelope' or an event name (default: all)")
    schema.set_defaults(func=_cmd_schema)

    run = commands.add_parser(
        "run",
        help="run a command and record one anonymous event about it",
        usage=f"{PROG} run [-h] [--name NAME] [--product-name NAME] [--change-command CMD] "
        "[--consent-file PATH] -- CMD [ARGS ...]",
        description="Run CMD with ARGS, with this terminal's input and output, and exit with "
        "its exit status (128+N when signal N killed it, 127 when CMD is not found, 126 when "
        "it cannot be executed). If telemetry is enabled, one event is recorded: the command "
        "name (NAME, or the file name of CMD), the outcome, the duration and the exit status. "
        "ARGS are never recorded. Asks for consent first if nobody has decided yet and this "
        "is an interactive terminal; Ctrl-C there saves 'no' and exits 130 without running CMD.",
    )
    run.add_argument(
        "--name",
        metavar="NAME",
        help="the command name to record instead of CMD's file name: 1 to 64 letters, "
        "digits, '-', '_', '.' or ':'",
    )
    run.add_argument("--product-name", metavar="NAME", default=DEFAULT_PRODUCT_NAME,
                     help=f"who asks for consent, in the prompt (default: {DEFAULT_PRODUCT_NAME})")
    run.add_argument("--change-command", metavar="CMD", default=DEFAULT_CHANGE_COMMAND,
                     help="the command that changes the decision, named in the prompt with "
                     f"enable/disable/status after it (default: {DEFAULT_CHANGE_COMMAND})")
    run.add_argument("--consent-file", metavar="PATH",
                     help="keep the decision in this file instead of the shared one "
                     "(default: the one `status` shows)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help=argparse.SUPPRESS)
    run.set_defaults(func=_cmd_run)

    if collector_cli is not None:
        collector_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # --help and usage errors exit here (0 / 2)
        func = getattr(args, "func", None)
        if func is None:
            func, args.json = _cmd_status, False
        result = func(args)
        return 0 if result is None else int(result)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_CODE_INTERRUPTED
    except BrokenPipeError:
        return reader_went_away()
    except Exception as exc:  # one line, never a traceback
        _process.debug("%s failed", PROG, exc_info=True)
        _err(f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}")
        return 1


# --------------------------------------------------------- status / enable


def _consent_path() -> tuple[Path | None, str]:
    """The consent file and how to show it; no path when none can be found."""
    try:
        path = consent_file_path()
    except Exception as exc:  # e.g. no home folder
        return None, f"(no consent file location: {exc})"
    return path, str(path)


def _cmd_status(args: argparse.Namespace) -> int:
    from . import status

    info = status.gather()
    if args.json:
        import json

        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print("\n".join(status.render(info, PROG)))
    return 0


def _warn_about_environment(state: ConsentState) -> None:
    """Say so when NAT_TELEMETRY_ENABLED decides instead of what was just done."""
    env_value = os.environ.get(TELEMETRY_ENV_VAR)
    if env_value is None:
        return
    from_env = resolve_env_consent()
    if from_env != (state is ConsentState.ENABLED):
        _err(f"warning: {TELEMETRY_ENV_VAR}={env_value!r} is set and overrides this "
             f"decision: telemetry stays {_word(from_env)} until you unset it")
    else:
        _err(f"note: {TELEMETRY_ENV_VAR}={env_value!r} is set and takes precedence over "
             "the saved decision until you unset it")


def _save_decision(state: ConsentState) -> int:
    _, path_text = _consent_path()
    saved = write_persisted_consent(state)
    if not saved or read_persisted_consent() is not state:
        _err(f"could not save the decision to {path_text}; check that its folder is writable "
             "and the disk is not full (the previous decision is unchanged)")
        return 1
    print(f"Telemetry {state.value}. Decision saved to {path_text}.")
    _warn_about_environment(state)
    return 0


def _empty_spool() -> tuple[str | None, int]:
    """Delete every event waiting in the spool (and the senders' files, the record of
    deliveries among them): ``(folder or None when off, events deleted)``."""
    from .spool import Spool

    folder = config.NAT.spool_dir()
    if folder is None:
        return None, 0
    return folder, Spool(folder).clear()


def _events(count: int) -> str:
    return f"{count} event{'' if count == 1 else 's'}"


def _cmd_enable(args: argparse.Namespace) -> int:
    return _save_decision(ConsentState.ENABLED)


def _cmd_disable(args: argparse.Namespace) -> int:
    # Emptied even if the decision cannot be saved: "no" must stop what is queued.
    _, deleted = _empty_spool()
    result = _save_decision(ConsentState.DISABLED)
    if deleted:
        print(f"Deleted {_events(deleted)} waiting in the spool.")
    return result


def _cmd_reset(args: argparse.Namespace) -> int:
    path, path_text = _consent_path()
    if path is None:
        _err(f"could not find the consent file {path_text}")
        return 1
    try:
        path.unlink()
        forgotten = f"Decision forgotten: deleted {path_text}."
    except FileNotFoundError:
        forgotten = f"No decision was saved ({path_text})."
    except OSError as exc:
        _err(f"could not delete {path_text}: {exc.strerror or type(exc).__name__} "
             "(the decision is unchanged)")
        return 1
    folder, deleted = _empty_spool()
    print(forgotten)
    print("Spool: off, nothing to empty." if folder is None
          else f"Spool emptied: {_events(deleted)} deleted.")
    print(f"Telemetry is off until you decide: `{PROG} enable` or `{PROG} disable`, or answer "
          f"the question an interactive `{PROG} run` asks.")
    _warn_about_environment(ConsentState.DISABLED)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from . import schema

    everything = schema.schemas()
    if args.which is None:
        document = everything
    elif args.which == "envelope":
        document = everything["envelope"]
    elif args.which in everything["events"]:
        document = everything["events"][args.which]
    else:
        names = ", ".join(["envelope", *everything["events"]])
        _err(f"schema: unknown schema {args.which!r} (one of: {names})")
        return EXIT_USAGE
    print(json.dumps(document, indent=2))
    return 0


# -------------------------------------------------------------------- run


def command_name(program: str) -> str:
    """The name recorded for ``program``: its file name as a short token.

    Folders are dropped (``/home/alice/bin/tool`` → ``tool``), as is a Windows
    ``.exe`` suffix so ``tool`` and ``tool.exe`` count as one; every character
    outside ``A-Z a-z 0-9 _ . : -`` becomes ``-``; at most 64 characters.
    """
    base = program.replace("\\", "/").rpartition("/")[2]
    if base.lower().endswith(".exe") and len(base) > 4:
        base = base[:-4]
    name = "".join(c if c in NAME_CHARACTERS else "-" for c in base)[:_MAX_NAME_LENGTH]
    return name or "unknown"


@contextlib.contextmanager
def _parent_ignores_sigint() -> Iterator[None]:
    """While the child runs, Ctrl-C is the child's business, as in a shell.

    The terminal sends SIGINT to the child and to us; we must outlive it to
    report the outcome and return the child's exit status (the final flush
    that follows is bounded, so a second Ctrl-C need not cut it short).  A
    do-nothing Python handler, not SIG_IGN: an ignored signal stays ignored
    across exec, so the child could not be interrupted, while a handled one
    is reset to the default in the child.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install signal handlers
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_child(cmd: list[str]) -> tuple[int, TaskStatus, str]:
    """Run ``cmd``; ``(exit status, task status, error class)``."""
    program = cmd[0]
    try:
        returncode = subprocess.Popen(cmd).wait()
    except (FileNotFoundError, NotADirectoryError) as exc:
        _err(f"run: {program}: command not found")
        return EXIT_NOT_FOUND, FAILURE, type(exc).__name__
    except PermissionError as exc:
        _err(f"run: {program}: permission denied (not executable)")
        return EXIT_CANNOT_EXECUTE, FAILURE, type(exc).__name__
    except OSError as exc:
        _err(f"run: {program}: cannot execute: {exc.strerror or type(exc).__name__}")
        return EXIT_CANNOT_EXECUTE, FAILURE, type(exc).__name__
    status, exit_code = outcome_of_returncode(returncode)
    return exit_code, status, "undefined"


def _cmd_run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        _err(f"run: no command given (usage: {PROG} run [--name NAME] -- CMD [ARGS ...])")
        return EXIT_USAGE
    name = args.name if args.name is not None else command_name(cmd[0])
    try:
        CliCommandEvent(**command_fields(name, "undefined", SUCCESS, 0, "undefined", -1))
    except ValidationError as exc:
        reason = "; ".join(why for field, why in exc.errors if field == "command") or str(exc)
        _err(f"run: invalid --name {name!r}: {reason}")
        return EXIT_USAGE

    try:
        maybe_prompt_for_consent(product_name=args.product_name,
                                 change_command=args.change_command,
                                 consent_file=args.consent_file, raise_on_interrupt=True)
    except KeyboardInterrupt:  # "no" is saved; the user wants out, not the program
        return EXIT_CODE_INTERRUPTED
    with _parent_ignores_sigint():
        start = time.perf_counter()
        exit_code, status, error_class = _run_child(cmd)
        duration_ms = max(0, int((time.perf_counter() - start) * 1000))
    try:  # delivered as every command line's event is: spooled at exit for a sender
        from .track import record_command

        record_command(name, "undefined", status, exit_code, error_class, duration_ms)
    except Exception:  # telemetry must not change the exit status
        _process.debug("could not record the run of %r", name, exc_info=True)
    return exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
