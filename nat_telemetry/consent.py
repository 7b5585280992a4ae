"""Asking for, remembering and honouring the user's telemetry decision.

Telemetry is opt-in, so everything here leans towards "off": a consent file that
is missing, damaged or written by an unknown version never turns it on; a "no"
given to older prompt wording stands, while a "yes" is asked again, because the
user agreed to a text they may no longer be shown.  Where the file lives and how
it is read are the tool's settings (:class:`~.config.Tool`; every function takes
``tool``, by default the NeMo Agent Toolkit, and ``consent_file`` overrides the
place); this module adds the public types, the writer and the prompt.

The prompt is shown, on stderr, only when stdin, stdout and stderr are all
terminals, so scripts, pipes and CI never block on it.  Nothing here may break
the command that uses it: reading never raises, writing returns ``False`` on
failure, and the prompt swallows its own errors.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import NamedTuple

from . import _process, config
from .config import CONSENT_FILE_ENV_VAR, PROMPT_VERSION, TELEMETRY_ENV_VAR

__all__ = [
    "CONSENT_FILE_ENV_VAR", "DEFAULT_CHANGE_COMMAND", "DEFAULT_PRODUCT_NAME", "PROMPT_VERSION",
    "TELEMETRY_ENV_VAR", "ConsentRecord", "ConsentState", "Decision", "consent_file_path",
    "is_interactive_session", "maybe_prompt_for_consent", "prompt_user", "read_consent_record",
    "read_persisted_consent", "render_prompt", "resolve_consent", "resolve_env_consent",
    "resolve_initial_consent", "write_persisted_consent",
]

DEFAULT_PRODUCT_NAME = "NeMo Agent Toolkit"
DEFAULT_CHANGE_COMMAND = "nat-telemetry"
# Answers that are neither yes, no nor empty ask again; after this many, it is no.
MAX_ATTEMPTS = 3
QUESTION = "Allow anonymous usage telemetry? [Y/n]: "
_MAX_NAME_LENGTH = 80
_WIDTH = 76


class ConsentState(str, enum.Enum):
    """The user's recorded telemetry decision."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    NEVER_ASKED = "never_asked"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


class ConsentRecord(NamedTuple):
    """What the consent file says: ``state``, the decision it counts as (the
    prompt-version gate applied); ``consent`` and ``prompt_version`` as found (None
    when absent); ``why``, in words, a file that does not count as written."""

    state: ConsentState
    path: str
    exists: bool
    consent: str | None = None
    prompt_version: str | None = None
    why: str = ""


class Decision(NamedTuple):
    """Whether telemetry is on, which rule decided, and the detail of that rule."""

    enabled: bool
    rule: str  # "DO_NOT_TRACK", "CI", "environment", "consent file" or "default"
    detail: str


def _tool(tool: config.Tool | None) -> config.Tool:
    return config.NAT if tool is None else tool


def consent_file_path(consent_file: str | os.PathLike[str] | None = None, *,
                      tool: config.Tool | None = None) -> Path:
    """Where the decision lives (see :meth:`.config.Tool.consent_file`)."""
    return Path(_tool(tool).consent_file(consent_file))


_consent_file_path = consent_file_path  # the name the original's command line imports


def resolve_env_consent(*, tool: config.Tool | None = None) -> bool | None:
    """The variable's verdict, or None when unset (set but empty counts as "off")."""
    value = os.environ.get(_tool(tool).var("ENABLED"))
    return None if value is None else config.is_truthy(value)


def read_consent_record(consent_file: str | os.PathLike[str] | None = None, *,
                        tool: config.Tool | None = None) -> ConsentRecord:
    """The consent file, read and gated; never raises (anything unusable counts as
    ``NEVER_ASKED``)."""
    state, path, exists, consent, version, why = _tool(tool).read_consent(consent_file)
    return ConsentRecord(ConsentState(state), path, exists, consent, version, why)


def read_persisted_consent(consent_file: str | os.PathLike[str] | None = None, *,
                           tool: config.Tool | None = None) -> ConsentState:
    """The decision stored on disk; ``NEVER_ASKED`` whenever it is unusable."""
    return read_consent_record(consent_file, tool=tool).state


def resolve_consent(consent_file: str | os.PathLike[str] | None = None, *,
                    tool: config.Tool | None = None) -> Decision:
    """Whether telemetry is on, and the rule that decided (see :mod:`.config`)."""
    return Decision(*_tool(tool).decide(consent_file))


def resolve_initial_consent() -> bool:
    """Whether telemetry starts enabled (see :func:`resolve_consent`)."""
    return resolve_consent().enabled


# ------------------------------------------------------------------ writing

_SHORT_ESCAPES = {"\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _toml_string(text: str) -> str:
    """A TOML basic string, escaped as the spec requires and as tomli-w writes it."""
    escaped = "".join(_SHORT_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if (
        c < " " and c != "\t") or c == "\x7f" else c) for c in text)
    return f'"{escaped}"'


