"""TOML for the consent file, with or without the TOML libraries.

The consent file is the only TOML this package reads or writes, and a copy of
the package vendored into a constrained environment may have neither
``tomli-w`` nor, before Python 3.11, ``tomli``.  So:

* :func:`loads` uses :mod:`tomllib` (3.11+), else ``tomli``, else
  :func:`minimal_loads`: a strict reader of the small subset the consent file
  needs (tables, single-line keys and values, comments).  Every document it
  accepts, it reads exactly as ``tomllib`` does; anything outside the subset
  (arrays, inline tables, dates, multi-line strings, dotted keys) raises
  :class:`TOMLDecodeError`, which the consent reader turns into "never asked",
  the safe answer for an opt-in setting.
* :func:`dumps` uses ``tomli-w`` when it is importable, else
  :func:`minimal_dumps`, which writes the same bytes ``tomli-w`` does for a
  document of flat string tables, escaping as the TOML spec requires.

The libraries are looked up at each call (a cached module is a dictionary
lookup away), never at import, so ``import nat_telemetry`` stays cheap and
tests can hide a library and see the fallback used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Callable

__all__ = [
    "TOMLDecodeError",
    "dumps",
    "loads",
    "minimal_dumps",
    "minimal_loads",
    "reader_name",
    "writer_name",
]


class TOMLDecodeError(ValueError):
    """The text is not TOML, or not the part of TOML :func:`minimal_loads` reads."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"{message} (at line {line})")
        self.line = line


# ------------------------------------------------------------------ choice


def _reader() -> tuple[str, Callable[[str], dict[str, Any]]]:
    try:
        import tomllib  # Python 3.11+

        return "tomllib", tomllib.loads
    except ImportError:
        pass
    try:
        import tomli

        return "tomli", tomli.loads
    except ImportError:
        return "builtin", minimal_loads


def _writer() -> tuple[str, Callable[[Mapping[str, Mapping[str, str]]], str]]:
    try:
        import tomli_w
    except ImportError:
        return "builtin", minimal_dumps
    dumps: Callable[[Mapping[str, Mapping[str, str]]], str] = tomli_w.dumps
    return "tomli_w", dumps


def reader_name() -> str:
    """Which reader :func:`loads` would use now: tomllib, tomli or builtin."""
    return _reader()[0]


def writer_name() -> str:
    """Which writer :func:`dumps` would use now: tomli_w or builtin."""
    return _writer()[0]


def loads(text: str) -> dict[str, Any]:
    """Parse ``text`` with the best reader available; raises ``ValueError`` if invalid."""
    return _reader()[1](text)


def dumps(document: Mapping[str, Mapping[str, str]]) -> str:
    """Render tables of string values, with ``tomli-w`` when it is available.

    ``document`` maps table names to flat tables of strings; anything else is
    a ``TypeError`` whichever writer is used, so both always agree.
    """
    _check_flat_string_tables(document)
    return _writer()[1](document)


# ------------------------------------------------------------------ writer

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# The TOML spec: in a basic string, '"', '\\' and every control character but
# tab must be escaped; the short forms where they exist, else \\uXXXX.
_SHORT_ESCAPES = {"\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _check_flat_string_tables(document: Mapping[str, Mapping[str, str]]) -> None:
    for name, table in document.items():
        if not isinstance(name, str) or not hasattr(table, "items"):
            raise TypeError(f"expected tables of strings, got {name!r} = {table!r}")
        for key, value in table.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"expected string keys and values, got {key!r} = {value!r}")


