"""Property-based tests (hypothesis) of everything that takes outside input.

* Event construction, against an oracle written independently of
  ``nat_telemetry.events`` (character sets and a hand-written version parser,
  not the module's regular expressions): it accepts exactly the documented
  language, reports exactly the offending keys, and never raises anything
  but ``ValidationError``.
* ``build_payload``: always JSON, exactly the reference envelope's keys, only
  the event's wire fields, timestamps in UTC, and accepted by the strict
  loopback collector's validator.
* Consent reading: arbitrary bytes never raise and always give a
  ``ConsentState``; well-formed files follow the asymmetric version gate;
  the fast reader of the consent file never disagrees with ``tomllib``.

Runs derandomized (the same examples every time, no example database) with a
moderate number of examples; ``NAT_FUZZ_EXAMPLES=5000`` digs deeper by hand.
"""

from __future__ import annotations

import enum
import json
import os
import string
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import REPO_ROOT

from nat_telemetry import config
from nat_telemetry.collector import known_event_types, parse_envelope
from nat_telemetry.consent import PROMPT_VERSION, ConsentState, read_persisted_consent
from nat_telemetry.events import (
    CliCommandEvent,
    NemoSourceEnum,
    TaskStatusEnum,
    ValidationError,
)
from nat_telemetry.payload import QueuedEvent, build_payload

