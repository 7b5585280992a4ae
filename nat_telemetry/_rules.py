"""The languages an event's values may use: one definition each, cheap to check.

A field that accepts any text is how a path, a message or a user name would ride along,
so every text the wire carries is one of these short languages.  Each has a regular
expression (for JSON Schema and the collector's messages) and a hand-written check equal
to ``re.fullmatch`` of it, so that checking a name costs no :mod:`re` import; the tests
hold the two equal.  A leaf: events, ``track_command``, the envelope, the settings and
the collector all read their rules from here.
"""

from __future__ import annotations

__all__ = [
    "DOTTED_IDENTIFIER",
    "ERROR_CLASS_MAX_LENGTH",
    "INT64_MAX",
    "INT64_MIN",
    "NAME_CHARACTERS",
    "PYTHON_VERSION",
    "SESSION_ID",
    "TOKEN",
    "TOOL_NAME",
    "VERSION",
    "is_dotted_identifier",
    "is_error_class",
    "is_python_version",
    "is_session_id",
    "is_token",
    "is_tool_name",
    "is_version",
]

# The wire schema's integers are signed 64-bit.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# An exception class name, dotted module path included.
ERROR_CLASS_MAX_LENGTH = 128

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# The alphabet of every name on the wire (commands, session ids, client ids).
NAME_CHARACTERS = _ALNUM + "_.:-"
_NAME_CLASS = "[A-Za-z0-9_.:-]"
TOKEN = _NAME_CLASS + "{1,64}"
SESSION_ID = _NAME_CLASS + "{1,128}"
DOTTED_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
# A tool's name (folders, productName) and version (clientVer, productVersion).
TOOL_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
VERSION = r"[A-Za-z0-9][A-Za-z0-9_.+!-]{0,63}"
PYTHON_VERSION = r"[0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,3})?(?:(?:a|b|rc)[0-9]{1,3})?\+?"
_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"


def _is_name(text: str, longest: int) -> bool:
    return 0 < len(text) <= longest and not text.strip(NAME_CHARACTERS)


def is_token(text: str) -> bool:
    """``re.fullmatch(TOKEN, text)``: 1 to 64 characters of :data:`NAME_CHARACTERS`."""
    return _is_name(text, 64)


def is_session_id(text: str) -> bool:
    """``re.fullmatch(SESSION_ID, text)``: 1 to 128 characters of :data:`NAME_CHARACTERS`."""
    return _is_name(text, 128)


def is_tool_name(text: str) -> bool:
    """``re.fullmatch(TOOL_NAME, text)``: lowercase letters, digits, ``-``, ``_``."""
    return (0 < len(text) <= 64 and text[0] in _LOWER
            and not text.strip(_LOWER + "_-"))


def is_version(text: str) -> bool:
    """``re.fullmatch(VERSION, text)``: a version such as ``2.4.1`` or ``0.1.dev3+g1a2b``."""
    return 0 < len(text) <= 64 and text[0] in _ALNUM and not text.strip(_ALNUM + "_.+!-")


def is_dotted_identifier(text: str) -> bool:
    """``re.fullmatch(DOTTED_IDENTIFIER, text)``: on ASCII, ``isidentifier`` is that language."""
    return text.isascii() and all(part.isidentifier() for part in text.split("."))


def is_error_class(text: str) -> bool:
    """A dotted identifier of at most :data:`ERROR_CLASS_MAX_LENGTH` characters."""
    return len(text) <= ERROR_CLASS_MAX_LENGTH and is_dotted_identifier(text)


def _is_number(text: str) -> bool:
    return 0 < len(text) <= 3 and not text.strip("0123456789")


def is_python_version(text: str) -> bool:
    """``re.fullmatch(PYTHON_VERSION, text)``: MAJOR.MINOR[.MICRO][(a|b|rc)N][+]."""
    if text.endswith("+"):
        text = text[:-1]
    for tag in ("rc", "a", "b"):
        release, found, serial = text.partition(tag)
        if found:
            if not _is_number(serial):
                return False
            text = release
            break
    parts = text.split(".")
    return 2 <= len(parts) <= 3 and all(_is_number(part) for part in parts)
