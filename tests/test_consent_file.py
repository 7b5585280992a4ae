"""Tests for the consent file as nat_telemetry.config reads it, without consent's imports.

* the fast reader (``config.fast_loads``) agrees with a real TOML parser on
  every text it accepts, and everything else goes to tomllib/tomli
  (``config.toml_loads``), or counts as never asked without one (hypothesis);
* the file as written is read by the fast reader, with no TOML library;
* ``config.read_text`` reads only a regular file of a sane size, and
  ``config.parse_consent`` applies the prompt-version gate;
* the location rules (``config.Tool.consent_file``) are pathlib's, without pathlib;
* a command line whose user never answered, or said no, imports none of the
  costly modules (a real interpreter, ``-S`` so site-packages' .pth files
  cannot import them first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nat_telemetry import config, consent, status
from nat_telemetry.consent import ConsentState

if sys.version_info >= (3, 11):
    import tomllib as reference
else:
    import tomli as reference

REPO_ROOT = Path(__file__).resolve().parent.parent

PROPERTY = settings(
    max_examples=int(os.environ.get("NAT_FUZZ_EXAMPLES", "300")),
    derandomize=True,
    database=None,
    deadline=None,
    # The autouse fixtures (isolated config, dependency mode) hold for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

INVALID = "invalid"


def outcome(reader: Any, text: str) -> Any:
    """The document ``reader`` makes of ``text``, or INVALID when it raises ValueError."""
    try:
        return reader(text)
    except ValueError:
        return INVALID


# ------------------------------------------------------------------ texts

SPACE = st.sampled_from(["", " ", "  ", "\t", " \t "])
ANY_TEXT = st.text(max_size=12)  # control characters, surrogates, anything
# str.isprintable's characters: none of these categories, but the space.
PRINTABLE = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
    | st.just(" "), max_size=16).filter(str.isprintable)
HEADERS = st.sampled_from([
    "[telemetry]", " [telemetry]", "[telemetry]  ", "[ telemetry ]", "[other]", "[telemetry.sub]",
    "[[telemetry]]", '["telemetry"]', "['telemetry']", "[telemetry] # note", "[telemetry",
    "[]", "[tele metry]", "[telemetry]x", "\t[telemetry]",
])
KEYS = st.one_of(
    st.sampled_from(["consent", "consented_at", "prompt_version", "k", "a-b_1", "1", "true",
                     "a.b", "consent.x", '"consent"', "'consent'", "a b", "", "é", "-", "="]),
    ANY_TEXT)
BODIES = st.one_of(
    st.sampled_from(["enabled", "disabled", "1.0", "2024-01-01T00:00:00Z", "", "é ü 中 🙂",
                     "a#b", "a'b", "\\u0031.0", "a\\nb", "\\x", '\\"', "a\tb", "\x7f", "\x00",
                     "\u00a0", "\u2028", "\ufeff"]),
    ANY_TEXT, PRINTABLE)
VALUES = st.one_of(
    BODIES.map(lambda body: f'"{body}"'),
    st.sampled_from(["'literal'", "''", '"""x"""', '""""""', '"unterminated', "1", "1.0", "true",
                     "[1]", "{a = 1}", "", '""', '"a" "b"', '"a""b"', "1979-05-27", '"a"x']))
TRAILERS = st.sampled_from(["", " ", "  # note", "#note", ' # "q"', " # \\", " x", "\t# t",
                            " #\x01", " # é", " #\t", ' "', " ="])
KEY_LINES = st.builds(lambda a, k, b, c, v, t: f"{a}{k}{b}={c}{v}{t}",
                      SPACE, KEYS, SPACE, SPACE, VALUES, TRAILERS)
COMMENT_LINES = st.builds(lambda a, t: f"{a}#{t}", SPACE, st.one_of(ANY_TEXT, PRINTABLE))
LINES = st.one_of(COMMENT_LINES, SPACE, HEADERS, KEY_LINES, ANY_TEXT)
ENDINGS = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", ""])
TEXTS = st.one_of(
    st.lists(st.tuples(LINES, ENDINGS), max_size=10).map(
        lambda lines: "".join(line + end for line, end in lines)),
    # Mostly the file as written, one line changed.
    st.builds(lambda index, line: _edit_written(index, line), st.integers(0, 12), LINES),
)


def _written(state: str = "enabled", product: str = "NeMo Agent Toolkit",
             command: str = "nat-telemetry") -> str:
    return consent._render_consent_file(ConsentState(state), product, command, config.NAT)


def _edit_written(index: int, line: str) -> str:
    lines = _written().split("\n")
    lines[index % len(lines)] = line
    return "\n".join(lines)


BARE_KEYS = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                    min_size=1, max_size=12)
SUBSET_VALUES = PRINTABLE.filter(lambda body: '"' not in body and "\\" not in body)
SUBSET_TRAILERS = st.one_of(st.just(""), PRINTABLE.map(lambda text: f" #{text}"))


@st.composite
def subset_documents(draw: st.DrawFn) -> str:
    """Texts made only of what the fast reader claims to read."""
    spaces = st.sampled_from(["", " ", "   "])
    lines = [f"{draw(spaces)}#{draw(PRINTABLE)}" for _ in range(draw(st.integers(0, 4)))]
    lines += [draw(spaces) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        lines.append(f"{draw(spaces)}[telemetry]{draw(spaces)}")
        for key in draw(st.lists(BARE_KEYS, max_size=5, unique=True)):
            lines.append(f"{draw(spaces)}{key}{draw(spaces)}={draw(spaces)}"
                         f'"{draw(SUBSET_VALUES)}"{draw(spaces)}{draw(SUBSET_TRAILERS)}')
            if draw(st.booleans()):
                lines.append(f"{draw(spaces)}#{draw(PRINTABLE)}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


# ------------------------------------------------------------------ the reader


@PROPERTY
@given(text=TEXTS)
def test_the_fast_reader_never_disagrees_with_a_toml_parser(text: str) -> None:
    fast = config.fast_loads(text)
    if fast is not None:  # None: not its subset, a TOML parser decides
        assert fast == outcome(reference.loads, text), text


@PROPERTY
@given(text=TEXTS)
def test_toml_loads_is_a_toml_parsers_answer(dependency_mode: str, text: str) -> None:
    # "installed": tomllib or tomli reads what the fast reader declines;
    # "stdlib": nothing does, and the text is not understood (never asked).
    if dependency_mode == "installed":
        expected = outcome(reference.loads, text)
    else:
        fast = config.fast_loads(text)
        expected = INVALID if fast is None else fast
    assert outcome(config.toml_loads, text) == expected, text


@PROPERTY
@given(text=subset_documents())
def test_the_subset_is_read_by_the_fast_reader(text: str) -> None:
    fast = config.fast_loads(text)
    assert fast is not None, text
    assert fast == reference.loads(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("# only a comment\n\n", {}),
    ('[telemetry]\nconsent = "disabled"\n', {"telemetry": {"consent": "disabled"}}),
    (' [telemetry] \n  consent="enabled"  # why not\n', {"telemetry": {"consent": "enabled"}}),
    ('[telemetry]\nk = "a # b"\n', {"telemetry": {"k": "a # b"}}),
    ('[telemetry]\nk = "é中"\n', {"telemetry": {"k": "é中"}}),
])
def test_fast_reader_examples(text: str, expected: dict[str, Any]) -> None:
    assert config.fast_loads(text) == expected == reference.loads(text)


@pytest.mark.parametrize("text", [
    '[telemetry]\r\nconsent = "enabled"\r\n',  # CRLF
    '[telemetry]\nconsent = "\\u0065nabled"\n',  # an escape
    "[telemetry]\nconsent = 'enabled'\n",  # a literal string
    '[telemetry]\nconsent\t= "enabled"\n',  # a tab
    '[telemetry]\n"consent" = "enabled"\n',  # a quoted key
    '[telemetry]\nconsent = "a"\nconsent = "b"\n',  # a duplicate key (invalid)
    '[telemetry]\n[telemetry]\n',  # a duplicate table (invalid)
    'consent = "enabled"\n[telemetry]\n',  # a root key
    '[other]\nconsent = "enabled"\n',  # another table
    '[telemetry]\nconsent.x = "enabled"\n',  # a dotted key
    '[telemetry]\nconsent = "enabled"\n# \x01\n',  # a control character (invalid)
    '\ufeff[telemetry]\n',  # a byte order mark (invalid)
])
def test_fast_reader_hands_over(text: str) -> None:
    assert config.fast_loads(text) is None
    assert outcome(config.toml_loads, text) == outcome(reference.loads, text)


@PROPERTY
@given(state=st.sampled_from(["enabled", "disabled"]), product=ANY_TEXT, command=ANY_TEXT)
def test_the_written_file_is_read_by_the_fast_reader(state: str, product: str,
                                                     command: str) -> None:
    text = _written(state, product, command)
    fast = config.fast_loads(text)
    assert fast is not None, text
    assert fast == reference.loads(text)
    assert fast["telemetry"]["consent"] == state


def test_reading_the_written_file_calls_no_toml_reader(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert consent.write_persisted_consent("enabled", product_name="Outil à moi") is True
    # No TOML library can be imported: a text that needed one would be never asked.
    for name in ("tomllib", "tomli"):
        monkeypatch.setitem(sys.modules, name, None)
    assert consent.read_persisted_consent() is ConsentState.ENABLED
    assert consent.write_persisted_consent("disabled") is True
    assert consent.read_persisted_consent() is ConsentState.DISABLED


# ------------------------------------------------------------------ the gate


def test_prompt_version_has_one_home(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert consent.PROMPT_VERSION == config.PROMPT_VERSION == "1.0"
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True  # under "1.0"
    monkeypatch.setattr(config, "PROMPT_VERSION", "2.0")
    # The gate reads the new wording's version: the old "yes" is asked again...
    record = consent.read_consent_record()
    assert record.state is ConsentState.NEVER_ASKED
    assert "'1.0', not the current '2.0'" in record.why
    assert status.gather()["consent_file"]["current_prompt_version"] == "2.0"
    # ...and the writer records it.
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert consent.read_consent_record().prompt_version == "2.0"
    assert consent.read_persisted_consent() is ConsentState.ENABLED


def test_record_fields_match_consent_record(isolated_home: Path) -> None:
    assert config.NAT.read_consent() == (
        "never_asked", str(isolated_home), False, None, None, "no decision saved")
    assert consent.write_persisted_consent(ConsentState.DISABLED) is True
    state, path, exists, value, version, why = config.NAT.read_consent()
    assert (state, path, exists, value, version, why) == (
        "disabled", str(isolated_home), True, "disabled", "1.0", "")
    assert tuple(consent.read_consent_record()) == (
        ConsentState.DISABLED, path, exists, value, version, why)


def test_decide_follows_the_rules(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.NAT.decide() == (False, "default", "never asked")
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert config.NAT.decide() == (True, "consent file", str(isolated_home))
    monkeypatch.setenv(config.DO_NOT_TRACK_ENV_VAR, "1")
    assert config.NAT.decide()[:2] == (False, "DO_NOT_TRACK")
    assert tuple(consent.resolve_consent()) == config.NAT.decide()


@pytest.mark.parametrize(("text", "expected", "why"), [
    ('[telemetry]\nconsent = "enabled"\nprompt_version = "1.0"\n',
     ("enabled", "enabled", "1.0"), ""),
    ('[telemetry]\nconsent = "disabled"\nprompt_version = "1.0"\n',
     ("disabled", "disabled", "1.0"), ""),
    ('[telemetry]\nconsent = "disabled"\n', ("disabled", "disabled", None),
     "a 'no' stays valid across prompt versions"),
    ('[telemetry]\nconsent = "enabled"\nprompt_version = "0.9"\n',
     ("never_asked", "enabled", "0.9"), "a 'yes' given under prompt version '0.9', not the "
     "current '1.0', no longer counts: you will be asked again"),
    ('[telemetry]\nconsent = "maybe"\nprompt_version = "1.0"\n',
     ("never_asked", "maybe", "1.0"), "not understood, ignored: treated as never asked"),
    ('[telemetry]\nconsent = 1\nprompt_version = 1.0\n', ("never_asked", None, None),
     "not understood, ignored: treated as never asked"),
    ('[other]\nconsent = "enabled"\n', ("never_asked", None, None),
     "no [telemetry] table: ignored"),
    ("telemetry = 5\n", ("never_asked", None, None), "no [telemetry] table: ignored"),
    ("[telemetry\n", ("never_asked", None, None),
     "not understood (not valid TOML), ignored: treated as never asked"),
    ("\x00", ("never_asked", None, None),
     "not understood (not valid TOML), ignored: treated as never asked"),
])
def test_parse_consent_applies_the_gate(text: str, expected: tuple[Any, ...], why: str) -> None:
    assert config.parse_consent(text) == (*expected, why)


# ------------------------------------------------------------------ reading the file


def test_read_text_reads_only_a_regular_file_of_a_sane_size(tmp_path: Path) -> None:
    regular = tmp_path / "telemetry.toml"
    regular.write_text("# é\n", encoding="utf-8")
    assert config.read_text(str(regular)) == "# é\n"
    largest = tmp_path / "largest.toml"
    largest.write_bytes(b"#" * config.MAX_CONSENT_FILE_BYTES)
    assert config.read_text(str(largest)) == "#" * config.MAX_CONSENT_FILE_BYTES
    larger = tmp_path / "larger.toml"
    larger.write_bytes(b"#" * (config.MAX_CONSENT_FILE_BYTES + 1))
    assert config.read_text(str(larger)) is None
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert config.read_text(str(folder)) is None
    if hasattr(os, "mkfifo"):  # opened without blocking, then refused
        fifo = tmp_path / "fifo.toml"
        os.mkfifo(fifo)
        assert config.read_text(str(fifo)) is None
    with pytest.raises(FileNotFoundError):
        config.read_text(str(tmp_path / "missing.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[telemetry]\n\xff\n")
    with pytest.raises(UnicodeDecodeError):
        config.read_text(str(binary))


def test_why_a_file_does_not_count(tmp_path: Path) -> None:
    never = "never_asked"
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert config.NAT.read_consent(folder) == (
        never, str(folder), True, None, None,
        "not a regular file of a sane size: treated as never asked")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'[telemetry]\nconsent = "enabled"\nprompt_version = "1.0"\n# \xff\n')
    assert config.NAT.read_consent(binary) == (
        never, str(binary), True, None, None,
        "not understood (not valid TOML), ignored: treated as never asked")
    assert config.NAT.read_consent(tmp_path / "missing.toml") == (
        never, str(tmp_path / "missing.toml"), False, None, None, "no decision saved")


# ------------------------------------------------------------------ the location

PATHS = st.text("/.~ab", max_size=10)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def _pathlib_answer(path: str) -> str:
    try:
        return str(Path(path).expanduser())
    except RuntimeError:
        return "RuntimeError"


def _our_answer(path: str) -> str:
    try:
        return config.NAT.consent_file(path)
    except RuntimeError:
        return "RuntimeError"


@PROPERTY
@given(path=st.one_of(PATHS, PATHS.map(lambda path: "~" + path),
                      PATHS.map(lambda path: "//" + path), PATHS.map(lambda path: "~root" + path)))
def test_an_explicit_path_is_read_as_pathlib_reads_it(home: Path, path: str) -> None:
    expected = _pathlib_answer(path) if path else config.NAT.consent_file(None)
    assert _our_answer(path) == expected
    if path and expected != "RuntimeError":
        assert consent.consent_file_path(path) == Path(path).expanduser()


def test_location_rules(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONSENT_FILE_ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    default = str(home / ".config" / "nat" / "telemetry.toml")
    assert config.NAT.consent_file() == default
    for relative in ("", "relative/config", "~/config"):
        monkeypatch.setenv("XDG_CONFIG_HOME", relative)
        assert config.NAT.consent_file() == default
    for xdg in (str(tmp_path / "xdg"), str(tmp_path / "xdg") + "//", "/", "//"):
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
        assert config.NAT.consent_file() == str(Path(xdg) / "nat" / "telemetry.toml")
    monkeypatch.setenv(config.CONSENT_FILE_ENV_VAR, "~/own//file.toml")
    assert config.NAT.consent_file() == str(home / "own" / "file.toml")
    assert config.NAT.consent_file("") == str(home / "own" / "file.toml")
    assert config.NAT.consent_file(tmp_path / "given.toml") == str(tmp_path / "given.toml")
    with pytest.raises(TypeError):
        config.NAT.consent_file(b"/bytes")  # type: ignore[arg-type]


def test_another_tools_location(home: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    acme = config.Tool("acme-cli")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert acme.var("CONSENT_FILE") == "ACME_CLI_TELEMETRY_CONSENT_FILE"
    # The default tool's variable is the default tool's only.
    monkeypatch.setenv(config.CONSENT_FILE_ENV_VAR, str(tmp_path / "nat.toml"))
    assert acme.consent_file() == str(tmp_path / "xdg" / "acme-cli" / "telemetry.toml")
    monkeypatch.setenv("ACME_CLI_TELEMETRY_CONSENT_FILE", "~/acme.toml")
    assert acme.consent_file() == str(home / "acme.toml")
    assert acme.consent_file(tmp_path / "given.toml") == str(tmp_path / "given.toml")
    assert config.NAT.consent_file() == str(tmp_path / "nat.toml")


def test_no_home_folder_raises_like_pathlib(monkeypatch: pytest.MonkeyPatch) -> None:
    pwd = pytest.importorskip("pwd")

    def no_entry(uid: int) -> Any:
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError, match="home directory"):
        config.NAT.consent_file("~/file.toml")
    assert config.NAT.consent_file("/abs/file.toml") == "/abs/file.toml"


# ------------------------------------------------------------------ what a command line imports

COSTLY = ("nat_telemetry.consent", "tempfile", "pathlib", "typing", "datetime", "enum",
          "tomllib", "tomli", "re", "logging", "threading")
TOML_MODULES = ("tomllib", "tomli")
SCRIPT = """\
import sys
from nat_telemetry import config, track_command
with track_command("tool", "x"):
    pass