def toml_dumps(table: dict[str, str]) -> str:
    """``[telemetry]`` with ``table``'s strings: tomli-w's bytes, by hand without it
    (a vendored copy may not have it)."""
    try:
        import tomli_w
    except ImportError:
        return "[telemetry]\n" + "".join(f"{k} = {_toml_string(v)}\n" for k, v in table.items())
    text: str = tomli_w.dumps({"telemetry": table})
    return text


def _clean(text: str | None, default: str) -> str:
    """``text`` as one printable line of at most 80 characters; ``default`` when
    empty (a name from a tool's code or command line must not drive the terminal)."""
    if text is None:
        return default
    printable = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(printable.split())[:_MAX_NAME_LENGTH].strip() or default


def _render_consent_file(state: ConsentState, product_name: str, change_command: str,
                         tool: config.Tool) -> str:
    from datetime import datetime, timezone

    cmd = _clean(change_command, DEFAULT_CHANGE_COMMAND)
    header = (f"# Anonymous usage telemetry consent for "
              f"{_clean(product_name, DEFAULT_PRODUCT_NAME)}.\n"
              f"# Change it with `{cmd} enable` or `{cmd} disable`\n"
              f"# (see `{cmd} status`); the {tool.var('ENABLED')} environment\n"
              "# variable (true/false), when set, overrides what this file says.\n\n")
    return header + toml_dumps({
        "consent": state.value,
        "consented_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "prompt_version": config.PROMPT_VERSION,  # read live: it may be reassigned
    })


def write_persisted_consent(state: ConsentState | str,
                            consent_file: str | os.PathLike[str] | None = None, *,
                            product_name: str = DEFAULT_PRODUCT_NAME,
                            change_command: str = DEFAULT_CHANGE_COMMAND,
                            tool: config.Tool | None = None) -> bool:
    """Store ``state`` (not ``NEVER_ASKED``, which is no decision); True when it reached
    the disk, else False, logged at debug level: a read-only home must not break the
    command.  ``product_name`` and ``change_command`` shape the file's comment."""
    import tempfile

    tmp_name: str | None = None
    try:
        state = ConsentState(state)
        if state is ConsentState.NEVER_ASKED:
            return False
        content = _render_consent_file(state, product_name, change_command, _tool(tool))
        path = consent_file_path(consent_file, tool=tool)
        folder = path.parent
        for created in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
            try:  # each folder made here private, as XDG asks
                created.mkdir(mode=0o700)
            except FileExistsError:
                pass
        # In the target's folder, so that os.replace is an atomic rename.
        fd, tmp_name = tempfile.mkstemp(prefix=".telemetry-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as writer:
            os.chmod(tmp_name, 0o600)
            writer.write(content.encode("utf-8"))
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        try:  # the rename itself durable, where a folder can be opened
            folder_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)
        except OSError:
            pass
        return True
    except Exception as exc:
        _process.debug("could not save telemetry consent: %r", exc)
        return False
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


# ------------------------------------------------------------------ the prompt

def is_interactive_session() -> bool:
    """True only when stdin, stdout and stderr are all terminals: a command whose
    output is piped or whose input is scripted has nobody ready to answer."""
    try:
        return all(s is not None and s.isatty() is True
                   for s in (sys.stdin, sys.stdout, sys.stderr))
    except Exception:  # closed or exotic stream objects: assume no person
        return False


def _where(tool: config.Tool) -> str:
    """Where events would go, in a few words: a host name, or why nowhere."""
    endpoint = tool.endpoint
    if not endpoint:
        return "nowhere (no endpoint is set, so nothing is sent)"
    if endpoint == config.STDOUT_ENDPOINT_SENTINEL:
        return "nowhere (each report is only printed on this terminal)"
    host = config.host_of(endpoint)
    if host is None:
        return "nowhere (the endpoint set cannot be used)"
    return f"nowhere for now (dry run; it would go to {host})" if tool.dry_run else host


def _fill(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=_WIDTH, break_on_hyphens=False, break_long_words=False)


def render_prompt(*, product_name: str = DEFAULT_PRODUCT_NAME,
                  change_command: str = DEFAULT_CHANGE_COMMAND,
                  tool: config.Tool | None = None) -> str:
    """The consent question, ending where the answer is typed: who asks, what is
    collected, where it goes now, and how to change the decision later."""
    tool = _tool(tool)
    name = _clean(product_name, DEFAULT_PRODUCT_NAME)
    cmd = _clean(change_command, DEFAULT_CHANGE_COMMAND)
    return (
        "\n"
        + _fill(f"{name} can send anonymous usage telemetry to help its developers "
                "learn which commands are used and how they fail.")
        + "\n\n"
        "If you allow it, each command reports only:\n"
        "  - the command and subcommand names;\n"
        "  - the outcome (success, failure or interrupted), duration and exit code;\n"
        "  - the class name of an exception, without its message;\n"
        "  - the Python version.\n"
        "Each report also carries a random session id (new for every run),\n"
        "timestamps, the CPU architecture and the client version.\n"
        "\n"
        "It never includes arguments, option values, file paths, messages,\n"
        "configuration contents, hostnames, user names, IP addresses or any\n"
        "other input of yours.\n"
        "\n"
        + _fill(f"Where it goes: {_where(tool)}.")
        + "\n\n"
        # Line breaks by hand: a wrapped command would be split mid-way.
        + f"You can change your mind at any time with `{cmd} enable` or\n"
        f"`{cmd} disable` (check with `{cmd} status`), or set\n"
        f"{tool.var('ENABLED')}=true|false, which overrides the saved choice;\n"
        f"{config.DO_NOT_TRACK_ENV_VAR}=1 turns it off for every tool.\n"
        "\nPressing Enter means yes.\n"
        + QUESTION
    )