FUZZ = settings(
    max_examples=int(os.environ.get("NAT_FUZZ_EXAMPLES", "150")),
    derandomize=True,
    database=None,
    deadline=None,
    # The autouse fixtures (isolated config, consent file) hold for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

REFERENCE = json.loads((REPO_ROOT / "tests" / "data" / "envelope-example.json").read_text())

# ------------------------------------------------------------------ oracle

TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:")
IDENT_START = frozenset(string.ascii_letters + "_")
IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_")
DIGITS = frozenset("0123456789")


def is_token(text: str) -> bool:
    return 1 <= len(text) <= 64 and all(c in TOKEN_CHARS for c in text)


def is_dotted_identifier(text: str) -> bool:
    if len(text) > 128:
        return False
    return all(part and part[0] in IDENT_START and all(c in IDENT_CHARS for c in part)
               for part in text.split("."))


def _digit_run(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] in DIGITS:
        end += 1
    return end


def is_python_version(text: str) -> bool:
    """MAJOR.MINOR[.MICRO][(a|b|rc)N][+], every number 1 to 3 ASCII digits."""
    if text.endswith("+"):
        text = text[:-1]
    end = _digit_run(text, 0)
    if not 1 <= end <= 3 or end == len(text) or text[end] != ".":
        return False
    start, end = end + 1, _digit_run(text, end + 1)
    if not 1 <= end - start <= 3:
        return False
    if end < len(text) and text[end] == ".":
        start, end = end + 1, _digit_run(text, end + 1)
        if not 1 <= end - start <= 3:
            return False
    if end == len(text):
        return True
    for tag in ("rc", "a", "b"):
        if text.startswith(tag, end):
            start = end + len(tag)
            end = _digit_run(text, start)
            return 1 <= end - start <= 3 and end == len(text)
    return False


_MISSING = object()


def _str_field(check: Any) -> Any:
    def accept(value: Any) -> Any:
        if not isinstance(value, str) or isinstance(value, enum.Enum):
            return _MISSING
        text = str.__str__(value)
        return text if check(text) else _MISSING
    return accept


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the wire schema's integers


def _int_field(floor: int | None) -> Any:
    low = INT64_MIN if floor is None else floor

    def accept(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return _MISSING
        number = int(value)
        return number if low <= number <= INT64_MAX else _MISSING
    return accept


def _enum_field(values: frozenset[str]) -> Any:
    def accept(value: Any) -> Any:
        if isinstance(value, str) and value in values:
            return str.__str__(value)
        return _MISSING
    return accept


# name, wire alias, acceptor, default (_MISSING: required) - from the design's table.
FIELDS: tuple[tuple[str, str, Any, Any], ...] = (
    ("nemo_source", "nemoSource",
     _enum_field(frozenset({"inference", "auditor", "datadesigner", "evaluator", "guardrails",
                            "safe-synthesizer", "anonymizer", "agent_toolkit", "undefined"})),
     "agent_toolkit"),
    ("command", "command", _str_field(is_token), _MISSING),
    ("subcommand", "subcommand", _str_field(is_token), "undefined"),
    ("task_status", "taskStatus",
     _enum_field(frozenset({"success", "failure", "completed", "error", "canceled",
                            "interrupted", "undefined"})), _MISSING),
    ("duration_ms", "durationMs", _int_field(-1), -1),
    ("exit_code", "exitCode", _int_field(None), -1),
    ("error_class", "errorClass", _str_field(is_dotted_identifier), "undefined"),
    ("python_version", "pythonVersion", _str_field(is_python_version), _MISSING),
)
KNOWN_KEYS = frozenset(k for name, alias, _, _ in FIELDS for k in (name, alias))
WIRE_KEYS = frozenset(alias for _, alias, _, _ in FIELDS)


def oracle(data: dict[str, Any]) -> tuple[dict[str, Any] | None, set[str]]:
    """(expected model_dump(), or None) and the keys the errors must name."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for name, alias, accept, default in FIELDS:
        has_name, has_alias = name in data, alias != name and alias in data
        if has_name and has_alias:
            bad.add(name)
        elif has_name or has_alias:
            value = accept(data[name] if has_name else data[alias])
            if value is _MISSING:
                bad.add(name)
            values[name] = value
        elif default is _MISSING:
            bad.add(name)
        else:
            values[name] = default
    bad |= {key for key in data if key not in KNOWN_KEYS}
    return (None if bad else values), bad


# -------------------------------------------------------------- strategies


class StrSubclass(str):
    pass


class PlainEnum(enum.Enum):  # not a str: never a valid value
    SUCCESS = "success"


junk = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.binary(max_size=8),
    st.lists(st.integers(), max_size=2), st.just(PlainEnum.SUCCESS),
    st.sampled_from([float("inf"), b"run", bytearray(b"run"), ("run",), {"run": 1}]),
)
enum_members = st.sampled_from(list(NemoSourceEnum) + list(TaskStatusEnum))
tricky_text = st.sampled_from([
    "", " ", "run ", "run\n", "a/b", "C:\\x", "run\x00", "\u0663.\u0661\u0661", "\uff13.11",
    "x" * 64, "x" * 65, "a." * 64 + "b", "A" * 128, "A" * 129, "3.11", "3.11.7", "3.13.0rc1",
    "3.11+", "3.11++", "1000.1", "3.1a", "3.1rc1234", "3.11.7.1", "ValueError", "os.error",
    "1abc", "a..b", ".a", "a.", "_", "é", "ß", "İ", "success", "SUCCESS", "agent_toolkit",
])


def texts(plausible: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(plausible, plausible.map(StrSubclass), st.text(max_size=40),
                     tricky_text, enum_members, junk)


TOKENS = st.from_regex(r"[A-Za-z0-9_.:\-]{1,70}", fullmatch=True)
IDENTIFIERS = st.from_regex(
    r"[A-Za-z_0-9][A-Za-z0-9_]{0,12}(\.[A-Za-z_0-9][A-Za-z0-9_]{0,12}){0,3}", fullmatch=True)
VERSIONS = st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?((a|b|rc|c)[0-9]{0,4})?\+{0,2}",
                         fullmatch=True)
INTS = st.one_of(st.integers(-3, 3), st.integers(), st.integers(-(2**70), 2**70),
                 st.booleans(), junk, st.text(max_size=3))
ENUM_VALUES = st.one_of(enum_members, enum_members.map(lambda m: str(m.value)),
                        enum_members.map(lambda m: StrSubclass(m.value)),
                        st.text(max_size=15), tricky_text, junk)

VALUE_STRATEGY: dict[str, st.SearchStrategy[Any]] = {
    "nemo_source": ENUM_VALUES, "task_status": ENUM_VALUES,
    "command": texts(TOKENS), "subcommand": texts(TOKENS),
    "duration_ms": INTS, "exit_code": INTS,
    "error_class": texts(IDENTIFIERS), "python_version": texts(VERSIONS),
}


# Valid values built directly (cheaper than from_regex, which the payload tests
# would call hundreds of times per example).
VALID_TOKENS = st.text(alphabet=sorted(TOKEN_CHARS), min_size=1, max_size=64)
_SEGMENTS = st.tuples(st.sampled_from(sorted(IDENT_START)),
                      st.text(alphabet=sorted(IDENT_CHARS), max_size=12)).map("".join)
VALID_IDENTIFIERS = st.lists(_SEGMENTS, min_size=1, max_size=4).map(".".join)
_NUMBER = st.integers(0, 999).map(str)
VALID_VERSIONS = st.tuples(
    _NUMBER, _NUMBER, st.one_of(st.just(""), _NUMBER.map(lambda n: "." + n)),
    st.one_of(st.just(""), st.tuples(st.sampled_from(["a", "b", "rc"]), _NUMBER).map("".join)),
    st.sampled_from(["", "+"]),
).map(lambda p: f"{p[0]}.{p[1]}{p[2]}{p[3]}{p[4]}")


def valid_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "nemo_source": st.sampled_from(list(NemoSourceEnum)),
        "command": VALID_TOKENS,
        "subcommand": VALID_TOKENS,
        "task_status": st.sampled_from(list(TaskStatusEnum)),
        "duration_ms": st.integers(-1, INT64_MAX),
        "exit_code": st.integers(INT64_MIN, INT64_MAX),
        "error_class": VALID_IDENTIFIERS,
        "python_version": VALID_VERSIONS,
    })


VALID_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "nemo_source": st.one_of(st.sampled_from(list(NemoSourceEnum)),
                             st.sampled_from([m.value for m in NemoSourceEnum])),
    "task_status": st.one_of(st.sampled_from(list(TaskStatusEnum)),
                             st.sampled_from([m.value for m in TaskStatusEnum])),
    "command": VALID_TOKENS, "subcommand": VALID_TOKENS,
    "duration_ms": st.integers(-1, INT64_MAX), "exit_code": st.integers(INT64_MIN, INT64_MAX),
    "error_class": VALID_IDENTIFIERS, "python_version": VALID_VERSIONS,
}


@st.composite
def event_data(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments: each field absent, by name, by alias or both; maybe unknown keys."""
    data: dict[str, Any] = {}

    def value(name: str) -> Any:
        # Mostly valid values, so that about a third of the events are valid
        # and both sides of the oracle are exercised.
        valid = draw(st.integers(0, 19)) > 0
        return draw(VALID_VALUE[name] if valid else VALUE_STRATEGY[name])

    for name, alias, _, _ in FIELDS:
        how = draw(st.sampled_from(["name"] * 6 + ["alias"] * 3 + ["absent", "both"]))
        if how == "absent":
            continue
        if how == "both" and alias == name:
            how = "name"
        if how in ("name", "both"):
            data[name] = value(name)
        if how in ("alias", "both"):
            data[alias] = value(name)
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=12), junk, max_size=2))
        data.update(extra)
    return data




