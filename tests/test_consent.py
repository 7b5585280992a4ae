"""Tests for nat_telemetry.consent: the consent file, the version gate and the prompt."""

from __future__ import annotations

import builtins
import errno
import os
import select
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import nat_telemetry
from nat_telemetry import config, consent
from nat_telemetry.consent import ConsentState

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every test runs twice: with tomllib/tomli and tomli-w, and without them (those
# modules hidden): the file is then written by hand and read by the reader of
# the writer's own lines alone.
pytestmark = pytest.mark.usefixtures("dependency_mode")


@pytest.fixture(autouse=True)
def _isolated(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Record the live flag exactly as it was (including "not resolved yet") so
    # tests that flip it leave no trace for other test modules.
    monkeypatch.setitem(vars(config), "TELEMETRY_ENABLED", False)
    return isolated_home


@pytest.fixture
def consent_file(_isolated: Path) -> Path:
    return _isolated


def write_raw(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def toml_file(consent_value: Any, prompt_version: str | None) -> bytes:
    lines = ["[telemetry]", f'consent = "{consent_value}"', 'consented_at = "2024-01-01T00:00:00Z"']
    if prompt_version is not None:
        lines.append(f'prompt_version = "{prompt_version}"')
    return ("\n".join(lines) + "\n").encode()


class FakeStream:
    """Just enough of a text stream for the TTY checks and the prompt."""

    def __init__(self, tty: bool = True) -> None:
        self.tty = tty
        self.written: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


class BrokenStream(FakeStream):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def fake_input(answer: Any, *later: Any) -> Callable[..., str]:
    """An input() stand-in that records calls and returns or raises ``answer``.

    With ``later`` answers, successive calls give ``answer``, then each of
    ``later``, then the last one again.
    """
    calls: list[Any] = []
    answers = [answer, *later]

    def _input(*args: Any) -> str:
        calls.append(args)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, BaseException) or (
            isinstance(answer, type) and issubclass(answer, BaseException)
        ):
            raise answer
        return str(answer)

    _input.calls = calls  # type: ignore[attr-defined]
    return _input


def set_streams(monkeypatch: pytest.MonkeyPatch, stdin: Any, stdout: Any, stderr: Any) -> None:
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)


# --------------------------------------------------------------------------- constants


def test_public_constants() -> None:
    assert consent.TELEMETRY_ENV_VAR == "NAT_TELEMETRY_ENABLED"
    assert consent.CONSENT_FILE_ENV_VAR == "NAT_TELEMETRY_CONSENT_FILE"
    assert consent.PROMPT_VERSION == "1.0"
    assert [s.value for s in ConsentState] == ["enabled", "disabled", "never_asked"]
    assert ConsentState.ENABLED == "enabled"
    assert nat_telemetry.ConsentState is ConsentState


# --------------------------------------------------------------------------- file location


def test_consent_file_env_var_wins(consent_file: Path) -> None:
    assert consent.consent_file_path() == consent_file


def test_xdg_config_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(consent.CONSENT_FILE_ENV_VAR)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "nat" / "telemetry.toml"
    assert consent.consent_file_path() == expected
    assert consent.write_persisted_consent(ConsentState.DISABLED) is True
    assert expected.is_file()
    assert consent.read_persisted_consent() is ConsentState.DISABLED


@pytest.mark.parametrize("xdg", [None, "", "relative/config"])
def test_default_is_home_dot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    # Unset, empty and relative XDG_CONFIG_HOME all fall back to ~/.config
    # (the XDG spec says relative values must be ignored).
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, "")
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME")
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    home = tmp_path / "home"
    assert consent.consent_file_path() == home / ".config" / "nat" / "telemetry.toml"


# --------------------------------------------------------------------------- write / read


@pytest.mark.parametrize("state", [ConsentState.ENABLED, ConsentState.DISABLED])
def test_round_trip(consent_file: Path, state: ConsentState) -> None:
    assert consent.write_persisted_consent(state) is True
    assert consent.read_persisted_consent() is state


def test_write_accepts_string_values(consent_file: Path) -> None:
    assert consent.write_persisted_consent("disabled") is True
    assert consent.read_persisted_consent() is ConsentState.DISABLED


def test_write_never_asked_or_bogus_writes_nothing(consent_file: Path) -> None:
    assert consent.write_persisted_consent(ConsentState.NEVER_ASKED) is False
    assert consent.write_persisted_consent("maybe") is False
    assert not consent_file.exists()
    assert not consent_file.parent.exists()


