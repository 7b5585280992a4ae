"""What few programs ask of an event class, loaded only when one does.

JSON Schema generation, JSON parsing for ``model_validate_json`` and the
``dataclasses`` view of an event class live here so that importing
:mod:`.events`, on the path of every recorded command, stays cheap.
"""

from __future__ import annotations

import json

from ._fields import FieldInfo, int_bounds
from .events import TelemetryEvent, ValidationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import enum
    from typing import Any

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def ecma_pattern(pattern: str) -> str:
    """``pattern`` as a JSON Schema ``pattern``: the same strings, in ECMA-262 and in ``re``.

    A JSON Schema pattern is searched for, not matched in full, hence the
    anchors.  The end is a lookahead for "no character left" because ``$``
    means "at the end or before a final newline" to Python's ``re`` (which
    the ``jsonschema`` package uses) but "at the end" to ECMA-262.
    """
    return f"^(?:{pattern})(?![\\s\\S])"


def _title(key: str) -> str:
    return key.title().replace("_", " ").strip()  # as pydantic titles a property


def _enum_schema(enum_type: type[enum.Enum]) -> dict[str, Any]:
    schema: dict[str, Any] = {"title": enum_type.__name__}
    if enum_type.__doc__:
        schema["description"] = enum_type.__doc__.strip()
    schema.update({"enum": [member.value for member in enum_type], "type": "string"})
    return schema


def _property(info: FieldInfo, key: str, defs: dict[str, Any]) -> dict[str, Any]:
    annotation = info.annotation
    schema: dict[str, Any] = {"title": _title(key)}
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
        defs[annotation.__name__] = _enum_schema(annotation)
        schema["$ref"] = f"#/$defs/{annotation.__name__}"
    if not info.is_required():
        default = info.default
        schema["default"] = default.value if annotation not in (int, str) else default
    return schema


def json_schema(cls: type[TelemetryEvent], *, by_alias: bool, mode: str) -> dict[str, Any]:
    if mode not in ("validation", "serialization"):
        raise ValueError(f"mode must be 'validation' or 'serialization', not {mode!r}")
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, info in cls.model_fields.items():
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


def load_json(cls: type[TelemetryEvent], json_data: str | bytes | bytearray) -> Any:
    """The document, or a ValidationError that does not repeat it."""
    try:
        return json.loads(json_data, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} at position {exc.pos}"
    except (ValueError, RecursionError) as exc:  # an undecodable byte, NaN, deep nesting
        reason = f"invalid JSON: {type(exc).__name__}"
    raise ValidationError(cls.__name__, [("__root__", reason)])


def dataclass_fields(cls: type[TelemetryEvent]) -> dict[str, Any]:
    """``__dataclass_fields__`` for an event class, so ``dataclasses.fields()`` lists its fields.

    Made once per class from a dataclass with the same fields, through the
    public ``dataclasses`` API only.
    """
    cached: dict[str, Any] | None = cls.__dict__.get("_dataclass_fields")
    if cached is None:
        import dataclasses

        if cls is TelemetryEvent:  # not a dataclass: it has no fields to list
            raise AttributeError("__dataclass_fields__")
        fields = cls.model_fields
        namespace: dict[str, Any] = {"__annotations__": {
            name: info.annotation for name, info in fields.items()}}
        namespace.update({name: info.default for name, info in fields.items()
                          if not info.is_required()})
        shadow: Any = dataclasses.dataclass(init=False, repr=False, eq=False, frozen=True)(
            type(cls.__name__, (), namespace))
        cached = dict(shadow.__dataclass_fields__)
        type.__setattr__(cls, "_dataclass_fields", cached)
    return cached