# ------------------------------------------------------------------ events


@FUZZ
@given(data=event_data())
def test_event_construction_accepts_exactly_the_documented_language(
    data: dict[str, Any]
) -> None:
    expected, bad = oracle(data)
    try:
        made = CliCommandEvent(**data)
    except ValidationError as exc:  # anything else fails the test
        assert expected is None, f"rejected a valid event: {exc}"
        assert {key for key, _ in exc.errors} == bad
        assert all(key in str(exc) for key in bad)
        return
    assert expected is not None, f"accepted an invalid event, bad keys {bad}"
    dumped = made.model_dump()
    assert dumped == expected
    assert all(type(v) in (str, int) for v in dumped.values())  # plain values only
    wire = made.model_dump(by_alias=True)
    assert set(wire) == WIRE_KEYS
    assert json.loads(json.dumps(wire)) == wire
    # The wire form reads back into the same event (what the collector does).
    assert CliCommandEvent.model_validate(wire).model_dump() == dumped


@FUZZ
@given(data=event_data(), bad_keys=st.lists(st.one_of(st.integers(), st.none(), st.binary()),
                                            max_size=2))
def test_model_validate_agrees_and_rejects_non_string_keys(
    data: dict[str, Any], bad_keys: list[Any]
) -> None:
    mapping: dict[Any, Any] = dict(data)
    for key in bad_keys:
        mapping[key] = 1
    expected, _ = oracle(data)
    try:
        made = CliCommandEvent.model_validate(mapping)
    except ValidationError:
        assert bad_keys or expected is None
        return
    assert not bad_keys and expected is not None
    assert made.model_dump() == expected


@FUZZ
@given(value=st.one_of(st.text(), tricky_text, TOKENS, IDENTIFIERS, VERSIONS),
       field=st.sampled_from(["command", "subcommand", "error_class", "python_version"]))
