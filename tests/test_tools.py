"""Tools that embed the package: each its name, version, settings, consent, spool
and commands, next to the NeMo Agent Toolkit's and to each other.

Real processes with their own HOME and XDG folders run an "Acme CLI" tool
(``ToolTelemetry("acme", ...)``) and the default tool side by side against real
loopback endpoints: each reaches only its own endpoint, with its own identity,
reads only its own variables and file, and follows ``DO_NOT_TRACK``; a decision
taken elsewhere is honoured by a running process; the consent commands mount in
real click, Typer and argparse command lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import LoopbackEndpoint
from support.helpers import REPO_ROOT, event, wait_until

from nat_telemetry import ToolTelemetry, config
from nat_telemetry.handler import NATTelemetryHandler

ACME = 'ToolTelemetry("acme", version="2.4.1", display_name="Acme CLI")'


class Machine:
    """A scratch home: run Python code, or the command line, in fresh processes."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("NAT_", "ACME_", "BETA_")) and k != "DO_NOT_TRACK"
                    and k not in config.CI_ENV_VARS}
        self.env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
                        XDG_STATE_HOME=str(tmp_path / "state"), PYTHONPATH=str(REPO_ROOT))

    def python(self, code: str, *args: str, check: bool = True,
               **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                                env=dict(self.env, **extra), capture_output=True, text=True,
                                timeout=60, cwd=str(self.root))
        assert "Traceback" not in result.stderr, result.stderr
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def consent_file(self, name: str) -> Path:
        return self.root / "config" / name / "telemetry.toml"

    def spool(self, name: str) -> Path:
        return self.root / "state" / name / "telemetry-spool"


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def sent_by(endpoint: LoopbackEndpoint) -> list[tuple[str, str, str, str]]:
    """(productName, productVersion, clientVer, subcommand) of every event received."""
    return sorted((env["productName"], env["productVersion"], env["clientVer"],
                   e["parameters"]["subcommand"])
                  for env in endpoint.envelopes for e in env["events"])


# ------------------------------------------------------- identity and places

TWO_TOOLS = f"""
from nat_telemetry import ToolTelemetry, track_command
acme = {ACME}
with acme.track_command("deploy", "acme-run"):
    pass
with track_command("nat", "nat-run"):
    pass
"""


def test_two_tools_in_one_process_each_reach_their_own_endpoint(
        machine: Machine, loopback_endpoint: LoopbackEndpoint) -> None:
    nat = LoopbackEndpoint()
    try:
        machine.python(TWO_TOOLS, ACME_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENABLED="1",
                       ACME_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                       NAT_TELEMETRY_ENDPOINT=nat.url)
        assert wait_until(lambda: loopback_endpoint.events and nat.events, timeout=15)
        assert sent_by(loopback_endpoint) == [("acme", "2.4.1", "2.4.1", "acme-run")]
        from nat_telemetry import __version__

        assert sent_by(nat) == [("undefined", "undefined", __version__, "nat-run")]
        (acme_event,) = loopback_endpoint.events
        assert acme_event["parameters"]["nemoSource"] == "undefined"
        assert nat.events[0]["parameters"]["nemoSource"] == "agent_toolkit"
    finally:
        nat.close()
    # Each spool in its own place; both emptied by their senders.
    assert wait_until(lambda: not [batch for n in ("acme", "nat")
                                   for batch in machine.spool(n).glob("*.nsp")])
    assert machine.spool("acme").is_dir() and machine.spool("nat").is_dir()


