"""The consent file's TOML agrees with tomllib/tomli and tomli-w, with or without them.

The consent file is the only TOML this package reads or writes, and a copy of
the package vendored into a constrained environment may have neither
``tomli-w`` nor, before Python 3.11, ``tomli``.  So the writer
(``consent.toml_dumps``) must produce tomli-w's bytes whether tomli-w is there
or not, in text that the reference parser reads back unchanged; the fast
reader (``config.fast_loads``) must never accept a document the reference
parser rejects, nor read one differently (a differential fuzz checks both),
and declines everything else, which ``config.toml_loads`` hands to tomllib or
tomli, or refuses (ValueError) when there is neither: the consent reader then
treats the file as never asked.  The last tests show the consent file really
goes through the fallbacks when the libraries are hidden (the
``dependency_mode`` fixture).
"""

from __future__ import annotations

import random
import sys
import types
from typing import Any, Callable

import pytest

from nat_telemetry import config, consent
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
    except ValueError:  # TOMLDecodeError
        return "error"


class Spy:
    """Counts calls to a function of a module and passes them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        self.calls = 0
        self._real = getattr(module, name)
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self._real(*args)


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


def by_hand(monkeypatch: pytest.MonkeyPatch, table: dict[str, str]) -> str:
    """``consent.toml_dumps(table)`` as a copy without tomli-w writes it."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tomli_w", None)
        quoted = Spy(patch, consent, "_toml_string")
        text = consent.toml_dumps(table)
    assert quoted.calls == len(table)  # written here, not by tomli-w
    return text


@pytest.mark.parametrize("value", TRICKY_STRINGS)
def test_writer_matches_tomli_w_and_round_trips(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    table = {"consent": value, "prompt_version": "1.0"}
    expected = tomli_w.dumps({"telemetry": table})
    assert consent.toml_dumps(table) == expected
    text = by_hand(monkeypatch, table)
    assert text == expected
    assert reference.loads(text) == {"telemetry": table}
    # The fast reader reads it the same way, or leaves it to a TOML parser.
    assert config.fast_loads(text) in (None, {"telemetry": table})
    assert config.toml_loads(text) == {"telemetry": table}


def test_writer_fuzz_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20240101)
    alphabet = [chr(i) for i in range(0, 128)] + ["é", "✓", "🚀", "\u2028", "\ufeff", "\U0010ffff"]
    bare = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    fast_read = 0
    for _ in range(500):
        def text(chars: Any, low: int, limit: int) -> str:
            return "".join(rng.choice(chars) for _ in range(rng.randrange(low, limit)))

        # Keys as the consent file has them (bare); any string as a value.
        table = {text(bare, 1, 12): text(alphabet, 0, 20) for _ in range(rng.randrange(4))}
        rendered = by_hand(monkeypatch, table)
        assert rendered == tomli_w.dumps({"telemetry": table}) == consent.toml_dumps(table)
        assert reference.loads(rendered) == {"telemetry": table}
        fast = config.fast_loads(rendered)
        if fast is not None:
            assert fast == {"telemetry": table}
            fast_read += 1
    assert fast_read > 50  # the fuzz reached texts the fast reader reads, not just escapes


def test_empty_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert by_hand(monkeypatch, {}) == consent.toml_dumps({}) == tomli_w.dumps(
        {"telemetry": {}}) == "[telemetry]\n"
    assert config.fast_loads("[telemetry]\n") == {"telemetry": {}}


# ------------------------------------------------------------------ the fast reader

VALID = [
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
    "[telemetry]\nconsent = \"a # b\" # c\n",
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
    "[telemetry.sub]\nconsent = \"enabled\"\n",
    "[telemetry]\nconsent = \"\"\"a\"\"\"\n",
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
    "a = 'x' 'y'",
    "ключ = 1",
    "[telemetry]\n[telemetry]",
    "[telemetry]\nconsent = \"a\"\nconsent = \"b\"\n",
    "[telemetry]\nconsent = \"a\" \"b\"\n",
    "[telemetry]\nconsent = \"a\"x\n",
    "[telemetry]\nconsent = \"a\"\n# \x7f\n",
    "[telemetry]\n[telemetry.sub]\n[telemetry]\n",
]


@pytest.mark.parametrize("text", VALID)
def test_fast_reader_reads_valid_toml_like_the_reference_or_declines(text: str) -> None:
    fast = config.fast_loads(text)
    assert fast is None or normalised(fast) == normalised(reference.loads(text))


@pytest.mark.parametrize("text", INVALID)
def test_fast_reader_declines_what_the_reference_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        reference.loads(text)
    assert config.fast_loads(text) is None
    with pytest.raises(ValueError):
        config.toml_loads(text)