def test_overwrite_replaces_previous_decision(consent_file: Path) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED)
    assert consent.write_persisted_consent(ConsentState.DISABLED)
    assert consent.read_persisted_consent() is ConsentState.DISABLED
    assert os.listdir(consent_file.parent) == [consent_file.name]


def test_file_is_private_and_folders_created_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a" / "b" / "telemetry.toml"
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(target))
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_existing_folder_mode_is_left_alone(consent_file: Path) -> None:
    consent_file.parent.mkdir(mode=0o755)
    os.chmod(consent_file.parent, 0o755)
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert stat.S_IMODE(consent_file.parent.stat().st_mode) == 0o755


def test_content_is_commented_toml_with_three_keys(consent_file: Path) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    text = consent_file.read_text(encoding="utf-8")
    assert text.startswith("#")
    assert "nat-telemetry enable" in text
    assert "nat-telemetry disable" in text
    assert "NAT_TELEMETRY_ENABLED" in text
    table = tomllib.loads(text)["telemetry"]
    assert set(table) == {"consent", "consented_at", "prompt_version"}
    assert table["consent"] == "enabled"
    assert table["prompt_version"] == consent.PROMPT_VERSION
    stamp = table["consented_at"]
    assert isinstance(stamp, str)
    parsed = time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(parsed) - time.mktime(time.gmtime())) < 120


def test_atomic_write_leaves_no_temp_files(consent_file: Path) -> None:
    for state in (ConsentState.ENABLED, ConsentState.DISABLED, ConsentState.ENABLED):
        assert consent.write_persisted_consent(state) is True
    assert sorted(os.listdir(consent_file.parent)) == ["telemetry.toml"]


def test_target_is_a_symlink_replaced_not_followed(tmp_path: Path, consent_file: Path) -> None:
    # os.replace swaps the link itself; the file it pointed at is untouched.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    consent_file.parent.mkdir()
    consent_file.symlink_to(victim)
    assert consent.write_persisted_consent(ConsentState.DISABLED) is True
    assert victim.read_text() == "keep me"
    assert not consent_file.is_symlink()
    assert consent.read_persisted_consent() is ConsentState.DISABLED


def _assert_failed_cleanly(folder: Path, expected: list[str]) -> None:
    assert sorted(os.listdir(folder)) == sorted(expected)


def test_write_fails_when_parent_is_a_regular_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    for target in (blocker / "telemetry.toml", blocker / "sub" / "telemetry.toml"):
        monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(target))
        assert consent.write_persisted_consent(ConsentState.ENABLED) is False
        assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
    assert blocker.read_text() == "not a folder"
    _assert_failed_cleanly(tmp_path, ["blocker", "home"])


@pytest.mark.parametrize(
    "target",
    ["/proc/nat-telemetry-test/telemetry.toml", "/proc/self/nat-telemetry.toml"],
)
def test_write_fails_in_unwritable_place(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    # procfs refuses new files even for root, which chmod-based tests cannot do.
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux procfs")
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, target)
    assert consent.write_persisted_consent(ConsentState.ENABLED) is False
    assert not os.path.exists(target)


def test_write_fails_when_target_is_a_directory(consent_file: Path) -> None:
    consent_file.mkdir(parents=True)
    assert consent.write_persisted_consent(ConsentState.ENABLED) is False
    assert consent_file.is_dir()
    _assert_failed_cleanly(consent_file.parent, [consent_file.name])


@pytest.mark.parametrize("failing", ["replace", "fsync", "chmod"])
def test_failure_mid_write_keeps_old_file_and_no_temp(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    before = consent_file.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "simulated failure")

    with monkeypatch.context() as patch:
        patch.setattr(os, failing, boom)
        assert consent.write_persisted_consent(ConsentState.DISABLED) is False
    assert consent_file.read_bytes() == before
    _assert_failed_cleanly(consent_file.parent, [consent_file.name])


def test_write_failure_is_logged_at_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(blocker / "telemetry.toml"))
    with caplog.at_level("DEBUG", logger="nat_telemetry"):
        assert consent.write_persisted_consent(ConsentState.ENABLED) is False
    records = [r for r in caplog.records if r.name == "nat_telemetry"]
    assert records
    assert all(r.levelname == "DEBUG" for r in records)


def test_write_without_home_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    pwd = pytest.importorskip("pwd")
    monkeypatch.delenv(consent.CONSENT_FILE_ENV_VAR)
    monkeypatch.delenv("XDG_CONFIG_HOME")

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    # What a container user without HOME and without a passwd entry sees: "~"
    # cannot be expanded (os.path.expanduser returns it unchanged).
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert os.path.expanduser("~") == "~"
    with pytest.raises(RuntimeError):
        consent.consent_file_path()
    assert consent.write_persisted_consent(ConsentState.ENABLED) is False
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
    record = consent.read_consent_record()
    assert (record.path, record.exists) == ("", False)
    assert record.why.startswith("no consent file location: ")


