"""Where the consent decision is stored, and what the stored file says.

This is the part of consent that a command line with telemetry off runs, on
every invocation, when the environment does not decide: a user who was never
asked (no file) or who said no.  So it imports nothing but :mod:`os`,
:mod:`stat` and :mod:`.config` (no :mod:`pathlib`, :mod:`typing`,
:mod:`tomllib`...): paths are plain strings, states plain strings, a record
a plain tuple.  :mod:`.consent` builds its public API (``Path``,
``ConsentState``, ``ConsentRecord``) on top of it.

The file is read by a small reader of exactly the lines
:func:`.consent.write_persisted_consent` writes: comments, blank lines, one
``[telemetry]`` header and ``key = "string without escapes"`` lines.  Any
other text (a hand-edited file, escapes, other tables, a CR, control
characters...) goes to the full TOML reader of :mod:`._toml`, so the result is
always what a TOML parser says, and the common file costs no TOML import.
"""

from __future__ import annotations

import os
import stat

from . import config

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    # (state, path, exists, consent, prompt_version, why): see ConsentRecord.
    Record = tuple[str, str, bool, str | None, str | None, str]

__all__ = [
    "DISABLED",
    "ENABLED",
    "MAX_FILE_BYTES",
    "NEVER_ASKED",
    "PROMPT_VERSION",
    "decide",
    "fast_loads",
    "loads",
    "location",
    "read_record",
    "read_text",
]

# Bump whenever the prompt text changes what the user is agreeing to: earlier
# "enabled" answers are then asked again (see read_record).  The one home of
# the value: the writer in consent and the gate here both read it from here.
PROMPT_VERSION = "1.0"

# The real file is a few hundred bytes; anything far larger is not ours, and
# reading it whole could cost the command real time and memory.
MAX_FILE_BYTES = 64 * 1024

# The values of consent.ConsentState.
ENABLED = "enabled"
DISABLED = "disabled"
NEVER_ASKED = "never_asked"


# ------------------------------------------------------------------ location

def _normalized(path: str) -> str:
    """``str(pathlib.Path(path))``: the path as consent shows and opens it."""
    if os.sep != "/":  # Windows' drives and separators: leave them to pathlib
        from pathlib import PurePath

        return str(PurePath(path))
    # POSIX: empty and "." parts go, ".." stays; exactly two leading slashes
    # are a root of their own.
    root = "/" if path.startswith("/") else ""
    if path.startswith("//") and not path.startswith("///"):
        root = "//"
    parts = [part for part in path.split("/") if part and part != "."]
    return root + "/".join(parts) or "."


def _joined(base: str, *names: str) -> str:
    if os.sep != "/":
        from pathlib import PurePath

        return str(PurePath(base, *names))
    base = _normalized(base)
    return base + ("" if base.endswith("/") else "/") + "/".join(names)


def _expanded(path: str) -> str:
    """``str(pathlib.Path(path).expanduser())``, raising RuntimeError as it does."""
    path = _normalized(path)
    if not path.startswith("~"):
        return path
    first, _, rest = path.partition(os.sep)
    home = os.path.expanduser(first)
    if home.startswith("~"):  # no home folder known (or no such user)
        raise RuntimeError("Could not determine home directory.")
    return _joined(home, rest) if rest else _normalized(home)


def location(consent_file: str | os.PathLike[str] | None = None) -> str:
    """Where the consent decision lives (see :func:`.consent.consent_file_path`).

    ``consent_file`` when given and non-empty; else ``NAT_TELEMETRY_CONSENT_FILE``
    when set and non-empty; else ``$XDG_CONFIG_HOME/nat/telemetry.toml`` when
    that is an absolute path; else ``~/.config/nat/telemetry.toml``.  A leading
    ``~`` is expanded; ``RuntimeError`` when no home folder can be determined.
    """
    if consent_file is not None:
        given = os.fspath(consent_file)
        if not isinstance(given, str):
            raise TypeError(f"expected a str path, got {type(given).__name__}")
        if given:
            return _expanded(given)
    override = os.environ.get(config.CONSENT_FILE_ENV_VAR)
    if override:
        return _expanded(override)
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored; using
    # one would scatter consent files over whatever the current folder is.
    base = xdg if xdg and os.path.isabs(xdg) else _joined(_expanded("~"), ".config")
    return _joined(base, "nat", "telemetry.toml")


# ------------------------------------------------------------------ reading

def read_text(path: str) -> str | None:
    """The file's text; None when it is not a regular file of a sane size.

    Raises ``OSError`` (``FileNotFoundError`` when there is no file) and
    ``UnicodeDecodeError``.
    """
    # O_NONBLOCK keeps a FIFO planted at the path from hanging the command on
    # open(); fstat on the opened descriptor then rejects anything that is not
    # a regular file without a check-then-open race.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return None
    return data.decode("utf-8")


