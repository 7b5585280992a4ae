"""Telemetry events: immutable dataclasses that validate themselves.

A subclass of :class:`TelemetryEvent` declares its fields as annotated class
attributes, the way a dataclass does.  Each field is a ``str``, an ``int`` or a
``str`` enum, optionally wrapped in :func:`Field` to give it a wire alias and a
constraint.  The class becomes a frozen dataclass when it is created, and every
instance is checked on construction: a wrong type, a missing field, an unknown
key or a value outside the field's language is a :class:`ValidationError` that
names every offending field.

Privacy is enforced here rather than trusted to callers.  The string fields of
:class:`CliCommandEvent` only accept short tokens, dotted identifiers and version
numbers, so an argument, a path, a message or a user name cannot ride along.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from collections.abc import Mapping
from re import Pattern
from typing import Any, Callable, ClassVar

__all__ = [
    "CliCommandEvent",
    "Field",
    "NemoSourceEnum",
    "TaskStatusEnum",
    "TelemetryEvent",
    "ValidationError",
]


class ValidationError(ValueError):
    """An event's data is not valid; ``errors`` lists ``(field, reason)`` pairs."""

    def __init__(self, model: str, errors: list[tuple[str, str]]) -> None:
        self.model = model
        self.errors = errors
        detail = "; ".join(f"{name}: {reason}" for name, reason in errors)
        count = len(errors)
        plural = "error" if count == 1 else "errors"
        super().__init__(f"{count} validation {plural} for {model}: {detail}")


class NemoSourceEnum(str, enum.Enum):
    """The NeMo product that emitted an event (schema 1.5)."""

    INFERENCE = "inference"
    AUDITOR = "auditor"
    DATADESIGNER = "datadesigner"
    EVALUATOR = "evaluator"
    GUARDRAILS = "guardrails"
    SAFE_SYNTHESIZER = "safe-synthesizer"
    ANONYMIZER = "anonymizer"
    AGENT_TOOLKIT = "agent_toolkit"
    UNDEFINED = "undefined"

    def __str__(self) -> str:
        return str(self.value)


class TaskStatusEnum(str, enum.Enum):
    """Outcome of the reported task (schema 1.5)."""

    SUCCESS = "success"
    FAILURE = "failure"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"
    UNDEFINED = "undefined"

    def __str__(self) -> str:
        return str(self.value)


_MISSING: Any = dataclasses.MISSING


def Field(
    default: Any = _MISSING,
    *,
    alias: str | None = None,
    ge: int | None = None,
    pattern: str | None = None,
    max_length: int | None = None,
    rule: str | None = None,
) -> Any:
    """Declare a field's wire alias and constraint.

    ``ge`` bounds an ``int`` from below; ``pattern`` (matched in full) and
    ``max_length`` constrain a ``str``; ``rule`` is the human wording used in
    error messages for ``pattern``.
    """
    metadata = {"alias": alias, "ge": ge, "pattern": pattern, "max_length": max_length,
                "rule": rule}
    return dataclasses.field(default=default, metadata=metadata)


class _Invalid(Exception):
    """A single field's value was rejected; the message says why."""


Checker = Callable[[Any], Any]

# What an acceptor returns instead of raising: the fast path never builds an
# exception, and a rejection is explained afterwards by the raising checker.
_REJECT: Any = object()

# Per string field, values already known to be valid.  A CLI records a handful
# of command names over and over; the bound keeps a hostile caller from
# growing it without limit.
_KNOWN_VALUES_MAX = 256


class _Kind(typing.NamedTuple):
    check: Checker  # returns the value to store, or raises _Invalid with the reason
    accept: Checker  # returns the value to store, or _REJECT; never raises
    is_enum: bool


def _str_kind(pattern: str | None, max_length: int | None, rule: str | None) -> _Kind:
    compiled: Pattern[str] | None = re.compile(pattern) if pattern is not None else None
    wording = rule or (f"must match {pattern!r}" if pattern else "")
    known: set[str] = set()

    def check(value: Any) -> str:
        if not isinstance(value, str) or isinstance(value, enum.Enum):
            raise _Invalid(f"must be a string, got {type(value).__name__}")
        text: str = value if type(value) is str else str.__str__(value)
        if max_length is not None and len(text) > max_length:
            raise _Invalid(f"must be at most {max_length} characters, got {len(text)}")
        if compiled is not None and compiled.fullmatch(text) is None:
            raise _Invalid(wording)
        return text

    def accept(value: Any) -> Any:
        if value.__class__ is str and value in known:
            return value
        try:
            value = check(value)
        except _Invalid:
            return _REJECT
        if len(known) < _KNOWN_VALUES_MAX:
            known.add(value)
        return value

    return _Kind(check, accept, False)