# --------------------------------------------------------------------------- version gate


@pytest.mark.parametrize(
    ("value", "version", "expected"),
    [
        ("enabled", "1.0", ConsentState.ENABLED),
        ("disabled", "1.0", ConsentState.DISABLED),
        # A "no" is kept whatever wording it answered.
        ("disabled", "0.9", ConsentState.DISABLED),
        ("disabled", None, ConsentState.DISABLED),
        # A "yes" to other (or unknown) wording is asked again.
        ("enabled", "0.9", ConsentState.NEVER_ASKED),
        ("enabled", None, ConsentState.NEVER_ASKED),
        ("enabled", "2.0", ConsentState.NEVER_ASKED),
    ],
)
def test_prompt_version_gate(
    consent_file: Path, value: str, version: str | None, expected: ConsentState
) -> None:
    write_raw(consent_file, toml_file(value, version))
    assert consent.read_persisted_consent() is expected


def test_non_string_prompt_version_counts_as_stale(
    consent_file: Path, dependency_mode: str
) -> None:
    write_raw(consent_file, b'[telemetry]\nconsent = "enabled"\nprompt_version = 1.0\n')
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
    write_raw(consent_file, b'[telemetry]\nconsent = "disabled"\nprompt_version = 1.0\n')
    # Not the writer's own form: without a TOML library the file is never asked.
    expected = ConsentState.DISABLED if dependency_mode == "installed" else (
        ConsentState.NEVER_ASKED)
    assert consent.read_persisted_consent() is expected


# --------------------------------------------------------------------------- bad files


