"""``json.dumps(value, separators=(",", ":"))`` for the plain values a payload holds.

Encoding a batch at exit is on a command line's path, and ``import json``
costs it more than the encoding (its decoder imports :mod:`re`).  Payloads
hold only dicts with string keys, lists, strings, integers, booleans and
None, so this writes those itself, quoting strings with the same C function
``json`` uses, and hands anything else to :mod:`json`.  The output is the same
bytes ``json.dumps`` would write; the tests hold it to that.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - an interpreter without json's accelerator
    from json.encoder import py_encode_basestring_ascii as _quote

__all__ = ["dumps"]


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, the same string."""
    parts: list[str] = []
    _write(value, parts.append)
    return "".join(parts)


def _write(value: Any, out: Callable[[str], object]) -> None:
    if isinstance(value, str):
        out(_quote(value))
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif value is None:
        out("null")
    elif type(value) is int:
        out(int.__repr__(value))
    elif type(value) is dict and all(type(key) is str for key in value):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out(",")
            out(_quote(key))
            out(":")
            _write(item, out)
        out("}")
    elif type(value) in (list, tuple):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _write(item, out)
        out("]")
    else:  # floats, str/int subclasses, other keys: json's own rules
        import json

        out(json.dumps(value, separators=(",", ":")))