def _quote(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif (char < " " and char != "\t") or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(name: str) -> str:
    return name if name and set(name) <= _BARE_KEY_CHARS else _quote(name)


def minimal_dumps(document: Mapping[str, Mapping[str, str]]) -> str:
    """``tomli_w.dumps`` for a document of flat string tables, byte for byte."""
    _check_flat_string_tables(document)
    chunks = []
    for name, table in document.items():
        lines = [f"[{_key(name)}]\n"]
        lines += [f"{_key(key)} = {_quote(value)}\n" for key, value in table.items()]
        chunks.append("".join(lines))
    return "\n".join(chunks)


# ------------------------------------------------------------------ reader

_WHITESPACE = " \t"
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _is_control(char: str) -> bool:
    """Forbidden in strings and comments: U+0000-U+001F except tab, and U+007F."""
    return (char < " " and char != "\t") or char == "\x7f"


class _Line:
    """A cursor over one line (without its newline)."""

    def __init__(self, text: str, number: int) -> None:
        self.text = text
        self.number = number
        self.pos = 0

    def error(self, message: str) -> TOMLDecodeError:
        return TOMLDecodeError(message, self.number)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self) -> None:
        while self.peek() and self.peek() in _WHITESPACE:
            self.pos += 1

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def finish(self) -> None:
        """Only blanks and a comment may follow."""
        self.skip_blanks()
        rest = self.text[self.pos:]
        if rest and not rest.startswith("#"):
            raise self.error(f"unexpected text {rest[:20]!r}")
        if any(_is_control(char) for char in rest):
            raise self.error("control character in a comment")

    def key(self) -> str:
        char = self.peek()
        if char == '"':
            return self.basic_string()
        if char == "'":
            return self.literal_string()
        start = self.pos
        while self.peek() and self.peek() in _BARE_KEY_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a key")
        return self.text[start:self.pos]

    def value(self) -> Any:
        char = self.peek()
        if char == '"':
            return self.basic_string()
        if char == "'":
            return self.literal_string()
        start = self.pos
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.pos += 1
        return _scalar(self.text[start:self.pos], self)

    def basic_string(self) -> str:
        if self.text.startswith('"""', self.pos):
            raise self.error("multi-line strings are not supported")
        self.pos += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.error("unterminated string")
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                out.append(self.escape())
            elif _is_control(char):
                raise self.error("control character in a string")
            else:
                out.append(char)

    def escape(self) -> str:
        char = self.peek()
        self.pos += 1
        if char in _ESCAPES:
            return _ESCAPES[char]
        width = {"u": 4, "U": 8}.get(char)
        digits = self.text[self.pos:self.pos + width] if width else ""
        if not width or len(digits) != width or not set(digits) <= _HEX_DIGITS:
            raise self.error("invalid escape sequence")
        self.pos += width
        code = int(digits, 16)
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise self.error("escaped character is not a Unicode scalar value")
        return chr(code)

    def literal_string(self) -> str:
        if self.text.startswith("'''", self.pos):
            raise self.error("multi-line strings are not supported")
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise self.error("unterminated string")
        content = self.text[self.pos + 1:end]
        if any(_is_control(char) for char in content):
            raise self.error("control character in a string")
        self.pos = end + 1
        return content


_PATTERNS: dict[str, Any] = {}


def _patterns() -> dict[str, Any]:
    if not _PATTERNS:
        import re  # only a vendored copy without tomllib/tomli ever gets here

        digits = "[0-9](?:_?[0-9])*"
        decimal = "[+-]?(?:0|[1-9](?:_?[0-9])*)"
        _PATTERNS.update(
            decimal=re.compile(decimal),
            hex=re.compile("0x[0-9A-Fa-f](?:_?[0-9A-Fa-f])*"),
            octal=re.compile("0o[0-7](?:_?[0-7])*"),
            binary=re.compile("0b[01](?:_?[01])*"),
            float=re.compile(f"{decimal}(?:\\.{digits}(?:[eE][+-]?{digits})?|[eE][+-]?{digits})"),
        )
    return _PATTERNS


def _scalar(token: str, line: _Line) -> Any:
    if token == "true":
        return True
    if token == "false":
        return False
    if token in ("inf", "+inf", "-inf", "nan", "+nan", "-nan"):
        return float(token)
    patterns = _patterns()
    plain = token.replace("_", "")
    if patterns["decimal"].fullmatch(token):
        return int(plain)
    for name, base in (("hex", 16), ("octal", 8), ("binary", 2)):
        if patterns[name].fullmatch(token):
            return int(plain[2:], base)
    if patterns["float"].fullmatch(token):
        return float(plain)
    raise line.error("unsupported or invalid value" if token else "expected a value")


def minimal_loads(text: str) -> dict[str, Any]:
    """Parse the subset of TOML the consent file uses, exactly as ``tomllib`` would.

    Accepted: ``[table]`` headers, ``key = value`` lines with bare or quoted
    keys, basic and literal single-line strings, integers, floats, booleans,
    comments and blank lines.  Anything else raises :class:`TOMLDecodeError`.
    """
    document: dict[str, Any] = {}
    table = document
    raw_lines = text.split("\n")
    for number, raw in enumerate(raw_lines, start=1):
        # CRLF ends a line like LF; a CR anywhere else (even last) is an error below.
        if raw.endswith("\r") and number < len(raw_lines):
            raw = raw[:-1]
        line = _Line(raw, number)
        line.skip_blanks()
        if not line.peek() or line.peek() == "#":
            line.finish()
        elif line.peek() == "[":
            if line.text.startswith("[[", line.pos):
                raise line.error("arrays of tables are not supported")
            line.pos += 1
            line.skip_blanks()
            name = line.key()
            line.skip_blanks()
            if line.peek() == ".":
                raise line.error("dotted keys are not supported")
            line.expect("]")
            line.finish()
            if name in document:
                raise line.error(f"{name!r} is defined twice")
            table = document[name] = {}
        else:
            key = line.key()
            line.skip_blanks()
            if line.peek() == ".":
                raise line.error("dotted keys are not supported")
            line.expect("=")
            line.skip_blanks()
            value = line.value()
            line.finish()
            if key in table:
                raise line.error(f"{key!r} is defined twice")
            table[key] = value
    return document
