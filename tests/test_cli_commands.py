"""``reset``, ``disable`` emptying the spool, ``schema``, ``run``'s consent options
and the dry run that shows each payload.

The commands run in a fresh ``python -m nat_telemetry`` with a scratch HOME
and configuration folders; the schema is checked with ``jsonschema`` against
payloads built the real way, in-process and by ``run``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
from support.endpoints import LoopbackEndpoint
from support.helpers import event

from nat_telemetry import config, schema
from nat_telemetry.consent import PROMPT_VERSION
from nat_telemetry.events import CliCommandEvent
from nat_telemetry.handler import NATTelemetryHandler
from nat_telemetry.payload import GDPR_FIELDS, IDENTITY_FIELDS, QueuedEvent, build_payload
from nat_telemetry.spool import Spool
from nat_telemetry.transport import DryRun, Outcome, destination_id

REPO_ROOT = Path(__file__).resolve().parent.parent
DRY_RUN_PREFIX = "nat-telemetry dry run: POST "
URL = "https://telemetry.example.com/v1/ingest"


class Machine:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.consent_file = tmp_path / "xdg-config" / "nat" / "telemetry.toml"
        self.spool_dir = tmp_path / "xdg-state" / "nat" / "telemetry-spool"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
        self.env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
                        XDG_STATE_HOME=str(tmp_path / "xdg-state"), PYTHONPATH=str(REPO_ROOT))

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "nat_telemetry", *args],
                                env=dict(self.env, **extra), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def fill_spool(self) -> int:
        """Three events in two batches for two endpoints, and a delivery recorded."""
        spool = Spool(str(self.spool_dir))
        first, second = destination_id(URL, ""), destination_id("https://other.example/", "")
        assert spool.write(b"{}", 1, first).written and spool.write(b"{}", 2, second).written
        spool.note(first, URL)
        assert (self.spool_dir / f"{first}.state").exists()
        return 3

    def waiting(self) -> int:
        return sum(events for _, events, _, _ in Spool(str(self.spool_dir)).summary().values())

    def status(self, **extra: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.cli("status", "--json", **extra).stdout)
        return info


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


# --------------------------------------------------------------------- reset


def test_reset_forgets_the_decision_and_empties_the_spool(machine: Machine) -> None:
    assert machine.cli("enable").returncode == 0
    machine.fill_spool()
    before = machine.status(NAT_TELEMETRY_ENDPOINT=URL)
    assert before["rule"] == "consent file" and before["last_delivery"]["at"] is not None

    result = machine.cli("reset")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"Decision forgotten: deleted {machine.consent_file}."
    assert lines[1] == "Spool emptied: 3 events deleted."
    assert "Telemetry is off until you decide" in lines[2]
    assert not machine.consent_file.exists()
    assert not machine.spool_dir.exists()  # deliveries forgotten too, so the folder went

    info = machine.status(NAT_TELEMETRY_ENDPOINT=URL)
    assert (info["enabled"], info["rule"], info["detail"]) == (False, "default", "never asked")
    assert info["consent_file"]["counts_as"] == "never_asked"
    assert info["spool"]["events"] == 0 and info["spool"]["destinations"] == []
    assert info["last_delivery"] == {"at": None, "unix": None}


def test_reset_on_a_fresh_machine(machine: Machine) -> None:
    result = machine.cli("reset")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines()[:2] == [
        f"No decision was saved ({machine.consent_file}).", "Spool emptied: 0 events deleted."]


def test_reset_with_the_spool_off(machine: Machine) -> None:
    machine.fill_spool()
    result = machine.cli("reset", NAT_TELEMETRY_SPOOL_DIR="off")
    assert result.returncode == 0
    assert "Spool: off, nothing to empty." in result.stdout
    assert machine.waiting() == 3  # a spool that is off is not ours to touch


def test_reset_that_cannot_delete_fails_clearly(machine: Machine) -> None:
    machine.consent_file.mkdir(parents=True)
    (machine.consent_file / "keep").write_text("")
    machine.fill_spool()
    result = machine.cli("reset")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"nat-telemetry: could not delete {machine.consent_file}")
    assert machine.waiting() == 3  # nothing done when the decision could not be forgotten


def test_reset_warns_when_the_environment_still_decides(machine: Machine) -> None:
    result = machine.cli("reset", NAT_TELEMETRY_ENABLED="1")
    assert result.returncode == 0
    assert "NAT_TELEMETRY_ENABLED='1' is set and overrides" in result.stderr


# ------------------------------------------------------------ enable/disable


def test_disable_empties_the_spool(machine: Machine) -> None:
    assert machine.cli("enable").returncode == 0
    machine.fill_spool()
    result = machine.cli("disable")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"Telemetry disabled. Decision saved to {machine.consent_file}.",
        "Deleted 3 events waiting in the spool."]
    assert machine.waiting() == 0
    assert machine.status()["consent_file"]["consent"] == "disabled"


def test_disable_empties_the_spool_even_if_it_cannot_save(machine: Machine) -> None:
    blocker = machine.tmp / "a-file"
    blocker.write_text("")
    machine.fill_spool()
    result = machine.cli("disable", NAT_TELEMETRY_CONSENT_FILE=str(blocker / "x.toml"))
    assert result.returncode == 1
    assert "could not save the decision" in result.stderr
    assert machine.waiting() == 0


def test_enable_leaves_the_spool_alone(machine: Machine) -> None:
    machine.fill_spool()
    assert machine.cli("enable").returncode == 0
    assert machine.waiting() == 3


# -------------------------------------------------------------------- schema


def real_payload(**overrides: Any) -> dict[str, Any]:
    when = datetime.now(timezone.utc)
    events = [QueuedEvent(event(duration_ms=i, **overrides), when) for i in range(3)]
    return build_payload(events, source_client_version="1.2.3", session_id="abc123")


def validator() -> jsonschema.protocols.Validator:
    envelope = schema.envelope_schema()
    jsonschema.Draft202012Validator.check_schema(envelope)
    return jsonschema.Draft202012Validator(envelope)


def test_schema_prints_every_event_and_the_envelope(machine: Machine) -> None:
    result = machine.cli("schema")
    assert result.returncode == 0 and result.stderr == ""
    printed = json.loads(result.stdout)
    assert set(printed) == {"envelope", "events"}
    assert list(printed["events"]) == ["nat_cli_command"]
    assert printed == json.loads(json.dumps(schema.schemas()))
    for one in (printed["envelope"], printed["events"]["nat_cli_command"]):
        jsonschema.Draft202012Validator.check_schema(one)
    assert json.loads(machine.cli("schema", "envelope").stdout) == printed["envelope"]
    assert (json.loads(machine.cli("schema", "nat_cli_command").stdout)
            == printed["events"]["nat_cli_command"])


def test_schema_unknown_name_is_a_usage_error(machine: Machine) -> None:
    result = machine.cli("schema", "nope")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "unknown schema 'nope'" in line and "envelope, nat_cli_command" in line


def test_the_envelope_schema_pins_everything() -> None:
    envelope = schema.envelope_schema()
    assert envelope["additionalProperties"] is False
    assert set(envelope["required"]) == set(envelope["properties"])
    for key in IDENTITY_FIELDS:
        assert envelope["properties"][key]["const"] == "undefined"
    for key in GDPR_FIELDS:
        assert envelope["properties"][key]["const"] == "None"
    (wire_event,) = envelope["properties"]["events"]["items"]["oneOf"]
    assert wire_event["additionalProperties"] is False
    assert envelope["$defs"]["nat_cli_command"]["additionalProperties"] is False


def test_a_real_payload_validates() -> None:
    validator().validate(real_payload())
    validator().validate(real_payload(error_class="ValueError", task_status="failure"))


@pytest.mark.parametrize("change", [
    lambda p: p.update(userId="alice"),
    lambda p: p.update(deviceGdprTechOptIn="true"),
    lambda p: p.update(hostname="build-box"),
    lambda p: p.pop("sessionId"),
    lambda p: p.update(clientType="Browser"),
    lambda p: p.update(sentTs="yesterday"),
    lambda p: p.update(events=[]),
    lambda p: p["events"][0].update(name="other_event"),
    lambda p: p["events"][0].update(extra=1),
    lambda p: p["events"][0]["parameters"].update(argv="--token=hunter2"),
    lambda p: p["events"][0]["parameters"].update(command="rm -rf /home/alice"),
    lambda p: p["events"][0]["parameters"].update(taskStatus="exploded"),
    lambda p: p["events"][0]["parameters"].update(errorClass="ValueError: bad password"),
    lambda p: p["events"][0]["parameters"].update(durationMs="fast"),
    lambda p: p["events"][0]["parameters"].pop("command"),
])
def test_anything_else_does_not_validate(change: Callable[[dict[str, Any]], Any]) -> None:
    body = real_payload()
    change(body)
    assert not validator().is_valid(body)


def test_event_schemas_with_definitions_are_embedded() -> None:
    # Event schemas put enums under $defs with local references; embedded in
    # the envelope, those references must still resolve.
    assert "$defs" in CliCommandEvent.model_json_schema()
    envelope = schema.envelope_schema()
    assert "$defs" not in envelope["$defs"]["nat_cli_command"]
    assert "nat_cli_command.TaskStatusEnum" in envelope["$defs"]
    check = jsonschema.Draft202012Validator(envelope)
    body = real_payload()
    check.validate(body)
    body["events"][0]["parameters"]["taskStatus"] = "exploded"
    assert not check.is_valid(body)


def test_a_payload_sent_by_run_validates(machine: Machine) -> None:
    result = machine.cli("run", "--name", "build", "--", sys.executable, "-c", "pass",
                         NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("{")]
    envelope = json.loads(machine.cli("schema", "envelope").stdout)
    jsonschema.Draft202012Validator(envelope).validate(json.loads(line))


# ------------------------------------------------------------------- dry run


def test_dry_run_shows_each_payload_and_sends_nothing(
    machine: Machine, loopback_endpoint: LoopbackEndpoint
) -> None:
    url = f"http://alice:hunter2@127.0.0.1:{loopback_endpoint.port}/ingest"
    result = machine.cli("run", "--name", "build", "--", sys.executable, "-c",
                         "import sys; sys.exit(5)", NAT_TELEMETRY_ENABLED="1",
                         NAT_TELEMETRY_ENDPOINT=url, NAT_TELEMETRY_DRY_RUN="1",
                         NAT_TELEMETRY_SPOOL_DIR="off")
    assert result.returncode == 5
    (line,) = result.stderr.splitlines()
    target = f"http://***@127.0.0.1:{loopback_endpoint.port}/ingest"
    assert line.startswith(f"{DRY_RUN_PREFIX}{target}: {{")
    assert "hunter2" not in result.stderr and "alice" not in result.stderr
    body = json.loads(line[len(f"{DRY_RUN_PREFIX}{target}: "):])
    assert line.endswith(f": {json.dumps(body)}")  # json.dumps' own formatting
    validator().validate(body)
    (wire_event,) = body["events"]
    assert (wire_event["parameters"]["command"], wire_event["parameters"]["exitCode"]) == (
        "build", 5)
    assert loopback_endpoint.requests == 0


def test_a_dry_run_without_an_endpoint_still_shows_the_payload(machine: Machine) -> None:
    # What someone trying the package first does: no endpoint, only the dry run.
    result = machine.cli("run", "--name", "build", "--", sys.executable, "-c", "pass",
                         NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_DRY_RUN="1")
    assert result.returncode == 0
    (line,) = result.stderr.splitlines()
    start = "nat-telemetry dry run: no endpoint set, nothing sent: "
    assert line.startswith(start)
    validator().validate(json.loads(line[len(start):]))
    status = machine.cli("status", NAT_TELEMETRY_DRY_RUN="1").stdout
    assert "Endpoint: none set (the dry run prints each payload to stderr; nothing is sent)" \
        in status


def test_dry_run_counts_every_event_skipped(
    make_handler: Callable[..., NATTelemetryHandler], loopback_endpoint: LoopbackEndpoint,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(config, "NAT_TELEMETRY_DRY_RUN", True)
    handler = make_handler(endpoint=loopback_endpoint.url, max_batch_size=2)
    for i in range(5):
        handler.enqueue(event(duration_ms=i))
    assert handler.flush(5)
    stats = handler.stats()
    assert (stats["skipped"], stats["sent"], stats["enqueued"]) == (5, 0, 5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # batches of 2, 2 and 1
    start = f"{DRY_RUN_PREFIX}{loopback_endpoint.url}: "
    assert all(line.startswith(start) for line in lines)
    bodies = [json.loads(line[len(start):]) for line in lines]
    assert [len(body["events"]) for body in bodies] == [2, 2, 1]
    assert [line[len(start):] for line in lines] == [json.dumps(body) for body in bodies]
    assert loopback_endpoint.requests == 0


class ClosedStream(io.StringIO):
    def write(self, text: str) -> int:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize("stream", [None, ClosedStream()])
def test_dry_run_without_a_usable_stderr_still_skips(monkeypatch: pytest.MonkeyPatch,
                                                    stream: Any) -> None:
    monkeypatch.setattr(sys, "stderr", stream)
    assert DryRun("https://example.invalid/x").send(b"{}", 1.0).outcome == Outcome.SKIPPED


# --------------------------------------------------- run: whose consent file


def test_run_with_its_own_consent_file(machine: Machine) -> None:
    own = machine.tmp / "acme.toml"
    own.write_text(f'[telemetry]\nconsent = "enabled"\nprompt_version = "{PROMPT_VERSION}"\n')
    result = machine.cli("run", "--consent-file", str(own), "--", sys.executable, "-c", "pass",
                         NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 0
    assert '"nat_cli_command"' in result.stderr  # that file said yes: recorded

    assert machine.cli("enable").returncode == 0  # the shared file says yes...
    own.write_text(f'[telemetry]\nconsent = "disabled"\nprompt_version = "{PROMPT_VERSION}"\n')
    result = machine.cli("run", "--consent-file", str(own), "--", sys.executable, "-c", "pass",
                         NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 0 and result.stderr == ""  # ...but this one decides
