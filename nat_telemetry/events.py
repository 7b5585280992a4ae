"""Telemetry events: immutable records that validate themselves.

A subclass of :class:`TelemetryEvent` declares its fields as annotated class
attributes, as a dataclass does: each one a ``str``, an ``int`` or a ``str``
enum, optionally ``= Field(...)`` to give it a wire alias and a constraint.
Its keyword-only constructor checks every field; a wrong type, a missing field,
an unknown key or a value outside the field's language is a
:class:`ValidationError` naming every offending field.  Instances are frozen.

The pydantic surface people use is here too: ``model_dump``,
``model_dump_json``, ``model_validate``, ``model_validate_json``,
``model_fields`` and ``model_json_schema``.

Privacy is enforced here rather than trusted to callers: the string fields of
:class:`CliCommandEvent` only accept short tokens, dotted identifiers and
version numbers, so an argument, a path, a message or a user name cannot ride
along.

Importing this module is on the path of every recorded command, so it imports
only ``enum`` (and the small ``types`` and ``keyword``).  ``re``, ``json``,
``inspect``, ``dataclasses`` and ``typing`` are loaded by the few methods that
need them, when they are called.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from ._fields import (
    DOTTED_IDENTIFIER,
    PYTHON_VERSION,
    REJECT,
    TOKEN,
    FieldInfo,
    Invalid,
    Kind,
    field_infos,
    kind_of,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, ClassVar, Literal, TypeVar, overload

    from typing_extensions import dataclass_transform

    _E = TypeVar("_E", bound="TelemetryEvent")
    _Dump = Callable[[dict[str, Any]], dict[str, Any]]
    _T = TypeVar("_T")
else:
    def dataclass_transform(**_options: object):  # PEP 681: only type checkers read it
        return lambda cls: cls

__all__ = [
    "CliCommandEvent",
    "Field",
    "FieldInfo",
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

    ``default`` (by keyword, for type checkers) makes the field optional.
    ``alias`` is its name on the wire; the constructor and ``model_validate``
    take either name (type checkers, following PEP 681, know only the alias).
    ``ge``/``le`` bound an ``int`` (always also within a signed 64-bit integer);
    ``pattern`` (matched in full) and ``max_length`` constrain a ``str``, and
    ``rule`` words the error for ``pattern``.  A pattern published by
    ``model_json_schema`` must mean the same in ECMA-262: write ``[0-9]``, not
    ``\\d`` or ``\\w``.
    """
    return FieldInfo(default, alias=alias, ge=ge, le=le, pattern=pattern,
                     max_length=max_length, rule=rule)


# A parameter left out of a call.
_MISSING: Any = object()


class _Spec:
    """A field as the generated code uses it."""

    __slots__ = ("alias", "default", "info", "kind", "name", "required")

    def __init__(self, info: FieldInfo, kind: Kind) -> None:
        self.info, self.kind = info, kind
        self.name: str = info.name
        self.alias: str = info.alias or info.name
        self.default: Any = info.default
        self.required = info.is_required()


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
                values[spec.name] = spec.kind.check(data[given[0]])
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
    data = {key: value for key, value in given.items() if value is not _MISSING}
    self.__dict__.update(_validate(type(self), {**data, **unknown}))


def _compile(cls: type, specs: tuple[_Spec, ...]) -> tuple[Callable[..., None], _Dump, _Dump]:
    """``__init__`` and the two ``model_dump``s, written out.

    Binding arguments by name and checking each field in straight-line code is
    what keeps construction near a microsecond (``dataclasses`` generates its
    ``__init__`` the same way).  Anything unusual - an unknown, missing or
    doubled key, a rejected value - goes to :func:`_slow_init`, which reports
    every problem at once.  Locals start with ``_``, which no field name does.
    """
    from keyword import iskeyword

    names = [spec.name for spec in specs]
    # An alias that cannot be a parameter name arrives in ``_unknown`` instead.
    aliases = [spec.alias for spec in specs if spec.alias != spec.name
               and spec.alias.isidentifier() and not iskeyword(spec.alias)
               and not spec.alias.startswith("_")]
    keywords = "".join(f"{p}=_MISSING, " for p in names + aliases)
    lines = [f"def __init__(_self, /, {'*, ' if keywords else ''}{keywords}**_unknown):"]
    namespace: dict[str, Any] = {"_MISSING": _MISSING, "_REJECT": REJECT, "_slow": _slow_init}
    for i, spec in enumerate(specs):
        name, alias = spec.name, spec.alias
        value = name
        if alias in aliases:
            value = (f"({name} if {alias} is _MISSING"
                     f" else {alias} if {name} is _MISSING else _REJECT)")
        if spec.required:
            lines.append(f"    _v{i} = _REJECT if {value} is _MISSING else _accept{i}({value})")
        else:
            lines.append(f"    _v{i} = {value}")
            lines.append(f"    _v{i} = _default{i} if _v{i} is _MISSING else _accept{i}(_v{i})")
        namespace[f"_accept{i}"] = spec.kind.accept
        namespace[f"_default{i}"] = spec.default
    unusual = " or ".join(["_unknown"] + [f"_v{i} is _REJECT" for i in range(len(specs))])
    given = ", ".join(f"{p!r}: {p}" for p in names + aliases)
    lines.append(f"    if {unusual}:")
    lines.append(f"        return _slow(_self, {{{given}}}, _unknown)")
    lines.append("    _self.__dict__.update(" + ", ".join(
        f"{name}=_v{i}" for i, name in enumerate(names)) + ")")
    for by_alias in (False, True):
        items = ", ".join(
            f"{spec.alias if by_alias else spec.name!r}: "
            f"_values[{spec.name!r}]{'._value_' if spec.kind.is_enum else ''}"
            for spec in specs)
        lines.append(f"def dump_{by_alias}(_values): return {{{items}}}")
    exec("\n".join(lines), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {spec.name: spec.info.annotation for spec in specs}
    init.__annotations__["return"] = None
    init.__doc__ = "Check every field; a ValidationError names each one that is wrong."
    init.__wrapped__ = _Signature(specs)  # followed by inspect.signature, so by help() too
    return init, namespace["dump_False"], namespace["dump_True"]


class _Signature:
    """What ``inspect.signature()`` and ``help()`` show for a generated ``__init__``.

    The fields as keyword-only parameters with their types, required ones
    without a default, rather than the catch-all the constructor really
    has.  Built when asked for, as ``inspect`` is only loaded by the asker.
    """

    __slots__ = ("specs",)

    def __init__(self, specs: tuple[_Spec, ...]) -> None:
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


class _DataclassFields:
    """``__dataclass_fields__``, made on first use: ``dataclasses.fields()`` works on events."""

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        from ._schema import dataclass_fields

        return dataclass_fields(owner)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(Field,))
