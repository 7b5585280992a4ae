"""Telemetry events: immutable records that validate themselves, declared as dataclasses
are (see :class:`TelemetryEvent`), with the pydantic surface people use: ``model_dump``,
``model_dump_json``, ``model_validate``, ``model_validate_json``, ``model_fields`` and
``model_json_schema``.

Privacy is enforced here rather than trusted to callers: the string fields of
:class:`CliCommandEvent` only accept short tokens, dotted identifiers and version numbers,
so an argument, a path, a message or a user name cannot ride along.

Importing this module is on the path of every recorded command, so it imports only
``enum`` (and the small ``types`` and ``keyword``); ``re``, ``json``, ``inspect``,
``dataclasses`` and ``typing`` are loaded by the few methods that need them.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from . import _fields
from ._fields import FieldInfo, Invalid, Spec
from ._rules import DOTTED_IDENTIFIER, ERROR_CLASS_MAX_LENGTH, PYTHON_VERSION, TOKEN
from .outcome import COMMAND_EVENT

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar, Literal, TypeVar, overload

    from typing_extensions import dataclass_transform

    from ._fields import Dump

    _E = TypeVar("_E", bound="TelemetryEvent")
    _T = TypeVar("_T")
else:
    def dataclass_transform(**_options: object):  # PEP 681: only type checkers read it
        return lambda cls: cls

__all__ = [
    "CliCommandEvent",
    "Field",
    "FieldInfo",
    "NemoSourceEnum",
    "RecordedEvent",
    "TaskStatusEnum",
    "TelemetryEvent",
    "ValidationError",
    "event_classes",
    "rebuild",
]


class ValidationError(ValueError):
    """An event's data is not valid; ``errors`` lists ``(field, reason)`` pairs."""

    def __init__(self, model: str, errors: list[tuple[str, str]]) -> None:
        self.model = model
        self.errors = errors
        detail = "; ".join(f"{name}: {reason}" for name, reason in errors)
        plural = "error" if len(errors) == 1 else "errors"
        super().__init__(f"{len(errors)} validation {plural} for {model}: {detail}")


class _StrEnum(str, enum.Enum):
    """A ``str`` enum that prints as its value, as ``enum.StrEnum`` (3.11+) does."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(str.__str__(self), format_spec)


class NemoSourceEnum(_StrEnum):
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


class TaskStatusEnum(_StrEnum):
    """Outcome of the reported task (schema 1.5)."""

    SUCCESS = "success"
    FAILURE = "failure"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"
    UNDEFINED = "undefined"


if TYPE_CHECKING:
    # Keyword-only ``default``: type checkers (PEP 681) only see a default given
    # by keyword; at run time a positional one is accepted too.
    @overload
    def Field(*, default: _T, alias: str | None = None, ge: int | None = None,
              le: int | None = None, pattern: str | None = None,
              max_length: int | None = None, rule: str | None = None) -> _T: ...
    @overload
    def Field(*, alias: str | None = None, ge: int | None = None, le: int | None = None,
              pattern: str | None = None, max_length: int | None = None,
              rule: str | None = None) -> Any: ...


def Field(default: Any = ..., *, alias: str | None = None, ge: int | None = None,
          le: int | None = None, pattern: str | None = None, max_length: int | None = None,
          rule: str | None = None) -> Any:
    """Declare a field's default, wire alias and constraint.

    ``default`` (by keyword, for type checkers) makes the field optional.  ``alias`` is
    its name on the wire; the constructor and ``model_validate`` take either name (type
    checkers, following PEP 681, know only the alias).  ``ge``/``le`` bound an ``int``
    (always also within a signed 64-bit integer); ``pattern`` (matched in full) and
    ``max_length`` constrain a ``str``, and ``rule`` words the error for ``pattern``, which
    must mean the same in ECMA-262 for ``model_json_schema``: ``[0-9]``, not ``\\d``.
    """
    return FieldInfo(default, alias=alias, ge=ge, le=le, pattern=pattern,
                     max_length=max_length, rule=rule)


def _validate(cls: type[TelemetryEvent], data: Mapping[str, Any], by_alias: bool = True,
              by_name: bool = True) -> dict[str, Any]:
    """Check ``data`` against ``cls``'s fields; every problem goes in one ValidationError."""
    values: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    known: set[str] = set()
    for spec in cls._fields_spec:
        keys = [key for key, allowed in ((spec.name, by_name), (spec.alias, by_alias))
                if allowed or spec.alias == spec.name]
        known.update(keys)
        given = [key for key in dict.fromkeys(keys) if key in data]
        if len(given) > 1:
            errors.append((spec.name, f"given both as {given[0]!r} and as {given[1]!r}"))
        elif given:
            try:
                values[spec.name] = spec.check(data[given[0]])
            except Invalid as exc:
                errors.append((spec.name, str(exc)))
        elif not spec.required:
            values[spec.name] = spec.default
        else:
            errors.append((spec.name, "field required"))
    errors += [(key, "unknown field") for key in data if key not in known]
    if errors:
        raise ValidationError(cls.__name__, errors)
    return values


