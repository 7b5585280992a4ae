"""The built-in TOML reader and writer agree with tomllib/tomli and tomli-w.

``nat_telemetry._toml`` stands in for the TOML libraries in vendored copies
that lack them, so it is held to them: the writer must produce tomli-w's
bytes and text that the reference parser reads back unchanged; the reader
must never accept a document the reference parser rejects, nor read one
differently (a differential fuzz checks both); it may only refuse documents
outside its subset, which the consent reader turns into "never asked".  The
last tests show the consent file really goes through the fallbacks when the
libraries are hidden (the ``dependency_mode`` fixture).
"""

from __future__ import annotations

import random
import sys
from typing import Any, Callable

import pytest

from nat_telemetry import _toml, consent
from nat_telemetry.consent import ConsentState

if sys.version_info >= (3, 11):
    import tomllib as reference
else:
    import tomli as reference

tomli_w = pytest.importorskip("tomli_w")


def normalised(value: Any) -> Any:
    """Comparable structure: floats by repr, so nan == nan and -0.0 != 0.0."""
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def parse_or_error(loads: Callable[[str], Any], text: str) -> Any:
    try:
        return normalised(loads(text))
    except ValueError:  # TOMLDecodeError of either parser
        return "error"


# ------------------------------------------------------------------ writer

TRICKY_STRINGS = [
    "",
    "enabled",
    "2024-01-01T00:00:00Z",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "new\nline",
    "cr\rlf\r\n",
    "\b\f\x00\x01\x1f\x7f",
    "".join(chr(i) for i in range(32)) + "\x7f",
    "héllo wörld ✓ 🚀",
    "\u2028\u2029\ufeff\u00a0",
    "'single' quotes",
    "#not a comment",
    "[not a table]",
    "= not = a = key",
    "\\u0041 stays literal",
]
TRICKY_KEYS = ["consent", "with space", "dotted.key", "", "ünïcode", 'q"uote', "-_09AZaz", "#"]


@pytest.mark.parametrize("value", TRICKY_STRINGS)
def test_writer_matches_tomli_w_and_round_trips(value: str) -> None:
    document = {"telemetry": {"consent": value, "prompt_version": "1.0"}}
    text = _toml.minimal_dumps(document)
    assert text == tomli_w.dumps(document)
    assert reference.loads(text) == document
    assert _toml.minimal_loads(text) == document


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_writer_quotes_keys_and_table_names_like_tomli_w(key: str) -> None:
    document = {key: {key: "v"}, "second": {}, "third": {"a": "b", key: ""}}
    text = _toml.minimal_dumps(document)
    assert text == tomli_w.dumps(document)
    assert reference.loads(text) == document
    assert _toml.minimal_loads(text) == document


def test_writer_fuzz_round_trips() -> None:
    rng = random.Random(20240101)
    alphabet = [chr(i) for i in range(0, 128)] + ["é", "✓", "🚀", "\u2028", "\ufeff", "\U0010ffff"]
    for _ in range(500):
        def text(limit: int) -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(limit)))

        document = {text(6): {text(6): text(20) for _ in range(rng.randrange(4))}
                    for _ in range(rng.randrange(1, 3))}
        rendered = _toml.minimal_dumps(document)
        assert rendered == tomli_w.dumps(document)
        assert reference.loads(rendered) == document
        assert _toml.minimal_loads(rendered) == document


def test_empty_documents() -> None:
    assert _toml.minimal_dumps({}) == tomli_w.dumps({}) == ""
    assert _toml.minimal_dumps({"t": {}}) == tomli_w.dumps({"t": {}}) == "[t]\n"


@pytest.mark.parametrize(
    "document",
    [
        {"telemetry": {"consent": 1}},
        {"telemetry": {"consent": None}},
        {"telemetry": {"nested": {"a": "b"}}},
        {"telemetry": "enabled"},
        {"telemetry": {1: "x"}},
    ],
)
def test_only_tables_of_strings_are_written(document: Any) -> None:
    with pytest.raises(TypeError):
        _toml.minimal_dumps(document)
    with pytest.raises(TypeError):
        _toml.dumps(document)


