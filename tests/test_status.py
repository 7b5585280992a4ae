"""``nat-telemetry status`` and ``status --json``: every rule, in a fresh process.

Each test runs ``python -m nat_telemetry status`` with a scratch HOME and
configuration folders and no telemetry variables but the ones it sets, parses
``--json`` and checks it field by field, and checks that the human output says
the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nat_telemetry import config
from nat_telemetry.consent import PROMPT_VERSION
from nat_telemetry.spool import Spool, write_atomically
from nat_telemetry.transport import destination_id

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT_FIELDS = ["nemoSource", "command", "subcommand", "taskStatus", "durationMs", "exitCode",
                "errorClass", "pythonVersion"]
ENVELOPE_ADDS = ["sessionId (random per process)", "timestamps", "cpuArchitecture",
                 "clientVer"]
TOP_KEYS = {"enabled", "rule", "detail", "do_not_track", "ci", "env_var", "consent_file",
            "endpoint", "endpoint_problem", "endpoint_hint", "dry_run", "collected", "spool",
            "last_delivery", "last_failure"}
NEVER = {"at": None, "unix": None}
NO_FAILURE = {"at": None, "unix": None, "kind": None}
# Where events go without an endpoint (what the spool's files are named by).
NO_ENDPOINT = destination_id("", "")


_CUT = "-" * 20 + " status, as text " + "-" * 20


class Machine:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.consent_file = tmp_path / "xdg-config" / "nat" / "telemetry.toml"
        self.spool_dir = tmp_path / "xdg-state" / "nat" / "telemetry-spool"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("NAT_") and k not in config.CI_ENV_VARS
                    and k != config.DO_NOT_TRACK_ENV_VAR}
        self.env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
                        XDG_STATE_HOME=str(tmp_path / "xdg-state"), PYTHONPATH=str(REPO_ROOT))

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "nat_telemetry", *args],
                                env=dict(self.env, **extra), capture_output=True, text=True,
                                timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def status(self, **extra: str) -> tuple[dict[str, Any], str]:
        """``status --json`` parsed, and the human ``status`` text: both from one
        fresh process, the command line's own ``main``, one after the other."""
        result = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom nat_telemetry import cli\n"
             "codes = [cli.main(['status', '--json']), print(SEPARATOR) or 0, "
             "cli.main(['status'])]\nsys.exit(max(codes))".replace("SEPARATOR", repr(_CUT))],
            env=dict(self.env, **extra), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        as_json, human = result.stdout.split(_CUT + "\n")
        info: dict[str, Any] = json.loads(as_json)
        assert set(info) == TOP_KEYS
        return info, human

    def write_consent(self, consent: str) -> None:
        self.consent_file.parent.mkdir(parents=True, exist_ok=True)
        self.consent_file.write_text(
            f'[telemetry]\nconsent = "{consent}"\nprompt_version = "{PROMPT_VERSION}"\n')

    def spool(self, destination: str, *events: int) -> None:
        """One batch of each size in ``events``, waiting for ``destination``."""
        spool = Spool(str(self.spool_dir))
        for count in events:
            assert spool.write(b"{}", count, destination).written

    def record(self, destination: str, data: bytes | dict[str, Any]) -> None:
        """What a sender recorded about ``destination`` (its ``.state`` file)."""
        self.spool_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        write_atomically(str(self.spool_dir), f"{destination}.state",
                         data if isinstance(data, bytes) else json.dumps(data).encode())


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def near(stamp: str | None, unix: float) -> bool:
    """``stamp`` (YYYY-MM-DDTHH:MM:SSZ) is ``unix`` to the second."""
    return stamp == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def test_fresh_machine(machine: Machine) -> None:
    info, human = machine.status()
    assert info["enabled"] is False
    assert info["rule"] == "default"
    assert info["detail"] == "never asked"
    assert info["do_not_track"] is False
    assert info["ci"] is None
    assert info["env_var"] == {"name": "NAT_TELEMETRY_ENABLED", "value": None,
                               "recognised": True}
    assert info["consent_file"] == {
        "path": str(machine.consent_file), "exists": False, "consent": None,
        "prompt_version": None, "current_prompt_version": PROMPT_VERSION,
        "counts_as": "never_asked", "note": "no decision saved",
    }
    assert info["endpoint"] is None and info["endpoint_problem"] is None
    assert info["dry_run"] is False
    assert info["collected"] == {"event": EVENT_FIELDS, "envelope": ENVELOPE_ADDS}
    assert info["spool"] == {"enabled": True, "dir": str(machine.spool_dir), "batches": 0,
                             "events": 0, "bytes": 0, "oldest": None, "oldest_unix": None,
                             "off_because": None, "problem": None, "destinations": []}
    assert info["last_delivery"] == NEVER
    assert info["last_failure"] == NO_FAILURE

    lines = human.splitlines()
    assert lines[0] == "Telemetry is disabled."
    assert "Source: default (never asked)" in lines
    assert f"Spool: empty ({machine.spool_dir})" in lines
    assert "Last successful delivery: never recorded" in lines
    assert not any(line.startswith(("Last failure", "Spool cannot")) for line in lines)
    # Looking changes nothing: no folder was created.
    assert not machine.spool_dir.exists() and not machine.consent_file.parent.exists()


