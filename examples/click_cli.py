"""Wordy: a small click command line with opt-in usage telemetry.

    WORDY_TELEMETRY_ENABLED=1 WORDY_TELEMETRY_ENDPOINT=stdout \
        python examples/click_cli.py count README.md

What it shows:

* one ``ToolTelemetry`` for the tool: its name, version and ``WORDY_TELEMETRY_*``
  settings, its own consent file and spool;
* the first-run question, asked once at a terminal (never for the
  ``telemetry`` commands themselves, nor in scripts, pipes or CI);
* every command recorded by the group class from ``tracked_click_group()``:
  ``count`` as the command, ``stats top`` as command and subcommand; the file
  names and numbers typed are never recorded;
* ``wordy telemetry status|enable|disable|reset`` mounted with ``click_group()``.
"""

from __future__ import annotations

import sys
from collections import Counter

import click

from nat_telemetry import ToolTelemetry

telemetry = ToolTelemetry("wordy", version="1.0.0", display_name="Wordy",
                          change_command="wordy telemetry")


def words_of(paths: tuple[str, ...]) -> list[str]:
    words: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as text:
            words += text.read().split()
    return words


@click.group(cls=telemetry.tracked_click_group())
def cli() -> None:
    """Count the words of text files."""


cli.add_command(telemetry.click_group())  # wordy telemetry ...


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def count(paths: tuple[str, ...]) -> None:
    """Print how many words the files hold."""
    click.echo(len(words_of(paths)))


@cli.group()
def stats() -> None:
    """Statistics about the words."""


@stats.command()
@click.option("-n", "how_many", default=3, show_default=True, help="How many words to show.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def top(how_many: int, paths: tuple[str, ...]) -> None:
    """Print the most frequent words."""
    for word, seen in Counter(words_of(paths)).most_common(how_many):
        click.echo(f"{seen} {word}")


@stats.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def longest(paths: tuple[str, ...]) -> None:
    """Print the longest word."""
    words = words_of(paths)
    if not words:
        raise click.ClickException("the files hold no words")
    click.echo(max(words, key=len))


def main() -> None:
    if sys.argv[1:2] != ["telemetry"]:
        telemetry.maybe_prompt_for_consent()
    cli(prog_name="wordy")


if __name__ == "__main__":
    main()
