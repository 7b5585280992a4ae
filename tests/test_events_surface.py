"""The surface of nat_telemetry.events that users of the original's pydantic models reach for.

Enums that print as their values, field-less events, 64-bit integer bounds,
``model_fields`` / ``model_dump(mode=)`` / ``model_dump_json`` /
``model_validate_json``, the signature ``help()`` shows, the dataclasses view,
how event classes are declared, and what importing the module costs.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import pydoc
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nat_telemetry.events import (
    CliCommandEvent,
    Field,
    FieldInfo,
    NemoSourceEnum,
    TaskStatusEnum,
    TelemetryEvent,
    ValidationError,
)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL: dict[str, Any] = {"command": "run", "task_status": "success",
                           "python_version": "3.11.7"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def make(**overrides: Any) -> CliCommandEvent:
    return CliCommandEvent(**{**MINIMAL, **overrides})


def error_fields(exc_info: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [field for field, _ in exc_info.value.errors]


# --------------------------------------------------------------------------- enums


@pytest.mark.parametrize("member", [*NemoSourceEnum, *TaskStatusEnum], ids=str)
def test_enums_print_as_their_values_like_a_str_enum(member: enum.Enum) -> None:
    value = member.value
    assert str(member) == value
    assert format(member) == value
    assert f"{member}" == value
    assert f"{member:>20}" == f"{value:>20}"
    assert "{}".format(member) == value  # noqa: UP032 - str.format, not an f-string
    assert "%s" % member == value  # noqa: UP031 - old-style formatting, as logging does
    assert repr(member) == f"<{type(member).__name__}.{member.name}: {value!r}>"


def test_str_of_task_status_success_is_success() -> None:
    assert str(TaskStatusEnum.SUCCESS) == "success"
    assert format(TaskStatusEnum.SUCCESS, "") == "success"
    assert str(NemoSourceEnum.AGENT_TOOLKIT) == "agent_toolkit"


# --------------------------------------------------------------------------- no fields


class Ping(TelemetryEvent):
    _event_name: ClassVar[str] = "ping"


def test_an_event_without_fields_can_be_defined_and_used() -> None:
    ping = Ping()
    assert ping.model_dump() == {} == ping.model_dump(by_alias=True)
    assert ping == Ping() and hash(ping) == hash(Ping())
    assert repr(ping) == "Ping()"
    assert Ping.model_validate({}) == ping
    assert dict(Ping.model_fields) == {}
    assert str(inspect.signature(Ping)) == "() -> None"
    with pytest.raises(ValidationError) as exc_info:
        Ping(hostname="h")
    assert error_fields(exc_info) == ["hostname"]
    schema = Ping.model_json_schema()
    assert schema["properties"] == {} and schema["additionalProperties"] is False
    assert "required" not in schema


def test_the_base_class_itself_is_not_an_event() -> None:
    with pytest.raises(TypeError, match="subclass"):
        TelemetryEvent()


# --------------------------------------------------------------------------- 64-bit bounds


@pytest.mark.parametrize("field, value", [
    ("duration_ms", 10**30), ("exit_code", 2**70), ("duration_ms", INT64_MAX + 1),
    ("exit_code", INT64_MAX + 1), ("exit_code", INT64_MIN - 1), ("duration_ms", -(10**30)),
    ("exit_code", 10**5000),  # more digits than Python 3.11+ turns into a str
], ids=["1e30", "2**70", "2**63", "2**63-exit", "-2**63-1", "-1e30", "1e5000"])
def test_integers_beyond_64_bits_are_rejected(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as exc_info:
        make(**{field: value})
    assert error_fields(exc_info) == [field]
    # The range is stated; the number itself is not repeated.
    assert str(INT64_MAX) in str(exc_info.value)
    if abs(value) < 10**100:
        assert not re.search(rf"(?<![-0-9]){value}(?![0-9])", str(exc_info.value))
    with pytest.raises(ValidationError):
        CliCommandEvent.model_validate({**MINIMAL, field: value})


@pytest.mark.parametrize("field, value", [
    ("duration_ms", INT64_MAX), ("duration_ms", -1), ("exit_code", INT64_MAX),
    ("exit_code", INT64_MIN),
])
def test_the_64_bit_extremes_are_accepted(field: str, value: int) -> None:
    assert getattr(make(**{field: value}), field) == value


def test_every_int_field_is_bounded_even_when_declared_wider() -> None:
    class Wide(TelemetryEvent):
        _event_name: ClassVar[str] = "wide"
        count: int = Field(default=0, ge=-(10**40), le=10**40)
        small: int = Field(default=5, ge=1, le=9)

    assert Wide(count=INT64_MIN).count == INT64_MIN
    with pytest.raises(ValidationError):
        Wide(count=INT64_MAX + 1)
    assert Wide(small=9).small == 9
    with pytest.raises(ValidationError) as exc_info:
        Wide(small=10, count=-(2**64))
    assert sorted(error_fields(exc_info)) == ["count", "small"]
    assert "from 1 to 9" in str(exc_info.value)


# --------------------------------------------------------------------------- model_fields


def test_model_fields_describes_each_field() -> None:
    fields = CliCommandEvent.model_fields
    assert list(fields) == ["nemo_source", "command", "subcommand", "task_status",
                            "duration_ms", "exit_code", "error_class", "python_version"]
    nemo = fields["nemo_source"]
    assert isinstance(nemo, FieldInfo)
    assert (nemo.name, nemo.alias, nemo.annotation) == ("nemo_source", "nemoSource",
                                                        NemoSourceEnum)
    assert nemo.default is NemoSourceEnum.AGENT_TOOLKIT and not nemo.is_required()
    command = fields["command"]
    assert command.alias is None  # as pydantic: no alias, the wire name is the field name
    assert command.annotation is str and command.is_required() and command.default is ...
    duration = fields["duration_ms"]
    assert (duration.annotation, duration.default, duration.ge) == (int, -1, -1)
    assert fields["error_class"].max_length == 128
    assert {name for name, info in fields.items() if info.is_required()} == {
        "command", "task_status", "python_version"}
    assert "alias='nemoSource'" in repr(nemo) and "required=True" in repr(command)


def test_model_fields_is_read_only_and_per_class() -> None:
    with pytest.raises(TypeError):
        CliCommandEvent.model_fields["hostname"] = FieldInfo()  # type: ignore[index]
    assert dict(TelemetryEvent.model_fields) == {}
    assert "nemo_source" not in Ping.model_fields


# --------------------------------------------------------------------------- model_dump


@pytest.mark.parametrize("by_alias", [False, True])
def test_model_dump_modes_give_plain_values(by_alias: bool) -> None:
    event = make(nemo_source="evaluator", duration_ms=5)
    python, as_json = (event.model_dump(mode=m, by_alias=by_alias) for m in ("python", "json"))
    assert python == as_json == event.model_dump(by_alias=by_alias)
    assert all(type(v) in (str, int) for v in python.values())
    assert python["nemoSource" if by_alias else "nemo_source"] == NemoSourceEnum.EVALUATOR


def test_model_dump_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        make().model_dump(mode="yaml")


def test_model_dump_json_is_compact_like_pydantic() -> None:
    event = make(subcommand="list", duration_ms=7)
    text = event.model_dump_json()
    assert text == json.dumps(event.model_dump(), separators=(",", ":"))
    assert " " not in text
    assert json.loads(event.model_dump_json(by_alias=True)) == event.model_dump(by_alias=True)
    for indent in (0, 2):
        assert event.model_dump_json(indent=indent) == json.dumps(event.model_dump(),
                                                                  indent=indent)


def test_model_dump_json_keeps_non_ascii_text_as_is() -> None:
    class Note(TelemetryEvent):
        _event_name: ClassVar[str] = "note"
        text: str = "undefined"

    assert Note(text="héllo").model_dump_json() == '{"text":"héllo"}'


# --------------------------------------------------------------------------- model_validate_json


@pytest.mark.parametrize("kind", [str, bytes, bytearray])
def test_model_validate_json_round_trips(kind: Any) -> None:
    event = make(nemo_source="auditor", duration_ms=12, exit_code=3, error_class="os.error")
    for by_alias in (False, True):
        text = event.model_dump_json(by_alias=by_alias)
        data = text if kind is str else kind(text.encode())
        assert CliCommandEvent.model_validate_json(data) == event


@pytest.mark.parametrize("text", [
    "", "{", "[1, 2", '{"command": "run",}', "NaN", '{"durationMs": NaN}',
    '{"exitCode": Infinity}', "[" * 100_000, b"\xff\xfe\xfd",
])
def test_model_validate_json_turns_bad_json_into_a_validation_error(text: str | bytes) -> None:
    with pytest.raises(ValidationError) as exc_info:
        CliCommandEvent.model_validate_json(text)
    assert error_fields(exc_info) == ["__root__"]
    assert "invalid JSON" in str(exc_info.value)


def test_model_validate_json_does_not_repeat_the_document() -> None:
    with pytest.raises(ValidationError) as exc_info:
        CliCommandEvent.model_validate_json('{"command": "/home/secret-user/x" oops')
    assert "secret-user" not in str(exc_info.value)


@pytest.mark.parametrize("text", ["null", "[]", '"run"', "42"])
def test_model_validate_json_wants_an_object(text: str) -> None:
    with pytest.raises(ValidationError, match="mapping"):
        CliCommandEvent.model_validate_json(text)


def test_a_json_number_without_fraction_is_an_integer_as_in_json_schema() -> None:
    base = '{"command": "run", "taskStatus": "success", "pythonVersion": "3.11.7"'
    event = CliCommandEvent.model_validate_json(base + ', "durationMs": 12.0, "exitCode": -0.0}')
    assert (event.duration_ms, event.exit_code) == (12, 0)
    assert type(event.duration_ms) is int
    for bad in ("12.5", "1e300", "true", '"12"'):
        with pytest.raises(ValidationError) as exc_info:
            CliCommandEvent.model_validate_json(base + f', "durationMs": {bad}}}')
        assert error_fields(exc_info) == ["duration_ms"]
    # A Python float stays a type error: only JSON has no ints and floats.
    with pytest.raises(ValidationError):
        make(duration_ms=12.0)


# --------------------------------------------------------------------------- by_alias / by_name


def test_model_validate_can_insist_on_one_naming() -> None:
    wire = make().model_dump(by_alias=True)
    names = make().model_dump()
    assert CliCommandEvent.model_validate(wire, by_name=False) == make()
    assert CliCommandEvent.model_validate(names, by_alias=False) == make()
    with pytest.raises(ValidationError) as exc_info:
        CliCommandEvent.model_validate(names, by_name=False)
    # Every snake_case key is unknown there, and the required ones are missing.
    assert set(error_fields(exc_info)) == {
        "nemo_source", "task_status", "duration_ms", "exit_code", "error_class",
        "python_version"}
    with pytest.raises(ValidationError) as exc_info:
        CliCommandEvent.model_validate({**names, "durationMs": 5}, by_alias=False)
    assert error_fields(exc_info) == ["durationMs"]
    with pytest.raises(ValueError, match="both"):
        CliCommandEvent.model_validate(wire, by_alias=False, by_name=False)


# --------------------------------------------------------------------------- signature, help()


def test_signature_shows_each_field_with_its_type_and_default() -> None:
    signature = inspect.signature(CliCommandEvent)
    shown = [(p.name, p.kind, p.annotation, p.default) for p in signature.parameters.values()]
    empty, keyword = inspect.Parameter.empty, inspect.Parameter.KEYWORD_ONLY
    assert shown == [
        ("nemo_source", keyword, NemoSourceEnum, NemoSourceEnum.AGENT_TOOLKIT),
        ("command", keyword, str, empty),
        ("subcommand", keyword, str, "undefined"),
        ("task_status", keyword, TaskStatusEnum, empty),
        ("duration_ms", keyword, int, -1),
        ("exit_code", keyword, int, -1),
        ("error_class", keyword, str, "undefined"),
        ("python_version", keyword, str, empty),
    ]


def test_help_shows_the_real_constructor() -> None:
    text = pydoc.render_doc(CliCommandEvent, renderer=pydoc.plaintext)
    # One line, or one per parameter (3.13+): read it as one line.
    flat = " ".join(" ".join(line.lstrip(" |") for line in text.splitlines()).split())
    flat = flat.replace("( ", "(").replace(" )", ")")
    assert "CliCommandEvent(*, nemo_source: " in flat
    assert "command: str, subcommand: str = 'undefined'" in flat
    assert "python_version: str) -> None" in flat
    own = text.split("Methods inherited")[0]
    for leak in ("_MISSING", "_unknown", "object at 0x", "object>", "**data", "_self"):
        assert leak not in own, leak


def test_the_constructor_still_takes_aliases_and_reports_unknown_keys() -> None:
    assert CliCommandEvent(command="run", taskStatus="success", pythonVersion="3.11.7") == make()
    with pytest.raises(ValidationError) as exc_info:
        make(_self=1, self=2)
    assert sorted(error_fields(exc_info)) == ["_self", "self"]


# --------------------------------------------------------------------------- dataclasses view


def test_dataclasses_api_still_works_on_events() -> None:
    event = make(exit_code=2)
    assert dataclasses.is_dataclass(CliCommandEvent) and dataclasses.is_dataclass(event)
    assert not dataclasses.is_dataclass(TelemetryEvent)
    fields = dataclasses.fields(event)
    assert [f.name for f in fields] == list(CliCommandEvent.model_fields)
    assert fields[0].type is NemoSourceEnum and fields[0].default is NemoSourceEnum.AGENT_TOOLKIT
    assert fields[1].default is dataclasses.MISSING
    changed = dataclasses.replace(event, command="other")
    assert type(changed) is CliCommandEvent and changed.command == "other"
    assert changed.exit_code == 2
    with pytest.raises(ValidationError):
        dataclasses.replace(event, command="not a token")
    assert dataclasses.asdict(event)["task_status"] is TaskStatusEnum.SUCCESS
    assert CliCommandEvent.__match_args__ == tuple(CliCommandEvent.model_fields)


# --------------------------------------------------------------------------- declaring events


def test_fields_are_inherited_in_order_and_can_be_added() -> None:
    class LongerCli(CliCommandEvent):
        _event_name: ClassVar[str] = "longer_cli"
        attempt: int = Field(default=1, ge=1)

    event = LongerCli(**MINIMAL, attempt=2)
    assert list(event.model_dump()) == [*CliCommandEvent.model_fields, "attempt"]
    assert event.model_dump(by_alias=True)["taskStatus"] == "success"
    with pytest.raises(ValidationError) as exc_info:
        LongerCli(**MINIMAL, command_line="x")
    assert error_fields(exc_info) == ["command_line"]
    assert CliCommandEvent.model_fields.keys() == make().model_dump().keys()


def test_private_names_and_class_variables_are_not_fields() -> None:
    class Quiet(TelemetryEvent):
        _event_name: ClassVar[str] = "quiet"
        _internal: int = 3
        limit: ClassVar[int] = 10
        label: str = "undefined"

    assert list(Quiet.model_fields) == ["label"]
    assert Quiet()._internal == 3 and Quiet.limit == 10


def test_string_annotations_resolve_in_the_defining_module(tmp_path: Path) -> None:
    module = tmp_path / "future_event.py"
    module.write_text(
        "from __future__ import annotations\n"
        "import enum\n"
        "import typing\n"
        "from nat_telemetry.events import Field, TelemetryEvent\n"
        "class Mood(str, enum.Enum):\n"
        "    HAPPY = 'happy'\n"
        "class Felt(TelemetryEvent):\n"
        "    _event_name: typing.ClassVar[str] = 'felt'\n"
        "    tries: typing.ClassVar[int] = 3\n"
        "    mood: Mood = Field(default=Mood.HAPPY, alias='moodName')\n"
        "    level: int = Field(default=0, ge=0)\n", encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        import future_event  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("future_event", None)
    felt = future_event.Felt(moodName="happy", level=2)
    assert felt.model_dump(by_alias=True) == {"moodName": "happy", "level": 2}
    assert list(future_event.Felt.model_fields) == ["mood", "level"]


@pytest.mark.parametrize("body, message", [
    ({"count": Field(default=0)}, "needs a type annotation"),
    ({"__annotations__": {"a": str, "b": str}, "a": Field(default="x", alias="b")},
     "names both"),
    ({"__annotations__": {"a": str}, "a": Field(default="x", ge=1)}, "only apply to an int"),
    ({"__annotations__": {"a": int}, "a": Field(default=1, pattern="[0-9]")},
     "only apply to a str"),
    ({"__annotations__": {"a": int}, "a": Field(default=5, ge=9, le=1)}, "no integer"),
    ({"__annotations__": {"model_dump": str}}, "cannot have this name"),
    ({"__annotations__": {"class": str}}, "cannot have this name"),
    ({"__annotations__": {"a": "NoSuchType"}}, "cannot resolve"),
])
def test_mistakes_in_an_event_class_are_type_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        type("Broken", (TelemetryEvent,), {"_event_name": "broken", **body})


def test_field_names_cannot_clash_with_the_generated_code() -> None:
    names = ["self", "MISSING", "REJECT", "v0", "accept0", "default0", "values", "unknown"]
    Clash = type("Clash", (TelemetryEvent,), {
        "_event_name": "clash", "__annotations__": dict.fromkeys(names, int),
        **{name: Field(default=i) for i, name in enumerate(names)}})
    assert Clash().model_dump() == {name: i for i, name in enumerate(names)}
    assert Clash(self=9, MISSING=8).model_dump(by_alias=True)["MISSING"] == 8
    with pytest.raises(ValidationError) as exc_info:
        Clash(v0="x")
    assert error_fields(exc_info) == ["v0"]
    assert list(inspect.signature(Clash).parameters) == names


def test_an_alias_that_is_no_identifier_still_works() -> None:
    Odd = type("Odd", (TelemetryEvent,), {
        "_event_name": "odd", "__annotations__": {"a": int, "b": str},
        "a": Field(default=0, alias="a-count"), "b": Field(default="x", alias="class")})
    event = Odd.model_validate({"a-count": 3, "class": "y"})
    assert event.model_dump(by_alias=True) == {"a-count": 3, "class": "y"}
    assert Odd(**{"a-count": 4}).a == 4


# --------------------------------------------------------------------------- import cost


def _modules_loaded_by(code: str) -> set[str]:
    # -S: only what the code imports, not what this machine's site-packages hooks load.
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                            cwd=str(ROOT), check=True, timeout=60)
    return set(result.stdout.split())


def test_recording_an_event_imports_nothing_heavy() -> None:
    loaded = _modules_loaded_by(
        "import nat_telemetry.events as events\n"
        "event = events.CliCommandEvent(command='run', task_status='success',\n"
        "                               python_version='3.11.7', duration_ms=3)\n"
        "event.model_dump(by_alias=True)\n") - _modules_loaded_by("pass")
    heavy = {"dataclasses", "inspect", "typing", "re", "logging", "json", "ast", "dis",
             "tokenize", "collections.abc"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert {name for name in loaded if name.startswith("nat_telemetry")} == {
        "nat_telemetry", "nat_telemetry.config", "nat_telemetry.events",
        "nat_telemetry._fields", "nat_telemetry._rules", "nat_telemetry.outcome"}
