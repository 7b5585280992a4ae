"""os.fork while producer threads enqueue and the worker waits on a slow POST.

tests/test_exit_and_fork.py forks once, from a quiet process.  Here a parent
keeps four producer threads enqueuing while its worker sends to the real
collector (every answer 80 ms late), and forks three children, each at a
moment the worker has a POST in flight, the first one included (its lazy
imports are guarded: see test_first_post_imports_nothing_outside_the_fork_guard).
Each child records its own events from two threads and exits normally.
Afterwards the collector must hold every child's events exactly once under
the child's session, the parent's events exactly as often as the parent
counted them sent, and nothing of the parent's under a child's session.
Every wait is bounded: a deadlock shows up as a killed child and a failed
test, never as a hung suite.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import REPO_ROOT, subprocess_env

from nat_telemetry.collector import Collector

CHILDREN = 3
CHILD_EVENTS = 40  # per child, from two threads

SCRIPT = """\
import json, os, sys, threading, time
from nat_telemetry import CliCommandEvent, NATTelemetryHandler

URL, CHILDREN, CHILD_EVENTS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def ev(command, n):
    return CliCommandEvent(command=command, task_status="success",
                           python_version="3.11.7", duration_ms=n)

h = NATTelemetryHandler(endpoint=URL, session_id="parent", max_queue_size=20,
                        max_batch_size=100, max_buffer_size=2_000)
done = threading.Event()
produced = [0] * 4

def produce(p):
    i = 0
    while not done.is_set():
        h.enqueue(ev("parent", p * 1_000_000 + i))
        i += 1
        if i % 20 == 0:
            time.sleep(0.001)
    produced[p] = i

producers = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
for t in producers:
    t.start()

children, mid_send = [], []
for k in range(CHILDREN):
    deadline = time.monotonic() + 5
    while not h._box.in_flight and time.monotonic() < deadline:
        time.sleep(0.001)
    mid_send.append(bool(h._box.in_flight))
    pid = os.fork()
    if pid == 0:
        # Only this thread exists here; the parent's queue, batch in flight
        # and dead-letter queue are not this process's to send.
        inherited = h.stats()
        h.session_id = "child%d" % k
        def child_produce(offset):
            for i in range(offset, CHILD_EVENTS, 2):
                h.enqueue(ev("child%d" % k, i))
        helpers = [threading.Thread(target=child_produce, args=(o,)) for o in (0, 1)]
        for t in helpers:
            t.start()
        for t in helpers:
            t.join(10)
        h.stop(timeout=5)
        print("CHILD", k, json.dumps({"inherited": inherited, "final": h.stats()}), flush=True)
        os._exit(0 if all(not t.is_alive() for t in helpers) else 4)
    children.append(pid)
    time.sleep(0.05)

statuses = {}
deadline = time.monotonic() + 20
while len(statuses) < len(children) and time.monotonic() < deadline:
    for pid in children:
        if pid not in statuses:
            done_pid, status = os.waitpid(pid, os.WNOHANG)
            if done_pid:
                statuses[pid] = os.waitstatus_to_exitcode(status)
    time.sleep(0.01)
for pid in children:
    if pid not in statuses:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        statuses[pid] = "hung"

done.set()
for t in producers:
    t.join(10)
h.stop(timeout=15)
print("PARENT", json.dumps({"stats": h.stats(), "produced": sum(produced),
                            "mid_send": mid_send,
                            "children": [statuses[pid] for pid in children]}), flush=True)
"""



def run_script(text: str, tmp_path: Path, *args: str,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as a script in a fresh interpreter, from the repository's root."""
    script = tmp_path / "script.py"
    script.write_text(text)
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO_ROOT,
                          env=subprocess_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forks_while_producing_and_sending(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "fork.db", delay_ms=80).start()
    try:
        result = run_script(SCRIPT, tmp_path, collector.url, str(CHILDREN), str(CHILD_EVENTS),
                            timeout=90)
        rows = collector.rows()
        counts = collector.counts()
    finally:
        collector.stop()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr

    reports = [line.split(maxsplit=2) for line in result.stdout.splitlines()]
    parent = json.loads(next(r[1] + " " + r[2] for r in reports if r[0] == "PARENT"))
    child = {int(r[1]): json.loads(r[2]) for r in reports if r[0] == "CHILD"}
    assert parent["children"] == [0] * CHILDREN, parent  # nobody hung, nobody failed
    assert sorted(child) == list(range(CHILDREN))
    assert all(parent["mid_send"]), parent  # every fork met a POST in flight

    by_session: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for row in rows:
        parameters = row["parameters"]
        by_session[row["session_id"]].append((parameters["command"], parameters["durationMs"]))

    for k in range(CHILDREN):
        inherited, final = child[k]["inherited"], child[k]["final"]
        assert inherited["enqueued"] == inherited["pending"] == inherited["dlq"] == 0, inherited
        assert final["enqueued"] == final["sent"] == CHILD_EVENTS, final
        # Its own events, once each, and nothing else.
        assert sorted(by_session[f"child{k}"]) == [(f"child{k}", i) for i in range(CHILD_EVENTS)]

    stats = parent["stats"]
    assert stats["enqueued"] == parent["produced"] > 0, parent
    assert stats["pending"] == stats["dlq"] == 0, stats
    parents_rows = by_session["parent"]
    assert all(command == "parent" for command, _ in parents_rows)
    # No fault was injected: the parent's events were stored exactly as often
    # as it counted them sent, i.e. once, and never by a child.
    assert len(parents_rows) == len(set(parents_rows)) == stats["sent"] > 0, stats
    assert set(by_session) == {"parent"} | {f"child{k}" for k in range(CHILDREN)}
    assert counts["accepted_events"] == len(rows)


