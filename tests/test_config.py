"""Tests for nat_telemetry.config: truthy and "set" parsing, the environment's rules
(DO_NOT_TRACK, CI), and the lazy, live TELEMETRY_ENABLED flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nat_telemetry
from nat_telemetry import config, consent
from nat_telemetry.consent import ConsentState

REPO_ROOT = Path(__file__).resolve().parent.parent
FLAG = "TELEMETRY_ENABLED"


@pytest.fixture(autouse=True)
def _isolated(isolated_home: Path) -> Path:
    return isolated_home


@pytest.fixture
def unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the flag back in its never-read state; the original is restored after."""
    monkeypatch.delitem(vars(config), FLAG, raising=False)


# --------------------------------------------------------------------------- is_truthy


@pytest.mark.parametrize(
    "value", ["1", "true", "TRUE", "True", "yes", "YES", "yEs", " yes ", "\ttrue\n", " 1"]
)
def test_truthy(value: str) -> None:
    assert config.is_truthy(value) is True


@pytest.mark.parametrize(
    "value",
    [None, "", " ", "0", "no", "false", "off", "y", "t", "on", "2", "enabled", "yes please", "1.0"],
)
def test_not_truthy(value: str | None) -> None:
    assert config.is_truthy(value) is False


# --------------------------------------------------------------------------- is_set


@pytest.mark.parametrize(
    "value", ["1", "true", "TRUE", "yes", "on", "On", "2", "y", "anything", " 1 ", "\ttrue\n"]
)
def test_set(value: str) -> None:
    assert config.is_set(value) is True


@pytest.mark.parametrize(
    "value", [None, "", " ", "0", "false", "FALSE", "no", "No", "off", "OFF", " 0 ", "\tfalse\n"]
)
def test_not_set(value: str | None) -> None:
    assert config.is_set(value) is False


@pytest.mark.parametrize(("value", "off"), [("1", True), ("yes", True), ("on", True),
                                            ("anything", True), ("0", False), ("off", False),
                                            ("No", False), ("", False)])
def test_do_not_track_is_set_means_off(
    monkeypatch: pytest.MonkeyPatch, value: str, off: bool
) -> None:
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "1")
    monkeypatch.setenv(config.DO_NOT_TRACK_ENV_VAR, value)
    assert config.do_not_track() is off
    decided = config.environment_decision()
    assert decided is not None
    assert decided[:2] == ((False, "DO_NOT_TRACK") if off else (True, "environment"))


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("yes", True),
                                           ("on", True), ("anything", True), ("0", False),
                                           ("false", False), ("NO", False), ("off", False),
                                           ("", False)])
def test_a_ci_variable_set_means_a_ci_run(
    monkeypatch: pytest.MonkeyPatch, value: str, ci: bool
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", value)
    assert config.ci_env_var() == ("GITHUB_ACTIONS" if ci else None)
    assert config.environment_decision() == (
        (False, "CI", "GITHUB_ACTIONS is set: a CI run, where only NAT_TELEMETRY_ENABLED "
         "can turn telemetry on") if ci else None)
    # Only the variable turns telemetry on in a CI run.
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "1")
    assert config.environment_decision() == (True, "environment", "NAT_TELEMETRY_ENABLED='1'")


# --------------------------------------------------------------------------- lazy flag


@pytest.mark.usefixtures("unresolved")
def test_flag_not_resolved_until_read() -> None:
    assert FLAG not in vars(config)


@pytest.mark.usefixtures("unresolved")
@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("0", False)])
def test_first_read_resolves_from_env(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, value)
    assert config.TELEMETRY_ENABLED is expected
    # Stored after the first read: later reads are plain attribute lookups.
    assert vars(config)[FLAG] is expected


@pytest.mark.usefixtures("unresolved")
@pytest.mark.parametrize(
    ("state", "expected"),
    [(ConsentState.ENABLED, True), (ConsentState.DISABLED, False), (None, False)],
)
def test_first_read_falls_back_to_consent_file(state: ConsentState | None, expected: bool) -> None:
    if state is not None:
        assert consent.write_persisted_consent(state) is True
    assert config.TELEMETRY_ENABLED is expected


@pytest.mark.usefixtures("unresolved")
def test_env_beats_consent_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "no")
    assert config.TELEMETRY_ENABLED is False


@pytest.mark.usefixtures("unresolved")
def test_resolved_once_then_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(config.NAT, "decide", lambda *args: (counting(), "test", ""))
    assert config.TELEMETRY_ENABLED is True
    assert config.TELEMETRY_ENABLED is True
    assert nat_telemetry.TELEMETRY_ENABLED is True
    assert len(calls) == 1
    # The environment is read once: changing it later changes nothing.
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "0")
    assert config.TELEMETRY_ENABLED is True


@pytest.mark.usefixtures("unresolved")
def test_assignment_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "0")
    assert config.TELEMETRY_ENABLED is False
    config.TELEMETRY_ENABLED = True
    assert config.TELEMETRY_ENABLED is True
    assert nat_telemetry.TELEMETRY_ENABLED is True
    config.TELEMETRY_ENABLED = False
    assert nat_telemetry.TELEMETRY_ENABLED is False


@pytest.mark.usefixtures("unresolved")
def test_assignment_before_first_read_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(consent.TELEMETRY_ENV_VAR, "1")
    config.TELEMETRY_ENABLED = False
    assert config.TELEMETRY_ENABLED is False
    assert nat_telemetry.TELEMETRY_ENABLED is False


def test_unknown_attribute_still_raises() -> None:
    with pytest.raises(AttributeError, match="no_such_setting"):
        _ = config.no_such_setting  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- fresh interpreter


def _run_child(code: str, consent_file: Path, **env_extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
    env[consent.CONSENT_FILE_ENV_VAR] = str(consent_file)
    env["HOME"] = str(consent_file.parent.parent / "home")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


CHILD = (
    "import nat_telemetry\n"
    "from nat_telemetry import config\n"
    "print('TELEMETRY_ENABLED' in vars(config))\n"
    "print(config.TELEMETRY_ENABLED, nat_telemetry.TELEMETRY_ENABLED)\n"
)


def test_fresh_import_is_lazy_then_reads_env(_isolated: Path) -> None:
    assert _run_child(CHILD, _isolated, NAT_TELEMETRY_ENABLED="yes") == ["False", "True", "True"]


def test_fresh_import_reads_consent_file(_isolated: Path) -> None:
    assert consent.write_persisted_consent(ConsentState.ENABLED) is True
    assert _run_child(CHILD, _isolated) == ["False", "True", "True"]


def test_fresh_import_defaults_to_off(_isolated: Path) -> None:
    assert _run_child(CHILD, _isolated) == ["False", "False", "False"]