def test_each_string_field_alone(value: str, field: str) -> None:
    base: dict[str, Any] = {"command": "run", "task_status": "success",
                            "python_version": "3.11.7"}
    accept = next(a for name, _, a, _ in FIELDS if name == field)
    try:
        made = CliCommandEvent(**{**base, field: value})
    except ValidationError as exc:
        assert accept(value) is _MISSING, exc
        assert [key for key, _ in exc.errors] == [field]
        return
    assert accept(value) == value
    assert made.model_dump()[field] == value


@FUZZ
@given(value=st.one_of(st.integers(), st.integers(-(2**200), 2**200), INTS),
       field=st.sampled_from(["duration_ms", "exit_code"]))
def test_each_int_field_alone(value: Any, field: str) -> None:
    accept = next(a for name, _, a, _ in FIELDS if name == field)
    try:
        made = CliCommandEvent(command="run", task_status="success", python_version="3.11.7",
                               **{field: value})
    except ValidationError:
        assert accept(value) is _MISSING
        return
    assert made.model_dump()[field] == accept(value)


# ----------------------------------------------------------------- payload


def _whole_second_offsets() -> st.SearchStrategy[timezone]:
    # Real offsets are whole seconds (old local mean times included).
    return st.integers(-86_399, 86_399).map(lambda s: timezone(timedelta(seconds=s)))


STAMPS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                      timezones=st.one_of(st.none(), st.just(timezone.utc),
                                          _whole_second_offsets()))


def expected_ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@FUZZ
@given(events=st.lists(st.tuples(valid_values(), STAMPS), min_size=1, max_size=6),
       session=st.text(max_size=40), version=st.text(max_size=20))
def test_build_payload_is_always_the_reference_envelope(
    events: list[tuple[dict[str, Any], datetime]], session: str, version: str
) -> None:
    queued = [QueuedEvent(CliCommandEvent(**values), stamp) for values, stamp in events]
    payload = build_payload(queued, source_client_version=version, session_id=session)

    text = json.dumps(payload, allow_nan=False)  # always serializable, strictly
    assert json.loads(text) == payload
    assert list(payload) == list(REFERENCE)  # the same keys, in the same order
    for key, value in REFERENCE.items():
        if key not in ("events", "sentTs", "sessionId", "clientVer", "cpuArchitecture"):
            assert payload[key] == value, key  # identity "undefined", GDPR "None", ...
    assert (payload["sessionId"], payload["clientVer"]) == (session, version)
    assert len(payload["events"]) == len(queued)
    for wire, item in zip(payload["events"], queued):
        assert list(wire) == ["ts", "parameters", "name"]
        assert wire["name"] == "nat_cli_command"
        assert set(wire["parameters"]) == WIRE_KEYS  # nothing else ever rides along
        assert wire["parameters"] == item.event.model_dump(by_alias=True)
        assert wire["ts"] == expected_ts(item.timestamp)


def fits_the_wire(values: dict[str, Any]) -> bool:
    """Integers the wire carries: 64-bit, which the collector enforces on every number."""
    return all(-(2**63) <= value < 2**63 for value in values.values()
               if isinstance(value, int) and not isinstance(value, bool))


@FUZZ
@given(events=st.lists(st.tuples(valid_values().filter(fits_the_wire), STAMPS),
                       min_size=1, max_size=8),
       session=st.text(alphabet=string.ascii_letters + string.digits + "-_.:",
                       min_size=1, max_size=128))
def test_the_collector_accepts_every_payload_built(
    events: list[tuple[dict[str, Any], datetime]], session: str
) -> None:
    queued = [QueuedEvent(CliCommandEvent(**values), stamp) for values, stamp in events]
    payload = build_payload(queued, source_client_version="1.2.3", session_id=session)
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    rows = parse_envelope(body, known_event_types())  # raises on any problem
    assert [json.loads(row[-1]) for row in rows] == [
        q.event.model_dump(by_alias=True) for q in queued]


# ----------------------------------------------------------------- consent


def _write_consent(data: bytes) -> Path:
    path = Path(os.environ["NAT_TELEMETRY_CONSENT_FILE"])  # the test's own (autouse fixture)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


