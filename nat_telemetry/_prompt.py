"""The words of the consent prompt, and of the line that confirms an answer.

Kept apart from :mod:`.consent`, which decides and remembers, so the text a
user agrees to can be read in one place.  A tool built on this package names
itself (``product_name``) and the command that changes the decision
(``change_command``, to which ``enable``, ``disable`` and ``status`` are
appended); the defaults are the NeMo Agent Toolkit's.
"""

from __future__ import annotations

from . import config
from .endpoint import host_of

__all__ = [
    "DEFAULT_CHANGE_COMMAND",
    "DEFAULT_PRODUCT_NAME",
    "MAX_ATTEMPTS",
    "QUESTION",
    "ask_again",
    "clean",
    "confirmation",
    "destination",
    "prompt_text",
]

DEFAULT_PRODUCT_NAME = "NeMo Agent Toolkit"
DEFAULT_CHANGE_COMMAND = "nat-telemetry"
# Answers that are neither yes, no nor empty ask again; after this many in
# all, the answer counts as no.
MAX_ATTEMPTS = 3
QUESTION = "Allow anonymous usage telemetry? [Y/n]: "
_MAX_NAME_LENGTH = 80
_WIDTH = 76


def clean(text: str | None, default: str) -> str:
    """``text`` as one printable line of at most 80 characters; ``default`` when empty.

    The names come from a tool's code or command line and end up on a
    terminal: control characters could move the cursor or hide the question.
    """
    if text is None:
        return default
    printable = "".join(c if c.isprintable() else " " for c in str(text))
    flat = " ".join(printable.split())[:_MAX_NAME_LENGTH].strip()
    return flat or default


def destination(endpoint: str, dry_run: bool) -> str:
    """Where events would go, in a few words: a host name, or why nowhere."""
    if not endpoint:
        return "nowhere (no endpoint is set, so nothing is sent)"
    if endpoint == config.STDOUT_ENDPOINT_SENTINEL:
        return "nowhere (each report is only printed on this terminal)"
    host = host_of(endpoint)
    if host is None:
        return "nowhere (the endpoint set cannot be used)"
    if dry_run:
        return f"nowhere for now (dry run; it would go to {host})"
    return host


def _fill(text: str) -> str:
    import textwrap  # only when a person is actually being asked

    return textwrap.fill(text, width=_WIDTH, break_on_hyphens=False, break_long_words=False)


def prompt_text(product_name: str, change_command: str, where: str) -> str:
    """The whole question, ending where the user types the answer."""
    cmd = change_command
    return (
        "\n"
        + _fill(f"{product_name} can send anonymous usage telemetry to help its "
                "developers learn which commands are used and how they fail.")
        + "\n\n"
        "If you allow it, each command reports only:\n"
        "  - the command and subcommand names;\n"
        "  - the outcome (success, failure or interrupted), duration and exit code;\n"
        "  - the class name of an exception, without its message;\n"
        "  - the Python version.\n"
        "Each report also carries a random session id (new for every run),\n"
        "timestamps, the CPU architecture and the client version (the version\n"
        "of the telemetry package).\n"
        "\n"
        "It never includes arguments, option values, file paths, messages,\n"
        "configuration contents, hostnames, user names, IP addresses or any\n"
        "other input of yours.\n"
        "\n"
        + _fill(f"Where it goes: {where}.")
        + "\n\n"
        # Line breaks by hand: a wrapped command would be split mid-way.
        + f"You can change your mind at any time with `{cmd} enable` or\n"
        f"`{cmd} disable` (check with `{cmd} status`), or set\n"
        f"{config.TELEMETRY_ENV_VAR}=true|false, which overrides the saved choice.\n"
        "\nPressing Enter means yes.\n"
        + QUESTION
    )


def ask_again(attempt: int) -> str:
    """The short question after an answer that was neither yes nor no."""
    left = MAX_ATTEMPTS - attempt
    last = " (last try: an unclear answer counts as no)" if left == 1 else ""
    return f"Please answer y (yes) or n (no); Enter means yes{last}.\n{QUESTION}"


def confirmation(enabled: bool, saved: bool, path: str, product_name: str,
                 change_command: str) -> str:
    """The one line that follows an answer: what was saved, and how to change it."""
    word = "on" if enabled else "off"
    other = "disable" if enabled else "enable"
    if saved:
        return (f"Saved: anonymous usage telemetry is {word} for {product_name} (in {path}). "
                f"Change it any time with `{change_command} {other}`.")
    return (f"Could not save your answer to {path or 'a consent file'}: telemetry is {word} "
            f"for this run only, and you will be asked again; `{change_command} {other}` "
            "changes it.")