def _int_kind(ge: int | None) -> _Kind:
    floor = ge if ge is not None else -(2**63)

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, got {type(value).__name__}")
        number = int(value)
        if ge is not None and number < ge:
            raise _Invalid(f"must be >= {ge}, got {number}")
        return number

    def accept(value: Any) -> Any:
        if value.__class__ is int and value >= floor:
            return value
        try:
            return check(value)
        except _Invalid:
            return _REJECT

    return _Kind(check, accept, False)


def _enum_kind(enum_type: type[enum.Enum]) -> _Kind:
    # A str enum member hashes and compares like its value, so one dict serves
    # both the members and their string values.
    by_value: dict[Any, enum.Enum] = {member.value: member for member in enum_type}
    allowed = ", ".join(repr(v) for v in by_value)

    def check(value: Any) -> enum.Enum:
        member = by_value.get(value) if isinstance(value, str) else None
        if member is None:
            # The rejected value is not repeated: it may be exactly what must not leak.
            raise _Invalid(f"must be one of {allowed}")
        return member

    def accept(value: Any) -> Any:
        if isinstance(value, str):
            return by_value.get(value, _REJECT)
        return _REJECT

    return _Kind(check, accept, True)


class _FieldSpec(typing.NamedTuple):
    name: str
    alias: str
    default: Any
    kind: _Kind


def _field_specs(cls: type) -> tuple[_FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        annotation = hints[f.name]
        if (isinstance(annotation, type) and issubclass(annotation, str)
                and issubclass(annotation, enum.Enum)):
            kind = _enum_kind(annotation)
        elif annotation is int:
            kind = _int_kind(meta.get("ge"))
        elif annotation is str:
            kind = _str_kind(meta.get("pattern"), meta.get("max_length"), meta.get("rule"))
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {annotation!r} "
                            "(use str, int or a str enum)")
        default = f.default
        if default is not _MISSING:
            try:
                default = kind.check(default)
            except _Invalid as exc:
                raise TypeError(f"{cls.__name__}.{f.name}: invalid default: {exc}") from None
        specs.append(_FieldSpec(f.name, meta.get("alias") or f.name, default, kind))
    return tuple(specs)


