"""The fields of telemetry events: what a field declares, the checks behind it, the
``__init__`` and ``model_dump`` generated from them, and the JSON Schema and JSON parsing
the pydantic-like surface offers.

Private to :mod:`.events` and loaded with it, so it imports nothing heavy: the string
languages are checked by the hand-written predicates of :mod:`._rules`, and ``re``,
``json`` and ``inspect`` are imported by the few functions that need them, when called.
"""

from __future__ import annotations

import builtins
import enum
import sys
from keyword import iskeyword

from . import _rules

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    Checker = Callable[[Any], Any]
    Dump = Callable[[dict[str, Any]], dict[str, Any]]


# What an acceptor returns instead of raising: the fast path never builds an exception.
REJECT: Any = object()
# A parameter left out of a call.
MISSING: Any = object()

# Per string field, values already known to be valid.  A CLI records a handful of command
# names over and over; the bound keeps a hostile caller from growing it without limit.
_KNOWN_VALUES_MAX = 256

# The patterns checked without ``re``, each by its hand-written equal.
PREDICATES: dict[str, Callable[[str], bool]] = {
    _rules.TOKEN: _rules.is_token,
    _rules.DOTTED_IDENTIFIER: _rules.is_dotted_identifier,
    _rules.PYTHON_VERSION: _rules.is_python_version,
}


class Invalid(Exception):
    """A single field's value was rejected; the message says why."""


class FieldInfo:
    """A field of an event class, as ``model_fields`` maps its name to it.

    ``annotation`` is its type (``str``, ``int`` or a ``str`` enum); ``default`` its default,
    ``...`` when required (``is_required()``); ``alias`` its wire name, ``None`` when that
    is ``name``; ``ge``, ``le``, ``pattern``, ``max_length`` and ``rule`` its constraints as
    declared (an ``int`` is also always within [-2**63, 2**63-1]).
    """

    __slots__ = ("alias", "annotation", "default", "ge", "le", "max_length", "name",
                 "pattern", "rule")

    REQUIRED: Any = ...

    def __init__(self, default: Any = ..., *, alias: str | None = None, ge: int | None = None,
                 le: int | None = None, pattern: str | None = None,
                 max_length: int | None = None, rule: str | None = None) -> None:
        self.default = default
        self.alias = alias
        self.ge, self.le = ge, le
        self.pattern, self.max_length, self.rule = pattern, max_length, rule
        self.name = ""
        self.annotation: Any = None

    def is_required(self) -> bool:
        return self.default is FieldInfo.REQUIRED

    def bound(self, name: str, annotation: Any) -> FieldInfo:
        """A copy for the field ``name`` of type ``annotation``."""
        info = FieldInfo(self.default, alias=self.alias, ge=self.ge, le=self.le,
                         pattern=self.pattern, max_length=self.max_length, rule=self.rule)
        info.name, info.annotation = name, annotation
        return info

    def __repr__(self) -> str:
        shown = getattr(self.annotation, "__name__", self.annotation)
        parts = [f"annotation={shown}", "required=True" if self.is_required()
                 else f"default={self.default!r}"]
        parts += [f"{key}={getattr(self, key)!r}" for key in
                  ("alias", "ge", "le", "pattern", "max_length") if getattr(self, key) is not None]
        return f"FieldInfo({', '.join(parts)})"


# --------------------------------------------------------------- checks

def int_bounds(info: FieldInfo) -> tuple[int, int]:
    """The values an ``int`` field takes: its ``ge``/``le`` within a signed 64-bit integer."""
    low = _rules.INT64_MIN if info.ge is None else max(info.ge, _rules.INT64_MIN)
    high = _rules.INT64_MAX if info.le is None else min(info.le, _rules.INT64_MAX)
    return low, high


def _int_checks(low: int, high: int) -> tuple[Checker, Checker]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be an integer, got {type(value).__name__}")
        number = int.__int__(value)  # not an int subclass's own __int__
        if not low <= number <= high:
            # The number is not repeated: it may have thousands of digits.
            raise Invalid(f"must be an integer from {low} to {high}")
        return number

    def accept(value: Any) -> Any:
        if value.__class__ is int and low <= value <= high:
            return value
        try:
            return check(value)
        except Invalid:
            return REJECT

    return check, accept


