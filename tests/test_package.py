"""The package's public surface: what code written for the original imports."""

from __future__ import annotations

import nat_telemetry
from nat_telemetry import config, consent

# The names the original nat.utils.telemetry package exports.
ORIGINAL_EXPORTS = (
    "TELEMETRY_ENABLED", "CliCommandEvent", "ConsentState", "NATTelemetryHandler",
    "NemoSourceEnum", "QueuedEvent", "TaskStatusEnum", "TelemetryEvent", "build_payload",
    "maybe_prompt_for_consent", "read_persisted_consent", "write_persisted_consent",
)


def test_every_name_of_the_original_is_exported() -> None:
    for name in ORIGINAL_EXPORTS:
        assert name in nat_telemetry.__all__
        getattr(nat_telemetry, name)


def test_the_original_command_lines_private_helper_exists() -> None:
    assert consent._consent_file_path() == consent.consent_file_path()


def test_assigning_the_package_flag_turns_telemetry_off_and_on() -> None:
    nat_telemetry.TELEMETRY_ENABLED = False
    assert config.TELEMETRY_ENABLED is False and nat_telemetry.TELEMETRY_ENABLED is False
    nat_telemetry.TELEMETRY_ENABLED = True
    assert config.TELEMETRY_ENABLED is True and nat_telemetry.TELEMETRY_ENABLED is True


def test_a_handler_honours_the_package_flag(make_handler) -> None:  # type: ignore[no-untyped-def]
    from support.helpers import event

    handler = make_handler()
    nat_telemetry.TELEMETRY_ENABLED = False
    handler.enqueue(event())
    assert handler.stats()["dropped_disabled"] == 1


def test_consent_state_prints_as_its_value() -> None:
    assert str(consent.ConsentState.ENABLED) == "enabled"
    assert f"{consent.ConsentState.NEVER_ASKED}" == "never_asked"


def test_the_version_sent_is_the_version_installed() -> None:
    import configparser
    from pathlib import Path

    from nat_telemetry.handler import CLIENT_VERSION

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert CLIENT_VERSION == nat_telemetry.__version__ == setup["metadata"]["version"]