AUDIT_SCRIPT = """\
import sys, threading
if sys.argv[2] == "urllib":
    sys.modules["requests"] = None  # as in a vendored copy: urllib it is
from nat_telemetry import _process

unguarded = []

def hook(event, args):
    # A module imported on the worker thread while the fork guard is free.
    if (event == "import" and threading.current_thread().name == "nat-telemetry-worker"
            and args[0] not in sys.modules and not _process.import_lock._is_owned()):
        unguarded.append(args[0])

sys.addaudithook(hook)
from nat_telemetry import CliCommandEvent, NATTelemetryHandler

h = NATTelemetryHandler(endpoint=sys.argv[1])
h.enqueue(CliCommandEvent(command="audit", task_status="success", python_version="3.11.7"))
print("FLUSHED", h.flush(timeout=10), h.stats()["sent"], type(h._transport.client.chosen).__name__,
      flush=True)
print("UNGUARDED", " ".join(unguarded), flush=True)
"""


@pytest.mark.parametrize(("library", "transport_class"),
                         [("requests", "RequestsClient"), ("urllib", "UrllibClient")])
def test_first_post_imports_nothing_outside_the_fork_guard(
    tmp_path: Path, library: str, transport_class: str
) -> None:
    """Every lazy import of the first POST happens while a fork would wait for it.

    A fork that catches another thread half-way through an import leaves that
    module's import lock held in the child forever (the importing thread does
    not exist there): the child's own first POST then hangs on the same
    import, and its exit waits out the whole shutdown budget.  An audit hook
    lists the modules the worker imports while the transport's fork guard is
    free; there must be none, with either transport.
    """
    collector = Collector(tmp_path / "audit.db").start()
    try:
        # A host name (not an IP) makes the first connection reach for the idna codec.
        url = collector.url.replace("127.0.0.1", "localhost")
        result = run_script(AUDIT_SCRIPT, tmp_path, url, library)
    finally:
        collector.stop()
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert lines["FLUSHED"] == ["True", "1", transport_class]  # the POST really went out
    assert lines["UNGUARDED"] == [], lines["UNGUARDED"]


# A thread imports logging (guarded) and is past the line where logging registers
# its own fork hook, which takes logging's lock, when the main thread forks.  The
# rest of logging's import needs that lock (its handlers take it), so a fork hook
# that waited for the import while logging's hook held the lock would wait its
# whole bound, then fork with logging half-imported: every log call in the child
# fails.  The slow part is a pause put into logging's own source, before
# ``_defaultLastResort`` (its first handler), after its fork hook on every supported Python.
LOGGING_IMPORT_AT_FORK = """\
import importlib.abc, importlib.util, os, sys, threading, time
from nat_telemetry import _process

assert "logging" not in sys.modules
found = importlib.util.find_spec("logging")
source = open(found.origin, encoding="utf-8").read()
first_handler = "\\n_defaultLastResort ="
assert source.index("os.register_at_fork(") < source.index(first_handler)
source = source.replace(first_handler, "\\n__import__('time').sleep(0.5)" + first_handler, 1)

class Slow(importlib.abc.Loader):
    def exec_module(self, module):
        exec(compile(source, found.origin, "exec"), module.__dict__)

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        return importlib.util.spec_from_file_location(
            "logging", found.origin, loader=Slow(),
            submodule_search_locations=found.submodule_search_locations)

sys.meta_path.insert(0, Finder())
importing = threading.Thread(target=_process.import_guarded, args=("logging",))
importing.start()
time.sleep(0.2)  # now in logging's import, its fork hook registered, its pause begun
started = time.monotonic()
pid = os.fork()
if pid == 0:
    logging = sys.modules["logging"]
    whole = hasattr(logging, "getLogger") and not _process._initializing(logging)
    os._exit(0 if whole else 7)
took = time.monotonic() - started
_, status = os.waitpid(pid, 0)
importing.join(10)
print("FORK", round(took, 2), "CHILD", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_during_loggings_own_import_waits_for_it_whole(tmp_path: Path) -> None:
    result = run_script(LOGGING_IMPORT_AT_FORK, tmp_path)
    assert result.returncode == 0, result.stderr
    _, took, _, child = result.stdout.split()
    assert child == "0"  # the child got logging whole
    assert float(took) < 2.0  # the fork waited for the import, not for its 5 s bound