_BARE_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TABLE = "telemetry"
_HEADER = f"[{_TABLE}]"


def fast_loads(text: str) -> dict[str, Any] | None:
    """The document, when ``text`` is made only of the lines the writer uses; else None.

    Accepted, line by line (LF only): blank lines, comments, the header
    ``[telemetry]`` once, and below it ``key = "value"`` with a bare key, a
    string without escapes and an optional ``# comment``; spaces around the
    tokens.  Every line must be printable (no tabs, no control characters).
    Whatever it accepts, a TOML parser reads the same way; None means "ask
    one" (:func:`loads`), never "invalid".
    """
    document: dict[str, Any] = {}
    table: dict[str, str] | None = None
    for raw in text.split("\n"):
        line = raw.strip(" ")
        if not line:
            continue
        if not line.isprintable():  # tabs, CR, control characters, BOM...
            return None
        if line[0] == "#":
            continue
        if line == _HEADER:
            if _TABLE in document:
                return None
            table = document[_TABLE] = {}
            continue
        if table is None:  # a header of another form, or keys at the root
            return None
        key, equals, rest = line.partition("=")
        key = key.rstrip(" ")
        if not equals or not key or key.strip(_BARE_KEY_CHARS) or key in table:
            return None
        rest = rest.lstrip(" ")
        if not rest.startswith('"'):
            return None
        end = rest.find('"', 1)
        value = rest[1:end]
        if end < 0 or "\\" in value:
            return None
        after = rest[end + 1:].lstrip(" ")
        if after and after[0] != "#":  # also a multi-line string's '"""'
            return None
        table[key] = value
    return document


def loads(text: str) -> dict[str, Any]:
    """The document in ``text``, as a TOML parser reads it; ``ValueError`` if invalid."""
    document = fast_loads(text)
    if document is None:
        # The full reader (tomllib, tomli, or the built-in one of vendored
        # copies): imported only for a file we did not write.
        from . import _toml

        document = _toml.loads(text)
    return document


def read_record(consent_file: str | os.PathLike[str] | None = None) -> Record:
    """Read the consent file and apply the prompt-version gate; never raises.

    Returns ``(state, path, exists, consent, prompt_version, why)``, the fields
    of :class:`.consent.ConsentRecord`.  A broken file must cost the user at
    most one more prompt, so anything unreadable, malformed or unknown counts
    as ``never_asked``.
    """
    try:
        path = location(consent_file)
    except Exception as exc:  # e.g. no home folder
        return NEVER_ASKED, "", False, None, None, f"no consent file location: {exc}"
    try:
        text = read_text(path)
        if text is None:
            return NEVER_ASKED, path, True, None, None, "not a regular file of a sane size"
        table = loads(text).get(_TABLE)
    except FileNotFoundError:
        return NEVER_ASKED, path, False, None, None, "no decision saved"
    except Exception as exc:  # unreadable, binary, malformed: all mean "ask"
        from . import _log  # imports logging: only for a broken file

        _log.debug("ignoring unreadable consent file: %r", exc)
        return (NEVER_ASKED, path, True, None, None,
                "not understood (not valid TOML), ignored: treated as never asked")
    if not isinstance(table, dict):
        return NEVER_ASKED, path, True, None, None, "no [telemetry] table: ignored"
    consent, version = table.get("consent"), table.get("prompt_version")
    consent = consent if isinstance(consent, str) else None
    version = version if isinstance(version, str) else None
    if consent == DISABLED:
        # A "no" stands whatever wording it answered; it is never upgraded.
        why = "" if version == PROMPT_VERSION else "a 'no' stays valid across prompt versions"
        return DISABLED, path, True, consent, version, why
    if consent == ENABLED:
        if version == PROMPT_VERSION:
            return ENABLED, path, True, consent, version, ""
        # A "yes" to other wording: ask again.
        return (NEVER_ASKED, path, True, consent, version,
                f"a 'yes' given under prompt version {version!r}, not the current "
                f"{PROMPT_VERSION!r}, no longer counts: you will be asked again")
    return (NEVER_ASKED, path, True, consent, version,
            "not understood, ignored: treated as never asked")


def decide(consent_file: str | os.PathLike[str] | None = None) -> tuple[bool, str, str]:
    """``(enabled, rule, detail)``: see :func:`.consent.resolve_consent`.

    The environment's rules first (:func:`.config.environment_decision`), then
    the consent file, then off.
    """
    decided = config.environment_decision()
    if decided is not None:
        return decided
    record = read_record(consent_file)
    if record[0] != NEVER_ASKED:
        return record[0] == ENABLED, "consent file", record[1]
    return False, "default", "never asked"