class TelemetryEvent:
    """Base of every event; a subclass must define ``_event_name``.

    Fields are annotated class attributes (``str``, ``int`` or a ``str`` enum,
    optionally ``= Field(...)``); names starting with ``_`` and ``ClassVar``s
    are not fields.  Fields are inherited, in order.  The subclass gets a
    keyword-only constructor that validates every field, equality, hashing and
    a repr over its fields, and frozen instances (assigning raises
    ``dataclasses.FrozenInstanceError``, an ``AttributeError``);
    ``dataclasses.fields()`` lists its fields.
    """

    _event_name: ClassVar[str]
    _schema_version: ClassVar[str] = "1.5"
    model_fields: ClassVar[Mapping[str, FieldInfo]] = MappingProxyType({})
    _fields_spec: ClassVar[tuple[_Spec, ...]] = ()
    _dumpers: ClassVar[tuple[_Dump, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_event_name" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must define '_event_name' class variable")
        infos = field_infos(cls, reserved=TelemetryEvent)
        specs = tuple(_Spec(info, kind_of(cls, info)) for info in infos.values())
        init, dump, dump_by_alias = _compile(cls, specs)
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
        """Build an event from a mapping keyed by field names or wire aliases.

        ``by_name=False`` accepts wire aliases only (what
        ``model_json_schema(by_alias=True)`` describes), ``by_alias=False``
        field names only.
        """
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
        """Build an event from a JSON document (RFC 8259: no NaN or Infinity).

        JSON has numbers, not ints and floats: ``12.0`` is taken for ``12``,
        as JSON Schema does; ``model_validate`` refuses a Python float.
        """
        from ._schema import load_json

        data = load_json(cls, json_data)
        if isinstance(data, dict):
            for spec in cls._fields_spec:
                if spec.kind.is_int:
                    for key in {spec.name, spec.alias}:
                        value = data.get(key)
                        if type(value) is float and value.is_integer():
                            data[key] = int(value)
        return cls.model_validate(data, by_alias=by_alias, by_name=by_name)

    def model_dump(self, by_alias: bool = False, *, mode: str = "python") -> dict[str, Any]:
        """The event as plain values: ``str`` and ``int``, enums as their ``str`` value.

        Every field is already a JSON type, so ``mode="python"`` and
        ``mode="json"`` give the same dict (an enum value compares equal to
        its member).
        """
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

        With ``by_alias`` (the default) it describes the wire form and accepts
        exactly the JSON objects ``model_validate_json(text, by_name=False)``
        accepts; with ``by_alias=False``, the objects keyed by field names that
        ``model_validate_json(text, by_alias=False)`` accepts.
        ``mode="serialization"`` describes ``model_dump`` output instead: every
        field present.
        """
        from ._schema import json_schema

        return json_schema(cls, by_alias=by_alias, mode=mode)


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

    _event_name: ClassVar[str] = "nat_cli_command"

    nemo_source: NemoSourceEnum = Field(default=NemoSourceEnum.AGENT_TOOLKIT,
                                        alias="nemoSource")
    command: str = Field(pattern=TOKEN, rule=_TOKEN_RULE)
    subcommand: str = Field(default="undefined", pattern=TOKEN, rule=_TOKEN_RULE)
    task_status: TaskStatusEnum = Field(alias="taskStatus")
    duration_ms: int = Field(default=-1, alias="durationMs", ge=-1)
    exit_code: int = Field(default=-1, alias="exitCode")
    error_class: str = Field(default="undefined", alias="errorClass", max_length=128,
                             pattern=DOTTED_IDENTIFIER, rule=_IDENTIFIER_RULE)
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