def test_missing_file_is_never_asked(consent_file: Path) -> None:
    assert not consent_file.exists()
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is = = not toml [[[", id="garbage"),
        pytest.param(bytes(range(256)) * 8, id="binary"),
        pytest.param(
            b'[telemetry]\nconsent = "enabled"\nprompt_version = "1.0"\n# \xff\xfe\xc3\x28\n',
            id="invalid-utf8",
        ),
        pytest.param(b"\xef\xbb\xbf\x00\x00garbage", id="bom-and-nuls"),
        pytest.param(toml_file("maybe", "1.0"), id="unknown-value"),
        pytest.param(toml_file("ENABLED", "1.0"), id="wrong-case"),
        pytest.param(toml_file("never_asked", "1.0"), id="never-asked-value"),
        pytest.param(b'[telemetry]\nconsent = 1\nprompt_version = "1.0"\n', id="consent-int"),
        pytest.param(b'[telemetry]\nprompt_version = "1.0"\n', id="no-consent-key"),
        pytest.param(b"telemetry = 5\n", id="telemetry-not-table"),
        pytest.param(b'telemetry = "enabled"\n', id="telemetry-string"),
        pytest.param(b'[other]\nconsent = "enabled"\n', id="no-telemetry-table"),
        pytest.param(b'consent = "enabled"\nprompt_version = "1.0"\n', id="top-level-keys"),
    ],
)
def test_unusable_file_is_never_asked(consent_file: Path, data: bytes) -> None:
    write_raw(consent_file, data)
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED


def test_directory_at_path_is_never_asked(consent_file: Path) -> None:
    consent_file.mkdir(parents=True)
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
    record = consent.read_consent_record()
    assert (record.path, record.exists) == (str(consent_file), True)
    assert record.why == "not a regular file of a sane size: treated as never asked"


def test_huge_file_is_never_asked(consent_file: Path) -> None:
    # Valid TOML that would say "enabled", padded past the size cap: the cap,
    # not a parse error, is what must reject it.
    padding = b"# " + b"x" * 100 + b"\n"
    data = padding * 700 + toml_file("enabled", consent.PROMPT_VERSION)
    assert len(data) > 64 * 1024
    write_raw(consent_file, data)
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
    write_raw(consent_file, padding * 10 + toml_file("enabled", consent.PROMPT_VERSION))
    assert consent.read_persisted_consent() is ConsentState.ENABLED


def test_fifo_at_path_does_not_hang(consent_file: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    consent_file.parent.mkdir()
    os.mkfifo(consent_file)
    result: list[ConsentState] = []
    reader = threading.Thread(target=lambda: result.append(consent.read_persisted_consent()))
    reader.daemon = True
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the thread before failing
        with open(consent_file, "wb"):
            pass
        pytest.fail("read_persisted_consent blocked on a FIFO")
    assert result == [ConsentState.NEVER_ASKED]


def test_unreadable_file_is_never_asked(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raw(consent_file, toml_file("enabled", "1.0"))

    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    # Root ignores file modes, so simulate the refusal at the open() call.
    with monkeypatch.context() as patch:
        patch.setattr(os, "open", denied)
        assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED
        record = consent.read_consent_record()
    assert (record.path, record.exists) == (str(consent_file), True)
    assert record.why == "cannot be read (Permission denied): treated as never asked"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a file whatever its mode")
def test_mode_000_file_is_never_asked(consent_file: Path) -> None:
    write_raw(consent_file, toml_file("enabled", "1.0"))
    consent_file.chmod(0)
    try:
        record = consent.read_consent_record()
    finally:
        consent_file.chmod(0o600)
    assert record.state is ConsentState.NEVER_ASKED
    assert record.why == "cannot be read (Permission denied): treated as never asked"


def test_missing_toml_reader_is_never_asked(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, dependency_mode: str
) -> None:
    # A file this package did not write (here: an escape) needs a TOML reader;
    # the file it writes is read without one.
    write_raw(consent_file, toml_file("enabled", "1.0").replace(b'"1.0"', b'"\\u0031.0"'))
    expected = ConsentState.ENABLED if dependency_mode == "installed" else (
        ConsentState.NEVER_ASKED)
    assert consent.read_persisted_consent() is expected

    for name in ("tomllib", "tomli"):
        monkeypatch.setitem(sys.modules, name, None)
    record = consent.read_consent_record()
    assert (record.state, record.exists) == (ConsentState.NEVER_ASKED, True)
    assert record.why.endswith("treated as never asked")
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert consent.read_persisted_consent() is ConsentState.ENABLED


# --------------------------------------------------------------------------- environment


def test_resolve_env_consent_unset_is_none() -> None:
    assert consent.resolve_env_consent() is None


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", " yes ", "Yes\n"])
def test_env_truthy_beats_disabled_file(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert consent.write_persisted_consent(ConsentState.DISABLED)
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, value)
    assert consent.resolve_env_consent() is True
    assert consent.resolve_initial_consent() is True


@pytest.mark.parametrize("value", ["0", "no", "", "false", "off", "enabled", "y"])
def test_env_falsy_beats_enabled_file(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED)
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, value)
    assert consent.resolve_env_consent() is False
    assert consent.resolve_initial_consent() is False


@pytest.mark.parametrize(
    ("state", "expected"),
    [(ConsentState.ENABLED, True), (ConsentState.DISABLED, False), (None, False)],
)
def test_without_env_the_file_decides(state: ConsentState | None, expected: bool) -> None:
    if state is not None:
        assert consent.write_persisted_consent(state)
    assert consent.resolve_initial_consent() is expected


# --------------------------------------------------------------------------- TTY gating


def test_interactive_when_all_three_are_ttys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_streams(monkeypatch, FakeStream(), FakeStream(), FakeStream())
    assert consent.is_interactive_session() is True


@pytest.mark.parametrize("which", [0, 1, 2])
def test_not_interactive_when_one_stream_is_not_a_tty(
    monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    streams: list[Any] = [FakeStream(), FakeStream(), FakeStream()]
    streams[which] = FakeStream(tty=False)
    set_streams(monkeypatch, *streams)
    assert consent.is_interactive_session() is False


@pytest.mark.parametrize("which", [0, 1, 2])
def test_not_interactive_when_one_stream_is_none(
    monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    streams: list[Any] = [FakeStream(), FakeStream(), FakeStream()]
    streams[which] = None
    set_streams(monkeypatch, *streams)
    assert consent.is_interactive_session() is False


def test_not_interactive_when_isatty_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    set_streams(monkeypatch, FakeStream(), BrokenStream(), FakeStream())
    assert consent.is_interactive_session() is False


# --------------------------------------------------------------------------- prompt


def test_prompt_text_says_what_is_and_is_not_collected() -> None:
    text = consent.render_prompt()
    flat = " ".join(text.split())
    for collected in (
        "command and subcommand names",
        "success",
        "failure",
        "interrupted",
        "duration",
        "exit code",
        "exception",
        "without its message",
        "Python version",
        "random session id",
        "timestamps",
        "CPU architecture",
        "client version",
        "Where it goes: nowhere",
    ):
        assert collected in flat, collected
    never = flat[flat.index("never") :]
    for not_collected in (
        "arguments",
        "option values",
        "file paths",
        "messages",
        "configuration contents",
        "hostnames",
        "user names",
        "IP addresses",
        "input",
    ):
        assert not_collected in never, not_collected
    for how in (
        "nat-telemetry enable",
        "nat-telemetry disable",
        "nat-telemetry status",
        "NAT_TELEMETRY_ENABLED=true|false",
        "DO_NOT_TRACK=1",
    ):
        assert how in flat, how
    assert text.startswith("\nNeMo Agent Toolkit can send anonymous usage telemetry")
    assert text.endswith("Pressing Enter means yes.\nAllow anonymous usage telemetry? [Y/n]: ")


def test_prompt_names_the_product_and_its_command() -> None:
    text = consent.render_prompt(product_name="Acme CLI", change_command="acme telemetry")
    assert text.startswith("\nAcme CLI can send anonymous usage telemetry")
    for how in ("`acme telemetry enable`", "`acme telemetry disable`",
                "`acme telemetry status`"):
        assert how in text, how
    assert "NeMo" not in text and "nat-telemetry" not in text


def test_prompt_names_the_tools_own_variable() -> None:
    acme = config.Tool("acme-cli")
    text = consent.render_prompt(product_name="Acme CLI", tool=acme)
    assert "ACME_CLI_TELEMETRY_ENABLED=true|false" in text
    assert "NAT_TELEMETRY_ENABLED" not in text
    assert "DO_NOT_TRACK=1 turns it off for every tool." in " ".join(text.split())


def test_prompt_names_cannot_carry_control_characters() -> None:
    text = consent.render_prompt(product_name="Acme\x1b[2J\r\nCLI\x07",
                                 change_command="\n\t ")
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "Acme [2J CLI can send" in text
    assert "`nat-telemetry enable`" in text  # blank: the default


@pytest.mark.parametrize(
    ("endpoint", "dry_run", "where"),
    [
        ("", False, "Where it goes: nowhere (no endpoint is set"),
        ("stdout", False, "Where it goes: nowhere (each report is only printed"),
        ("https://user:s3cret@telemetry.example.com:8443/v1/ingest?key=s3cret", False,
         "Where it goes: telemetry.example.com."),
        ("otlp+https://collector.example.org/v1/logs", False,
         "Where it goes: collector.example.org."),
        ("https://telemetry.example.com/x", True,
         "Where it goes: nowhere for now (dry run; it would go to telemetry.example.com)."),
        ("ftp://files.example.com/", False, "Where it goes: nowhere (the endpoint set cannot"),
    ],
)
def test_prompt_says_where_the_data_goes(monkeypatch: pytest.MonkeyPatch, endpoint: str,
                                         dry_run: bool, where: str) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_ENDPOINT", endpoint)
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", dry_run)
    text = consent.render_prompt()
    assert where in " ".join(text.split())
    assert "s3cret" not in text and "user:" not in text and "/v1" not in text


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("", ConsentState.ENABLED),
        ("   ", ConsentState.ENABLED),
        ("y", ConsentState.ENABLED),
        ("Y", ConsentState.ENABLED),
        ("Yes", ConsentState.ENABLED),
        (" YES \r", ConsentState.ENABLED),
        ("n", ConsentState.DISABLED),
        ("No", ConsentState.DISABLED),
        (" NO\r", ConsentState.DISABLED),
    ],
)
def test_prompt_answers(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    expected: ConsentState,
) -> None:
    monkeypatch.setattr(builtins, "input", fake_input(answer))
    assert consent.prompt_user() is expected
    out, err = capsys.readouterr()
    assert out == ""
    assert err == consent.render_prompt()


@pytest.mark.parametrize("unclear", ["whatever", "yess", "y es", "nope", "0", "1", "true"])
def test_unclear_answers_ask_again_then_count_as_no(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unclear: str
) -> None:
    reader = fake_input(unclear)
    monkeypatch.setattr(builtins, "input", reader)
    assert consent.prompt_user() is ConsentState.DISABLED
    assert len(reader.calls) == 3  # type: ignore[attr-defined]
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(consent.render_prompt())
    asked = err[len(consent.render_prompt()):]
    assert asked.count("Please answer y (yes) or n (no); Enter means yes") == 2
    assert asked.count("[Y/n]: ") == 2
    assert "last try" in asked
    assert asked.endswith("No clear answer after 3 tries: counted as no.\n")


@pytest.mark.parametrize(("second", "expected"), [("", ConsentState.ENABLED),
                                                  ("yes", ConsentState.ENABLED),
                                                  ("n", ConsentState.DISABLED)])
def test_a_clear_answer_after_an_unclear_one_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], second: str,
    expected: ConsentState,
) -> None:
    reader = fake_input("maybe", second)
    monkeypatch.setattr(builtins, "input", reader)
    assert consent.prompt_user() is expected
    assert len(reader.calls) == 2  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert err.count("Please answer") == 1 and "No clear answer" not in err