def _validate(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Check ``data`` against ``cls``'s fields; every problem goes in one ValidationError."""
    specs: tuple[_FieldSpec, ...] = cls.__fields_spec__  # type: ignore[attr-defined]
    values: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for spec in specs:
        name, alias = spec.name, spec.alias
        if name in data and alias != name and alias in data:
            errors.append((name, f"given both as {name!r} and as {alias!r}"))
        elif name in data or alias in data:
            try:
                values[name] = spec.kind.check(data[name] if name in data else data[alias])
            except _Invalid as exc:
                errors.append((name, str(exc)))
        elif spec.default is not _MISSING:
            values[name] = spec.default
        else:
            errors.append((name, "field required"))
    known = {spec.name for spec in specs} | {spec.alias for spec in specs}
    errors += [(key, "unknown field") for key in data if key not in known]
    if errors:
        raise ValidationError(cls.__name__, errors)
    return values


def _compile_init(cls: type, specs: tuple[_FieldSpec, ...]) -> Callable[..., None]:
    """A keyword-only ``__init__`` written out for ``cls``'s fields.

    Binding arguments by name and checking each field in straight-line code is
    what keeps construction near a microsecond (dataclasses generate their
    ``__init__`` the same way).  Anything unusual - an unknown, missing or
    doubled key, a rejected value - is handed to :func:`_validate`, which
    reports every problem at once.
    """
    names = [spec.name for spec in specs]
    aliases = [spec.alias for spec in specs if spec.alias != spec.name]
    params = ", ".join(f"{p}=_MISSING" for p in names + aliases)
    lines = [f"def __init__(self, *, {params}, **_unknown):"]
    for i, spec in enumerate(specs):
        name, alias = spec.name, spec.alias
        value = name
        if alias != name:
            value = (f"({name} if {alias} is _MISSING"
                     f" else {alias} if {name} is _MISSING else _REJECT)")
        if spec.default is _MISSING:
            lines.append(f"    v{i} = _REJECT if {value} is _MISSING else accept{i}({value})")
        else:
            lines.append(f"    v{i} = {value}")
            lines.append(f"    v{i} = default{i} if v{i} is _MISSING else accept{i}(v{i})")
    rejected = " or ".join(f"v{i} is _REJECT" for i in range(len(specs)))
    arguments = ", ".join(f"{p!r}: {p}" for p in names + aliases)
    lines.append(f"    if _unknown or {rejected}:")
    lines.append(f"        _reject(self, {{{arguments}}}, _unknown)")
    assigned = ", ".join(f"{name}=v{i}" for i, name in enumerate(names))
    lines.append(f"    self.__dict__.update({assigned})")
    namespace: dict[str, Any] = {"_MISSING": _MISSING, "_REJECT": _REJECT, "_reject": _reject}
    for i, spec in enumerate(specs):
        namespace[f"accept{i}"] = spec.kind.accept
        namespace[f"default{i}"] = spec.default
    exec("\n".join(lines), namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _compile_dump(specs: tuple[_FieldSpec, ...], by_alias: bool) -> Callable[[Any], dict[str, Any]]:
    """``model_dump`` written out as one dict display, for the same reason as ``__init__``.

    Enum members are read through ``_value_``, the plain attribute behind the
    slower ``value`` descriptor.
    """
    items = ", ".join(
        f"{spec.alias if by_alias else spec.name!r}: "
        f"values[{spec.name!r}]{'._value_' if spec.kind.is_enum else ''}"
        for spec in specs
    )
    namespace: dict[str, Any] = {}
    exec(f"def dump(values):\n    return {{{items}}}", namespace)
    dump: Callable[[Any], dict[str, Any]] = namespace["dump"]
    return dump


def _reject(self: TelemetryEvent, given: dict[str, Any], unknown: dict[str, Any]) -> None:
    data = {key: value for key, value in given.items() if value is not _MISSING}
    _validate(type(self), {**data, **unknown})
    raise AssertionError("an acceptor rejected a value its checker accepts")  # pragma: no cover


class TelemetryEvent:
    """Base of every event; a subclass must define ``_event_name``.

    Fields are declared as annotated class attributes (``str``, ``int`` or a
    ``str`` enum, optionally ``= Field(...)``); the subclass becomes a frozen
    dataclass whose keyword-only constructor validates every field.
    """

    _event_name: ClassVar[str]
    _schema_version: ClassVar[str] = "1.5"
    __fields_spec__: ClassVar[tuple[_FieldSpec, ...]] = ()
    __dumpers__: ClassVar[tuple[Callable[[Any], dict[str, Any]], ...]] = ()

    if typing.TYPE_CHECKING:  # the real one is generated per subclass
        def __init__(self, **data: Any) -> None: ...

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_event_name" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must define '_event_name' class variable")
        dataclasses.dataclass(init=False, frozen=True)(cls)
        cls.__fields_spec__ = _field_specs(cls)
        cls.__init__ = _compile_init(cls, cls.__fields_spec__)  # type: ignore[method-assign]
        cls.__dumpers__ = (_compile_dump(cls.__fields_spec__, by_alias=False),
                           _compile_dump(cls.__fields_spec__, by_alias=True))

    @classmethod
    def model_validate(cls, data: Mapping[str, Any]) -> TelemetryEvent:
        """Build an event from a mapping keyed by field names or wire aliases."""
        if not isinstance(data, Mapping):
            raise ValidationError(cls.__name__,
                                  [("__root__", f"must be a mapping, got {type(data).__name__}")])
        bad_keys = [key for key in data if not isinstance(key, str)]
        if bad_keys:
            raise ValidationError(cls.__name__, [(repr(k), "field names must be strings")
                                                 for k in bad_keys])
        return cls(**data)

    def model_dump(self, by_alias: bool = False) -> dict[str, Any]:
        """The event as plain JSON-ready values (enums as their string value)."""
        return self.__dumpers__[by_alias](self.__dict__)


_TOKEN = r"[A-Za-z0-9_.:-]{1,64}"
_TOKEN_RULE = ("must be a short name: 1 to 64 letters, digits, '-', '_', '.' or ':' "
               "(no spaces, paths or free text)")
_DOTTED_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_IDENTIFIER_RULE = "must be an exception class name: a (dotted) Python identifier, no message"
_PYTHON_VERSION = r"[0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,3})?(?:(?:a|b|rc)[0-9]{1,3})?\+?"
_VERSION_RULE = "must be a Python version such as '3.11.7' or '3.13.0rc1'"


class CliCommandEvent(TelemetryEvent):
    """One invocation of a command-line command.

    Deliberately minimal: the command and subcommand *names*, the outcome,
    the duration, the exit code, the exception *class* and the Python version.
    Never arguments, option values, paths, messages, host or user names.
    """

    _event_name: ClassVar[str] = "nat_cli_command"

    nemo_source: NemoSourceEnum = Field(NemoSourceEnum.AGENT_TOOLKIT, alias="nemoSource")
    command: str = Field(pattern=_TOKEN, rule=_TOKEN_RULE)
    subcommand: str = Field("undefined", pattern=_TOKEN, rule=_TOKEN_RULE)
    task_status: TaskStatusEnum = Field(alias="taskStatus")
    duration_ms: int = Field(-1, alias="durationMs", ge=-1)
    exit_code: int = Field(-1, alias="exitCode")
    error_class: str = Field("undefined", alias="errorClass", max_length=128,
                             pattern=_DOTTED_IDENTIFIER, rule=_IDENTIFIER_RULE)
    python_version: str = Field(alias="pythonVersion", pattern=_PYTHON_VERSION,
                                rule=_VERSION_RULE)
