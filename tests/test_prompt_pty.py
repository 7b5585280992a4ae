"""The consent prompt on a real pseudo-terminal, in fresh processes.

Each test starts ``python -m nat_telemetry run ...`` (or a small script calling
``maybe_prompt_for_consent``) with its own HOME and configuration folders, on a
pseudo-terminal that is its controlling terminal, so typing Ctrl-C there sends
SIGINT exactly as a person's terminal would.  Every read is bounded.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)

import fcntl
import termios

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
QUESTION = b"Allow anonymous usage telemetry? [Y/n]: "
CTRL_C = b"\x03"


def _take_terminal() -> None:
    # In the child, after setsid(): make the pseudo-terminal on stdin the
    # controlling terminal, so ^C typed on it becomes SIGINT.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pseudo-terminal: type into it, read what it shows."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.master = master
        self.output = b""
        self.deadline = time.monotonic() + 60
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(REPO_ROOT),
            start_new_session=True, preexec_fn=_take_terminal, close_fds=True,
        )
        os.close(slave)

    def read_until(self, marker: bytes | None, count: int = 1) -> bool:
        """Read until ``marker`` has been shown ``count`` times (None: until the
        child closes the terminal); False when the time is up first."""
        while marker is None or self.output.count(marker) < count:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self.master], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave end is closed
                return marker is None
            if not chunk:
                return marker is None
            self.output += chunk
        return True

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def interrupt(self) -> None:
        """Type Ctrl-C, once more if nothing came of it within 10 s.

        On a loaded machine a keystroke typed the instant the question appears
        has been seen to go unanswered (echoed, no SIGINT acted on); a person
        would press it again, and so does the test.  The outcome is checked
        all the same: exit 130, "no" saved, the program never run.
        """
        self.type(CTRL_C)
        deadline, self.deadline = self.deadline, time.monotonic() + 10
        try:
            if self.read_until(b"Saved: "):
                return
        finally:
            self.deadline = deadline
        self.type(CTRL_C)

    def finish(self) -> int:
        """Read to the end and return the exit status."""
        assert self.read_until(None), self.output
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")


class Machine:
    """A fresh machine: a scratch HOME and configuration folders, no telemetry variables."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.consent_file = tmp_path / "xdg-config" / "nat" / "telemetry.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NAT_")}
        self.env.update(
            HOME=str(tmp_path / "home"),
            XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
            XDG_STATE_HOME=str(tmp_path / "xdg-state"),
            PYTHONPATH=str(REPO_ROOT),
            TERM="dumb",
        )
        self.marker = tmp_path / "program-ran"
        self.terminals: list[Terminal] = []

    def start(self, *args: str, **extra: str) -> Terminal:
        terminal = Terminal([sys.executable, *args], dict(self.env, **extra))
        self.terminals.append(terminal)
        return terminal

    def run(self, *options: str, **extra: str) -> Terminal:
        """``nat-telemetry run OPTIONS -- <a program that leaves a marker file>``."""
        program = f"open({str(self.marker)!r}, 'w').close()"
        return self.start("-m", "nat_telemetry", "run", *options, "--",
                          sys.executable, "-c", program, **extra)

    def saved(self, path: Path | None = None) -> str | None:
        path = path or self.consent_file
        if not path.exists():
            return None
        value: str = tomllib.loads(path.read_text(encoding="utf-8"))["telemetry"]["consent"]
        return value


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path)
    yield m
    for terminal in m.terminals:
        terminal.close()


def test_enter_means_yes_and_one_line_confirms_it(machine: Machine) -> None:
    term = machine.run("--product-name", "Acme CLI", "--change-command", "acme telemetry")
    assert term.read_until(QUESTION), term.output
    term.type(b"\n")
    assert term.finish() == 0, term.output
    text = term.text
    assert text.startswith("\nAcme CLI can send anonymous usage telemetry")
    assert "`acme telemetry enable` or\n`acme telemetry disable`" in text
    assert "Where it goes: nowhere (no endpoint is set, so nothing is sent)." in text
    assert "NAT_TELEMETRY_ENABLED=true|false" in text
    assert "DO_NOT_TRACK=1 turns it off for every tool." in text
    assert "Pressing Enter means yes." in text
    after = text.split("[Y/n]: ", 1)[1].strip().splitlines()
    assert after == [f"Saved: anonymous usage telemetry is on for Acme CLI (in "
                     f"{machine.consent_file}). Change it any time with "
                     "`acme telemetry disable`."]
    assert machine.saved() == "enabled"
    assert machine.consent_file.read_text().startswith(
        "# Anonymous usage telemetry consent for Acme CLI.")
    assert machine.marker.exists()