def _say(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def prompt_user(*, product_name: str = DEFAULT_PRODUCT_NAME,
                change_command: str = DEFAULT_CHANGE_COMMAND,
                raise_on_interrupt: bool = False,
                tool: config.Tool | None = None) -> ConsentState:
    """Ask on the terminal: Enter, ``y`` or ``yes`` (any case) is consent; ``n`` or
    ``no`` is not; another answer asks again, and after three counts as no.  A
    closed input is a no, and so is Ctrl-C, unless ``raise_on_interrupt``: then
    ``KeyboardInterrupt`` reaches the caller."""
    try:
        _say(render_prompt(product_name=product_name, change_command=change_command,
                           tool=tool))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                answer = input().strip().lower()
            except EOFError:
                _say("\n")
                return ConsentState.DISABLED
            if answer in ("", "y", "yes"):
                return ConsentState.ENABLED
            if answer in ("n", "no"):
                return ConsentState.DISABLED
            if attempt < MAX_ATTEMPTS:
                last = " (last try: an unclear answer counts as no)" if (
                    attempt == MAX_ATTEMPTS - 1) else ""
                _say(f"Please answer y (yes) or n (no); Enter means yes{last}.\n{QUESTION}")
        _say(f"No clear answer after {MAX_ATTEMPTS} tries: counted as no.\n")
        return ConsentState.DISABLED
    except KeyboardInterrupt:
        _say("\n")  # the cursor on a fresh line for whatever comes next
        if raise_on_interrupt:
            raise
        return ConsentState.DISABLED


def _confirmation(enabled: bool, saved: bool, path: str, product_name: str,
                  change_command: str) -> str:
    """The one line that follows an answer: what was saved, and how to change it."""
    word, other = ("on", "disable") if enabled else ("off", "enable")
    if saved:
        return (f"Saved: anonymous usage telemetry is {word} for {product_name} (in {path}). "
                f"Change it any time with `{change_command} {other}`.")
    return (f"Could not save your answer to {path or 'a consent file'}: telemetry is {word} "
            f"for this run only, and you will be asked again; `{change_command} {other}` "
            "changes it.")


def maybe_prompt_for_consent(
    *,
    product_name: str = DEFAULT_PRODUCT_NAME,
    change_command: str = DEFAULT_CHANGE_COMMAND,
    consent_file: str | os.PathLike[str] | None = None,
    raise_on_interrupt: bool = False,
    tool: config.Tool | None = None,
) -> None:
    """Ask the user, once, when neither the environment nor a saved decision has
    decided and someone is at a terminal.  The answer is saved, confirmed in one
    line, and applied to this process at once.  With ``consent_file`` (a file of
    the caller's own), what that file or the environment decides is applied too,
    so a tool calls this once, early, asked or not.

    Ctrl-C at the prompt saves "no"; with ``raise_on_interrupt`` it then raises
    ``KeyboardInterrupt`` so the caller can stop.  Otherwise never raises.
    """
    tool = _tool(tool)
    interrupted = False
    try:
        if consent_file is not None:
            tool.enabled = tool.decide(consent_file)[0]
        decided = config.environment_decision(tool.var("ENABLED"))
        if (decided is not None or not is_interactive_session()
                or read_persisted_consent(consent_file, tool=tool) is not ConsentState.NEVER_ASKED):
            return
        try:
            state = prompt_user(product_name=product_name, change_command=change_command,
                                raise_on_interrupt=True, tool=tool)
        except KeyboardInterrupt:
            state, interrupted = ConsentState.DISABLED, True
        # Apply first: a failed save still honours the answer for this run.
        tool.enabled = state is ConsentState.ENABLED
        saved = write_persisted_consent(state, consent_file, product_name=product_name,
                                        change_command=change_command, tool=tool)
        try:
            shown = str(consent_file_path(consent_file, tool=tool))
        except Exception:  # no home folder: the save failed for the same reason
            shown = ""
        _say(_confirmation(state is ConsentState.ENABLED, saved, shown,
                           _clean(product_name, DEFAULT_PRODUCT_NAME),
                           _clean(change_command, DEFAULT_CHANGE_COMMAND)) + "\n")
    except Exception as exc:
        _process.debug("consent prompt failed: %r", exc)
    if interrupted and raise_on_interrupt:
        raise KeyboardInterrupt
