"""model_json_schema() accepts exactly what the validators accept.

Checked against the real ``jsonschema`` package (Draft 2020-12) on generated
documents, valid and not: wrong types, out-of-range and boundary integers,
near-miss tokens (a final newline, Unicode digits, one character too many),
extra and missing keys, both namings.  The schema's patterns are also run
through ``regress``, a real ECMA-262 engine, since that is the regex dialect
JSON Schema specifies while ``jsonschema`` uses Python's ``re``; and the
hand-written string predicates are checked against their regular expressions.

Python objects (``model_validate``) are compared on JSON values whose floats
all have a fraction: JSON Schema counts 12.0 as an integer, a Python float is
never one to ``model_validate``.  JSON text (``model_validate_json``) is
compared on everything.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jsonschema
import pytest
import regress
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nat_telemetry import _fields, _rules
from nat_telemetry.events import CliCommandEvent, NemoSourceEnum, TaskStatusEnum, ValidationError

PROPERTY = settings(
    max_examples=int(os.environ.get("NAT_FUZZ_EXAMPLES", "200")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FIELDS = CliCommandEvent.model_fields
NAMES = list(FIELDS)
ALIASES = [info.alias or name for name, info in FIELDS.items()]
SCHEMA = {by_alias: CliCommandEvent.model_json_schema(by_alias=by_alias)
          for by_alias in (True, False)}
VALIDATOR = {by_alias: jsonschema.Draft202012Validator(schema)
             for by_alias, schema in SCHEMA.items()}


# ------------------------------------------------------------------ the schema itself


@pytest.mark.parametrize("by_alias", [True, False])
def test_the_schema_is_a_draft_2020_12_schema(by_alias: bool) -> None:
    schema = SCHEMA[by_alias]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    keys = ALIASES if by_alias else NAMES
    assert list(schema["properties"]) == keys
    required = ["command", "taskStatus", "pythonVersion"] if by_alias else [
        "command", "task_status", "python_version"]
    assert schema["required"] == required
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, as published


def test_the_schema_states_the_enums_ranges_and_patterns() -> None:
    schema = SCHEMA[True]
    properties, defs = schema["properties"], schema["$defs"]
    assert defs["NemoSourceEnum"]["enum"] == [m.value for m in NemoSourceEnum]
    assert defs["TaskStatusEnum"]["enum"] == [m.value for m in TaskStatusEnum]
    assert properties["taskStatus"] == {"title": "Taskstatus", "$ref": "#/$defs/TaskStatusEnum"}
    assert properties["nemoSource"]["default"] == "agent_toolkit"
    assert properties["durationMs"] == {"title": "Durationms", "type": "integer",
                                        "minimum": -1, "maximum": INT64_MAX, "default": -1}
    assert (properties["exitCode"]["minimum"], properties["exitCode"]["maximum"]) == (
        INT64_MIN, INT64_MAX)
    assert properties["command"]["pattern"] == r"^(?:[A-Za-z0-9_.:-]{1,64})(?![\s\S])"
    assert properties["errorClass"]["maxLength"] == 128


def test_serialization_mode_describes_model_dump() -> None:
    schema = CliCommandEvent.model_json_schema(mode="serialization")
    assert schema["required"] == ALIASES
    event = CliCommandEvent(command="run", task_status="success", python_version="3.11.7")
    jsonschema.validate(event.model_dump(by_alias=True), schema)
    with pytest.raises(ValueError, match="mode"):
        CliCommandEvent.model_json_schema(mode="output")


def test_each_call_returns_a_fresh_schema() -> None:
    first = CliCommandEvent.model_json_schema()
    first["properties"].clear()
    assert CliCommandEvent.model_json_schema()["properties"]


# ------------------------------------------------------------------ generated documents

TOKEN_LIKE = st.from_regex(r"[A-Za-z0-9_.:\-]{0,66}\n?", fullmatch=True)
IDENT_LIKE = st.from_regex(r"[A-Za-z_0-9]{0,4}(\.[A-Za-z_0-9]{0,4}){0,3}\n?", fullmatch=True)
VERSION_LIKE = st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{0,4})?((a|b|rc|c)[0-9]{0,4})?\+{0,2}"
                             r"\n?", fullmatch=True)
TRICKY = st.sampled_from([
    "", " ", "\n", "run\n", "\nrun", "run\r", "a b", "x" * 64, "x" * 65, "A" * 128, "A" * 129,
    "a." * 63 + "b", "\u0663.\u0661\u0661", "\uff13.11", "3.11\u0661", "3.11.7\u2028", "ß", "İ",
    "é", "3.11", "3.13.0rc1", "3.11+", "3.11++", "1000.1", "3.1rc1234", "os.error",
    "SUCCESS", "success ", "agent_toolkit", "safe-synthesizer", "undefined", "_", "1abc",
])
STRINGS = st.one_of(TOKEN_LIKE, IDENT_LIKE, VERSION_LIKE, TRICKY, st.text(max_size=12),
                    st.sampled_from([m.value for m in (*NemoSourceEnum, *TaskStatusEnum)]))
_EDGES = st.sampled_from([-2, -1, 0, INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1,
                          2**64, -(2**64), 10**30])
INTEGERS = st.one_of(_EDGES, _EDGES, st.integers(-(2**70), 2**70), st.integers())
FRACTIONAL = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda x: not x.is_integer())
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FRACTIONAL, STRINGS)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4)
# JSON numbers without a fraction, written as floats: integers to JSON Schema.
WHOLE_FLOATS = st.one_of(
    st.sampled_from([12.0, -0.0, -1.0, -2.0, 1e300, -1e300, 9.2e18, 9.3e18, -9.3e18,
                     float(2**63), float(-(2**63))]),
    st.integers(-(2**70), 2**70).map(float))
KEYS = st.one_of(st.sampled_from(sorted(set(NAMES + ALIASES))),
                 st.sampled_from(["hostname", "user", "Command", "nemosource", "_event_name",
                                  "", "durationms"]),
                 st.text(max_size=8))


@st.composite
def documents(draw: st.DrawFn, extra_values: st.SearchStrategy[Any] = JSON_VALUES
              ) -> dict[str, Any]:
    """A JSON object: mostly one naming with valid values, then broken in a few ways."""
    by_alias = draw(st.booleans())
    valid = {
        "nemo_source": st.sampled_from([m.value for m in NemoSourceEnum]),
        "command": st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True),
        "subcommand": st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True),
        "task_status": st.sampled_from([m.value for m in TaskStatusEnum]),
        "duration_ms": st.integers(-1, INT64_MAX),
        "exit_code": st.integers(INT64_MIN, INT64_MAX),
        "error_class": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}(\.[A-Za-z_][A-Za-z0-9_]{0,5})?",
                                     fullmatch=True),
        "python_version": st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True),
    }
    near = {name: INTEGERS if FIELDS[name].annotation is int else STRINGS for name in NAMES}
    document: dict[str, Any] = {}
    # Choices listed from the most common (what hypothesis shrinks towards).
    for name, alias in zip(NAMES, ALIASES):
        key = draw(st.sampled_from(["same"] * 30 + ["missing", "other"]))
        if key == "missing":
            continue
        key = (alias if by_alias else name) if key == "same" else (name if by_alias else alias)
        how = draw(st.sampled_from(["valid"] * 24 + ["near"] * 3 + ["junk"]))
        document[key] = draw(valid[name] if how == "valid" else near[name] if how == "near"
                             else st.one_of(SCALARS, extra_values))
    if draw(st.sampled_from([False] * 5 + [True])):
        for key in draw(st.lists(KEYS, min_size=1, max_size=2)):
            document[key] = draw(st.one_of(SCALARS, extra_values))
    return document


def _accepted(validate: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        validate(*args, **kwargs)
    except ValidationError:
        return False
    return True


@PROPERTY
@given(document=documents())
def test_model_validate_accepts_exactly_what_the_schema_accepts(document: dict[str, Any]) -> None:
    for by_alias in (True, False):
        schema_says = VALIDATOR[by_alias].is_valid(document)
        one_naming = {"by_name": False} if by_alias else {"by_alias": False}
        validator_says = _accepted(CliCommandEvent.model_validate, document, **one_naming)
        assert validator_says == schema_says, (by_alias, document)
        if schema_says:
            # The default, lenient validation takes it too, and builds the same event.
            event = CliCommandEvent.model_validate(document)
            assert event == CliCommandEvent.model_validate(document, **one_naming)
            assert event.model_dump(by_alias=by_alias) == {
                **{k: p["default"] for k, p in SCHEMA[by_alias]["properties"].items()
                   if "default" in p}, **document}


@PROPERTY
@given(document=documents(st.one_of(JSON_VALUES, WHOLE_FLOATS)))
def test_model_validate_json_accepts_exactly_what_the_schema_accepts(
    document: dict[str, Any],
) -> None:
    text = json.dumps(document)  # NaN and Infinity included: not JSON, refused by both
    parsed = json.loads(text)
    for by_alias in (True, False):
        schema_says = VALIDATOR[by_alias].is_valid(parsed)
        one_naming = {"by_name": False} if by_alias else {"by_alias": False}
        validator_says = _accepted(CliCommandEvent.model_validate_json, text, **one_naming)
        assert validator_says == schema_says, (by_alias, text)


@pytest.mark.parametrize("value, valid", [
    (12.0, True), (-1.0, True), (-0.0, True), (-2.0, False), (12.5, False),
    (9.2e18, True), (9.3e18, False), (1e300, False), (True, False), (None, False),
])
def test_whole_json_numbers_are_integers_for_both(value: Any, valid: bool) -> None:
    document = {"command": "run", "taskStatus": "success", "pythonVersion": "3.11.7",
                "durationMs": value}
    assert VALIDATOR[True].is_valid(document) is valid
    assert _accepted(CliCommandEvent.model_validate_json, json.dumps(document)) is valid


def test_a_python_float_is_the_one_known_difference() -> None:
    document = {"command": "run", "taskStatus": "success", "pythonVersion": "3.11.7",
                "durationMs": 12.0}
    assert VALIDATOR[True].is_valid(document)
    assert not _accepted(CliCommandEvent.model_validate, document)


# ------------------------------------------------------------------ patterns

PATTERNS = {
    field: (info.pattern, SCHEMA[True]["properties"][info.alias or field]["pattern"])
    for field, info in FIELDS.items() if info.pattern is not None
}
PREDICATES = {_rules.TOKEN: _rules.is_token,
              _rules.DOTTED_IDENTIFIER: _rules.is_dotted_identifier,
              _rules.PYTHON_VERSION: _rules.is_python_version}
ECMA = {published: (regress.Regex(published), regress.Regex(published, "u"))
        for _, published in PATTERNS.values()}


def test_every_pattern_has_a_predicate() -> None:
    assert {pattern for pattern, _ in PATTERNS.values()} == set(PREDICATES)
    assert set(PREDICATES) == set(_fields.PREDICATES)


@PROPERTY
@given(text=STRINGS)
def test_patterns_mean_the_same_in_python_in_ecma_262_and_by_hand(text: str) -> None:
    for pattern, published in PATTERNS.values():
        expected = re.fullmatch(pattern, text) is not None
        assert PREDICATES[pattern](text) is expected, (pattern, text)
        # What jsonschema does with a pattern, and what JSON Schema says it means.
        assert (re.search(published, text) is not None) is expected, (published, text)
        for engine in ECMA[published]:
            assert (engine.find(text) is not None) is expected, (published, text)


@pytest.mark.parametrize("text", ["run\n", "3.11.7\n", "ValueError\n", "\u0663.\u0661\u0661",
                                  "3.11\u0662", "a b", "a\u2028"])
def test_near_misses_are_refused_everywhere(text: str) -> None:
    for pattern, published in PATTERNS.values():
        assert not PREDICATES[pattern](text)
        assert re.search(published, text) is None
        assert all(engine.find(text) is None for engine in ECMA[published])