def _str_checks(info: FieldInfo) -> tuple[Checker, Checker]:
    pattern, max_length = info.pattern, info.max_length
    matches: Callable[[str], Any] | None = None
    if pattern is not None:
        matches = PREDICATES.get(pattern)
        if matches is None:
            import re

            matches = re.compile(pattern).fullmatch
    wording = info.rule or f"must match {pattern!r}"
    known: set[str] = set()

    def check(value: Any) -> str:
        if not isinstance(value, str) or isinstance(value, enum.Enum):
            raise Invalid(f"must be a string, got {type(value).__name__}")
        text: str = value if type(value) is str else str.__str__(value)
        if max_length is not None and len(text) > max_length:
            raise Invalid(f"must be at most {max_length} characters, got {len(text)}")
        if matches is not None and not matches(text):
            raise Invalid(wording)
        return text

    def accept(value: Any) -> Any:
        if value.__class__ is str and value in known:
            return value
        try:
            value = check(value)
        except Invalid:
            return REJECT
        if len(known) < _KNOWN_VALUES_MAX:
            known.add(value)
        return value

    return check, accept


def _enum_checks(enum_type: type[enum.Enum]) -> tuple[Checker, Checker]:
    # A str enum member hashes and compares like its value, so one dict serves
    # both the members and their string values.
    by_value: dict[Any, enum.Enum] = {member.value: member for member in enum_type}
    allowed = ", ".join(repr(v) for v in by_value)

    def check(value: Any) -> enum.Enum:
        member = by_value.get(value) if isinstance(value, str) else None
        if member is None:
            # The rejected value is not repeated: it may be exactly what must not leak.
            raise Invalid(f"must be one of {allowed}")
        return member

    def accept(value: Any) -> Any:
        return by_value.get(value, REJECT) if isinstance(value, str) else REJECT

    return check, accept


class Spec:
    """A field as the checks and the generated code use it: ``check`` raises
    :class:`Invalid`, ``accept`` returns :data:`REJECT` instead, both return the
    value to store.  Made with the class: a mistaken declaration is a TypeError."""

    __slots__ = ("accept", "alias", "check", "default", "info", "is_enum", "is_int", "name",
                 "required")

    def __init__(self, owner: type, info: FieldInfo) -> None:
        where = f"{owner.__name__}.{info.name}"
        annotation = info.annotation
        self.is_int = annotation is int
        self.is_enum = isinstance(annotation, enum.EnumMeta) and issubclass(annotation, str)
        if annotation is str:
            self.check, self.accept = _str_checks(info)
        elif self.is_int:
            low, high = int_bounds(info)
            if low > high:
                raise TypeError(f"{where}: no integer is >= {low} and <= {high}")
            self.check, self.accept = _int_checks(low, high)
        elif self.is_enum:
            self.check, self.accept = _enum_checks(annotation)
        else:
            raise TypeError(f"{where}: unsupported field type {annotation!r} "
                            "(use str, int or a str enum)")
        if annotation is not str and (info.pattern is not None or info.max_length is not None):
            raise TypeError(f"{where}: pattern and max_length only apply to a str field")
        if not self.is_int and (info.ge is not None or info.le is not None):
            raise TypeError(f"{where}: ge and le only apply to an int field")
        self.required = info.is_required()
        if not self.required:
            try:
                info.default = self.check(info.default)
            except Invalid as exc:
                raise TypeError(f"{where}: invalid default: {exc}") from None
        self.info, self.name, self.default = info, info.name, info.default
        self.alias: str = info.alias or info.name


# --------------------------------------------------------------- declarations

_CLASSVAR: Any = object()


def _resolve(cls: type, name: str, annotation: Any) -> Any:
    """The type an annotation names (a string one evaluated as get_type_hints would)."""
    if isinstance(annotation, str):
        text = annotation.strip()
        head = text.split("[", 1)[0].strip()
        if head == "ClassVar" or head.endswith(".ClassVar"):
            return _CLASSVAR
        module = sys.modules.get(cls.__module__)
        module_names: dict[str, Any] = vars(module) if module is not None else {}
        for scope in (cls.__dict__, module_names, vars(builtins)):
            if text in scope:
                return scope[text]
        try:
            annotation = eval(text, dict(module_names), dict(cls.__dict__))
        except Exception as exc:
            raise TypeError(f"{cls.__name__}.{name}: cannot resolve the annotation "
                            f"{text!r} ({type(exc).__name__}: {exc})") from None
    typing = sys.modules.get("typing")  # a ClassVar annotation means it is loaded
    if typing is not None and (annotation is typing.ClassVar
                               or getattr(annotation, "__origin__", None) is typing.ClassVar):
        return _CLASSVAR
    return annotation