def test_opted_in_with_a_spool_waiting(machine: Machine) -> None:
    assert machine.cli("enable").returncode == 0
    endpoint = "https://telemetry.example.com/v1/ingest"
    current = destination_id(endpoint, "")
    before = time.time()
    machine.spool(current, 1, 2)
    delivered = 1_700_000_000.5
    machine.record(current, {"endpoint": endpoint, "delivered_at": delivered})

    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    assert info["enabled"] is True
    assert info["rule"] == "consent file"
    assert info["detail"] == str(machine.consent_file)
    assert info["consent_file"]["consent"] == "enabled"
    assert info["consent_file"]["counts_as"] == "enabled"
    assert info["consent_file"]["prompt_version"] == PROMPT_VERSION
    spool_info = info["spool"]
    assert spool_info["enabled"] is True and spool_info["dir"] == str(machine.spool_dir)
    assert spool_info["events"] == 3 and spool_info["batches"] == 2
    assert spool_info["bytes"] > 0 and spool_info["problem"] is None
    assert before - 1 <= spool_info["oldest_unix"] <= time.time()
    assert near(spool_info["oldest"], spool_info["oldest_unix"])
    assert spool_info["destinations"] == [{
        "id": current, "current": True, "endpoint": endpoint, "batches": 2, "events": 3,
        "oldest": spool_info["oldest"], "oldest_unix": spool_info["oldest_unix"],
        "last_delivery": {"at": "2023-11-14T22:13:20Z", "unix": delivered},
        "last_failure": NO_FAILURE}]
    assert info["last_delivery"] == {"at": "2023-11-14T22:13:20Z", "unix": delivered}
    assert info["last_failure"] == NO_FAILURE

    assert "Telemetry is enabled." in human
    assert f"Spool: 3 events waiting in {machine.spool_dir} (oldest from " in human
    assert "Last successful delivery: 2023-11-14 22:13:20 UTC (" in human
    assert "Last failure" not in human


@pytest.mark.parametrize(("kind", "words"), [
    ("refused", "connection refused"), ("tls", "TLS certificate verification failed"),
    ("http 401", "HTTP status 401"), ("no answer", "no answer")])
