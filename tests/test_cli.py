"""End-to-end tests of the ``nat-telemetry`` command line.

Most run ``python -m nat_telemetry`` in a subprocess with its own HOME,
XDG_CONFIG_HOME and consent file, the way a user would, so exit statuses,
stdout and stderr are exactly what a shell sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import LoopbackEndpoint
from support.helpers import wait_until

from nat_telemetry import cli, status
from nat_telemetry.consent import PROMPT_VERSION
from nat_telemetry.spool import Spool
from nat_telemetry.transport import destination_id

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2-SECRET-ARGUMENT-7f3a"
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and sh")


class Env:
    """A private environment for the command line: home, config folder, consent file."""

    def __init__(self, tmp_path: Path) -> None:
        self.consent_file = tmp_path / "config" / "nat" / "telemetry.toml"
        self.spool_dir = tmp_path / "state" / "nat" / "telemetry-spool"
        self.vars = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
        self.vars.update(
            HOME=str(tmp_path / "home"),
            XDG_CONFIG_HOME=str(tmp_path / "xdg"),
            XDG_STATE_HOME=str(tmp_path / "state"),  # `disable` empties the spool there
            NAT_TELEMETRY_CONSENT_FILE=str(self.consent_file),
            PYTHONPATH=str(REPO_ROOT),
        )

    def run(self, *args: str, input: str | None = None, timeout: float = 30,
            **extra: str) -> subprocess.CompletedProcess[str]:
        env = dict(self.vars, **extra)
        return subprocess.run([sys.executable, "-m", "nat_telemetry", *args], env=env,
                              input=input, capture_output=True, text=True, timeout=timeout)

    def write_consent(self, consent: str, prompt_version: str | None = PROMPT_VERSION) -> None:
        lines = ["[telemetry]", f'consent = "{consent}"']
        if prompt_version is not None:
            lines.append(f'prompt_version = "{prompt_version}"')
        self.consent_file.parent.mkdir(parents=True, exist_ok=True)
        self.consent_file.write_text("\n".join(lines) + "\n")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def one_clean_line(stderr: str) -> str:
    """stderr holds exactly one line, and it is not part of a traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nat-telemetry: ")
    return lines[0]