def test_two_tools_in_separate_processes_and_over_otlp(
        machine: Machine, loopback_endpoint: LoopbackEndpoint) -> None:
    beta = 'ToolTelemetry("beta-tool", version="0.9", endpoint=sys.argv[1])'
    code = f"""
    import sys
    from nat_telemetry import ToolTelemetry
    tool = {beta} if sys.argv[2] == "beta" else {ACME}
    with tool.track_command("go"):
        pass
    """
    otlp = f"otlp+http://127.0.0.1:{loopback_endpoint.port}"
    machine.python(code, otlp, "beta", BETA_TOOL_TELEMETRY_ENABLED="1")
    machine.python(code, "unused", "acme", ACME_TELEMETRY_ENABLED="1",
                   ACME_TELEMETRY_ENDPOINT=loopback_endpoint.url)
    assert wait_until(lambda: loopback_endpoint.requests == 2, timeout=15)
    by_path = {r.path: r.envelope for r in loopback_endpoint.records}
    (resource,) = by_path["/v1/logs"]["resourceLogs"]
    attributes = {a["key"]: a["value"]["stringValue"] for a in resource["resource"]["attributes"]}
    assert (attributes["service.name"], attributes["service.version"]) == ("beta-tool", "0.9")
    assert by_path["/ingest"]["productName"] == "acme"


def test_each_tool_reads_only_its_own_variables(machine: Machine) -> None:
    code = f"""
    import json
    from nat_telemetry import ToolTelemetry, config
    acme = {ACME}
    print(json.dumps([acme.enabled, config.TELEMETRY_ENABLED]))
    """
    for extra, expected in (({"ACME_TELEMETRY_ENABLED": "1"}, [True, False]),
                            ({"NAT_TELEMETRY_ENABLED": "1"}, [False, True]),
                            ({"ACME_TELEMETRY_ENABLED": "1", "NAT_TELEMETRY_ENABLED": "0"},
                             [True, False])):
        assert json.loads(machine.python(code, **extra).stdout) == expected


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", "anything"])
def test_do_not_track_in_its_usual_spellings_wins_for_every_tool(machine: Machine,
                                                                value: str) -> None:
    code = f"""
    import json
    from nat_telemetry import ToolTelemetry, config
    print(json.dumps([{ACME}.enabled, config.TELEMETRY_ENABLED]))
    """
    result = machine.python(code, DO_NOT_TRACK=value, ACME_TELEMETRY_ENABLED="1",
                            NAT_TELEMETRY_ENABLED="1")
    assert json.loads(result.stdout) == [False, False]


@pytest.mark.parametrize("value", ["", "0", "false", "No", "OFF"])
def test_do_not_track_off_values_leave_the_decision_alone(machine: Machine, value: str) -> None:
    code = f"from nat_telemetry import ToolTelemetry\nprint({ACME}.enabled)"
    assert machine.python(code, DO_NOT_TRACK=value, ACME_TELEMETRY_ENABLED="1").stdout == "True\n"


def test_enable_writes_only_the_tools_own_file(machine: Machine) -> None:
    code = f"""
    import sys
    from nat_telemetry import ToolTelemetry
    sys.exit({ACME}.main(["enable"]))
    """
    result = machine.python(code)
    assert result.stdout == (f"Telemetry enabled. Decision saved to "
                             f"{machine.consent_file('acme')}.\n")
    assert machine.consent_file("acme").is_file()
    assert not machine.consent_file("nat").exists()
    assert "`acme telemetry enable`" in machine.consent_file("acme").read_text()
    status = machine.python(f"""
    import sys
    from nat_telemetry import ToolTelemetry
    sys.exit({ACME}.main(["status", "--json"]))
    """)
    info = json.loads(status.stdout)
    assert (info["enabled"], info["rule"]) == (True, "consent file")
    assert info["env_var"]["name"] == "ACME_TELEMETRY_ENABLED"
    assert info["consent_file"]["path"] == str(machine.consent_file("acme"))
    assert info["spool"]["dir"] == str(machine.spool("acme"))
    nat = json.loads(machine.python("import sys\nfrom nat_telemetry import cli\n"
                                    "sys.exit(cli.main(['status', '--json']))").stdout)
    assert (nat["enabled"], nat["rule"]) == (False, "default")
    assert set(nat) == set(info)  # the same shape


