"""Tally: a small argparse command line with opt-in usage telemetry.

    TALLY_TELEMETRY_ENABLED=1 TALLY_TELEMETRY_ENDPOINT=stdout \
        python examples/argparse_cli.py sum 1 2 3

What it shows:

* one ``ToolTelemetry`` for the tool, with ``TALLY_TELEMETRY_*`` settings;
* the first-run question, asked once at a terminal;
* each command run inside ``telemetry.track_command(command)``: the name
  argparse chose, and how the command ended (``sys.exit("message")`` is a
  failure with exit code 1; the message is never sent), never the numbers;
* ``tally telemetry status|enable|disable|reset`` added with
  ``add_argparse_commands()``, and not recorded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

from nat_telemetry import ToolTelemetry

telemetry = ToolTelemetry("tally", version="2.0.0", display_name="Tally")


def cmd_sum(args: argparse.Namespace) -> int:
    print(sum(args.numbers))
    return 0


def cmd_mean(args: argparse.Namespace) -> int:
    if not args.numbers:
        sys.exit("tally: no numbers to average")
    print(statistics.mean(args.numbers))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description="Add and average numbers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    telemetry.add_argparse_commands(commands)  # tally telemetry ...
    for name, func, words in (("sum", cmd_sum, "add the numbers"),
                              ("mean", cmd_mean, "average the numbers")):
        command = commands.add_parser(name, help=words)
        command.add_argument("numbers", nargs="*", type=float)
        command.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "telemetry":
        return int(args.func(args))  # the consent commands: not recorded
    telemetry.maybe_prompt_for_consent()
    with telemetry.track_command(args.command):
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