loaded = [m for m in {watched!r} if m in sys.modules]
import json  # only now: it imports re
print(json.dumps({{"enabled": config.TELEMETRY_ENABLED, "loaded": loaded}}))
"""


def run_tool(tmp_path: Path, consent_state: str | None) -> dict[str, Any]:
    """The tool script in a fresh ``python -S`` whose user is in ``consent_state``."""
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("NAT_", "PYTHON", "XDG_")) and key not in config.CI_ENV_VARS
           and key != config.DO_NOT_TRACK_ENV_VAR}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), PYTHONPATH=str(REPO_ROOT),
               NAT_TELEMETRY_SPOOL_DIR="off")
    if consent_state is not None:
        path = home / "config" / "nat" / "telemetry.toml"
        assert consent.write_persisted_consent(consent_state, path) is True
    script = tmp_path / "tool.py"
    script.write_text(SCRIPT.format(watched=COSTLY + TOML_MODULES))
    done = subprocess.run([sys.executable, "-S", str(script)], env=env, cwd=str(tmp_path),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_a_bare_interpreter_imports_none_of_them(tmp_path: Path) -> None:
    # The control: without it, a module imported at startup would pass below unseen.
    done = subprocess.run(
        [sys.executable, "-S", "-c",
         f"import sys; print([m for m in {COSTLY!r} if m in sys.modules])"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("consent_state", [None, "disabled"], ids=["never-asked", "said-no"])
def test_telemetry_off_by_the_consent_file_imports_nothing_costly(
    tmp_path: Path, consent_state: str | None
) -> None:
    assert run_tool(tmp_path, consent_state) == {"enabled": False, "loaded": []}


def test_telemetry_on_by_the_consent_file_reads_it_without_toml(tmp_path: Path) -> None:
    # No endpoint: the event is built and validated, sent nowhere.
    found = run_tool(tmp_path, "enabled")
    assert found["enabled"] is True
    assert not set(found["loaded"]) & {"nat_telemetry.consent", *TOML_MODULES}