def field_infos(cls: type, reserved: type) -> dict[str, FieldInfo]:
    """``cls``'s fields, inherited ones first, each a FieldInfo of its own."""
    infos: dict[str, FieldInfo] = {}
    for base in reversed(cls.__mro__[1:]):
        for name, info in base.__dict__.get("model_fields", {}).items():
            infos[name] = info.bound(name, info.annotation)
    if sys.version_info >= (3, 10):
        annotations = cls.__annotations__  # the class's own (3.9 would give a base's)
    else:
        # The annotations HOWTO's way on 3.9 (no typing_extensions here).
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name, annotation in annotations.items():
        if name.startswith("_"):
            continue  # private: a class variable, never on the wire
        resolved = _resolve(cls, name, annotation)
        if resolved is _CLASSVAR:
            continue
        if not name.isidentifier() or iskeyword(name) or hasattr(reserved, name):
            raise TypeError(f"{cls.__name__}.{name}: a field cannot have this name")
        declared = cls.__dict__.get(name, FieldInfo.REQUIRED)
        info = declared if isinstance(declared, FieldInfo) else FieldInfo(declared)
        infos[name] = info.bound(name, resolved)
    for name, value in cls.__dict__.items():
        if isinstance(value, FieldInfo) and name not in infos:
            raise TypeError(f"{cls.__name__}.{name}: a Field() needs a type annotation")
    keys: dict[str, str] = {}
    for info in infos.values():
        for key in dict.fromkeys((info.name, info.alias or info.name)):
            if key in keys:
                raise TypeError(f"{cls.__name__}: {key!r} names both the field "
                                f"{keys[key]!r} and the field {info.name!r}")
            keys[key] = info.name
    return infos


# --------------------------------------------------------------- generated methods

def compile_methods(cls: type, specs: tuple[Spec, ...], slow: Callable[..., None],
                    ) -> tuple[Callable[..., None], Dump, Dump]:
    """``__init__`` and the two ``model_dump``s, written out: binding arguments by name and
    checking each field in straight-line code keeps construction near a microsecond (as
    ``dataclasses`` generates its ``__init__``).  Anything unusual - an unknown, missing or
    doubled key, a rejected value - goes to ``slow``, which reports every problem at once.
    Locals start with ``_``, which no field name does."""
    names = [spec.name for spec in specs]
    # An alias that cannot be a parameter name arrives in ``_unknown`` instead.
    aliases = [spec.alias for spec in specs if spec.alias != spec.name
               and spec.alias.isidentifier() and not iskeyword(spec.alias)
               and not spec.alias.startswith("_")]
    keywords = "".join(f"{p}=_MISSING, " for p in names + aliases)
    lines = [f"def __init__(_self, /, {'*, ' if keywords else ''}{keywords}**_unknown):"]
    namespace: dict[str, Any] = {"_MISSING": MISSING, "_REJECT": REJECT, "_slow": slow}
    for i, spec in enumerate(specs):
        value = spec.name
        if spec.alias in aliases:  # by either name, not by both
            value = (f"({spec.name} if {spec.alias} is _MISSING"
                     f" else {spec.alias} if {spec.name} is _MISSING else _REJECT)")
        missing = "_REJECT" if spec.required else f"_default{i}"
        lines.append(f"    _v{i} = {missing} if {value} is _MISSING else _accept{i}({value})")
        namespace[f"_accept{i}"], namespace[f"_default{i}"] = spec.accept, spec.default
    unusual = " or ".join(["_unknown"] + [f"_v{i} is _REJECT" for i in range(len(specs))])
    given = ", ".join(f"{p!r}: {p}" for p in names + aliases)
    lines.append(f"    if {unusual}:")
    lines.append(f"        return _slow(_self, {{{given}}}, _unknown)")
    lines.append("    _self.__dict__.update(" + ", ".join(
        f"{name}=_v{i}" for i, name in enumerate(names)) + ")")
    for by_alias in (False, True):
        items = ", ".join(
            f"{spec.alias if by_alias else spec.name!r}: "
            f"_values[{spec.name!r}]{'._value_' if spec.is_enum else ''}"
            for spec in specs)
        lines.append(f"def dump_{by_alias}(_values): return {{{items}}}")
    exec("\n".join(lines), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{spec.name: spec.info.annotation for spec in specs}, "return": None}
    init.__doc__ = "Check every field; a ValidationError names each one that is wrong."
    init.__wrapped__ = Signature(specs)  # followed by inspect.signature, so by help() too
    return init, namespace["dump_False"], namespace["dump_True"]


