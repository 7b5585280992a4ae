"""The detached sender: a short-lived process that delivers a spool's batches.

**The caller's side.**  What a command line could not send is spooled, and at
exit :func:`start_sender` makes sure a sender takes it: the one holding the
destination's lock already (a cheap ``flock`` test, no new interpreter), or a
new one, started detached while the caller returns at once.  That process:

* runs ``sys.executable -I -S`` (no site-packages, no PYTHON* variables) and
  imports this package from its own folder, under its own name, so a vendored
  copy works and its host's ``__init__`` is never run; it needs only the
  standard library;
* gets an allow-listed environment: its endpoint and token (never on its
  command line), the proxy variables, the certificates the caller would trust
  (:func:`~.config.ca_location`), where consent is read, the locale; no more;
* has its own session, ``/dev/null`` for its streams, no inherited descriptors,
  ``/`` as its folder and a lower priority, so ``$(tool)`` and ``tool | head``
  return as soon as the tool exits;
* holds ``<destination>.lock``: one sender per destination, and one stuck on a
  dead endpoint never holds back another destination.

**The sender's side** (:func:`run_sender`) sends its destination's batches,
oldest first, validated again, with the handler's transport and
:func:`~.transport.deliver`; what failed for now is put back.  After
``max_retries`` transient failures in a row, or a certificate failure (a
configuration problem), it leaves the rest for later; a ``Retry-After`` holds
across processes (``<destination>.backoff``).  Consent is read before each
batch: a "no" given meanwhile deletes what waits.  It lives at most
``lifetime_seconds`` (an alarm ends it a few seconds after) and writes nothing
to standard output or error.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from . import _process, config
from .config import destination_id, redact
from .spool import Spool, _quietly, encode_batch, open_regular, pid_alive, read_small

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Callable

    from .payload import QueuedEvent
    from .retry import RetryPolicy
    from .spool import Claim, SpoolWriteResult
    from .transport import Transport

__all__ = ["DEFAULT_LIFETIME_SECONDS", "ENDPOINT_ENV_VAR", "TOKEN_ENV_VAR", "Outlet",
           "acquire_lock", "identity", "main", "record_of", "run_sender", "sender_environment",
           "start_detached_sender", "start_sender"]

ENDPOINT_ENV_VAR = "NAT_TELEMETRY_SENDER_ENDPOINT"
TOKEN_ENV_VAR = "NAT_TELEMETRY_SENDER_TOKEN"
DEFAULT_LIFETIME_SECONDS = 30.0
# How long an idle sender waits for batches of runs still finishing, and how often it looks.
LINGER_SECONDS = 1.0
POLL_SECONDS = 0.05
REQUEST_TIMEOUT_SECONDS = 10.0  # nobody waits for this process: be patient, within the lifetime
NICENESS = 10
WATCHDOG_GRACE_SECONDS = 5  # the alarm that ends a sender stuck past its lifetime
_LATE_LOOKS = 5  # times a sender takes its lock again for batches spooled meanwhile
PIDFILE_STALE_SECONDS = 120.0  # a pid-file lock (no fcntl) older than this is taken over
# What a sender's environment keeps of its caller's, besides its own settings.
_KEPT_VARIABLES = ("LANG", "LANGUAGE", "TZ", "SYSTEMROOT", config.DO_NOT_TRACK_ENV_VAR,
                   *config.CI_ENV_VARS)

_children: list[Any] = []  # started senders not yet reaped (pids, or Popen objects)
_leftovers_checked: set[tuple[str, str]] = set()  # (spool, destination) looked at


# ------------------------------------------------------------ the caller side

class Outlet:
    """Where a tool's events go when they cannot be sent from here (for the handler and
    ``track_command``'s recorder): the spool, as a batch for an endpoint's destination,
    and a sender started at exit (where none can be, delivery here for ``budget`` s)."""

    def __init__(self, tool: config.Tool, directory: str | None,
                 budget: float = config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS) -> None:
        self.tool, self.directory, self.budget = tool, directory, budget
        self.refused = False  # the spool could not take a batch at exit: not tried again
        self._noted: tuple[str | None, float] = ("", float("-inf"))  # what, when

    def takes(self, endpoint: str | None) -> bool:
        """Batches for ``endpoint`` (a transport's ``spool_endpoint``) may be spooled."""
        return (endpoint is not None and self.directory is not None and not self.refused
                and self.tool.enabled)

    def spool(self, endpoint: str, token: str, identity: Mapping[str, Any],
              records: Sequence[Sequence[Any]]) -> SpoolWriteResult:
        """Spool ``records`` as one batch (see :func:`~.spool.encode_batch`)."""
        directory = str(self.directory)
        result = Spool(directory).write(encode_batch(identity, records), len(records),
                                        destination_id(endpoint, token))
        for reason, count in result.evicted.items():
            _process.debug("%d spooled event(s) of earlier runs dropped: %s", count, reason)
        if result.written:
            _process.after_exit(("sender", directory, endpoint, token), start_sender,
                                directory, endpoint, token, self.budget, self.tool)
        return result

    def note(self, endpoint: str | None, token: str, problem: str | None) -> None:
        """Record a delivery (or a failure's kind) for ``status``: at once when it is
        news, and the same news at most once a minute."""
        now = time.monotonic()
        if endpoint is not None and self.takes(endpoint) and (
                problem != self._noted[0] or now - self._noted[1] >= 60.0):
            self._noted = (problem, now)
            Spool(str(self.directory)).note(destination_id(endpoint, token), redact(endpoint),
                                            problem)

    def leftovers(self, endpoint: str | None, token: str) -> None:
        """Once per process and destination, start a sender for batches earlier runs
        left (a handler starting up, in case nobody else will)."""
        if endpoint is None or not self.takes(endpoint):
            return
        directory, destination = str(self.directory), destination_id(endpoint, token)
        if (directory, destination) not in _leftovers_checked:
            _leftovers_checked.add((directory, destination))
            if destination in Spool(directory).summary():
                start_sender(directory, endpoint, token, self.budget, self.tool)


def identity(session_id: str, client_version: str,
             product: tuple[str, str] | None) -> dict[str, Any]:
    """Who recorded a batch: the envelope's session id, client version and product."""
    return {"session_id": session_id, "client_version": client_version,
            "product": list(product) if product else None}


def record_of(queued: QueuedEvent) -> list[Any]:
    """A queued event as a spool record: name, schema version, time, retries, parameters."""
    event = queued.event
    return [event._event_name, event._schema_version, queued.timestamp.timestamp(),
            queued.retry_count, event.model_dump(by_alias=True)]


def start_sender(spool_dir: str, endpoint: str, token: str = "",
                 budget: float = config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
                 tool: config.Tool | None = None) -> None:
    """Make sure a sender takes the batches for ``endpoint``: one alive already, or a
    new detached one (where none can be started, deliver here for ``budget`` s).  The
    lock is taken here and handed to it, so a burst of command lines finishing
    together starts one sender, not one each."""
    try:
        lock = acquire_lock(spool_dir, destination_id(endpoint, token))
    except OSError:  # a lock that cannot be used: a sender says why, in status
        lock = _Lock()
    if lock is None:
        return  # a sender is alive: it takes the new batch too
    try:
        started = start_detached_sender(spool_dir, endpoint, token=token, tool=tool, lock=lock)
    finally:
        lock.release()  # the sender has its own copy of the descriptor
    if not started:
        run_sender(spool_dir, endpoint, token=token, tool=tool, lifetime_seconds=budget,
                   linger_seconds=0.0)


def sender_environment(endpoint: str, token: str = "", tool: config.Tool | None = None,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a sender gets (see the module docstring)."""
    tool = config.NAT if tool is None else tool
    env = dict(os.environ if environ is None else environ)
    kept = {name: value for name, value in env.items()
            if name in _KEPT_VARIABLES or name.startswith("LC_") or name == tool.var("ENABLED")
            or name.lower().endswith("_proxy")}
    kept[ENDPOINT_ENV_VAR] = endpoint
    if token:
        kept[TOKEN_ENV_VAR] = token
    trust = config.ca_location(env)
    if trust is not None:
        kept["SSL_CERT_DIR" if os.path.isdir(trust) else "SSL_CERT_FILE"] = trust
    try:  # where consent is read again, before each batch
        kept[tool.var("CONSENT_FILE")] = env.get(tool.var("CONSENT_FILE")) or tool.consent_file()
    except Exception:  # no home folder: the sender then reads no consent file
        pass
    return kept


def start_detached_sender(spool_dir: str, endpoint: str, *, token: str = "",
                          lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
                          environ: Mapping[str, str] | None = None,
                          tool: config.Tool | None = None, lock: _Lock | None = None) -> bool:
    """Start a sender for ``spool_dir`` that POSTs to ``endpoint``, holding ``lock`` (the
    destination's) from its first instant; never waits or raises.  False when none
    could be started (no usable interpreter, as in a frozen application, or no spawn)."""
    tool = config.NAT if tool is None else tool
    try:
        _reap()
        executable = sys.executable
        parent, package = os.path.split(os.path.dirname(os.path.abspath(__file__)))
        if (not executable or getattr(sys, "frozen", False) or not os.access(executable, os.X_OK)
                or not package.isidentifier()):
            return False
        # Appended, not prepended: the standard library must win over whatever
        # else lives beside the package (site-packages, a vendor folder).
        code = (f"import sys; sys.path.append({parent!r}); "
                f"from {package}.sender import main; sys.exit(main())")
        argv = [executable, "-I", "-S", "-c", code, os.path.abspath(spool_dir),
                repr(float(lifetime_seconds)), tool.name, tool.env_prefix]
        held = lock.fd if lock is not None else None
        if held is not None:
            os.set_inheritable(held, True)
            argv.append(str(held))
        env = sender_environment(endpoint, token, tool, environ)
        child = _spawn_posix(argv, env, held) if _HAVE_POSIX_SPAWN else None
        _children.append(child if child is not None else _spawn_subprocess(argv, env, held))
        return True
    except Exception:
        return False


_HAVE_POSIX_SPAWN = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN")


def _spawn_posix(argv: list[str], env: dict[str, str], keep: int | None) -> int | None:
    """``os.posix_spawn``: no ``import subprocess`` (~3 ms) on the caller's exit path.
    Every descriptor an exec would pass on is closed in the child but ``keep`` (the
    lock); None (use subprocess) when they cannot be listed or setsid is missing."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        for fd in (int(name) for name in names if name.isdigit()):
            try:
                if fd > 2 and fd != keep and os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                pass  # the listing's own descriptor, closed by now
        try:
            return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        except (NotImplementedError, TypeError, ValueError):
            return None
    return None


def _spawn_subprocess(argv: list[str], env: dict[str, str], keep: int | None) -> Any:
    import subprocess

    detached = (getattr(subprocess, "DETACHED_PROCESS", 0)  # 0 but on Windows
                | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True, env=env,
                            pass_fds=() if keep is None else (keep,), start_new_session=True,
                            creationflags=detached, cwd=os.path.abspath(os.sep))


def _reap() -> None:
    # A long-running caller must not collect zombies.
    for child in list(_children):
        if isinstance(child, int):
            try:
                done = os.waitpid(child, os.WNOHANG)[0] != 0
            except ChildProcessError:
                done = True  # reaped by someone else (e.g. a SIGCHLD handler)
        else:
            done = child.poll() is not None
        if done:
            _children.remove(child)


# ------------------------------------------------------------------ the lock

class _Lock:
    def __init__(self, fd: int | None = None, pidfile: str | None = None) -> None:
        self.fd = fd
        self._pidfile = pidfile

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the last descriptor of it closed drops the flock
            self.fd = None
        if self._pidfile is not None and _read_pid(self._pidfile) == os.getpid():
            _remove(self._pidfile)
        self._pidfile = None


class LockUnusable(OSError):
    """The lock's file cannot be made a lock (a folder that cannot be removed...)."""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except IsADirectoryError:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def acquire_lock(directory: str, destination: str, *,
                 use_fcntl: bool | None = None) -> _Lock | None:
    """The sender lock of ``destination``, or None when another sender holds it:
    ``fcntl.flock`` on ``<destination>.lock`` (the kernel releases it when the holder
    dies), or without fcntl an ``O_EXCL`` pid file, taken over when its owner is gone
    or it is older than PIDFILE_STALE_SECONDS.  :class:`LockUnusable` when it cannot
    be made (something in its place that cannot be removed...)."""
    if use_fcntl is None:
        use_fcntl = os.name == "posix"
    if not use_fcntl:
        return _pidfile_lock(os.path.join(directory, f"{destination}.pid"))
    import fcntl

    path = os.path.join(directory, f"{destination}.lock")
    try:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EACCES, errno.ENOTDIR, errno.ELOOP):
            raise LockUnusable(f"the sender's lock cannot be made: {exc}") from None
        try:  # a FIFO, folder or symbolic link in its place: removed, once
            _remove(path)
            fd = open_regular(path, os.O_RDWR | os.O_CREAT)
        except OSError as failure:
            raise LockUnusable(f"the sender's lock cannot be used: {failure}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return _Lock(fd=fd)


def _pidfile_lock(path: str) -> _Lock | None:
    for _attempt in range(2):
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            try:
                age = time.time() - os.stat(path).st_mtime
            except OSError:
                return None
            pid = _read_pid(path)
            if age <= PIDFILE_STALE_SECONDS and (pid is None or pid_alive(pid)):
                return None
            _remove(path)
            continue  # two takers may race here; claims still keep each batch single
        except OSError as exc:
            raise LockUnusable(f"the sender's lock cannot be made: {exc}") from None
        try:
            os.write(fd, str(os.getpid()).encode("ascii"))
        finally:
            os.close(fd)
        return _Lock(pidfile=path)
    return None


def _read_pid(path: str) -> int | None:
    try:
        text = read_small(path, 32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# ---------------------------------------------------------- the sender side

def main(argv: Sequence[str] | None = None) -> int:
    """The sender process: ``SPOOL_DIR [LIFETIME [TOOL PREFIX [LOCK_FD]]]`` (the
    destination's lock, taken by the caller and inherited).  It changes the process's
    folder, priority and alarm.  Returns 0 after a run, 1 when another sender holds
    the lock, 2 for bad arguments, 3 for anything unexpected, 4 for an unusable lock."""
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        endpoint = os.environ.get(ENDPOINT_ENV_VAR, "")
        lifetime = float(args[1]) if len(args) > 1 else DEFAULT_LIFETIME_SECONDS
        if not args or not endpoint or not 0 < lifetime < 86400:
            return 2
        tool = config.Tool(args[2], env_prefix=args[3]) if len(args) > 3 else config.NAT
        os.chdir(os.path.abspath(os.sep))  # never keep the caller's folder busy
        if hasattr(os, "nice"):
            _quietly(os.nice, NICENESS)
        try:
            import signal

            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
            signal.alarm(int(lifetime) + 1 + WATCHDOG_GRACE_SECONDS)
        except (ImportError, AttributeError, ValueError, OSError):
            pass  # no SIGALRM here: every POST is still bounded by the lifetime
        held = _Lock(fd=int(args[4])) if len(args) > 4 and args[4].isdigit() else None
        result = run_sender(args[0], endpoint, token=os.environ.get(TOKEN_ENV_VAR, ""),
                            tool=tool, lifetime_seconds=lifetime, lock=held)
        return 4 if result["unusable_lock"] else 1 if result["busy"] else 0
    except BaseException:  # nobody is listening: exit quietly whatever happened
        return 3


_RESULT_KEYS = ("locked", "busy", "unusable_lock", "deferred", "batches_sent", "events_sent",
                "events_rejected", "events_too_large", "events_invalid", "events_unusable",
                "events_revoked", "events_unspooled", "transient_failures")


def run_sender(spool_dir: str, endpoint: str, *, token: str | None = None,
               tool: config.Tool | None = None, lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
               linger_seconds: float = LINGER_SECONDS, transport: Transport | None = None,
               policy: RetryPolicy | None = None, request_timeout: float = REQUEST_TIMEOUT_SECONDS,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep,
               lock: _Lock | None = None) -> dict[str, int]:
    """Deliver the batches of ``endpoint``'s destination for at most ``lifetime_seconds``
    (``lock``: the destination's, already held), in-process or in :func:`main`.  Returns
    the counts of :data:`_RESULT_KEYS` (``locked``: it held the lock; ``busy``: another
    sender did; ``deferred``: a Retry-After kept it from posting)."""
    from .retry import RetryPolicy
    from .transport import transport_for

    tool = config.NAT if tool is None else tool
    token = tool.token() if token is None else token
    result = dict.fromkeys(_RESULT_KEYS, 0)
    spool = Spool(spool_dir)
    if transport is None:
        transport = transport_for(endpoint, dry_run=False, token=token, tool=tool)
    if transport.spool_endpoint is None or not spool.available():
        if lock is not None:
            lock.release()
        return result
    run = _Run(spool, destination_id(endpoint, token), redact(endpoint), transport, tool,
               policy if policy is not None else RetryPolicy(), result,
               clock() + lifetime_seconds, linger_seconds, request_timeout, clock, sleep)
    try:
        for _ in range(1 + _LATE_LOOKS):
            started_ns = time.time_ns()
            try:
                if lock is None:
                    lock = acquire_lock(spool_dir, run.destination)
            except LockUnusable as exc:
                result["unusable_lock"] = 1
                spool.note(run.destination, run.shown, f"lock: {exc}")
                return result
            if lock is None:
                result["busy"] = 1 - result["locked"]  # after a round of its own: not busy
                return result
            result["locked"] = 1
            try:
                drained = run.send_all()
            finally:
                lock.release()
                lock = None
            # A batch spooled while the lock was held had its run find the lock taken:
            # look again after letting go, for batches newer than this round only and a
            # few times, so one it cannot take (a newer format's) cannot keep it going.
            if (not drained or clock() >= run.deadline
                    or not spool.waiting(run.destination, since_ns=started_ns)):
                break
    finally:
        transport.close()
    return result


class _Run:
    """One sender's run over one destination's batches (see :func:`run_sender`)."""

    def __init__(self, spool: Spool, destination: str, shown: str, transport: Transport,
                 tool: config.Tool, policy: RetryPolicy, result: dict[str, int],
                 deadline: float, linger: float, request_timeout: float,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.spool, self.destination, self.shown = spool, destination, shown
        self.transport, self.tool, self.policy, self.result = transport, tool, policy, result
        self.deadline, self.linger, self.request_timeout = deadline, linger, request_timeout
        self.clock, self.sleep = clock, sleep
        self.failures = 0
        self.noted_delivery = False
        self.noted_problem: str | None = None
        self.backoff_path = spool.path(f"{destination}.backoff")

    def send_all(self) -> bool:
        """Send batches until none is left and none came for ``linger`` seconds (True),
        or it must stop (False)."""
        try:  # a Retry-After of an earlier run (an absurd one is ignored)
            wait = float(read_small(self.backoff_path, 64)) - time.time()
        except (OSError, ValueError):
            wait = 0.0
        if 0 < wait <= self.policy.retry_after_max:
            self.result["deferred"] = 1
            return False
        idle_until = None
        while self.clock() < self.deadline:
            found = False
            for claim in self.spool.claim(self.destination):  # one listing, oldest first
                found = True
                with claim:  # released unless settled below
                    step = self._send(claim)
                if step == "stop":
                    return False
                if step == "again":
                    break  # after a failure, from the oldest batch again
            if found:
                idle_until = None
                continue
            now = self.clock()
            if idle_until is None:
                idle_until = min(now + self.linger, self.deadline)
            if now >= idle_until:
                return True
            self.sleep(min(POLL_SECONDS, idle_until - now))
        return False

    def _send(self, claim: Claim) -> str:
        """Deliver one claimed batch: ``"next"``, or after a transient failure
        ``"again"`` (from the oldest batch, after the backoff) or ``"stop"``."""
        from .transport import deliver

        if self.tool.refused_since():  # a "no" given meanwhile: what waits goes
            claim.complete()
            self.result["events_revoked"] += claim.events
            return "next"
        queued, identity = self._events(claim)
        if not queued:
            claim.complete()
            return "next"
        if self.deadline - self.clock() <= 0:
            return "stop"
        product = identity.get("product")
        self.transport.product = (str(product[0]), str(product[1])) if isinstance(
            product, list) and len(product) == 2 else None
        outcome = deliver(self.transport, queued,
                          lambda: max(0.05, min(self.request_timeout,
                                                self.deadline - self.clock())),
                          source_client_version=str(identity.get("client_version", "unknown")),
                          session_id=str(identity.get("session_id", "undefined")))
        for counter, events in outcome.settled:
            key = "events_" + counter.replace("dropped_", "").replace("bad_endpoint", "unusable")
            self.result[key if key in self.result else "events_rejected"] += len(events)
            if counter == "sent":
                self.result["batches_sent"] += 1
                self.failures = 0
                if not self.noted_delivery:
                    self.noted_delivery = True
                    self.spool.note(self.destination, self.shown)
                    _quietly(os.unlink, self.backoff_path)
        if not outcome.failed:
            if outcome.problem and outcome.problem != self.noted_problem:  # a rejection
                self.noted_problem = outcome.problem
                self.spool.note(self.destination, self.shown, outcome.problem)
            claim.complete()
            return "next"
        if outcome.settled:  # part of it went: only what failed goes back
            claim.complete()
            records = [record_of(queued) for queued in outcome.failed + outcome.untried]
            if not self.spool.write(encode_batch(identity, records), len(records),
                                    self.destination).written:
                self.result["events_unspooled"] += len(records)
        else:
            claim.release()
        return "again" if self._failed(outcome.last) else "stop"

    def _events(self, claim: Claim) -> tuple[list[Any], dict[str, Any]]:
        """The batch's events, validated again, and who recorded them."""
        from datetime import datetime, timezone

        from .events import rebuild
        from .payload import QueuedEvent
        from .spool import decode_batch

        try:
            identity, records = decode_batch(claim.body)
        except ValueError:
            self.result["events_invalid"] += claim.events
            return [], {}
        queued = []
        for record in records:
            try:
                name, schema, stamp, retries, parameters = record
                event: Any = rebuild(name, schema, parameters)  # or a RecordedEvent
                when = datetime.fromtimestamp(stamp, timezone.utc)
                queued.append(QueuedEvent(event, when, int(retries)))
            except (ValueError, TypeError, OverflowError, OSError):
                self.result["events_invalid"] += 1
        return queued, identity

    def _failed(self, delivery: Any) -> bool:
        """A transient failure: note it, back off; False when the run must stop."""
        from .retry import parse_retry_after
        from .spool import write_atomically

        self.failures += 1
        self.result["transient_failures"] += 1
        problem = getattr(delivery, "problem", None) or "no answer"
        self.spool.note(self.destination, self.shown, problem)
        retry_after = getattr(delivery, "retry_after", None)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            until = repr(time.time() + min(asked, self.policy.retry_after_max)).encode()
            _quietly(write_atomically, self.spool.directory, f"{self.destination}.backoff", until)
        if problem == "tls":  # a configuration problem: retrying now cannot help
            return False
        wait = self.policy.delay(self.failures, retry_after)
        if self.policy.exhausted(self.failures) or self.clock() + wait >= self.deadline:
            return False
        self.sleep(wait)
        return True
