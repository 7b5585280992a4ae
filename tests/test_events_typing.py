"""Type checkers see the real constructors of events (``mypy --strict`` on a small program).

The event modules (and the ones they import) are copied into a package of
another name, as a vendoring project would, and a program using them is
checked: every line marked ``# error`` must be reported, and no other.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from nat_telemetry.events import NemoSourceEnum, TaskStatusEnum

api = pytest.importorskip("mypy.api", reason="mypy is in the test extra")

PACKAGE = Path(__file__).resolve().parents[1] / "nat_telemetry"

PROGRAM = textwrap.dedent("""\
    from typing import ClassVar

    from vendored.events import (
        CliCommandEvent, Field, NemoSourceEnum, TaskStatusEnum, TelemetryEvent,
    )

    ok = CliCommandEvent(command="run", task_status="success", python_version="3.11.7")
    full = CliCommandEvent(nemo_source=NemoSourceEnum.EVALUATOR, command="run", subcommand="x",
                           task_status=TaskStatusEnum.FAILURE, duration_ms=1, exit_code=2,
                           error_class="E", python_version="3.12")
    command: str = ok.command
    duration: int = ok.duration_ms
    status: TaskStatusEnum = ok.task_status
    validated: CliCommandEvent = CliCommandEvent.model_validate({"command": "run"})
    parsed: CliCommandEvent = CliCommandEvent.model_validate_json("{}")

    CliCommandEvent(command=3, task_status="success", python_version="3.11.7")  # error
    CliCommandEvent(command="run", python_version="3.11.7")  # error
    CliCommandEvent(task_status="success", python_version="3.11.7")  # error
    CliCommandEvent(command="run", task_status="succes", python_version="3.11.7")  # error
    CliCommandEvent(command="run", task_status="success", python_version=3.11)  # error
    CliCommandEvent(command="x", task_status="error", python_version="3", duration_ms="1")  # error
    CliCommandEvent(command="run", task_status="error", python_version="3", hostname="h")  # error
    CliCommandEvent(command="run", task_status=NemoSourceEnum.AUDITOR, python_version="3")  # error
    ok.command = "other"  # error
    wrong: int = ok.command  # error


    class Custom(TelemetryEvent):
        _event_name: ClassVar[str] = "custom"
        count: int = Field(default=0, ge=0)
        label: str = Field(pattern="[a-z]+")
        note: str = "undefined"


    Custom(label="a")
    Custom(count=1, label="b", note="c")
    Custom(count=1)  # error
    Custom(label=1)  # error
    Custom(label="a", colour="red")  # error
    custom: Custom = Custom.model_validate({})
    """)


def _checked_program() -> str:
    # Every value of each enum is a valid literal for its constructor argument.
    lines = [PROGRAM]
    for member in TaskStatusEnum:
        lines.append(f'CliCommandEvent(command="run", task_status="{member.value}", '
                     'python_version="3")')
    for member in NemoSourceEnum:
        lines.append(f'CliCommandEvent(nemo_source="{member.value}", command="run", '
                     'task_status="error", python_version="3")')
    return "\n".join(lines) + "\n"


def test_mypy_strict_sees_each_field_with_its_type(tmp_path: Path) -> None:
    vendored = tmp_path / "vendored"
    vendored.mkdir()
    (vendored / "__init__.py").write_text("", encoding="utf-8")
    for module in ("events.py", "_fields.py", "_rules.py", "outcome.py"):
        shutil.copy(PACKAGE / module, vendored / module)
    program = tmp_path / "program.py"
    source = _checked_program()
    program.write_text(source, encoding="utf-8")

    stdout, stderr, _status = api.run([
        "--config-file=", "--strict", "--no-error-summary", "--show-error-codes",
        "--cache-dir", str(tmp_path / "cache"), str(program), str(vendored)])

    assert not stderr, stderr
    reported = {int(m.group(1)) for m in re.finditer(r"program\.py:(\d+): error:", stdout)}
    expected = {number for number, line in enumerate(source.splitlines(), 1)
                if line.rstrip().endswith("# error")}
    assert expected  # the program does check something
    assert reported == expected, stdout
    # The event modules themselves are clean under --strict, vendored too.
    assert not re.search(r"vendored[/\\][^:]+\.py:\d+: error", stdout), stdout
