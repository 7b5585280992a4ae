"""The examples in ``examples/`` work as the documentation says.

Each runs in a real process, in a scratch home (``HOME``, ``XDG_CONFIG_HOME``,
``XDG_STATE_HOME``), with telemetry turned on by the tool's own variable and
sent either to ``stdout`` (each payload one JSON line on stderr, written before
the process exits) or to a loopback endpoint (spooled at exit, then delivered
by the detached sender).  Each run must do its own work, send exactly the
event it should, with the tool's identity, and nothing the user typed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import LoopbackEndpoint
from support.helpers import PROXY_VARS, REPO_ROOT, wait_until

from nat_telemetry import config

EXAMPLES = REPO_ROOT / "examples"
SECRET = "private-notes-4711"  # in file names and arguments: never in a payload


class Home:
    """A scratch home for running the examples."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith("NAT_") and "_TELEMETRY_" not in name
                    and name not in ("DO_NOT_TRACK", "PYTHONPATH", *config.CI_ENV_VARS,
                                     *PROXY_VARS)}
        self.env.update(HOME=str(root / "home"), XDG_CONFIG_HOME=str(root / "config"),
                        XDG_STATE_HOME=str(root / "state"), PYTHONDONTWRITEBYTECODE="1")

    def run(self, args: list[str], *, cwd: Path | None = None, pythonpath: bool = True,
            **extra: str) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **extra)
        if pythonpath:  # this tree's nat_telemetry, installed or not
            env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run([sys.executable, *args], env=env, cwd=str(cwd or self.work),
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def example(self, script: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(EXAMPLES / script), *args], **extra)

    def text_file(self, name: str, text: str) -> str:
        path = self.work / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def consent_file(self, tool: str) -> Path:
        return self.root / "config" / tool / "telemetry.toml"

    def spool(self, tool: str) -> Path:
        return self.root / "state" / tool / "telemetry-spool"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def payloads(stderr: str) -> list[dict[str, Any]]:
    """The envelopes the ``stdout`` sink wrote, one JSON line each, on stderr."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            envelope = json.loads(line)
            if isinstance(envelope, dict) and "events" in envelope:
                found.append(envelope)
    return found


def only_event(result: subprocess.CompletedProcess[str], tool: str,
               version: str) -> dict[str, Any]:
    """The one event a run sent, checked to carry the tool's identity and no input."""
    (envelope,) = payloads(result.stderr)
    assert (envelope["productName"], envelope["productVersion"], envelope["clientVer"]) == (
        tool, version, version)
    assert envelope["userId"] == envelope["deviceId"] == "undefined"
    assert SECRET not in json.dumps(envelope)
    (event,) = envelope["events"]
    assert event["name"] == "nat_cli_command"
    parameters: dict[str, Any] = event["parameters"]
    return parameters


def outcome(parameters: dict[str, Any]) -> tuple[str, str, str, int, str]:
    return (parameters["command"], parameters["subcommand"], parameters["taskStatus"],
            parameters["exitCode"], parameters["errorClass"])


# ------------------------------------------------------------------- click


def test_click_example_records_each_command_and_mounts_the_consent_commands(
        home: Home) -> None:
    on = {"WORDY_TELEMETRY_ENABLED": "1", "WORDY_TELEMETRY_ENDPOINT": "stdout"}
    text = home.text_file(f"{SECRET}.txt", "to be or not to be\n")

    counted = home.example("click_cli.py", "count", text, **on)
    assert (counted.returncode, counted.stdout) == (0, "6\n")
    parameters = only_event(counted, "wordy", "1.0.0")
    assert outcome(parameters) == ("count", "undefined", "success", 0, "undefined")
    assert parameters["nemoSource"] == "undefined"

    top = home.example("click_cli.py", "stats", "top", "-n", "1", text, **on)
    assert (top.returncode, top.stdout) == (0, "2 to\n")
    assert outcome(only_event(top, "wordy", "1.0.0")) == (
        "stats", "top", "success", 0, "undefined")

    empty = home.text_file(f"{SECRET}-empty.txt", "")
    failed = home.example("click_cli.py", "stats", "longest", empty, **on)
    assert failed.returncode == 1 and "the files hold no words" in failed.stderr
    assert outcome(only_event(failed, "wordy", "1.0.0")) == (
        "stats", "longest", "failure", 1, "ClickException")

    status = home.example("click_cli.py", "telemetry", "status", **on)
    assert status.returncode == 0 and payloads(status.stderr) == []  # not recorded
    assert status.stdout.startswith("Telemetry is enabled.\n"
                                    "Source: environment variable WORDY_TELEMETRY_ENABLED='1'\n")


