"""The string languages an event's text fields may use, as patterns and as checks.

A field that accepts any text is how a path, a message or a user name would
ride along, so every text field of an event is one of these short languages.
Each has a regular expression (for JSON Schema, and for the collector's
messages) and a hand-written check equal to ``re.fullmatch`` of it, so that
checking a name costs no :mod:`re` import; the tests hold the two equal.

A leaf: the events, ``track_command`` (which checks a command's names when it
is created, before anything else is imported) and the collector use it.
"""

from __future__ import annotations

__all__ = [
    "DOTTED_IDENTIFIER",
    "PYTHON_VERSION",
    "TOKEN",
    "is_dotted_identifier",
    "is_python_version",
    "is_token",
]

TOKEN = r"[A-Za-z0-9_.:-]{1,64}"
DOTTED_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
PYTHON_VERSION = r"[0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,3})?(?:(?:a|b|rc)[0-9]{1,3})?\+?"

_TOKEN_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
_DIGITS = "0123456789"


def is_token(text: str) -> bool:
    """``re.fullmatch(TOKEN, text)``: stripping the allowed characters leaves nothing."""
    return 0 < len(text) <= 64 and not text.strip(_TOKEN_CHARACTERS)


def is_dotted_identifier(text: str) -> bool:
    """``re.fullmatch(DOTTED_IDENTIFIER, text)``: on ASCII, ``isidentifier`` is that language."""
    return text.isascii() and all(part.isidentifier() for part in text.split("."))


def _is_number(text: str) -> bool:
    return 0 < len(text) <= 3 and not text.strip(_DIGITS)


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