def test_a_failure_since_the_last_delivery_is_shown(machine: Machine, kind: str,
                                                    words: str) -> None:
    endpoint = "https://telemetry.example.com/v1/ingest"
    current = destination_id(endpoint, "")
    machine.record(current, {"endpoint": endpoint, "delivered_at": 1_700_000_000.5,
                             "failed_at": 1_700_000_100.0, "failure": kind})
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    assert info["last_delivery"] == {"at": "2023-11-14T22:13:20Z", "unix": 1_700_000_000.5}
    assert info["last_failure"] == {"at": "2023-11-14T22:15:00Z", "unix": 1_700_000_100.0,
                                    "kind": kind}
    (line,) = [line for line in human.splitlines() if line.startswith("Last failure: ")]
    assert line.startswith("Last failure: 2023-11-14 22:15:00 UTC (") and line.endswith(
        f": {words}")


def test_a_failure_before_the_last_delivery_is_not_news(machine: Machine) -> None:
    endpoint = "https://telemetry.example.com/v1/ingest"
    current = destination_id(endpoint, "")
    machine.record(current, {"endpoint": endpoint, "delivered_at": 1_700_000_100.0,
                             "failed_at": 1_700_000_000.5, "failure": "timeout"})
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    assert info["last_failure"] == {"at": "2023-11-14T22:13:20Z", "unix": 1_700_000_000.5,
                                    "kind": "timeout"}
    assert "Last successful delivery: 2023-11-14 22:15:00 UTC (" in human
    assert "Last failure" not in human


def test_batches_for_another_endpoint_are_shown_apart(machine: Machine) -> None:
    endpoint = "https://telemetry.example.com/v1/ingest"
    current, earlier = destination_id(endpoint, ""), destination_id("https://old.example/x", "t")
    machine.spool(current, 1)
    machine.spool(earlier, 2, 3)
    machine.record(earlier, {"endpoint": "https://***@old.example/x?***",
                             "failed_at": 1_700_000_000.5, "failure": "dns"})
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    spool_info = info["spool"]
    assert (spool_info["batches"], spool_info["events"]) == (3, 6)
    assert [(d["id"], d["current"], d["endpoint"], d["batches"], d["events"])
            for d in spool_info["destinations"]] == [
        (current, True, None, 1, 1), (earlier, False, "https://***@old.example/x?***", 2, 5)]
    other = spool_info["destinations"][1]
    assert other["last_delivery"] == NEVER
    assert other["last_failure"] == {"at": "2023-11-14T22:13:20Z", "unix": 1_700_000_000.5,
                                     "kind": "dns"}
    # What is said about this endpoint is this endpoint's own.
    assert info["last_delivery"] == NEVER and info["last_failure"] == NO_FAILURE
    assert f"Spool: 6 events waiting in {machine.spool_dir} (oldest from " in human
    (line,) = [line for line in human.splitlines() if line.startswith("  for ")]
    assert line.startswith("  for https://***@old.example/x?***: 5 waiting; last failure "
                           "2023-11-14 22:13:20 UTC (")
    assert line.endswith(": host name not found")
    assert "Last successful delivery: never recorded" in human
    assert "Last failure" not in human


def test_do_not_track_wins_over_everything(machine: Machine) -> None:
    machine.write_consent("enabled")
    info, human = machine.status(DO_NOT_TRACK="1", NAT_TELEMETRY_ENABLED="1")
    assert info["enabled"] is False
    assert info["rule"] == "DO_NOT_TRACK"
    assert info["detail"] == "DO_NOT_TRACK='1'"
    assert info["do_not_track"] is True
    assert info["env_var"]["value"] == "1"
    assert info["consent_file"]["counts_as"] == "enabled"  # still shown, not used
    assert "Telemetry is disabled." in human
    assert "Source: DO_NOT_TRACK='1' (Do Not Track: always off, never asks)" in human


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "yes", "on", "anything"])
def test_do_not_track_set_to_anything_but_an_off_value(machine: Machine, value: str) -> None:
    info, _ = machine.status(DO_NOT_TRACK=value, NAT_TELEMETRY_ENABLED="1")
    assert (info["enabled"], info["rule"]) == (False, "DO_NOT_TRACK")


