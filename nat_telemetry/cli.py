"""The ``nat-telemetry`` command line (also ``python -m nat_telemetry``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import collector_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nat-telemetry",
        description="Manage and exercise anonymous, opt-in usage telemetry.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    collector_cli.register(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
