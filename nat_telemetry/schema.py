"""JSON Schemas of what can ever be sent: every event, and the envelope around them.

``nat-telemetry schema`` prints these so that a reviewer can read exactly what a request
body may contain without reading the code.  Each event's schema is its class's own
``model_json_schema()``; the envelope's is built from the key lists of :mod:`.payload` and
from a body :func:`~.payload.build_payload` made, so it cannot drift from the payload it
describes: it lists every key, pins every fixed value, and allows nothing else.  Loaded
only by that command and by tests.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from . import payload
from ._fields import DRAFT_2020_12 as DRAFT
from ._fields import ecma_pattern
from .events import CliCommandEvent, TelemetryEvent, event_classes

__all__ = ["DRAFT", "envelope_schema", "event_classes", "event_schema", "schemas"]

_TIMESTAMP = {
    "type": "string",
    "pattern": ecma_pattern(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"),
    "description": "UTC time, YYYY-MM-DDTHH:MM:SS.mmmZ",
}
_DESCRIPTIONS = {
    "clientVer": "the version of the client that sent the body (a tool's own version, for "
                 "a tool that embeds this package)",
    "productName": "the name of the tool that embeds this package ('undefined' for the "
                   "NeMo Agent Toolkit)",
    "productVersion": "that tool's version ('undefined' for the NeMo Agent Toolkit)",
    "cpuArchitecture": "the CPU architecture, e.g. x86_64 or arm64",
    "sessionId": "a random id drawn for each process (optionally prefixed with "
                 "NAT_SESSION_PREFIX); it links the events of one run, nothing else",
}


def event_schema(cls: type[TelemetryEvent]) -> dict[str, Any]:
    """The JSON Schema of one event's ``parameters``, as sent."""
    return cls.model_json_schema()


def _embed(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without ``$schema``, its ``$defs`` moved into ``defs`` under
    ``prefix.``, and every local ``$ref`` pointed at the new place."""
    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: rewrite(value) for key, value in node.items()
               if key not in ("$schema", "$defs")}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = f"#/$defs/{prefix}.{ref[len('#/$defs/'):]}"
        return out

    defs.update({f"{prefix}.{name}": rewrite(sub) for name, sub in schema.get("$defs", {}).items()})
    result: dict[str, Any] = rewrite(schema)
    return result


def _fixed_values() -> dict[str, Any]:
    # The envelope's values that do not depend on the process, from a body built the real way.
    sample = CliCommandEvent(command="x", task_status="success", python_version="3.0.0")
    body = payload.build_payload([payload.QueuedEvent(sample, datetime.now(timezone.utc))],
                                 source_client_version="0", session_id="0")
    return {key: body[key] for key in
            ("clientId", "clientType", "clientVariant", "eventProtocol", "eventSysVer")}


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of a whole request body."""
    classes = event_classes()
    defs: dict[str, Any] = {}
    wire_events = []
    for cls in classes:
        name = cls._event_name
        defs[name] = _embed(event_schema(cls), name, defs)
        fields = {"ts": _TIMESTAMP, "parameters": {"$ref": f"#/$defs/{name}"},
                  "name": {"const": name}}
        wire_events.append({"type": "object", "properties": fields,
                            "required": list(payload.EVENT_KEYS), "additionalProperties": False})
    fixed = _fixed_values()
    versions = sorted({cls._schema_version for cls in classes})
    properties: dict[str, Any] = {}
    for key in payload.ENVELOPE_KEYS:
        prop: dict[str, Any]
        if key in payload.IDENTITY_FIELDS:
            prop = {"const": "undefined",
                    "description": "never identifies a person, device or organisation"}
        elif key in payload.GDPR_FIELDS:
            prop = {"const": "None"}
        elif key in fixed:
            prop = {"const": fixed[key]}
        elif key == "eventSchemaVer":
            prop = {"enum": versions}
        elif key == "sentTs":
            prop = dict(_TIMESTAMP)
        elif key == "events":
            prop = {"type": "array", "minItems": 1, "items": {"oneOf": wire_events}}
        else:
            prop = {"type": "string"}
            if key in _DESCRIPTIONS:
                prop["description"] = _DESCRIPTIONS[key]
        properties[key] = prop
    return {
        "$schema": DRAFT,
        "title": "NeMo Usage Telemetry request body",
        "description": "Everything a POST of this client can carry. Identity fields are "
                       "always 'undefined' and GDPR fields always 'None'.",
        "type": "object",
        "properties": properties,
        "required": list(payload.ENVELOPE_KEYS),
        "additionalProperties": False,
        "$defs": defs,
    }


def schemas() -> dict[str, Any]:
    """``{"envelope": ..., "events": {event name: schema}}``: what ``schema`` prints."""
    return {"envelope": envelope_schema(),
            "events": {cls._event_name: event_schema(cls) for cls in event_classes()}}
