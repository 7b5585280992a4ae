"""theirtool's command line, instrumented with its vendored copy of nat_telemetry.

    python examples/vendored/vendor.py
    cd examples/vendored
    THEIRTOOL_TELEMETRY_ENABLED=1 THEIRTOOL_TELEMETRY_ENDPOINT=stdout \
        python -m theirtool hello world

The copy is imported by its new name, ``theirtool._vendor.nat_telemetry``, and
needs nothing installed: ``python -S -m theirtool`` (no site-packages at all)
works the same, sending with the standard library's HTTP client.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from theirtool import __version__
from theirtool._vendor.nat_telemetry import ToolTelemetry

telemetry = ToolTelemetry("theirtool", version=__version__, display_name="theirtool",
                          change_command="theirtool telemetry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="theirtool", description="Say hello.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    telemetry.add_argparse_commands(commands)  # theirtool telemetry ...
    hello = commands.add_parser("hello", help="greet someone")
    hello.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "telemetry":
        return int(args.func(args))
    telemetry.maybe_prompt_for_consent()
    with telemetry.track_command("hello"):
        print(f"hello, {args.name}")
    return 0
