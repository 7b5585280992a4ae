"""Ferry: a small Typer command line with opt-in usage telemetry.

    FERRY_TELEMETRY_ENABLED=1 FERRY_TELEMETRY_ENDPOINT=stdout \
        python examples/typer_cli.py check examples

What it shows:

* one ``ToolTelemetry`` for the tool, with ``FERRY_TELEMETRY_*`` settings;
* the first-run question, asked once at a terminal;
* every command recorded by ``tracked_click_group(TyperGroup)``, the group
  class Typer builds the command line with: the command name, how it ended
  (``typer.Exit(3)`` is a failure with exit code 3), never its arguments;
* ``ferry telemetry status|enable|disable|reset`` mounted with ``typer_app()``.
"""

# Typer reads the annotations of the commands at run time: they stay real types here
# (no `from __future__ import annotations`).
import os
import sys

import typer
from typer.core import TyperGroup

from nat_telemetry import ToolTelemetry

telemetry = ToolTelemetry("ferry", version="0.3.1", display_name="Ferry")

app = typer.Typer(cls=telemetry.tracked_click_group(TyperGroup), add_completion=False,
                  help="Look at folders before carrying them across.")
app.add_typer(telemetry.typer_app(), name="telemetry")  # ferry telemetry ...


@app.command()
def check(folder: str) -> None:
    """Say how many files FOLDER holds; exit 3 when it is not a folder."""
    if not os.path.isdir(folder):
        typer.echo(f"ferry: {folder} is not a folder", err=True)
        raise typer.Exit(3)
    typer.echo(f"{sum(len(files) for _, _, files in os.walk(folder))} files")


@app.command()
def size(folder: str) -> None:
    """Print the total size of FOLDER's files, in bytes."""
    total = sum(os.path.getsize(os.path.join(root, name))
                for root, _, files in os.walk(folder) for name in files)
    typer.echo(f"{total} bytes")


def main() -> None:
    if sys.argv[1:2] != ["telemetry"]:
        telemetry.maybe_prompt_for_consent()
    app(prog_name="ferry")


if __name__ == "__main__":
    main()
