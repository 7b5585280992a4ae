"""A copy of the package vendored under another name works with no dependency.

Projects vendor ``nat_telemetry/`` as e.g. ``theirpkg/_vendor/nat_telemetry``,
often where nothing can be installed.  The main test does exactly that in a
temporary folder and drives the copy from a Python started with ``-I -S``
(no site-packages, no user site, no environment, no current folder), so
``requests``, ``tomli`` and ``tomli-w`` cannot be imported: the copy must
record consent with its own TOML writer, read it back with its own reader,
send an event to a real collector with urllib, and never import anything by
its original name.
A second copy has its server side (``collector/``) deleted, as a project that
only wants the client may do: everything a client uses must still work.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nat_telemetry import config
from nat_telemetry.collector import Collector

if sys.version_info >= (3, 11):
    import tomllib as reference
else:
    import tomli as reference

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "nat_telemetry"
MODULES = sorted(PACKAGE_DIR.rglob("*.py"))

CHILD = r"""
import json, sys
root, url = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
result = {"missing": [], "present": []}
for name in ("requests", "urllib3", "tomli", "tomli_w", "pytest", "nat_telemetry"):
    try:
        __import__(name)
    except ImportError:
        result["missing"].append(name)
    else:
        result["present"].append(name)

import theirpkg._vendor.nat_telemetry as nt
from theirpkg._vendor.nat_telemetry import config, consent

result["written"] = consent.write_persisted_consent(consent.ConsentState.ENABLED)
result["persisted"] = consent.read_persisted_consent().value
result["enabled"] = nt.TELEMETRY_ENABLED  # resolved now, from the file just written
with open(consent.consent_file_path(), encoding="utf-8") as saved:
    result["fast_read"] = config.fast_loads(saved.read())
result["dumped"] = consent.toml_dumps(
    {"consent": "enabled", "odd": 'a "quoted" \\ back\tslash\x01 caf\u00e9'})

handler = nt.NATTelemetryHandler(endpoint=url, request_timeout_seconds=5.0)
handler.enqueue(nt.CliCommandEvent(
    command="vendored", subcommand="send", task_status="success", duration_ms=42,
    exit_code=0, python_version="%d.%d.%d" % sys.version_info[:3]))
result["flushed"] = handler.flush(timeout=20)
result["stats"] = handler.stats()
result["transport"] = type(handler._transport.client.chosen).__name__
handler.stop()
result["modules"] = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("nat_telemetry", "requests", "urllib3", "tomli", "tomli_w"))
print("RESULT " + json.dumps(result))
"""


def vendor_copy(destination: Path) -> Path:
    """``destination/theirpkg/_vendor/nat_telemetry``, as a vendoring project lays it out."""
    vendor = destination / "theirpkg" / "_vendor"
    shutil.copytree(PACKAGE_DIR, vendor / "nat_telemetry",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (destination / "theirpkg" / "__init__.py").write_text("", encoding="utf-8")
    (vendor / "__init__.py").write_text("", encoding="utf-8")
    return destination


@pytest.fixture
def real_collector(tmp_path: Path) -> Any:
    server = Collector(tmp_path / "events.db").start()
    yield server
    server.stop()


def test_vendored_copy_works_without_any_dependency(tmp_path: Path, real_collector: Any) -> None:
    root = vendor_copy(tmp_path / "site")
    consent_file = tmp_path / "home" / "config" / "telemetry.toml"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        # -I ignores PYTHON* variables, not these: the package reads them itself.
        "NAT_TELEMETRY_CONSENT_FILE": str(consent_file),
    }
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(root), real_collector.url],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])

    # Nothing third-party, and not the original package either.
    assert set(result["missing"]) == {"requests", "urllib3", "tomli", "tomli_w", "pytest",
                                      "nat_telemetry"}, result
    assert result["modules"] == []

    # Consent: written without tomli-w, read back by the package's own reader
    # (no TOML library needed), and it enables telemetry.
    assert (result["written"], result["persisted"], result["enabled"]) == (True, "enabled", True)
    text = consent_file.read_text(encoding="utf-8")
    table = reference.loads(text)["telemetry"]
    assert table["consent"] == "enabled"
    assert result["fast_read"] == reference.loads(text) == config.fast_loads(text)
    assert stat.S_IMODE(consent_file.stat().st_mode) == 0o600
    # The hand-written form is the bytes tomli-w writes, escapes included.
    sample = {"consent": "enabled", "odd": 'a "quoted" \\ back\tslash\x01 caf\u00e9'}
    assert reference.loads(result["dumped"]) == {"telemetry": sample}
    assert result["dumped"] == tomli_w.dumps({"telemetry": sample})  # installed here

    # The event went out with urllib and the collector stored it.
    assert result["transport"] == "UrllibClient"
    assert result["flushed"] is True
    assert result["stats"]["sent"] == 1
    rows = real_collector.rows()
    assert [(row["name"], row["parameters"]["command"], row["parameters"]["durationMs"])
            for row in rows] == [("nat_cli_command", "vendored", 42)]


CLIENT_ONLY_CHILD = r"""
import contextlib, io, json, sys
root, url = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
import theirpkg._vendor.nat_telemetry as nt
from theirpkg._vendor.nat_telemetry import cli