class Signature:
    """What ``inspect.signature()`` and ``help()`` show for a generated ``__init__``:
    the fields as keyword-only parameters with their types and defaults, rather than
    the catch-all the constructor really has.  Built when asked for, as ``inspect`` is
    only loaded by the asker."""

    __slots__ = ("specs",)

    def __init__(self, specs: tuple[Spec, ...]) -> None:
        self.specs = specs

    @property
    def __signature__(self) -> Any:
        import inspect

        empty, keyword = inspect.Parameter.empty, inspect.Parameter.KEYWORD_ONLY
        me = "_self" if any(spec.name == "self" for spec in self.specs) else "self"
        parameters = [inspect.Parameter(me, inspect.Parameter.POSITIONAL_ONLY)]
        parameters += [inspect.Parameter(spec.name, keyword, annotation=spec.info.annotation,
                                         default=empty if spec.required else spec.default)
                       for spec in self.specs]
        return inspect.Signature(parameters, return_annotation=None)


# --------------------------------------------------------------- JSON Schema, JSON

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def ecma_pattern(pattern: str) -> str:
    """``pattern`` as a JSON Schema ``pattern``, the same strings in ECMA-262 and ``re``:
    anchored, as JSON Schema searches for a pattern, and ended by a lookahead for "no
    character left" because ``$`` also matches before a final newline in ``re``."""
    return f"^(?:{pattern})(?![\\s\\S])"


def _property(info: FieldInfo, key: str, defs: dict[str, Any]) -> dict[str, Any]:
    annotation = info.annotation
    schema: dict[str, Any] = {"title": key.title().replace("_", " ").strip()}
    if annotation is int:
        low, high = int_bounds(info)
        schema.update({"type": "integer", "minimum": low, "maximum": high})
    elif annotation is str:
        schema["type"] = "string"
        if info.max_length is not None:
            schema["maxLength"] = info.max_length
        if info.pattern is not None:
            schema["pattern"] = ecma_pattern(info.pattern)
    else:
        described: dict[str, Any] = {"title": annotation.__name__}
        if annotation.__doc__:
            described["description"] = annotation.__doc__.strip()
        described.update({"enum": [member.value for member in annotation], "type": "string"})
        defs[annotation.__name__] = described
        schema["$ref"] = f"#/$defs/{annotation.__name__}"
    if not info.is_required():
        default = info.default
        schema["default"] = default.value if annotation not in (int, str) else default
    return schema


def json_schema(cls: type, fields: Mapping[str, FieldInfo], *, by_alias: bool,
                mode: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event class with ``fields``."""
    if mode not in ("validation", "serialization"):
        raise ValueError(f"mode must be 'validation' or 'serialization', not {mode!r}")
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, info in fields.items():
        key = (info.alias or name) if by_alias else name
        properties[key] = _property(info, key, defs)
        if info.is_required() or mode == "serialization":
            required.append(key)
    schema: dict[str, Any] = {"$schema": DRAFT_2020_12}
    if defs:
        schema["$defs"] = dict(sorted(defs.items()))
    schema["title"] = cls.__name__
    if cls.__doc__:
        import inspect

        schema["description"] = inspect.cleandoc(cls.__doc__)
    schema.update({"type": "object", "properties": properties})
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(json_data: str | bytes | bytearray) -> Any:
    """The document; :class:`Invalid` with a reason that does not repeat it."""
    import json

    try:
        return json.loads(json_data, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} at position {exc.pos}"
    except (ValueError, RecursionError) as exc:  # an undecodable byte, NaN, deep nesting
        reason = f"invalid JSON: {type(exc).__name__}"
    raise Invalid(reason)