FRAGMENTS = [
    "[", "]", "[[", "]]", "=", " = ", "\"", "'", '"""', "\\", "\\u", "\\U", "\\n", "\\e",
    "#", "\n", "\r\n", "\r", "\t", " ", ".", ",", "_", "+", "-", "0", "1", "9", "e", "E",
    "x", "o", "b", "0x", "inf", "nan", "true", "false", "a", "key", "telemetry", "✓",
    "\x00", "\x7f", "\x1f", "00", "1.5", "{", "}", ":", "T", "Z", "é", "\ufeff",
    "[telemetry]\n", 'consent = "enabled"\n', "# note",
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


def test_fast_reader_differential_fuzz() -> None:
    """Mutated documents: the fast reader never accepts more, nor reads differently."""
    rng = random.Random(7)
    written = consent._render_consent_file(ConsentState.ENABLED, "Acme", "acme", config.NAT)
    # The file as written weighs as much as all the rest: most mutations of it
    # stay close to what the fast reader reads.
    seeds = [*VALID, *INVALID, *[written] * len(VALID + INVALID)]
    fast_accepted = 0
    for _ in range(6000):
        text = _mutate(rng, rng.choice(seeds))
        theirs = parse_or_error(reference.loads, text)
        fast = config.fast_loads(text)
        if fast is not None:
            assert normalised(fast) == theirs, repr(text)
            fast_accepted += 1
        assert parse_or_error(config.toml_loads, text) == theirs, repr(text)
    assert fast_accepted > 1000  # the fuzz reached texts the fast reader reads, not just errors


# ------------------------------------------------------------------ choice

HAND_EDITED = "[telemetry]\nconsent = 'enabled'\n"  # a literal string: not the writer's form


def test_installed_libraries_are_used_only_for_other_texts(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = Spy(monkeypatch, reference, "loads")
    writer = Spy(monkeypatch, tomli_w, "dumps")
    assert config.toml_loads('[telemetry]\nconsent = "enabled"\n') == {
        "telemetry": {"consent": "enabled"}}
    assert parser.calls == 0
    assert config.toml_loads(HAND_EDITED) == {"telemetry": {"consent": "enabled"}}
    assert parser.calls == 1
    assert consent.toml_dumps({"consent": "enabled"}) == '[telemetry]\nconsent = "enabled"\n'
    assert writer.calls == 1


def test_the_choice_follows_what_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tomllib", None)
    # tomli when tomllib is missing (Python before 3.11)...
    calls: list[str] = []

    def tomli_loads(text: str) -> Any:
        calls.append(text)
        return reference.loads(text)

    monkeypatch.setitem(sys.modules, "tomli", types.SimpleNamespace(loads=tomli_loads))
    assert config.toml_loads(HAND_EDITED) == {"telemetry": {"consent": "enabled"}}
    assert calls == [HAND_EDITED]
    # ...and without either, only the writer's own lines are read.
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ValueError, match="no TOML parser"):
        config.toml_loads(HAND_EDITED)
    assert config.toml_loads('[telemetry]\nconsent = "enabled"\n') == {
        "telemetry": {"consent": "enabled"}}
    assert calls == [HAND_EDITED]


def test_consent_file_goes_through_the_fallbacks_when_libraries_are_hidden(
    dependency_mode: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "consent" / "telemetry.toml"
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(path))
    writer = Spy(monkeypatch, consent, "_toml_string")
    stdlib = dependency_mode == "stdlib"

    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert writer.calls == (3 if stdlib else 0)  # consent, consented_at, prompt_version
    # The file as written needs no TOML reader (see config.fast_loads)...
    assert consent.read_persisted_consent() is ConsentState.ENABLED
    text = path.read_text(encoding="utf-8")
    # ...one edited by hand needs tomllib or tomli: without them, it is never asked.
    path.write_text(text.replace('consent = "enabled"', "consent = 'enabled'"), encoding="utf-8")
    record = consent.read_consent_record()
    assert record.state is (ConsentState.NEVER_ASKED if stdlib else ConsentState.ENABLED)

    table = reference.loads(text)["telemetry"]  # the real parser reads it the same way
    assert config.fast_loads(text) == reference.loads(text)
    assert table["consent"] == "enabled"
    assert table["prompt_version"] == consent.PROMPT_VERSION
    # And the bytes are those tomli-w would have written, below the comments.
    header, table_start, _ = text.partition("[telemetry]\n")
    assert table_start
    assert all(line.startswith("#") or not line for line in header.split("\n"))
    assert text == header + tomli_w.dumps({"telemetry": table})