result = {}
handler = nt.NATTelemetryHandler(endpoint=url, request_timeout_seconds=5.0,
                                 session_id="client-only")
with nt.track_command("trimmed", "tracked", handler=handler):
    pass
handler.enqueue(nt.CliCommandEvent(
    command="trimmed", subcommand="send", task_status="success", duration_ms=7,
    exit_code=0, python_version="%d.%d.%d" % sys.version_info[:3]))
result["flushed"] = handler.flush(timeout=20)
result["stats"] = handler.stats()
handler.stop()

out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    result["status_exit"] = cli.main(["status"])
    try:
        cli.main(["collect"])
    except SystemExit as exc:
        result["collect_exit"] = exc.code
result["status_out"], result["err"] = out.getvalue(), err.getvalue()
result["modules"] = sorted(m for m in sys.modules if ".collector" in m or m == "sqlite3")
print("RESULT " + json.dumps(result))
"""


def test_a_copy_without_the_collector_folder_keeps_the_client_working(
    tmp_path: Path, real_collector: Any
) -> None:
    root = vendor_copy(tmp_path / "site")
    copy = root / "theirpkg" / "_vendor" / "nat_telemetry"
    shutil.rmtree(copy / "collector")
    assert not list(copy.rglob("collector*"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "NAT_TELEMETRY_CONSENT_FILE": str(tmp_path / "home" / "telemetry.toml"),
        "NAT_TELEMETRY_ENABLED": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-I", "-c", CLIENT_ONLY_CHILD, str(root), real_collector.url],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])

    # Sending: track_command and a plain enqueue both reached the real collector.
    assert result["flushed"] is True and result["stats"]["sent"] == 2, result
    rows = real_collector.rows()
    assert sorted((row["parameters"]["command"], row["parameters"]["subcommand"])
                  for row in rows) == [("trimmed", "send"), ("trimmed", "tracked")]
    assert {row["session_id"] for row in rows} == {"client-only"}
    # The command line: status works; the collector's commands are simply not there.
    assert result["status_exit"] == 0
    assert result["status_out"].startswith("Telemetry is enabled.")
    assert result["collect_exit"] == 2 and "invalid choice: 'collect'" in result["err"]
    assert result["modules"] == []


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(PACKAGE_DIR)))
def test_modules_import_the_package_only_relatively(module: Path) -> None:
    source = module.read_text(encoding="utf-8")
    absolute = []
    for node in ast.walk(ast.parse(source, filename=str(module))):
        if isinstance(node, ast.Import):
            absolute += [alias.name for alias in node.names
                         if alias.name.split(".")[0] == "nat_telemetry"]
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and node.module.split(".")[0] == "nat_telemetry"):
            absolute.append(node.module)
    assert absolute == [], f"{module.name}: use relative imports"
    # Dynamic imports by name would break a renamed copy just the same.
    assert not re.search(r"""(import_module|__import__)\(\s*f?["']nat_telemetry""", source)


def test_every_module_is_checked() -> None:
    names = {str(path.relative_to(PACKAGE_DIR)) for path in MODULES}
    assert names >= {"__init__.py", "config.py", "consent.py", "http.py", "transport.py",
                     "spool.py", "sender.py", "_process.py", "_deadline.py",
                     "collector/__init__.py", "collector/server.py", "collector/cli.py"}