def test_the_examples_send_nothing_and_write_nothing_until_someone_says_yes(
        home: Home) -> None:
    text = home.text_file("words.txt", "one two\n")
    result = home.example("click_cli.py", "count", text, WORDY_TELEMETRY_ENDPOINT="stdout")
    assert (result.returncode, result.stdout, result.stderr) == (0, "2\n", "")
    assert not (home.root / "config").exists() and not (home.root / "state").exists()


# ------------------------------------------------------------------- typer


def test_typer_example_delivers_through_the_spool_and_keeps_its_decision(
        home: Home, loopback_endpoint: LoopbackEndpoint) -> None:
    on = {"FERRY_TELEMETRY_ENABLED": "1", "FERRY_TELEMETRY_ENDPOINT": loopback_endpoint.url}
    folder = home.work / SECRET
    folder.mkdir()
    (folder / "a.txt").write_text("a")

    checked = home.example("typer_cli.py", "check", str(folder), **on)
    assert (checked.returncode, checked.stdout) == (0, "1 files\n")
    missing = home.example("typer_cli.py", "check", str(home.work / "missing"), **on)
    assert missing.returncode == 3 and "is not a folder" in missing.stderr
    assert wait_until(lambda: len(loopback_endpoint.events) == 2, timeout=20)
    envelopes = loopback_endpoint.envelopes
    assert {(e["productName"], e["productVersion"]) for e in envelopes} == {("ferry", "0.3.1")}
    assert SECRET not in json.dumps(envelopes)
    assert sorted(outcome(e["parameters"]) for e in loopback_endpoint.events) == [
        ("check", "undefined", "failure", 3, "SystemExit"),
        ("check", "undefined", "success", 0, "undefined"),
    ]
    assert wait_until(lambda: not list(home.spool("ferry").glob("*.nsp")), timeout=20)

    # The decision, saved by the mounted command, is the tool's own.
    enabled = home.example("typer_cli.py", "telemetry", "enable")
    assert enabled.stdout == f"Telemetry enabled. Decision saved to {home.consent_file('ferry')}.\n"
    info = json.loads(home.example("typer_cli.py", "telemetry", "status", "--json").stdout)
    assert (info["enabled"], info["rule"]) == (True, "consent file")
    assert info["env_var"]["name"] == "FERRY_TELEMETRY_ENABLED"
    assert loopback_endpoint.requests == len(envelopes)  # the consent commands sent nothing


# ---------------------------------------------------------------- argparse


def test_argparse_example_records_the_command_never_the_message(home: Home) -> None:
    on = {"TALLY_TELEMETRY_ENABLED": "1", "TALLY_TELEMETRY_ENDPOINT": "stdout"}
    added = home.example("argparse_cli.py", "sum", "1", "2", "4711", **on)
    assert (added.returncode, added.stdout) == (0, "4714.0\n")
    assert outcome(only_event(added, "tally", "2.0.0")) == (
        "sum", "undefined", "success", 0, "undefined")

    failed = home.example("argparse_cli.py", "mean", **on)
    assert failed.returncode == 1 and "tally: no numbers to average" in failed.stderr
    assert outcome(only_event(failed, "tally", "2.0.0")) == (
        "mean", "undefined", "failure", 1, "SystemExit")
    assert "no numbers" not in json.dumps(payloads(failed.stderr))

    disabled = home.example("argparse_cli.py", "telemetry", "disable", **on)
    assert disabled.returncode == 0 and payloads(disabled.stderr) == []
    assert disabled.stdout == (f"Telemetry disabled. Decision saved to "
                               f"{home.consent_file('tally')}.\n")
    # Saved, and honoured once the variable no longer says otherwise.
    quiet = home.example("argparse_cli.py", "sum", "1", TALLY_TELEMETRY_ENDPOINT="stdout")
    assert (quiet.stdout, quiet.stderr) == ("1.0\n", "")


# ------------------------------------------------------------ plain script