def payload_events(stderr: str) -> list[dict[str, Any]]:
    """The events of every payload the stdout sink wrote (one JSON line each) on stderr."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events += [event["parameters"] for event in json.loads(line)["events"]]
    return events


# -------------------------------------------------------------------- status


def test_status_default_never_asked(env: Env) -> None:
    result = env.run("status")
    assert result.returncode == 0 and result.stderr == ""
    assert "Telemetry is disabled." in result.stdout
    assert "default (never asked)" in result.stdout
    assert str(env.consent_file) in result.stdout


def test_no_subcommand_means_status(env: Env) -> None:
    assert env.run().stdout == env.run("status").stdout


@pytest.mark.parametrize(("value", "word"), [("1", "enabled"), ("Yes", "enabled"),
                                             ("0", "disabled"), ("", "disabled")])
def test_status_from_the_environment(env: Env, value: str, word: str) -> None:
    env.write_consent("enabled" if word == "disabled" else "disabled")
    result = env.run("status", NAT_TELEMETRY_ENABLED=value)
    assert result.returncode == 0
    assert f"Telemetry is {word}." in result.stdout
    assert f"NAT_TELEMETRY_ENABLED={value!r}" in result.stdout
    assert str(env.consent_file) in result.stdout
    assert "not used while NAT_TELEMETRY_ENABLED is set" in result.stdout


@pytest.mark.parametrize("word", ["enabled", "disabled"])
def test_status_from_the_consent_file(env: Env, word: str) -> None:
    env.write_consent(word)
    result = env.run("status")
    assert result.returncode == 0
    assert f"Telemetry is {word}." in result.stdout
    assert f"Source: consent file {env.consent_file} (saved: {word})" in result.stdout


def test_status_stale_enabled_is_asked_again(env: Env) -> None:
    env.write_consent("enabled", prompt_version="0.1")
    out = env.run("status").stdout
    assert "Telemetry is disabled." in out
    assert "default (never asked)" in out
    assert "prompt version '0.1'" in out and "asked again" in out


def test_status_stale_disabled_stays_disabled(env: Env) -> None:
    env.write_consent("disabled", prompt_version=None)
    out = env.run("status").stdout
    assert "Telemetry is disabled." in out
    assert f"Source: consent file {env.consent_file} (saved: disabled" in out
    assert "prompt version None" in out


def test_status_damaged_file(env: Env) -> None:
    env.consent_file.parent.mkdir(parents=True)
    env.consent_file.write_bytes(b"\x00\xff not toml [[[")
    result = env.run("status")
    assert result.returncode == 0 and result.stderr == ""
    assert "default (never asked)" in result.stdout
    assert "not understood" in result.stdout


# ------------------------------------------------------------ enable/disable


def test_enable_disable_round_trip(env: Env) -> None:
    result = env.run("enable")
    assert result.returncode == 0 and result.stderr == ""
    assert "Telemetry enabled" in result.stdout and str(env.consent_file) in result.stdout
    assert 'consent = "enabled"' in env.consent_file.read_text()
    assert "Telemetry is enabled." in env.run("status").stdout

    result = env.run("disable")
    assert result.returncode == 0 and result.stderr == ""
    assert "Telemetry disabled" in result.stdout
    assert 'consent = "disabled"' in env.consent_file.read_text()
    assert "Telemetry is disabled." in env.run("status").stdout


def test_enable_warns_when_the_environment_overrides(env: Env) -> None:
    result = env.run("enable", NAT_TELEMETRY_ENABLED="false")
    assert result.returncode == 0
    line = one_clean_line(result.stderr)
    assert "warning" in line and "NAT_TELEMETRY_ENABLED='false'" in line
    assert "stays disabled" in line


def test_disable_to_an_unwritable_path_fails_clearly(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder\n")
    target = blocker / "x.toml"
    result = env.run("disable", NAT_TELEMETRY_CONSENT_FILE=str(target))
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_clean_line(result.stderr)
    assert "could not save the decision" in line and str(target) in line


# ----------------------------------------------------------------------- run


def test_run_passes_exit_code_and_stdio_through(env: Env) -> None:
    child = "import sys; print('child says', sys.stdin.read().strip()); sys.exit(3)"
    result = env.run("run", "--", sys.executable, "-c", child, input="ping\n")
    assert result.returncode == 3
    assert result.stdout == "child says ping\n"
    assert result.stderr == ""  # telemetry off: nothing of ours on stderr


def test_run_success_without_double_dash(env: Env) -> None:
    result = env.run("run", sys.executable, "-c", "print('ok')")
    assert (result.returncode, result.stdout) == (0, "ok\n")


@posix_only
def test_run_killed_by_a_signal_is_128_plus_n(env: Env) -> None:
    result = env.run("run", "--", "sh", "-c", "kill -TERM $$",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 128 + signal.SIGTERM
    (event,) = payload_events(result.stderr)
    assert (event["command"], event["taskStatus"], event["exitCode"]) == ("sh", "failure", 143)


@posix_only
def test_run_killed_by_sigint_is_interrupted(env: Env) -> None:
    result = env.run("run", "--", "sh", "-c", "kill -INT $$",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 130
    (event,) = payload_events(result.stderr)
    assert (event["taskStatus"], event["exitCode"]) == ("interrupted", 130)


@posix_only
def test_ctrl_c_goes_to_the_child_and_the_outcome_is_recorded(env: Env) -> None:
    # Default SIGINT action, so the child dies of the signal like most programs.
    child = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "print('ready', flush=True); time.sleep(20)")
    env_vars = dict(env.vars, NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    process = subprocess.Popen(
        [sys.executable, "-m", "nat_telemetry", "run", "--name", "sleeper", "--",
         sys.executable, "-c", child],
        env=env_vars, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        _stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    (event,) = payload_events(stderr)
    assert (event["command"], event["taskStatus"], event["exitCode"]) == (
        "sleeper", "interrupted", 130)


def test_run_missing_command_is_127_with_a_clear_message(env: Env) -> None:
    result = env.run("run", "--", "no-such-command-xyz", SECRET)
    assert result.returncode == 127
    line = one_clean_line(result.stderr)
    assert "no-such-command-xyz" in line and "command not found" in line
    assert SECRET not in line


def test_run_missing_command_is_recorded(env: Env) -> None:
    result = env.run("run", "--", "no-such-command-xyz",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 127
    (event,) = payload_events(result.stderr)
    assert (event["command"], event["exitCode"], event["errorClass"]) == (
        "no-such-command-xyz", 127, "FileNotFoundError")


@posix_only
def test_run_not_executable_is_126(env: Env, tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    result = env.run("run", "--", str(script))
    assert result.returncode == 126
    assert "not executable" in one_clean_line(result.stderr)


def test_run_payload_has_the_command_name_but_never_the_arguments(env: Env) -> None:
    child = "import sys; print(sys.argv[1]); sys.exit(4)"
    result = env.run("run", "--", sys.executable, "-c", child, SECRET, f"--token={SECRET}",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 4
    assert result.stdout == f"{SECRET}\n"  # the child got its arguments...
    json_lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert json_lines
    assert not any(SECRET in line or "hunter2" in line for line in json_lines)  # ...we did not
    (event,) = payload_events(result.stderr)
    assert event["command"] == cli.command_name(sys.executable)
    assert "/" not in event["command"]
    assert (event["subcommand"], event["taskStatus"], event["exitCode"]) == (
        "undefined", "failure", 4)
    assert event["durationMs"] >= 0


def test_run_name_overrides_the_command_name(env: Env) -> None:
    result = env.run("run", "--name", "nightly-build", "--", sys.executable, "-c", "pass",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 0
    (event,) = payload_events(result.stderr)
    assert (event["command"], event["taskStatus"], event["exitCode"]) == (
        "nightly-build", "success", 0)


def test_run_event_is_spooled_and_delivered_after_it_exits(
        env: Env, loopback_endpoint: LoopbackEndpoint) -> None:
    result = env.run("run", "--name", "build", "--", sys.executable, "-c", "pass",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert wait_until(lambda: loopback_endpoint.requests, timeout=20)
    (event,) = [e["parameters"] for e in loopback_endpoint.all_events]
    assert (event["command"], event["taskStatus"], event["exitCode"]) == ("build", "success", 0)
    # A sender took it from the spool, and recorded the delivery there.
    spool = Spool(str(env.spool_dir))
    destination = destination_id(loopback_endpoint.url, "")
    assert wait_until(lambda: spool.summary() == {} and "delivered_at" in spool.states().get(
        destination, {}), timeout=10)


def test_run_without_a_spool_delivers_before_it_exits(
        env: Env, loopback_endpoint: LoopbackEndpoint) -> None:
    result = env.run("run", "--name", "build", "--", sys.executable, "-c", "raise SystemExit(3)",
                     NAT_TELEMETRY_ENABLED="1", NAT_TELEMETRY_ENDPOINT=loopback_endpoint.url,
                     NAT_TELEMETRY_SPOOL_DIR="off")
    assert (result.returncode, result.stderr) == (3, "")
    (event,) = [e["parameters"] for e in loopback_endpoint.all_events]  # already there
    assert (event["command"], event["taskStatus"], event["exitCode"]) == ("build", "failure", 3)
    assert not env.spool_dir.exists()


def test_run_records_nothing_when_disabled(env: Env) -> None:
    env.write_consent("enabled")
    result = env.run("run", "--", sys.executable, "-c", "pass",
                     NAT_TELEMETRY_ENABLED="0", NAT_TELEMETRY_ENDPOINT="stdout")
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.parametrize("name", ["two words", "a/b", "x" * 65, ""])
def test_run_invalid_name_is_a_usage_error(env: Env, name: str) -> None:
    result = env.run("run", "--name", name, "--", sys.executable, "-c", "print('ran')")
    assert result.returncode == 2
    assert result.stdout == ""  # the command did not run
    assert "invalid --name" in one_clean_line(result.stderr)


def test_run_without_a_command_is_a_usage_error(env: Env) -> None:
    result = env.run("run", "--")
    assert result.returncode == 2
    assert "no command given" in one_clean_line(result.stderr)


@pytest.mark.parametrize(
    ("program", "expected"),
    [("/usr/local/bin/tool", "tool"), ("C:\\Tools\\Tool.EXE", "Tool"), ("./deploy.sh", "deploy.sh"),
     ("my tool!", "my-tool-"), ("/", "unknown"), ("x" * 100, "x" * 64), ("é", "-")],
)
def test_command_name(program: str, expected: str) -> None:
    assert cli.command_name(program) == expected


# ------------------------------------------------------------- help, errors


def test_help_works_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and hasattr(a, "add_parser"))
    names = list(subparsers.choices)
    assert {"status", "enable", "disable", "reset", "schema", "run"} <= set(names)
    for args in [["--help"], *[[name, "--help"] for name in names]]:
        with pytest.raises(SystemExit) as exited:
            cli.main(args)
        assert exited.value.code == 0, args
        out = capsys.readouterr().out
        assert out.startswith("usage: nat-telemetry"), args


def test_help_in_a_subprocess(env: Env) -> None:
    result = env.run("run", "--help")
    assert result.returncode == 0
    assert "--name NAME" in result.stdout and "never recorded" in result.stdout
    for option in ("--product-name NAME", "--change-command CMD", "--consent-file PATH"):
        assert option in result.stdout, option


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: Any) -> int:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(status, "_cmd_status", broken)
    assert cli.main(["status"]) == 1
    captured = capsys.readouterr()
    assert one_clean_line(captured.err) == "nat-telemetry: error: something broke"


def test_version(env: Env) -> None:
    result = env.run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("nat-telemetry ")
