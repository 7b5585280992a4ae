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
from typing import Any, Callable, ClassVar, Dict, List, Optional, Pattern, Tuple

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

    def __init__(self, model: str, errors: List[Tuple[str, str]]) -> None:
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


def Field(  # noqa: N802 - named like the pydantic helper it replaces
    default: Any = _MISSING,
    *,
    alias: Optional[str] = None,
    ge: Optional[int] = None,
    pattern: Optional[str] = None,
    max_length: Optional[int] = None,
    rule: Optional[str] = None,
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


def _str_checker(pattern: Optional[str], max_length: Optional[int], rule: Optional[str]) -> Checker:
    compiled: Optional[Pattern[str]] = re.compile(pattern) if pattern is not None else None
    wording = rule or (f"must match {pattern!r}" if pattern else "")

    def check(value: Any) -> str:
        if not isinstance(value, str) or isinstance(value, enum.Enum):
            raise _Invalid(f"must be a string, got {type(value).__name__}")
        if type(value) is not str:
            value = str.__str__(value)
        if max_length is not None and len(value) > max_length:
            raise _Invalid(f"must be at most {max_length} characters, got {len(value)}")
        if compiled is not None and compiled.fullmatch(value) is None:
            raise _Invalid(wording)
        return value

    return check


def _int_checker(ge: Optional[int]) -> Checker:
    def check(value: Any) -> int:
        if type(value) is not int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Invalid(f"must be an integer, got {type(value).__name__}")
            value = int(value)
        if ge is not None and value < ge:
            raise _Invalid(f"must be >= {ge}, got {value}")
        return value

    return check


def _enum_checker(enum_type: "type[enum.Enum]") -> Checker:
    by_value = {member.value: member for member in enum_type}
    allowed = ", ".join(repr(v) for v in by_value)

    def check(value: Any) -> enum.Enum:
        if type(value) is enum_type:
            return value  # type: ignore[no-any-return]
        member = by_value.get(value) if isinstance(value, str) else None
        if member is None:
            # The rejected value is not repeated: it may be exactly what must not leak.
            raise _Invalid(f"must be one of {allowed}")
        return member

    return check


class _FieldSpec(typing.NamedTuple):
    name: str
    alias: str
    default: Any
    check: Checker
    is_enum: bool


def _field_specs(cls: type) -> Tuple[_FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        kind = hints[f.name]
        if isinstance(kind, type) and issubclass(kind, str) and issubclass(kind, enum.Enum):
            check, is_enum = _enum_checker(kind), True
        elif kind is int:
            check, is_enum = _int_checker(meta.get("ge")), False
        elif kind is str:
            check = _str_checker(meta.get("pattern"), meta.get("max_length"), meta.get("rule"))
            is_enum = False
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {kind!r} "
                            "(use str, int or a str enum)")
        default = f.default
        if default is not _MISSING:
            try:
                default = check(default)
            except _Invalid as exc:
                raise TypeError(f"{cls.__name__}.{f.name}: invalid default: {exc}") from None
        specs.append(_FieldSpec(f.name, meta.get("alias") or f.name, default, check, is_enum))
    return tuple(specs)


class TelemetryEvent:
    """Base of every event; a subclass must define ``_event_name``."""

    _event_name: ClassVar[str]
    _schema_version: ClassVar[str] = "1.5"
    __fields_spec__: ClassVar[Tuple[_FieldSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_event_name" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must define '_event_name' class variable")
        dataclasses.dataclass(init=False, frozen=True)(cls)
        cls.__fields_spec__ = _field_specs(cls)

    def __init__(self, **data: Any) -> None:
        errors: List[Tuple[str, str]] = []
        set_attr = object.__setattr__
        for spec in self.__fields_spec__:
            name, alias = spec.name, spec.alias
            if name in data:
                value = data.pop(name)
                if alias != name and alias in data:
                    data.pop(alias)
                    errors.append((name, f"given both as {name!r} and as {alias!r}"))
                    continue
            elif alias in data:
                value = data.pop(alias)
            elif spec.default is not _MISSING:
                set_attr(self, name, spec.default)
                continue
            else:
                errors.append((name, "field required"))
                continue
            try:
                set_attr(self, name, spec.check(value))
            except _Invalid as exc:
                errors.append((name, str(exc)))
        for key in data:
            errors.append((key, "unknown field"))
        if errors:
            raise ValidationError(type(self).__name__, errors)

    @classmethod
    def model_validate(cls, data: Mapping[str, Any]) -> "TelemetryEvent":
        """Build an event from a mapping keyed by field names or wire aliases."""
        if not isinstance(data, Mapping):
            raise ValidationError(cls.__name__,
                                  [("__root__", f"must be a mapping, got {type(data).__name__}")])
        bad_keys = [key for key in data if not isinstance(key, str)]
        if bad_keys:
            raise ValidationError(cls.__name__, [(repr(k), "field names must be strings")
                                                 for k in bad_keys])
        return cls(**data)

    def model_dump(self, by_alias: bool = False) -> Dict[str, Any]:
        """The event as plain JSON-ready values (enums as their string value)."""
        out: Dict[str, Any] = {}
        for spec in self.__fields_spec__:
            value = getattr(self, spec.name)
            out[spec.alias if by_alias else spec.name] = value.value if spec.is_enum else value
        return out


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