def _slow_init(self: TelemetryEvent, given: dict[str, Any], unknown: dict[str, Any]) -> None:
    """Where the generated ``__init__`` goes when anything is unusual."""
    data = {key: value for key, value in given.items() if value is not _fields.MISSING}
    self.__dict__.update(_validate(type(self), {**data, **unknown}))


class _DataclassFields:
    """``__dataclass_fields__``, so ``dataclasses.fields()`` works on events: made on first
    use, once per class, from a dataclass with the same fields."""

    def __get__(self, instance: object, owner: type[TelemetryEvent]) -> dict[str, Any]:
        if owner is TelemetryEvent:  # not a dataclass: it has no fields to list
            raise AttributeError("__dataclass_fields__")
        cached: dict[str, Any] | None = owner.__dict__.get("_dataclass_fields")
        if cached is None:
            import dataclasses

            fields = owner.model_fields.items()
            namespace = {name: info.default for name, info in fields if not info.is_required()}
            namespace["__annotations__"] = {name: info.annotation for name, info in fields}
            shadow: Any = dataclasses.dataclass(init=False, repr=False, eq=False, frozen=True)(
                type(owner.__name__, (), namespace))
            cached = dict(shadow.__dataclass_fields__)
            type.__setattr__(owner, "_dataclass_fields", cached)
        return cached


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(Field,))
class TelemetryEvent:
    """Base of every event; a subclass must define ``_event_name``.

    Fields are annotated class attributes of type ``str``, ``int`` or a ``str`` enum,
    optionally ``= Field(...)``, inherited in order; names starting with ``_`` and
    ``ClassVar``s are not fields.  The subclass gets a validating keyword-only constructor,
    equality, hashing and a repr over its fields, and frozen instances (assigning raises
    ``dataclasses.FrozenInstanceError``).
    """

    _event_name: ClassVar[str]
    _schema_version: ClassVar[str] = "1.5"
    model_fields: ClassVar[Mapping[str, FieldInfo]] = MappingProxyType({})
    _fields_spec: ClassVar[tuple[Spec, ...]] = ()
    _dumpers: ClassVar[tuple[Dump, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_event_name" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must define '_event_name' class variable")
        infos = _fields.field_infos(cls, reserved=TelemetryEvent)
        specs = tuple(Spec(cls, info) for info in infos.values())
        init, dump, dump_by_alias = _fields.compile_methods(cls, specs, _slow_init)
        for name in infos:
            if name in cls.__dict__:
                delattr(cls, name)  # values live on instances; the class keeps no default
        cls.model_fields = MappingProxyType(infos)
        cls._fields_spec = specs
        cls._dumpers = (dump, dump_by_alias)
        # Assignments mypy would refuse: a method and a name it reserves for dataclasses.
        setattr(cls, "__match_args__", tuple(infos))  # noqa: B010
        setattr(cls, "__init__", init)  # noqa: B010

    if not TYPE_CHECKING:  # type checkers know the fields are frozen (PEP 681)
        def __init__(self, **data):
            raise TypeError("TelemetryEvent is a base class: instantiate a subclass")

        def __setattr__(self, name, value):
            raise _frozen(f"cannot assign to field {name!r}")

        def __delattr__(self, name):
            raise _frozen(f"cannot delete field {name!r}")

        __dataclass_fields__ = _DataclassFields()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"{type(self).__qualname__}({fields})"

    @classmethod
    def model_validate(cls: type[_E], data: Mapping[str, Any], *, by_alias: bool = True,
                       by_name: bool = True) -> _E:
        """Build an event from a mapping keyed by field names or wire aliases: only aliases
        with ``by_name=False`` (what ``model_json_schema()`` describes), only field names
        with ``by_alias=False``."""
        if type(data) is not dict:
            from collections.abc import Mapping

            if not isinstance(data, Mapping):
                raise ValidationError(cls.__name__, [
                    ("__root__", f"must be a mapping, got {type(data).__name__}")])
        bad_keys = [key for key in data if not isinstance(key, str)]
        if bad_keys:
            raise ValidationError(cls.__name__, [(repr(k), "field names must be strings")
                                                 for k in bad_keys])
        if by_alias and by_name:
            return cls(**data)
        if not (by_alias or by_name):
            raise ValueError("by_alias and by_name cannot both be false")
        event = cls.__new__(cls)
        event.__dict__.update(_validate(cls, data, by_alias=by_alias, by_name=by_name))
        return event

    @classmethod
    def model_validate_json(cls: type[_E], json_data: str | bytes | bytearray, *,
                            by_alias: bool = True, by_name: bool = True) -> _E:
        """Build an event from a JSON document (RFC 8259: no NaN or Infinity).  JSON has
        numbers, not ints and floats: ``12.0`` is taken for ``12``, as JSON Schema does;
        ``model_validate`` refuses a Python float."""
        try:
            data = _fields.load_json(json_data)
        except Invalid as exc:
            raise ValidationError(cls.__name__, [("__root__", str(exc))]) from None
        if isinstance(data, dict):
            for spec in cls._fields_spec:
                if spec.is_int:
                    for key in {spec.name, spec.alias}:
                        value = data.get(key)
                        if type(value) is float and value.is_integer():
                            data[key] = int(value)
        return cls.model_validate(data, by_alias=by_alias, by_name=by_name)

    def model_dump(self, by_alias: bool = False, *, mode: str = "python") -> dict[str, Any]:
        """The event as plain values: ``str`` and ``int``, enums as their ``str`` value.
        Every field is already a JSON type, so ``mode="python"`` and ``mode="json"`` give
        the same dict (an enum value compares equal to its member)."""
        if mode != "python" and mode != "json":
            raise ValueError(f"mode must be 'python' or 'json', not {mode!r}")
        return self._dumpers[by_alias](self.__dict__)

    def model_dump_json(self, *, indent: int | None = None, by_alias: bool = False) -> str:
        """``model_dump()`` as JSON text: compact unless ``indent`` is given, as pydantic does."""
        import json

        return json.dumps(self._dumpers[by_alias](self.__dict__), indent=indent,
                          ensure_ascii=False, separators=(",", ":") if indent is None else None)

    @classmethod
    def model_json_schema(cls, by_alias: bool = True, *,
                          mode: str = "validation") -> dict[str, Any]:
        """A JSON Schema (draft 2020-12) of the event, as ``model_validate_json`` checks it.

        With ``by_alias`` (the default) it describes the wire form, the JSON objects
        ``model_validate_json(text, by_name=False)`` accepts; with ``by_alias=False``, those
        keyed by field names that ``model_validate_json(text, by_alias=False)`` accepts.
        ``mode="serialization"`` describes ``model_dump`` output instead: every field present.
        """
        return _fields.json_schema(cls, cls.model_fields, by_alias=by_alias, mode=mode)


def _frozen(message: str) -> AttributeError:
    # The error a frozen dataclass raises; its module is loaded only on this mistake.
    from dataclasses import FrozenInstanceError

    return FrozenInstanceError(message)


_TOKEN_RULE = ("must be a short name: 1 to 64 letters, digits, '-', '_', '.' or ':' "
               "(no spaces, paths or free text)")
_IDENTIFIER_RULE = "must be an exception class name: a (dotted) Python identifier, no message"
_VERSION_RULE = "must be a Python version such as '3.11.7' or '3.13.0rc1'"

if TYPE_CHECKING:
    _NemoSourceValue = Literal["inference", "auditor", "datadesigner", "evaluator",
                               "guardrails", "safe-synthesizer", "anonymizer",
                               "agent_toolkit", "undefined"]
    _TaskStatusValue = Literal["success", "failure", "completed", "error", "canceled",
                               "interrupted", "undefined"]


class CliCommandEvent(TelemetryEvent):
    """One invocation of a command-line command.

    Deliberately minimal: the command and subcommand *names*, the outcome,
    the duration, the exit code, the exception *class* and the Python version.
    Never arguments, option values, paths, messages, host or user names.

    ``duration_ms`` is in [-1, 2**63-1] (-1: not measured) and ``exit_code`` in
    [-2**63, 2**63-1], the wire schema's signed 64-bit integers.  Enum fields
    take the member or its string value.  Each field also has a camelCase wire
    alias (``taskStatus``), accepted in its place.
    """

    _event_name: ClassVar[str] = COMMAND_EVENT

    nemo_source: NemoSourceEnum = Field(default=NemoSourceEnum.AGENT_TOOLKIT,
                                        alias="nemoSource")
    command: str = Field(pattern=TOKEN, rule=_TOKEN_RULE)
    subcommand: str = Field(default="undefined", pattern=TOKEN, rule=_TOKEN_RULE)
    task_status: TaskStatusEnum = Field(alias="taskStatus")
    duration_ms: int = Field(default=-1, alias="durationMs", ge=-1)
    exit_code: int = Field(default=-1, alias="exitCode")
    error_class: str = Field(default="undefined", alias="errorClass",
                             max_length=ERROR_CLASS_MAX_LENGTH, pattern=DOTTED_IDENTIFIER,
                             rule=_IDENTIFIER_RULE)
    python_version: str = Field(alias="pythonVersion", pattern=PYTHON_VERSION,
                                rule=_VERSION_RULE)

    if TYPE_CHECKING:
        # By field name, enums as member or value: what the run-time constructor
        # takes (it takes the aliases too, which a type checker need not know).
        def __init__(self, *, nemo_source: NemoSourceEnum | _NemoSourceValue = ...,
                     command: str, subcommand: str = ...,
                     task_status: TaskStatusEnum | _TaskStatusValue,
                     duration_ms: int = ..., exit_code: int = ..., error_class: str = ...,
                     python_version: str) -> None: ...


# --------------------------------------------------------------- spooled events

def event_classes() -> list[type[TelemetryEvent]]:
    """The event classes this package sends, by event name (a class a program
    defines for itself is that program's to document)."""
    found: dict[str, type[TelemetryEvent]] = {}
    pending = list(TelemetryEvent.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls.__module__ == __name__:
            found.setdefault(cls._event_name, cls)
        pending.extend(cls.__subclasses__())
    return [found[name] for name in sorted(found)]


class RecordedEvent:
    """An event read back from the spool whose class this process does not have
    (a program's own, validated when it was made): sent as it was recorded."""

    __slots__ = ("_event_name", "_parameters", "_schema_version")

    def __init__(self, name: str, schema_version: str, parameters: dict[str, Any]) -> None:
        self._event_name, self._schema_version = name, schema_version
        self._parameters = parameters

    def model_dump(self, by_alias: bool = False) -> dict[str, Any]:
        return dict(self._parameters)

    def __repr__(self) -> str:
        return f"RecordedEvent({self._event_name!r}, {self._parameters!r})"


def rebuild(name: str, schema_version: str | None,
            parameters: dict[str, Any]) -> TelemetryEvent | RecordedEvent:
    """The event a spooled record stands for, validated again by its class when this
    package defines it (by field names or wire names); ValidationError, or
    ValueError for a record of an unknown class without its schema version."""
    for cls in event_classes():
        if cls._event_name == name:
            return cls.model_validate(parameters)
    if not isinstance(name, str):
        raise ValueError(f"a spooled event named {name!r}, not by a string")
    if not isinstance(schema_version, str) or not isinstance(parameters, dict):
        raise ValueError(f"a spooled {name!r} event without its schema version")
    return RecordedEvent(name, schema_version, parameters)