# ------------------------------------------------------------------ reader

VALID_SUBSET = [
    "",
    "\n\n",
    "# only a comment",
    "[telemetry]\nconsent = \"enabled\"\nconsented_at = \"2024-01-01T00:00:00Z\"\n"
    "prompt_version = \"1.0\"\n",
    "# header\n\n[telemetry]  # trailing\n  consent = 'disabled'   # why not\n",
    "[ telemetry ]\r\nconsent=\"enabled\"\r\n",
    "top = 1\n[a]\nx = true\ny = false\n[b]\nx = -17\n",
    '["quoted table"]\n"quoted key" = "v"\n\'literal key\' = \'v\'\n"" = ""\n',
    'a = "\\b\\t\\n\\f\\r\\"\\\\\\u00e9\\U0001F680"\n',
    "a = 'C:\\Users\\no escapes here'\n",
    "a = \"tab\there\"\nb = 'tab\there'\n",
    "ints = 0\nb = +99\nc = -0\nd = 1_000_000\ne = 0xDEAD_beef\nf = 0o755\ng = 0b1010\n",
    "f = 1.0\ng = -3.14e-2\nh = 5e+22\ni = 6.626_070e-34\nj = inf\nk = -nan\nl = +inf\n",
    "prompt_version = 1.0\n",
    "a = \"unicode ✓ 🚀 é\"\n# comment with ✓\n",
    "a = 1 #\tcomment with a tab\n",
    "\t[t]\t\n\tkey\t=\t\"v\"\t\n",
    "[t-1_2]\n3 = 4\n",
]

INVALID = [
    "a",
    "a =",
    "= 1",
    "a = 1 b = 2",
    "[t] x = 1",
    "[]",
    "[t",
    "t]",
    "a = \"unterminated",
    "a = 'unterminated",
    "a = \"bad \\q escape\"",
    "a = \"\\u12\"",
    "a = \"\\ud800\"",
    "a = \"\\U00110000\"",
    "a = \"ctrl \x01 char\"",
    "a = 'ctrl \x7f char'",
    "a = 1 # ctrl \x00 in comment",
    "a = 1\r",
    "a = 1\rb = 2",
    "\ufeffa = 1",
    "a = True",
    "a = 01",
    "a = 1__0",
    "a = _1",
    "a = 1_",
    "a = +0x1",
    "a = 0x",
    "a = 0b102",
    "a = 1.",
    "a = .5",
    "a = 1e",
    "a = 1._5",
    "a = infinity",
    "[t]\n[t]",
    "t = 1\n[t]",
    "a = 1\na = 2",
    "[t]\nx = 1\nx = 2",
    "a = 'x' 'y'",
    "ключ = 1",
]

OUTSIDE_SUBSET = [
    "a = [1, 2]",
    "a = {b = 1}",
    "a = 1979-05-27",
    "a = 1979-05-27T07:32:00Z",
    "a = 07:32:00",
    'a = """multi\nline"""',
    "a = '''multi\nline'''",
    "a.b = 1",
    "[a.b]\nc = 1",
    "[[a]]\nb = 1",
]


@pytest.mark.parametrize("text", VALID_SUBSET)
def test_reader_reads_the_subset_exactly_like_the_reference(text: str) -> None:
    expected = normalised(reference.loads(text))
    assert normalised(_toml.minimal_loads(text)) == expected


@pytest.mark.parametrize("text", INVALID)
def test_reader_rejects_what_the_reference_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        reference.loads(text)
    with pytest.raises(_toml.TOMLDecodeError):
        _toml.minimal_loads(text)


@pytest.mark.parametrize("text", OUTSIDE_SUBSET)
def test_reader_refuses_valid_toml_outside_its_subset(text: str) -> None:
    reference.loads(text)  # valid TOML...
    with pytest.raises(_toml.TOMLDecodeError):  # ...that the consent file never holds
        _toml.minimal_loads(text)


def test_decode_error_names_the_line() -> None:
    with pytest.raises(_toml.TOMLDecodeError, match="line 3") as caught:
        _toml.minimal_loads("[t]\na = 1\nb = [\n")
    assert caught.value.line == 3
    assert isinstance(caught.value, ValueError)