def test_eof_after_an_unclear_answer_is_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtins, "input", fake_input("maybe", EOFError))
    assert consent.prompt_user() is ConsentState.DISABLED


def test_ctrl_c_can_reach_the_caller(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(builtins, "input", fake_input("maybe", KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        consent.prompt_user(raise_on_interrupt=True)
    assert capsys.readouterr().err.endswith("[Y/n]: \n")


@pytest.mark.parametrize("interrupt", [EOFError, KeyboardInterrupt])
def test_prompt_eof_and_ctrl_c_mean_no(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    interrupt: type,
) -> None:
    monkeypatch.setattr(builtins, "input", fake_input(interrupt))
    assert consent.prompt_user() is ConsentState.DISABLED
    out, err = capsys.readouterr()
    assert out == ""
    assert err == consent.render_prompt() + "\n"


def test_prompt_passes_no_prompt_to_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # input("...") would print to stdout; the text must go to stderr only.
    reader = fake_input("y")
    monkeypatch.setattr(builtins, "input", reader)
    consent.prompt_user()
    assert reader.calls == [()]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- maybe_prompt


def fake_terminal(monkeypatch: pytest.MonkeyPatch) -> FakeStream:
    """Fake TTYs on all three streams; returns the stderr one.

    Called inside each test, not from a fixture: pytest's own capturing puts
    its streams back on ``sys`` between fixture setup and the test call.
    """
    err = FakeStream()
    set_streams(monkeypatch, FakeStream(), FakeStream(), err)
    return err


@pytest.mark.parametrize(
    ("answer", "state", "enabled"),
    [("", ConsentState.ENABLED, True), ("n", ConsentState.DISABLED, False)],
)
def test_maybe_prompt_persists_and_flips_live_flag(
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    state: ConsentState,
    enabled: bool,
) -> None:
    terminal = fake_terminal(monkeypatch)
    reader = fake_input(answer)
    monkeypatch.setattr(builtins, "input", reader)
    config.TELEMETRY_ENABLED = not enabled
    consent.maybe_prompt_for_consent()
    assert len(reader.calls) == 1  # type: ignore[attr-defined]
    assert "[Y/n]" in "".join(terminal.written)
    assert consent.read_persisted_consent() is state
    assert config.TELEMETRY_ENABLED is enabled
    assert nat_telemetry.TELEMETRY_ENABLED is enabled
    # Decided now: a second call asks nothing.
    consent.maybe_prompt_for_consent()
    assert len(reader.calls) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(("answer", "word", "other"), [("", "on", "disable"),
                                                       ("no", "off", "enable")])
def test_maybe_prompt_confirms_what_was_saved_in_one_line(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, answer: str, word: str, other: str
) -> None:
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setattr(builtins, "input", fake_input(answer))
    consent.maybe_prompt_for_consent()
    written = "".join(terminal.written)
    assert written.startswith(consent.render_prompt())
    assert written[len(consent.render_prompt()):] == (
        f"Saved: anonymous usage telemetry is {word} for NeMo Agent Toolkit (in "
        f"{consent_file}). Change it any time with `nat-telemetry {other}`.\n")


def test_maybe_prompt_confirmation_names_the_tool(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setattr(builtins, "input", fake_input("y"))
    consent.maybe_prompt_for_consent(product_name="Acme CLI", change_command="acme telemetry")
    written = "".join(terminal.written)
    assert written.startswith("\nAcme CLI can send")
    assert written.endswith("telemetry is on for Acme CLI (in "
                            f"{consent_file}). Change it any time with "
                            "`acme telemetry disable`.\n")
    text = consent_file.read_text(encoding="utf-8")
    assert text.startswith("# Anonymous usage telemetry consent for Acme CLI.\n")
    assert "`acme telemetry enable`" in text
    assert consent.read_persisted_consent() is ConsentState.ENABLED


def test_maybe_prompt_says_when_the_answer_could_not_be_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = fake_terminal(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setattr(builtins, "input", fake_input("n"))
    consent.maybe_prompt_for_consent(consent_file=blocker / "telemetry.toml")
    # A real terminal echoes the typed newline; the fake one does not.
    last = "".join(terminal.written).rpartition("[Y/n]: ")[2]
    assert last.startswith(f"Could not save your answer to {blocker / 'telemetry.toml'}: "
                           "telemetry is off for this run only")
    assert last.endswith("`nat-telemetry enable` changes it.\n") and last.count("\n") == 1


def test_maybe_prompt_with_its_own_consent_file(
    consent_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "acme" / "consent.toml"
    fake_terminal(monkeypatch)
    reader = fake_input("n")
    monkeypatch.setattr(builtins, "input", reader)
    config.TELEMETRY_ENABLED = True
    consent.maybe_prompt_for_consent(consent_file=own)
    assert len(reader.calls) == 1  # type: ignore[attr-defined]
    assert consent.read_consent_record(own).state is ConsentState.DISABLED
    assert not consent_file.exists()  # the shared file is not touched
    assert config.TELEMETRY_ENABLED is False
    # Decided in that file: no question, and its verdict is applied to the process.
    assert consent.write_persisted_consent(ConsentState.ENABLED, own)
    consent.maybe_prompt_for_consent(consent_file=own)
    assert len(reader.calls) == 1  # type: ignore[attr-defined]
    assert config.TELEMETRY_ENABLED is True
    assert consent.resolve_consent(own) == (True, "consent file", str(own))
    assert consent.resolve_consent() == (False, "default", "never asked")


def test_own_consent_file_applies_the_environment_rules_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own.toml"
    assert consent.write_persisted_consent(ConsentState.ENABLED, own)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    config.TELEMETRY_ENABLED = True
    consent.maybe_prompt_for_consent(consent_file=own)
    assert config.TELEMETRY_ENABLED is False


def test_own_consent_file_without_a_terminal_applies_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.TELEMETRY_ENABLED = True
    consent.maybe_prompt_for_consent(consent_file=tmp_path / "own.toml")
    assert config.TELEMETRY_ENABLED is False
    assert not (tmp_path / "own.toml").exists()


@pytest.mark.parametrize("raise_on_interrupt", [False, True])
def test_maybe_prompt_ctrl_c_saves_no(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, raise_on_interrupt: bool
) -> None:
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setattr(builtins, "input", fake_input(KeyboardInterrupt))
    config.TELEMETRY_ENABLED = True
    if raise_on_interrupt:
        with pytest.raises(KeyboardInterrupt):
            consent.maybe_prompt_for_consent(raise_on_interrupt=True)
    else:
        consent.maybe_prompt_for_consent()
    assert consent.read_persisted_consent() is ConsentState.DISABLED
    assert config.TELEMETRY_ENABLED is False
    assert "".join(terminal.written).endswith("`nat-telemetry enable`.\n")


@pytest.mark.parametrize(("name", "value"), [("CI", "true"), ("GITHUB_ACTIONS", "true"),
                                             ("CI", "yes"), ("DO_NOT_TRACK", "1"),
                                             ("DO_NOT_TRACK", "TRUE"), ("DO_NOT_TRACK", "yes"),
                                             ("DO_NOT_TRACK", "on")])
def test_maybe_prompt_noop_in_ci_or_with_do_not_track(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv(name, value)
    reader = fake_input("y")
    monkeypatch.setattr(builtins, "input", reader)
    consent.maybe_prompt_for_consent()
    assert reader.calls == [] and terminal.written == []  # type: ignore[attr-defined]
    assert not consent_file.exists()


def test_maybe_prompt_reasks_after_stale_yes(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_terminal(monkeypatch)
    write_raw(consent_file, toml_file("enabled", "0.1"))
    reader = fake_input("n")
    monkeypatch.setattr(builtins, "input", reader)
    consent.maybe_prompt_for_consent()
    assert len(reader.calls) == 1  # type: ignore[attr-defined]
    assert consent.read_persisted_consent() is ConsentState.DISABLED


@pytest.mark.parametrize("env_value", ["1", "0", ""])
def test_maybe_prompt_noop_when_env_set(
    consent_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    env_value: str,
) -> None:
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, env_value)
    reader = fake_input("y")
    monkeypatch.setattr(builtins, "input", reader)
    consent.maybe_prompt_for_consent()
    assert reader.calls == []  # type: ignore[attr-defined]
    assert terminal.written == []
    assert not consent_file.exists()
    assert config.TELEMETRY_ENABLED is False


@pytest.mark.parametrize("state", [ConsentState.ENABLED, ConsentState.DISABLED])
def test_maybe_prompt_noop_when_already_decided(
    consent_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    state: ConsentState,
) -> None:
    terminal = fake_terminal(monkeypatch)
    assert consent.write_persisted_consent(state)
    before = consent_file.read_bytes()
    reader = fake_input("n" if state is ConsentState.ENABLED else "y")
    monkeypatch.setattr(builtins, "input", reader)
    consent.maybe_prompt_for_consent()
    assert reader.calls == []  # type: ignore[attr-defined]
    assert terminal.written == []
    assert consent_file.read_bytes() == before


@pytest.mark.parametrize("which", [0, 1, 2])
def test_maybe_prompt_noop_when_not_interactive(
    consent_file: Path, monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    streams = [FakeStream(), FakeStream(), FakeStream()]
    streams[which].tty = False
    set_streams(monkeypatch, *streams)
    reader = fake_input("y")
    monkeypatch.setattr(builtins, "input", reader)
    consent.maybe_prompt_for_consent()
    assert reader.calls == []  # type: ignore[attr-defined]
    assert all(s.written == [] for s in streams)
    assert not consent_file.exists()
    assert config.TELEMETRY_ENABLED is False


def test_maybe_prompt_applies_answer_even_if_save_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_terminal(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv(consent.CONSENT_FILE_ENV_VAR, str(blocker / "telemetry.toml"))
    monkeypatch.setattr(builtins, "input", fake_input("yes"))
    consent.maybe_prompt_for_consent()
    assert config.TELEMETRY_ENABLED is True


def test_maybe_prompt_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_terminal(monkeypatch)

    def broken() -> ConsentState:
        raise RuntimeError("terminal vanished")

    monkeypatch.setattr(consent, "prompt_user", broken)
    consent.maybe_prompt_for_consent()
    assert config.TELEMETRY_ENABLED is False
    assert consent.read_persisted_consent() is ConsentState.NEVER_ASKED


def test_maybe_prompt_is_reexported() -> None:
    assert nat_telemetry.maybe_prompt_for_consent is consent.maybe_prompt_for_consent


# --------------------------------------------------------------------------- real processes


def _child_env(consent_file: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
    env[consent.CONSENT_FILE_ENV_VAR] = str(consent_file)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    env["HOME"] = str(consent_file.parent.parent / "home")
    return env


def test_import_is_lazy(consent_file: Path) -> None:
    # Importing the package must not read the consent file nor load TOML.
    code = (
        "import sys, nat_telemetry\n"
        "from nat_telemetry import config\n"
        "print('resolved' if 'TELEMETRY_ENABLED' in vars(config) else 'lazy')\n"
        "print(sorted(m for m in ('tomllib', 'tomli', 'tomli_w') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(consent_file),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    assert out[:2] == ["lazy", "[]"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize(
    ("typed", "state", "flag"),
    [(b"n\n", "disabled", "False"), (b"\n", "enabled", "True")],
)
def test_real_terminal_prompt(consent_file: Path, typed: bytes, state: str, flag: str) -> None:
    pty = pytest.importorskip("pty")
    code = (
        "from nat_telemetry import config, consent\n"
        "consent.maybe_prompt_for_consent()\n"
        "print('FLAG=' + str(config.TELEMETRY_ENABLED), flush=True)\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_child_env(consent_file),
        cwd=str(REPO_ROOT),
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60

    def read_until(marker: bytes | None) -> None:
        # Reads until ``marker`` shows up, or until the child closes the
        # terminal when ``marker`` is None; select keeps every wait bounded.
        nonlocal output
        while marker is None or marker not in output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([master], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every slave end is closed
                return
            if not chunk:
                return
            output += chunk

    try:
        read_until(b"[Y/n]")
        assert b"[Y/n]" in output, output
        os.write(master, typed)
        read_until(None)
        assert proc.wait(timeout=30) == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)

    assert f"FLAG={flag}".encode() in output
    assert b"Traceback" not in output
    table = tomllib.loads(consent_file.read_text(encoding="utf-8"))["telemetry"]
    assert table["consent"] == state
    assert table["prompt_version"] == consent.PROMPT_VERSION
    assert stat.S_IMODE(consent_file.stat().st_mode) == 0o600


def test_no_prompt_without_terminal(consent_file: Path) -> None:
    # Pipes on all three streams: no prompt, no file, and no hang on stdin.
    code = (
        "from nat_telemetry import config, consent\n"
        "consent.maybe_prompt_for_consent()\n"
        "print('FLAG=' + str(config.TELEMETRY_ENABLED))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(consent_file),
        cwd=str(REPO_ROOT),
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "FLAG=False"
    assert "[Y/n]" not in result.stderr
    assert not consent_file.exists()