def test_plain_script_example_records_one_event_per_call(home: Home) -> None:
    on = {"LINECOUNT_TELEMETRY_ENABLED": "1", "LINECOUNT_TELEMETRY_ENDPOINT": "stdout"}
    first = home.text_file(f"{SECRET}-1.txt", "a\nb\n")
    second = home.text_file(f"{SECRET}-2.txt", "c\n")

    counted = home.example("plain_script.py", first, second, **on)
    assert counted.returncode == 0
    assert counted.stdout.splitlines() == [f"       2 {first}", f"       1 {second}",
                                           "       3 total"]
    assert outcome(only_event(counted, "linecount", "1.4")) == (
        "linecount", "undefined", "success", 0, "undefined")

    failed = home.example("plain_script.py", str(home.work / f"{SECRET}-missing"), **on)
    assert failed.returncode == 1 and "cannot read" in failed.stderr
    assert outcome(only_event(failed, "linecount", "1.4")) == (
        "linecount", "undefined", "failure", 1, "SystemExit")

    status = home.example("plain_script.py", "--telemetry", "status", **on)
    assert status.returncode == 0 and payloads(status.stderr) == []
    assert "LINECOUNT_TELEMETRY_ENABLED='1'" in status.stdout


# ----------------------------------------------------------------- vendored


def test_vendored_example_runs_its_own_copy_with_the_standard_library_only(
        home: Home, loopback_endpoint: LoopbackEndpoint) -> None:
    project = home.root / "vendored"
    shutil.copytree(EXAMPLES / "vendored", project,
                    ignore=shutil.ignore_patterns("__pycache__", "nat_telemetry"))
    copied = home.run([str(project / "vendor.py"), "--source", str(REPO_ROOT / "nat_telemetry")])
    assert copied.returncode == 0, copied.stderr
    copy = project / "theirtool" / "_vendor" / "nat_telemetry"
    assert (copy / "track.py").is_file() and not (copy / "collector").exists()

    # -S: no site-packages, so neither the installed nat_telemetry nor requests.
    on = {"THEIRTOOL_TELEMETRY_ENABLED": "1", "THEIRTOOL_TELEMETRY_ENDPOINT": loopback_endpoint.url}
    said = home.run(["-S", "-m", "theirtool", "hello", SECRET], cwd=project, pythonpath=False,
                    **on)
    assert (said.returncode, said.stdout, said.stderr) == (0, f"hello, {SECRET}\n", "")
    assert wait_until(lambda: loopback_endpoint.events, timeout=20)
    (envelope,) = loopback_endpoint.envelopes
    assert (envelope["productName"], envelope["productVersion"]) == ("theirtool", "3.1.0")
    assert SECRET not in json.dumps(envelope)
    assert [outcome(e["parameters"]) for e in envelope["events"]] == [
        ("hello", "undefined", "success", 0, "undefined")]

    imported = home.run(["-S", "-c", "import json, sys, theirtool.cli; print(json.dumps("
                         "sorted(m for m in sys.modules if m.startswith(('nat_telemetry', "
                         "'requests', 'theirtool._vendor.nat_telemetry.collector')))))"],
                        cwd=project, pythonpath=False)
    assert json.loads(imported.stdout) == []
    status = home.run(["-S", "-m", "theirtool", "telemetry", "status"], cwd=project,
                      pythonpath=False)
    assert status.returncode == 0
    assert status.stdout.startswith("Telemetry is disabled.\nSource: default (never asked)\n")


# ------------------------------------------------------------ stdout demo


def test_stdout_demo_prints_one_payload_and_the_counters(home: Home) -> None:
    shown = home.example("stdout_demo.py", NAT_TELEMETRY_ENABLED="1",
                         NAT_TELEMETRY_ENDPOINT="stdout")
    assert shown.returncode == 0
    (envelope,) = payloads(shown.stderr)
    assert envelope["sessionId"] == "undefined"  # a plain handler's default
    assert [(e["parameters"]["command"], e["parameters"]["taskStatus"],
             e["parameters"]["exitCode"]) for e in envelope["events"]] == [
        ("run", "success", 0), ("serve", "failure", 1), ("eval", "interrupted", 130)]
    assert "'sent': 3" in shown.stdout

    off = home.example("stdout_demo.py", NAT_TELEMETRY_ENDPOINT="stdout")
    assert off.returncode == 0 and payloads(off.stderr) == []
    assert off.stdout.startswith("telemetry is disabled")
