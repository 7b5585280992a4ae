"""Command-line entry points of the local collector (collect, report, demo)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: "argparse._SubParsersAction[Any]") -> None:
    """Add the collector's subcommands to the ``nat-telemetry`` parser."""
