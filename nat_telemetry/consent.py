"""Asking for, remembering and honouring the user's telemetry decision.

Telemetry is opt-in, so everything here leans towards "off": a consent file
that is missing, damaged or written by an unknown version never turns
telemetry on; a "no" recorded under older prompt wording is kept, while a
"yes" given to older wording is asked again, because the user agreed to a
text they may no longer be shown.

The prompt is only shown when a person is plainly at a terminal (stdin,
stdout and stderr are all TTYs), so scripts, pipes and CI never block on it,
and it is written to stderr so it never mixes with a command's real output.

The decision is stored as a small TOML file, replaced atomically so that a
crash or a concurrent writer can never leave half a file behind, and kept
private (0600) because it is the user's own setting.  Nothing here may break
the command that uses it: reading never raises, writing reports failure by
returning ``False``, and the prompt swallows its own errors.

Where the file lives, how it is read and what it counts as are written once,
in :mod:`._consent_file`, which a command line with telemetry off runs without
importing this module; this one adds the public types, the writer and the
prompt.  TOML goes through :mod:`._toml`: ``tomllib``/``tomli`` and ``tomli-w``
when they are importable, a small built-in reader and writer otherwise, so a
copy of this package vendored without its dependencies keeps the same
behaviour.  The file as written here is read without any of them.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from . import _consent_file, _log, _prompt, _toml, config
from ._consent_file import PROMPT_VERSION
from ._prompt import DEFAULT_CHANGE_COMMAND, DEFAULT_PRODUCT_NAME

__all__ = [
    "CONSENT_FILE_ENV_VAR",
    "DEFAULT_CHANGE_COMMAND",
    "DEFAULT_PRODUCT_NAME",
    "PROMPT_VERSION",
    "TELEMETRY_ENV_VAR",
    "ConsentRecord",
    "ConsentState",
    "Decision",
    "consent_file_path",
    "is_interactive_session",
    "maybe_prompt_for_consent",
    "prompt_user",
    "read_consent_record",
    "read_persisted_consent",
    "render_prompt",
    "resolve_consent",
    "resolve_env_consent",
    "resolve_initial_consent",
    "write_persisted_consent",
]

TELEMETRY_ENV_VAR = config.TELEMETRY_ENV_VAR
CONSENT_FILE_ENV_VAR = config.CONSENT_FILE_ENV_VAR
# PROMPT_VERSION (imported above) lives in _consent_file, which both the gate
# and the writer read: a test changing it patches _consent_file.PROMPT_VERSION.

_FILE_HEADER = (
    "# Anonymous usage telemetry consent for {product}.\n"
    "# Change it with `{cmd} enable` or `{cmd} disable`\n"
    "# (see `{cmd} status`); the NAT_TELEMETRY_ENABLED environment\n"
    "# variable (true/false), when set, overrides what this file says.\n"
    "\n"
)


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
    """What the consent file says, and what it counts as.

    ``state`` is the decision it stands for (the prompt-version gate applied);
    ``consent`` and ``prompt_version`` are the raw values found (None when
    absent); ``why`` explains, in words, a file that does not count as written.
    """

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


def consent_file_path(consent_file: str | os.PathLike[str] | None = None) -> Path:
    """Where the consent decision lives.

    ``consent_file``, when given (a tool keeping its decision in a file of its
    own); else ``NAT_TELEMETRY_CONSENT_FILE`` when set and non-empty; otherwise
    ``$XDG_CONFIG_HOME/nat/telemetry.toml`` with the XDG default of
    ``~/.config`` (a relative ``$XDG_CONFIG_HOME`` is ignored, as the spec
    says); a leading ``~`` is expanded.  May raise ``RuntimeError`` when no
    home folder can be determined; the readers and writers below treat that as
    any other failure.
    """
    return Path(_consent_file.location(consent_file))


def resolve_env_consent() -> bool | None:
    """The environment's verdict, or ``None`` when the variable is unset.

    A set-but-empty variable counts as "off": the user touched the switch, and
    an opt-in system must not read an ambiguous answer as a yes.
    """
    value = os.environ.get(TELEMETRY_ENV_VAR)
    if value is None:
        return None
    return config.is_truthy(value)


def read_consent_record(consent_file: str | os.PathLike[str] | None = None) -> ConsentRecord:
    """Read the consent file and apply the prompt-version gate; never raises.

    A broken file must cost the user at most one more prompt, so anything
    unreadable, malformed or unknown counts as ``NEVER_ASKED``.  ``consent_file``
    as in :func:`consent_file_path`.
    """
    state, path, exists, consent, version, why = _consent_file.read_record(consent_file)
    return ConsentRecord(ConsentState(state), path, exists, consent, version, why)


def read_persisted_consent() -> ConsentState:
    """The decision stored on disk; ``NEVER_ASKED`` whenever it is unusable."""
    return read_consent_record().state


def _consent_file_path() -> Path:
    # The name the seed's own command line imports.
    return consent_file_path()


def _render_consent_file(state: ConsentState, product_name: str = DEFAULT_PRODUCT_NAME,
                         change_command: str = DEFAULT_CHANGE_COMMAND) -> str:
    document = {
        "telemetry": {
            "consent": state.value,
            "consented_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prompt_version": _consent_file.PROMPT_VERSION,
        }
    }
    # TOML writers emit no comments, so the explanatory header is prepended.
    # tomli-w when installed, else the built-in writer: the same bytes either way.
    header = _FILE_HEADER.format(product=_prompt.clean(product_name, DEFAULT_PRODUCT_NAME),
                                 cmd=_prompt.clean(change_command, DEFAULT_CHANGE_COMMAND))
    return header + _toml.dumps(document)


def _make_private_dirs(folder: Path) -> None:
    # Path.mkdir(parents=True) applies the mode to the last folder only; each
    # folder we create (e.g. a missing ~/.config) should be private too, as
    # the XDG spec asks.
    missing = []
    current = folder
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        # Another process may create it first; that is fine.
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder,
    # and the data is already safe, so failure here is not an error.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_persisted_consent(
    state: ConsentState | str,
    consent_file: str | os.PathLike[str] | None = None,
    *,
    product_name: str = DEFAULT_PRODUCT_NAME,
    change_command: str = DEFAULT_CHANGE_COMMAND,
) -> bool:
    """Store ``state``; ``True`` when it reached the disk, ``False`` otherwise.

    ``consent_file`` as in :func:`consent_file_path`; ``product_name`` and
    ``change_command`` only shape the comment at the top of the file.
    ``NEVER_ASKED`` is not a decision, so nothing is written for it.  Failures
    are logged at debug level and never raised: a read-only home folder must
    not break the command, it only means the user may be asked again.
    """
    tmp_name: str | None = None
    try:
        state = ConsentState(state)
        if state is ConsentState.NEVER_ASKED:
            return False
        content = _render_consent_file(state, product_name, change_command).encode("utf-8")
        path = consent_file_path(consent_file)
        folder = path.parent
        _make_private_dirs(folder)
        # Same folder as the target so os.replace is a rename within one
        # filesystem, which is what makes it atomic.
        fd, tmp_name = tempfile.mkstemp(prefix=".telemetry-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp_name, 0o600)
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_folder(folder)
        return True
    except Exception as exc:
        _log.debug("could not save telemetry consent: %r", exc)
        return False
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def is_interactive_session() -> bool:
    """True only when stdin, stdout and stderr are all terminals.

    All three, because a command whose output is piped or whose input is
    scripted has no person ready to answer, and a prompt would hang it.
    """
    try:
        streams = (sys.stdin, sys.stdout, sys.stderr)
        return all(s is not None and s.isatty() is True for s in streams)
    except Exception:  # closed or exotic stream objects: assume no person
        return False


def render_prompt(*, product_name: str = DEFAULT_PRODUCT_NAME,
                  change_command: str = DEFAULT_CHANGE_COMMAND) -> str:
    """The consent question, ending where the user types the answer.

    Names ``product_name`` as the one asking, ``change_command`` (followed by
    ``enable``/``disable``/``status``) as the way to change the decision, and
    where the data goes under the current configuration: the endpoint's host,
    or "nowhere" when nothing would be sent.
    """
    where = _prompt.destination(config.NAT_TELEMETRY_ENDPOINT, config.NAT_TELEMETRY_DRY_RUN)
    return _prompt.prompt_text(_prompt.clean(product_name, DEFAULT_PRODUCT_NAME),
                               _prompt.clean(change_command, DEFAULT_CHANGE_COMMAND), where)


def _say(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def prompt_user(*, product_name: str = DEFAULT_PRODUCT_NAME,
                change_command: str = DEFAULT_CHANGE_COMMAND,
                raise_on_interrupt: bool = False) -> ConsentState:
    """Ask on the terminal and turn the answer into a decision.

    Enter, ``y`` or ``yes`` (any case) is consent; ``n`` or ``no`` is not; any
    other answer asks again, and after three such answers counts as no.  A
    closed input means the user did not agree, and so does Ctrl-C, unless
    ``raise_on_interrupt``: then ``KeyboardInterrupt`` reaches the caller.
    """
    try:
        _say(render_prompt(product_name=product_name, change_command=change_command))
        return _read_answer()
    except KeyboardInterrupt:
        _say("\n")  # the cursor on a fresh line for whatever comes next
        if raise_on_interrupt:
            raise
        return ConsentState.DISABLED


def _read_answer() -> ConsentState:
    for attempt in range(1, _prompt.MAX_ATTEMPTS + 1):
        try:
            answer = input().strip().lower()
        except EOFError:
            _say("\n")
            return ConsentState.DISABLED
        if answer in ("", "y", "yes"):
            return ConsentState.ENABLED
        if answer in ("n", "no"):
            return ConsentState.DISABLED
        if attempt < _prompt.MAX_ATTEMPTS:
            _say(_prompt.ask_again(attempt))
    _say(f"No clear answer after {_prompt.MAX_ATTEMPTS} tries: counted as no.\n")
    return ConsentState.DISABLED


def resolve_consent(consent_file: str | os.PathLike[str] | None = None) -> Decision:
    """Whether telemetry is on, and the rule that decided.

    In order: ``DO_NOT_TRACK`` (always off); ``NAT_TELEMETRY_ENABLED`` when set;
    in a CI run, off (only the variable can turn it on there); the consent
    file (``consent_file`` as in :func:`consent_file_path`); off by default.
    """
    return Decision(*_consent_file.decide(consent_file))


def resolve_initial_consent() -> bool:
    """Whether telemetry starts enabled (see :func:`resolve_consent`)."""
    return resolve_consent().enabled


def maybe_prompt_for_consent(
    *,
    product_name: str = DEFAULT_PRODUCT_NAME,
    change_command: str = DEFAULT_CHANGE_COMMAND,
    consent_file: str | os.PathLike[str] | None = None,
    raise_on_interrupt: bool = False,
) -> None:
    """Ask the user, once, if nobody has decided yet and someone can answer.

    Does nothing when the environment already decides (``DO_NOT_TRACK``,
    ``NAT_TELEMETRY_ENABLED``, a CI run), when a decision is stored, or when
    there is no terminal.  The answer is saved, confirmed in one line, and
    applied to this process at once through ``config.TELEMETRY_ENABLED``.

    ``product_name`` and ``change_command`` are what the prompt names (see
    :func:`render_prompt`).  ``consent_file`` keeps the decision in a file of
    the caller's own instead of the shared one; this call then also applies
    whatever that file (or the environment) decides to ``config.TELEMETRY_ENABLED``,
    so a tool calls it once, early, whether or not anyone is asked.

    Ctrl-C at the prompt saves "no"; with ``raise_on_interrupt`` it then raises
    ``KeyboardInterrupt`` so the caller can stop (``nat-telemetry run`` exits
    130).  Otherwise never raises: consent handling must not break the command
    it is attached to.
    """
    interrupted = False
    try:
        if consent_file is not None:
            # The shared resolution reads another file: apply this one's verdict.
            config.TELEMETRY_ENABLED = resolve_consent(consent_file).enabled
        if config.environment_decision() is not None:
            return
        # Cheap check before touching the disk: most non-interactive runs
        # (CI, pipes) stop here.
        if not is_interactive_session():
            return
        if read_consent_record(consent_file).state is not ConsentState.NEVER_ASKED:
            return
        try:
            state = prompt_user(product_name=product_name, change_command=change_command,
                                raise_on_interrupt=True)
        except KeyboardInterrupt:
            state, interrupted = ConsentState.DISABLED, True
        # Apply first: a failed save still honours the answer for this run.
        config.TELEMETRY_ENABLED = state is ConsentState.ENABLED
        saved = write_persisted_consent(state, consent_file, product_name=product_name,
                                        change_command=change_command)
        try:
            shown = str(consent_file_path(consent_file))
        except Exception:  # no home folder: the save failed for the same reason
            shown = ""
        _say(_prompt.confirmation(
            state is ConsentState.ENABLED, saved, shown,
            _prompt.clean(product_name, DEFAULT_PRODUCT_NAME),
            _prompt.clean(change_command, DEFAULT_CHANGE_COMMAND)) + "\n")
    except Exception as exc:
        _log.debug("consent prompt failed: %r", exc)
    if interrupted and raise_on_interrupt:
        raise KeyboardInterrupt