def test_a_tool_reads_its_own_file_too(machine: Machine, tmp_path: Path) -> None:
    from nat_telemetry import ConsentState, read_persisted_consent, write_persisted_consent

    path = tmp_path / "acme.toml"
    assert write_persisted_consent(ConsentState.DISABLED, path)
    assert read_persisted_consent(path) is ConsentState.DISABLED
    assert read_persisted_consent() is ConsentState.NEVER_ASKED  # the shared file: untouched


def test_bad_names_and_versions_are_refused_at_once() -> None:
    for name in ("Acme", "acme tool", "", "../acme", "-acme"):
        with pytest.raises(ValueError, match="a tool's name"):
            ToolTelemetry(name, version="1.0")
    for version in ("", "1 0", "1/2", "v" * 65):
        with pytest.raises(ValueError, match="a tool's version"):
            ToolTelemetry("acme", version=version)
    with pytest.raises(ValueError):
        ToolTelemetry("acme", version="1.0", nemo_source="not-a-product")
    acme = ToolTelemetry("acme-cli", version="1.0")
    assert (acme.tool.env_prefix, acme.change_command, acme.display_name) == (
        "ACME_CLI", "acme-cli telemetry", "acme-cli")


# ------------------------------------------------------------------ the prompt


def test_the_prompt_names_the_tool_its_command_and_its_variable(machine: Machine) -> None:
    from test_prompt_pty import QUESTION, Terminal

    code = f"""
    from nat_telemetry import ToolTelemetry
    acme = {ACME}
    acme.maybe_prompt_for_consent()
    print("enabled:", acme.enabled)
    """
    terminal = Terminal([sys.executable, "-c", textwrap.dedent(code)], machine.env)
    assert terminal.read_until(QUESTION), terminal.output
    terminal.type(b"y\r")
    assert terminal.read_until(None)
    shown = terminal.output.decode()
    assert "Acme CLI can send anonymous usage telemetry" in shown
    assert "`acme telemetry enable`" in shown and "`acme telemetry status`" in shown
    assert "ACME_TELEMETRY_ENABLED=true|false" in shown and "DO_NOT_TRACK=1" in shown
    assert "enabled: True" in shown
    assert machine.consent_file("acme").is_file() and not machine.consent_file("nat").exists()


# ------------------------------------------------------------- live consent

LONG_RUNNING = """
import sys, time
from nat_telemetry import config, track_command
config.DEFAULT_FLUSH_INTERVAL_SECONDS = 0.3
deadline = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < deadline:
    with track_command("loop", f"n{n}"):
        pass
    n += 1
    time.sleep(0.1)
"""