def test_unclear_answers_are_asked_again_three_times_then_no(machine: Machine) -> None:
    term = machine.run()
    for attempt, typed in enumerate((b"maybe\n", b"sure\n", b"ok\n"), start=1):
        assert term.read_until(QUESTION, attempt), term.output
        term.type(typed)
    assert term.finish() == 0, term.output
    text = term.text
    assert text.count("[Y/n]: ") == 3
    assert text.count("Please answer y (yes) or n (no); Enter means yes") == 2
    assert "No clear answer after 3 tries: counted as no." in text
    assert "telemetry is off for NeMo Agent Toolkit" in text
    assert "`nat-telemetry enable`" in text.rpartition("Saved:")[2]
    assert machine.saved() == "disabled"
    assert machine.marker.exists()  # "no" does not stop the program


def test_a_clear_answer_after_an_unclear_one(machine: Machine) -> None:
    term = machine.run()
    assert term.read_until(QUESTION), term.output
    term.type(b"dunno\n")
    assert term.read_until(QUESTION, 2), term.output
    term.type(b"YES\n")
    assert term.finish() == 0, term.output
    assert machine.saved() == "enabled"


def test_ctrl_c_at_the_prompt_saves_no_and_exits_130_without_running(
    machine: Machine,
) -> None:
    term = machine.run()
    assert term.read_until(QUESTION), term.output
    term.interrupt()
    assert term.finish() == 130, term.output
    assert machine.saved() == "disabled"
    assert not machine.marker.exists()
    assert "Traceback" not in term.text
    assert "Saved: anonymous usage telemetry is off" in term.text


def test_ctrl_c_at_the_second_question_too(machine: Machine) -> None:
    term = machine.run()
    assert term.read_until(QUESTION), term.output
    term.type(b"hmm\n")
    assert term.read_until(QUESTION, 2), term.output
    term.interrupt()
    assert term.finish() == 130, term.output
    assert machine.saved() == "disabled"
    assert not machine.marker.exists()


@pytest.mark.parametrize(("name", "value"), [("CI", "true"), ("GITLAB_CI", "true"),
                                             ("DO_NOT_TRACK", "1"), ("DO_NOT_TRACK", "true"),
                                             ("DO_NOT_TRACK", "yes")])
def test_no_prompt_in_ci_or_with_do_not_track_even_at_a_terminal(
    machine: Machine, name: str, value: str
) -> None:
    term = machine.run(**{name: value})
    assert term.finish() == 0, term.output
    assert b"[Y/n]" not in term.output and term.output == b""
    assert machine.marker.exists()
    assert machine.saved() is None


def test_a_tool_with_its_own_consent_file_and_endpoint(machine: Machine) -> None:
    own = machine.tmp / "acme" / "consent.toml"
    script = (
        "from nat_telemetry import config, maybe_prompt_for_consent\n"
        f"maybe_prompt_for_consent(product_name='Acme CLI', change_command='acme telemetry',"
        f" consent_file={str(own)!r})\n"
        "print('ENABLED=' + str(config.TELEMETRY_ENABLED))\n"
    )
    endpoint = "https://acme:pa55word@telemetry.acme.example:8443/v1/events?token=pa55word"
    term = machine.start("-c", script, NAT_TELEMETRY_ENDPOINT=endpoint)
    assert term.read_until(QUESTION), term.output
    term.type(b"y\n")
    assert term.finish() == 0, term.output
    text = term.text
    assert "Where it goes: telemetry.acme.example." in text
    assert "pa55word" not in text and "acme:" not in text
    assert f"(in {own})" in text
    assert "ENABLED=True" in text
    assert machine.saved(own) == "enabled"
    assert machine.saved() is None  # the shared file is left alone

    # Decided: the next run asks nothing and applies the saved answer.
    again = machine.start("-c", script, NAT_TELEMETRY_ENDPOINT=endpoint)
    assert again.finish() == 0, again.output
    assert again.text.strip() == "ENABLED=True"


def test_the_consent_file_variable_keeps_the_decision_elsewhere(machine: Machine) -> None:
    own = machine.tmp / "elsewhere.toml"
    term = machine.run(NAT_TELEMETRY_CONSENT_FILE=str(own))
    assert term.read_until(QUESTION), term.output
    term.type(b"n\n")
    assert term.finish() == 0, term.output
    assert machine.saved(own) == "disabled"
    assert machine.saved() is None