FRAGMENTS = [
    "[", "]", "[[", "]]", "=", " = ", "\"", "'", '"""', "\\", "\\u", "\\U", "\\n", "\\e",
    "#", "\n", "\r\n", "\r", "\t", " ", ".", ",", "_", "+", "-", "0", "1", "9", "e", "E",
    "x", "o", "b", "0x", "inf", "nan", "true", "false", "a", "key", "telemetry", "✓",
    "\x00", "\x7f", "\x1f", "00", "1.5", "{", "}", ":", "T", "Z", "é", "\ufeff",
]


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(text) + 1)
        action = rng.randrange(3)
        if action == 0:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        elif action == 1:
            text = text[:at] + text[at + rng.randrange(1, 4):]
        else:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at + 1:]
    return text


def test_reader_differential_fuzz() -> None:
    """Mutated documents: the built-in reader never accepts more, nor reads differently."""
    rng = random.Random(7)
    seeds = VALID_SUBSET + INVALID + OUTSIDE_SUBSET
    both_accepted = 0
    for _ in range(6000):
        text = _mutate(rng, rng.choice(seeds))
        ours = parse_or_error(_toml.minimal_loads, text)
        theirs = parse_or_error(reference.loads, text)
        if ours != "error":
            assert ours == theirs, repr(text)
            both_accepted += 1
    assert both_accepted > 500  # the fuzz reached well-formed documents, not just errors


# ------------------------------------------------------------------ choice


def test_installed_libraries_are_preferred() -> None:
    assert _toml.reader_name() == ("tomllib" if sys.version_info >= (3, 11) else "tomli")
    assert _toml.writer_name() == "tomli_w"


def test_the_choice_follows_what_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli_w", None)
    if sys.version_info >= (3, 11):
        assert _toml.reader_name() in ("tomli", "builtin")
    monkeypatch.setitem(sys.modules, "tomli", None)
    assert (_toml.reader_name(), _toml.writer_name()) == ("builtin", "builtin")
    assert _toml.loads("[t]\na = 'b'\n") == {"t": {"a": "b"}}
    assert _toml.dumps({"t": {"a": "b"}}) == '[t]\na = "b"\n'


class Spy:
    """Counts calls to a function of ``_toml`` and passes them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        self._real = getattr(_toml, name)
        monkeypatch.setattr(_toml, name, self)

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self._real(*args)


@pytest.mark.usefixtures("dependency_mode")
def test_consent_file_goes_through_the_fallbacks_when_libraries_are_hidden(
    dependency_mode: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "consent" / "telemetry.toml"
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(path))
    writer = Spy(monkeypatch, "minimal_dumps")
    reader = Spy(monkeypatch, "minimal_loads")
    stdlib = dependency_mode == "stdlib"
    assert _toml.writer_name() == ("builtin" if stdlib else "tomli_w")
    assert (_toml.reader_name() == "builtin") is stdlib

    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert writer.calls == (1 if stdlib else 0)
    # The file as written needs no TOML reader (see _consent_file.fast_loads)...
    assert consent.read_persisted_consent() is ConsentState.ENABLED
    assert reader.calls == 0
    text = path.read_text(encoding="utf-8")
    # ...one edited by hand goes to the best reader there is.
    path.write_text(text.replace('consent = "enabled"', "consent = 'enabled'"), encoding="utf-8")
    assert consent.read_persisted_consent() is ConsentState.ENABLED
    assert reader.calls == (1 if stdlib else 0)

    table = reference.loads(text)["telemetry"]  # the real parser reads it the same way
    assert _toml.minimal_loads(text) == reference.loads(text)
    assert table["consent"] == "enabled"
    assert table["prompt_version"] == consent.PROMPT_VERSION
    # And the bytes are those tomli-w would have written.
    header = consent._FILE_HEADER.format(product=consent.DEFAULT_PRODUCT_NAME,
                                         cmd=consent.DEFAULT_CHANGE_COMMAND)
    assert text == header + tomli_w.dumps({"telemetry": table})