def test_a_running_process_stops_sending_after_disable_elsewhere(
        machine: Machine, loopback_endpoint: LoopbackEndpoint) -> None:
    assert machine.python("import sys\nfrom nat_telemetry import cli\n"
                          "sys.exit(cli.main(['enable']))").returncode == 0
    env = dict(machine.env, NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url)
    child = subprocess.Popen([sys.executable, "-c", LONG_RUNNING, "4"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: len(loopback_endpoint.events) >= 3, timeout=10)
        disabled = machine.python("import sys\nfrom nat_telemetry import cli\n"
                                  "sys.exit(cli.main(['disable']))")
        assert disabled.returncode == 0
        after_disable = time.monotonic()
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0 and "Traceback" not in stderr, stderr
    # Within one flush interval (0.3 s) of the "no", nothing more is sent.
    late = [r for r in loopback_endpoint.records if r.at > after_disable + 0.5]
    assert late == []
    assert not list(machine.spool("nat").glob("*.nsp"))  # and nothing was kept for later


def test_a_handler_drops_what_waits_once_a_no_is_saved(make_handler: Any,
                                                       loopback_endpoint: LoopbackEndpoint,
                                                       tmp_path: Path) -> None:
    from nat_telemetry.consent import ConsentState, write_persisted_consent

    handler = make_handler(endpoint=loopback_endpoint.url)
    handler.enqueue(event())
    assert handler.flush(timeout=5)
    handler.enqueue(event())
    assert write_persisted_consent(ConsentState.DISABLED)  # another process's "no"
    assert handler.flush(timeout=5)
    handler.enqueue(event())
    stats = handler.stats()
    assert (stats["sent"], stats["dropped_revoked"], stats["dropped_disabled"]) == (1, 1, 1)
    assert loopback_endpoint.requests == 1


# ------------------------------------------------- session prefix, token


def test_a_bad_session_prefix_is_ignored_with_one_warning(
        loopback_endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(config, "SESSION_PREFIX", "my team ")
    first = NATTelemetryHandler(endpoint=loopback_endpoint.url, session_id="abc",
                                spool_dir=None)
    second = NATTelemetryHandler(endpoint=loopback_endpoint.url, session_id="def",
                                 spool_dir=None)
    for handler in (first, second):
        handler.enqueue(event())
        assert handler.flush(timeout=5)
        handler.stop()
    assert [env["sessionId"] for env in loopback_endpoint.envelopes] == ["abc", "def"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "NAT_SESSION_PREFIX" in warnings[0].getMessage()


def test_a_token_given_in_code_is_sent_and_the_variable_wins(
        machine: Machine, loopback_endpoint: LoopbackEndpoint) -> None:
    handler = NATTelemetryHandler(endpoint=loopback_endpoint.url, token="from-code",
                                  spool_dir=None)
    handler.enqueue(event())
    assert handler.flush(timeout=5)
    handler.stop()
    code = """
    from nat_telemetry import ToolTelemetry
    acme = ToolTelemetry("acme", version="1.0", token="from-code")
    with acme.track_command("go"):
        pass
    """
    machine.python(code, ACME_TELEMETRY_ENABLED="1", ACME_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                   ACME_TELEMETRY_TOKEN="from-the-environment")
    assert wait_until(lambda: loopback_endpoint.requests == 2, timeout=15)
    assert [r.headers.get("Authorization") for r in loopback_endpoint.records] == [
        "Bearer from-code", "Bearer from-the-environment"]
    with pytest.raises(ValueError, match="printable ASCII"):
        NATTelemetryHandler(token="two words")


# ---------------------------------------------------------------- adapters

CLICK_TOOL = f"""
import click
from nat_telemetry import ToolTelemetry
acme = {ACME}

@click.group(cls=acme.tracked_click_group())
def cli():
    pass

cli.add_command(acme.click_group())

@cli.command()
@click.argument("target")
def deploy(target):
    click.echo("deployed")

@cli.group()
def db():
    pass

@db.command()
def migrate():
    raise click.ClickException("no database")

cli()
"""

TYPER_TOOL = f"""
import typer
from nat_telemetry import ToolTelemetry
from typer.core import TyperGroup
acme = {ACME}
app = typer.Typer(cls=acme.tracked_click_group(TyperGroup), add_completion=False)
app.add_typer(acme.typer_app(), name="telemetry")

@app.command()
def deploy(target: str):
    print("deployed")

@app.command()
def other():
    raise typer.Exit(3)

@app.command()
def check():
    raise typer.BadParameter("not checked")

app()
"""

ARGPARSE_TOOL = f"""
import argparse, sys
from nat_telemetry import ToolTelemetry
acme = {ACME}
parser = argparse.ArgumentParser(prog="acme")
commands = parser.add_subparsers(dest="command", required=True)
acme.add_argparse_commands(commands)
deploy = commands.add_parser("deploy")
deploy.add_argument("target")
deploy.set_defaults(func=lambda args: print("deployed") or 0)
args = parser.parse_args()
with acme.track_command(args.command) if args.command != "telemetry" else open(__file__):
    sys.exit(args.func(args))
"""


def test_a_typer_tool_without_click_installed_records_its_exits(
        machine: Machine, loopback_endpoint: LoopbackEndpoint) -> None:
    # Typer ships its own copy of click (since 0.2x); a tool may have no click at all.
    pytest.importorskip("typer")
    script = machine.root / "acme.py"
    script.write_text('import sys\nsys.modules["click"] = None  # not installed\n' + TYPER_TOOL)
    env = dict(machine.env, ACME_TELEMETRY_ENDPOINT=loopback_endpoint.url,
               ACME_TELEMETRY_ENABLED="1")
    probe = subprocess.run([sys.executable, "-c", 'import sys; sys.modules["click"] = None; '
                            'import typer.core'], env=env, capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("this Typer needs click")
    for args, code in ((["check"], 2), (["deploy", "prod"], 0)):
        result = subprocess.run([sys.executable, str(script), *args], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    assert wait_until(lambda: len(loopback_endpoint.events) == 2, timeout=15)
    assert sorted((e["parameters"]["command"], e["parameters"]["taskStatus"],
                   e["parameters"]["exitCode"], e["parameters"]["errorClass"])
                  for e in loopback_endpoint.events) == [
        ("check", "failure", 2, "BadParameter"), ("deploy", "success", 0, "undefined")]


@pytest.mark.parametrize("tool", ["click", "typer", "argparse"])
def test_the_consent_commands_mount_in_a_real_command_line(
        machine: Machine, loopback_endpoint: LoopbackEndpoint, tool: str) -> None:
    pytest.importorskip(tool) if tool != "argparse" else None
    source = {"click": CLICK_TOOL, "typer": TYPER_TOOL, "argparse": ARGPARSE_TOOL}[tool]
    script = machine.root / "acme.py"
    script.write_text(source)
    env = dict(machine.env, ACME_TELEMETRY_ENDPOINT=loopback_endpoint.url)

    def acme(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, str(script), *args], env=env,
                                capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    status = acme("telemetry", "status")
    assert status.returncode == 0 and status.stdout.startswith("Telemetry is disabled.\n")
    assert "Record a decision with `acme telemetry enable` or `acme telemetry disable`." in (
        status.stdout)
    assert acme("telemetry", "enable").stdout == (
        f"Telemetry enabled. Decision saved to {machine.consent_file('acme')}.\n")
    info = json.loads(acme("telemetry", "status", "--json").stdout)
    assert (info["enabled"], info["rule"]) == (True, "consent file")
    assert acme("deploy", "prod").stdout == "deployed\n"
    expected = [("acme", "2.4.1", "2.4.1", "undefined")]
    if tool == "click":
        assert acme("db", "migrate").returncode == 1
        expected.append(("acme", "2.4.1", "2.4.1", "migrate"))
    if tool == "typer":
        assert acme("other").returncode == 3
        expected.append(("acme", "2.4.1", "2.4.1", "undefined"))
    assert wait_until(lambda: len(loopback_endpoint.events) == len(expected), timeout=15)
    assert sent_by(loopback_endpoint) == sorted(expected)
    commands = sorted((e["parameters"]["command"], e["parameters"]["exitCode"],
                       e["parameters"]["errorClass"]) for e in loopback_endpoint.events)
    if tool == "click":
        assert commands == [("db", 1, "ClickException"), ("deploy", 0, "undefined")]
    if tool == "typer":
        assert commands == [("deploy", 0, "undefined"), ("other", 3, "SystemExit")]
    # A decision command takes no option: nothing can turn "enable" into another one.
    stray = acme("telemetry", "enable", "--command", "disable")
    assert stray.returncode == 2 and "--command" in stray.stderr
    assert json.loads(acme("telemetry", "status", "--json").stdout)["enabled"] is True
    assert acme("telemetry", "disable").returncode == 0
    assert "Telemetry is disabled." in acme("telemetry").stdout