TOML_FRAGMENTS = st.sampled_from([
    "[telemetry]\n", "consent = ", '"enabled"', '"disabled"', '"never_asked"', "'enabled'",
    'prompt_version = "1.0"', "prompt_version = 1.0", '"\\u0065nabled"', "\n", "# c\n",
    "[telemetry.sub]\n", "x = [1, 2]", "y = { a = 1 }", '"""ml\n"""', "\r\n", "\x00", "\ufeff",
    "consent = \"enabled\"\nconsent = \"disabled\"\n", "[[telemetry]]\n", "=", '"', "\\",
])


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=300),
    st.lists(TOML_FRAGMENTS, max_size=12).map(lambda parts: "".join(parts).encode("utf-8")),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
))
def test_reading_arbitrary_consent_bytes_never_raises(data: bytes) -> None:
    _write_consent(data)
    state = read_persisted_consent()
    assert isinstance(state, ConsentState)
    if data and not data.startswith(b"[telemetry]"):
        # Nothing but a [telemetry] table can say "enabled".
        assert state is not ConsentState.ENABLED or b"telemetry" in data


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string (escapes per the TOML spec)."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


CONSENT_VALUES = st.one_of(st.sampled_from(["enabled", "disabled", "never_asked", "ENABLED",
                                            "yes", "", "enabled "]), st.text(max_size=10))
PROMPT_VERSIONS = st.one_of(st.sampled_from([PROMPT_VERSION, "0.9", "1.0.0", "2.0", ""]),
                            st.text(max_size=6))


@FUZZ
@given(consent=st.one_of(st.none(), CONSENT_VALUES),
       version=st.one_of(st.none(), PROMPT_VERSIONS),
       comment=st.booleans())
def test_the_version_gate_on_well_formed_files(
    consent: str | None, version: str | None, comment: bool
) -> None:
    lines = ["# written by a test\n" if comment else "", "[telemetry]\n"]
    if consent is not None:
        lines.append(f"consent = {_toml_string(consent)}\n")
    if version is not None:
        lines.append(f"prompt_version = {_toml_string(version)}\n")
    _write_consent("".join(lines).encode("utf-8", "surrogatepass"))
    if consent == "disabled":
        expected = ConsentState.DISABLED  # a "no" stands, whatever the wording
    elif consent == "enabled" and version == PROMPT_VERSION:
        expected = ConsentState.ENABLED
    else:
        expected = ConsentState.NEVER_ASKED  # asked again
    assert read_persisted_consent() is expected


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with tomllib")
@FUZZ
@given(text=st.one_of(
    st.lists(TOML_FRAGMENTS, max_size=12).map("".join),
    st.lists(st.one_of(TOML_FRAGMENTS, st.text(max_size=6)), max_size=8).map("".join),
))
def test_the_fast_reader_never_disagrees_with_tomllib(text: str) -> None:
    import tomllib

    mine = config.fast_loads(text)
    if mine is None:
        return  # not the writer's own lines: tomllib decides (or "never asked" without it)
    assert mine == tomllib.loads(text), text


# Whole lines, most of them the writer's own: texts the fast reader does read.
CONSENT_LINES = st.sampled_from([
    "[telemetry]", 'consent = "enabled"', 'consent = "disabled"', 'prompt_version = "1.0"',
    'consented_at = "2024-01-01T00:00:00Z"', "# a comment", "", "  ", ' consent="x"  # why',
    "consent = 'enabled'", "[other]", 'k = "a # b"', 'k = "é 🙂"', "consent = 1", "[telemetry",
    'k = "a" # \x01', 'k = "a\tb"', "k = \"a\" \"b\"",
])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with tomllib")
@FUZZ
@given(lines=st.lists(CONSENT_LINES, max_size=6, unique=True))
def test_the_fast_reader_reads_the_writers_lines_as_tomllib_does(lines: list[str]) -> None:
    import tomllib

    text = "\n".join(["# written by a test", "[telemetry]", *lines]) + "\n"
    mine = config.fast_loads(text)
    if mine is None:  # declined: a line it does not read, or a key twice
        bad = [line for line in lines if line not in (
            'consent = "enabled"', 'consent = "disabled"', 'prompt_version = "1.0"',
            'consented_at = "2024-01-01T00:00:00Z"', "# a comment", "", "  ",
            ' consent="x"  # why', 'k = "a # b"', 'k = "é 🙂"')]
        keys = [line.partition("=")[0].strip() for line in lines if "=" in line]
        assert bad or len(keys) != len(set(keys)), text
        return
    assert mine == tomllib.loads(text), text