@pytest.mark.parametrize("value", ["0", "false", "no", "", "off", "OFF"])
def test_do_not_track_off_values_do_not_decide(machine: Machine, value: str) -> None:
    info, _ = machine.status(DO_NOT_TRACK=value, NAT_TELEMETRY_ENABLED="1")
    assert (info["enabled"], info["rule"], info["do_not_track"]) == (True, "environment", False)


def test_ci_turns_off_a_saved_yes(machine: Machine) -> None:
    machine.write_consent("enabled")
    info, human = machine.status(CI="true")
    assert info["enabled"] is False
    assert info["rule"] == "CI"
    assert info["ci"] == "CI"
    assert "Source: CI (CI is set" in human and "never asks" in human


@pytest.mark.parametrize(("value", "ci"), [("1", True), ("yes", True), ("anything", True),
                                           ("false", False), ("0", False), ("off", False)])
def test_a_ci_variable_set_to_anything_but_an_off_value(machine: Machine, value: str,
                                                       ci: bool) -> None:
    machine.write_consent("enabled")
    info, _ = machine.status(BUILDKITE=value)
    assert (info["enabled"], info["rule"], info["ci"]) == (
        (False, "CI", "BUILDKITE") if ci else (True, "consent file", None))


def test_only_the_variable_turns_it_on_in_ci(machine: Machine) -> None:
    info, _ = machine.status(GITHUB_ACTIONS="true", NAT_TELEMETRY_ENABLED="yes")
    assert (info["enabled"], info["rule"], info["ci"]) == (True, "environment", "GITHUB_ACTIONS")


def test_environment_variable_with_an_unrecognised_value(machine: Machine) -> None:
    machine.write_consent("enabled")
    info, human = machine.status(NAT_TELEMETRY_ENABLED="maybe")
    assert info["enabled"] is False
    assert info["rule"] == "environment"
    assert info["detail"] == "NAT_TELEMETRY_ENABLED='maybe'"
    assert info["env_var"] == {"name": "NAT_TELEMETRY_ENABLED", "value": "maybe",
                               "recognised": False}
    assert "Note: 'maybe' is not one of 1/true/yes (on) or 0/false/no (off)" in human


def test_saved_no(machine: Machine) -> None:
    machine.write_consent("disabled")
    info, _ = machine.status()
    assert (info["enabled"], info["rule"]) == (False, "consent file")
    assert info["consent_file"]["counts_as"] == "disabled"


def test_endpoint_is_shown_without_credentials(machine: Machine) -> None:
    endpoint = "https://alice:hunter2@telemetry.example.com/v1/ingest?key=s3cret#frag"
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint, NAT_TELEMETRY_DRY_RUN="1")
    assert info["endpoint"] == "https://***@telemetry.example.com/v1/ingest?***"
    assert info["endpoint_problem"] is None
    assert info["dry_run"] is True
    assert "Endpoint: https://***@telemetry.example.com/v1/ingest?***" in human
    assert "Dry run: on" in human
    for text in (human, json.dumps(info)):
        assert "hunter2" not in text and "alice" not in text and "s3cret" not in text
        assert "frag" not in text


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4318/v1/logs",
                                      "https://otel.example/v1/logs/?key=s3cret"])
def test_a_plain_url_of_an_otlp_receiver_gets_a_hint(machine: Machine, endpoint: str) -> None:
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    scheme = endpoint.partition(":")[0]
    assert info["endpoint_problem"] is None
    assert info["endpoint_hint"].endswith(f"for OTLP write otlp+{scheme}://")
    assert "(note: the path ends in /v1/logs, as an OTLP receiver's does" in human
    assert "s3cret" not in human


@pytest.mark.parametrize("endpoint", ["otlp+http://127.0.0.1:4318", "http://h/v1/logsx",
                                      "http://h/ingest?path=/v1/logs"])
