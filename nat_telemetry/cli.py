"""The ``nat-telemetry`` command line (also ``python -m nat_telemetry``).

``status``, ``enable``, ``disable`` and ``reset`` see and change the NeMo Agent
Toolkit's decision (see :mod:`.status`); ``schema`` shows what could ever be
sent; ``run -- CMD`` instruments any program with one event naming it (never
its arguments), while the program keeps the terminal and ``run`` exits with its
exit code; the collector's commands are added when its folder is there.

Every failure is one readable line on stderr and a non-zero exit status, never
a traceback; argparse only, so there is nothing to install.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import _process, config
from ._rules import NAME_CHARACTERS
from .status import _err, add_consent_commands, run_parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from .outcome import TaskStatus

__all__ = ["build_parser", "command_name", "main"]


PROG = "nat-telemetry"

# Exit statuses of `run` when the program cannot be started, as in a shell.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2

_MAX_NAME_LENGTH = 64


def build_parser() -> argparse.ArgumentParser:
    """The ``nat-telemetry`` command line's parser."""
    from . import __version__  # at call time: the package may still be importing us
    from .consent import DEFAULT_CHANGE_COMMAND, DEFAULT_PRODUCT_NAME

    try:  # the server side's commands, when its folder is there (a vendored copy may drop it)
        from .collector import cli as collector_cli
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(f"{__package__}.collector"):
            raise  # something the collector needs is missing: say so, do not hide it
        collector_cli = None  # type: ignore[assignment]

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage and exercise anonymous, opt-in usage telemetry. "
        "Without a command, shows the current telemetry status.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_consent_commands(commands, config.NAT, PROG)
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of every event and of the envelope",
        description="Print, as JSON, the JSON Schema (draft 2020-12) of everything a request "
        "can carry: {\"envelope\": ..., \"events\": {NAME: ...}}. With WHICH, only that "
        "schema: 'envelope' or an event name.",
    )
    schema.add_argument("which", nargs="?", metavar="WHICH",
                        help="'envelope' or an event name (default: all)")
    schema.set_defaults(func=_cmd_schema, parser=schema)
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
    run.add_argument("--name", metavar="NAME",
                     help="the command name to record instead of CMD's file name: 1 to 64 "
                     "letters, digits, '-', '_', '.' or ':'")
    run.add_argument("--product-name", metavar="NAME", default=DEFAULT_PRODUCT_NAME,
                     help=f"who asks for consent, in the prompt (default: {DEFAULT_PRODUCT_NAME})")
    run.add_argument("--change-command", metavar="CMD", default=DEFAULT_CHANGE_COMMAND,
                     help="the command that changes the decision, named in the prompt with "
                     f"enable/disable/status after it (default: {DEFAULT_CHANGE_COMMAND})")
    run.add_argument("--consent-file", metavar="PATH",
                     help="keep the decision in this file instead of the shared one "
                     "(default: the one `status` shows)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help=argparse.SUPPRESS)
    run.set_defaults(func=_cmd_run, parser=run)
    if collector_cli is not None:
        collector_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nat-telemetry`` command line; returns the exit status."""
    return run_parser(build_parser(), argv, config.NAT, PROG)


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
        _err(PROG, f"schema: unknown schema {args.which!r} (one of: {names})")
        return EXIT_USAGE
    print(json.dumps(document, indent=2))
    return 0


# -------------------------------------------------------------------- run


def command_name(program: str) -> str:
    """The name recorded for ``program``: its file name, without folders or a Windows
    ``.exe`` (``tool`` and ``tool.exe`` count as one), as a short token (at most 64
    characters, every other character made ``-``)."""
    base = program.replace("\\", "/").rpartition("/")[2]
    if base.lower().endswith(".exe") and len(base) > 4:
        base = base[:-4]
    name = "".join(c if c in NAME_CHARACTERS else "-" for c in base)[:_MAX_NAME_LENGTH]
    return name or "unknown"


def _run_child(cmd: list[str]) -> tuple[int, TaskStatus, str]:
    """Run ``cmd``, with Ctrl-C the child's business while it runs, as in a shell;
    ``(exit status, task status, error class)``.

    The terminal sends SIGINT to the child and to us; we must outlive it to report
    the outcome and return the child's exit status.  A do-nothing Python handler,
    not SIG_IGN: an ignored signal stays ignored across exec, so the child could
    not be interrupted, while a handled one is reset to the default in the child
    (only the main thread may install one).
    """
    import signal
    import subprocess
    import threading

    from .outcome import FAILURE, outcome_of_returncode

    program = cmd[0]
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None) if main_thread else None
    try:
        returncode = subprocess.Popen(cmd).wait()
    except (FileNotFoundError, NotADirectoryError) as exc:
        _err(PROG, f"run: {program}: command not found")
        return EXIT_NOT_FOUND, FAILURE, type(exc).__name__
    except PermissionError as exc:
        _err(PROG, f"run: {program}: permission denied (not executable)")
        return EXIT_CANNOT_EXECUTE, FAILURE, type(exc).__name__
    except OSError as exc:
        _err(PROG, f"run: {program}: cannot execute: {exc.strerror or type(exc).__name__}")
        return EXIT_CANNOT_EXECUTE, FAILURE, type(exc).__name__
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    status, exit_code = outcome_of_returncode(returncode)
    return exit_code, status, "undefined"


def _cmd_run(args: argparse.Namespace) -> int:
    from .consent import maybe_prompt_for_consent
    from .events import CliCommandEvent, ValidationError
    from .outcome import EXIT_CODE_INTERRUPTED, SUCCESS, command_fields

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        _err(PROG, f"run: no command given (usage: {PROG} run [--name NAME] -- CMD [ARGS ...])")
        return EXIT_USAGE
    name = args.name if args.name is not None else command_name(cmd[0])
    try:
        CliCommandEvent(**command_fields(name, "undefined", SUCCESS, 0, "undefined", -1))
    except ValidationError as exc:
        reason = "; ".join(why for field, why in exc.errors if field == "command") or str(exc)
        _err(PROG, f"run: invalid --name {name!r}: {reason}")
        return EXIT_USAGE

    try:
        maybe_prompt_for_consent(product_name=args.product_name,
                                 change_command=args.change_command,
                                 consent_file=args.consent_file, raise_on_interrupt=True)
    except KeyboardInterrupt:  # "no" is saved; the user wants out, not the program
        return EXIT_CODE_INTERRUPTED
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