def test_no_hint_where_none_is_needed(machine: Machine, endpoint: str) -> None:
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT=endpoint)
    assert info["endpoint_hint"] is None and "(note:" not in human


def test_values_from_settings_are_printed_escaped(machine: Machine) -> None:
    forged = "\nLast successful delivery: forged"
    spool_dir = f"{machine.tmp}/spool{forged}"
    info, human = machine.status(NAT_TELEMETRY_ENDPOINT="https://telemetry.example.com/\x1b[2J",
                                 NAT_TELEMETRY_SPOOL_DIR=spool_dir,
                                 NAT_TELEMETRY_ENABLED="yes\x1b[31m")
    assert "\x1b" not in human and "\x1b" not in json.dumps(info, ensure_ascii=False)
    assert info["endpoint"] == "https://telemetry.example.com/\\x1b[2J"
    assert info["endpoint_problem"] is not None and "\x1b" not in info["endpoint_problem"]
    assert info["spool"]["dir"] == spool_dir.replace("\n", "\\n")
    assert info["env_var"]["value"] == "yes\\x1b[31m"
    lines = human.splitlines()
    assert [line for line in lines if line.startswith("Last successful delivery")] == [
        "Last successful delivery: never recorded"]
    assert "Endpoint: https://telemetry.example.com/\\x1b[2J (unusable: " in human
    assert f"Spool: empty ({machine.tmp}/spool\\nLast successful delivery: forged)" in lines


def test_spool_turned_off(machine: Machine) -> None:
    info, human = machine.status(NAT_TELEMETRY_SPOOL_DIR="off")
    assert info["spool"] == {"enabled": False, "dir": None, "batches": 0, "events": 0,
                             "bytes": 0, "oldest": None, "oldest_unix": None,
                             "off_because": "NAT_TELEMETRY_SPOOL_DIR='off'", "problem": None,
                             "destinations": []}
    assert info["last_delivery"] == NEVER
    assert info["last_failure"] == NO_FAILURE
    assert "Spool: off (NAT_TELEMETRY_SPOOL_DIR='off')" in human
    assert "Last successful delivery: never recorded" in human


@pytest.mark.parametrize(("make", "problem"), [
    (lambda path: path.mkdir(parents=True, mode=0o777) or path.chmod(0o777),
     "writable by other users"),
    (lambda path: path.parent.mkdir(parents=True) or path.write_text(""), "not a folder"),
])
def test_a_spool_that_cannot_be_used_is_said_so(machine: Machine, make: Any,
                                                problem: str) -> None:
    make(machine.spool_dir)
    info, human = machine.status()
    assert info["spool"]["problem"] == problem
    assert (f"Spool cannot be used: {machine.spool_dir} is {problem}; events are sent before "
            "the command exits instead") in human


@pytest.mark.parametrize("content", [
    b"", b"yesterday", b"\xff\xfe", b"[1700000000]", b'{"delivered_at": "yesterday"}',
    b'{"delivered_at": -5}', b'{"delivered_at": 0}', b'{"delivered_at": NaN}',
    b'{"delivered_at": Infinity}', b'{"delivered_at": null}'])
def test_an_unusable_delivery_record_is_never_recorded(machine: Machine,
                                                       content: bytes) -> None:
    machine.record(NO_ENDPOINT, content)
    info, human = machine.status()
    assert info["last_delivery"] == NEVER
    assert "Last successful delivery: never recorded" in human


def test_a_spool_folder_of_the_users_choice(machine: Machine) -> None:
    chosen = machine.tmp / "my-spool"
    assert Spool(str(chosen)).write(b"{}", 4, NO_ENDPOINT).written
    info, human = machine.status(NAT_TELEMETRY_SPOOL_DIR=str(chosen))
    assert (info["spool"]["dir"], info["spool"]["events"]) == (str(chosen), 4)
    assert f"Spool: 4 events waiting in {chosen}" in human
