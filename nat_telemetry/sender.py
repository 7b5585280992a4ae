"""The detached sender: a short-lived process of its own that delivers a spool.

At exit a command line tool spools what it could not send (:mod:`.spool`)
and calls :func:`start_detached_sender`, which starts the sender and returns
at once (no waiting, no pipe shared).  The sender process:

* runs ``sys.executable -I -S`` (isolated: no site-packages, no user site,
  no PYTHON* variables, no current folder on ``sys.path``); it finds this
  package through the folder it lives in, imported under its own folder name
  (so a vendored copy works and its host package's ``__init__`` is never
  run), and sends with the standard library only;
* has its own session, ``/dev/null`` for its standard streams, no inherited
  descriptors, ``/`` as its folder and a lower priority, so ``$(tool)``,
  ``tool | head`` and ``subprocess.run(..., capture_output=True)`` return as
  soon as the tool exits, and a terminal closing does not touch it;
* gets the endpoint from the environment (``NAT_TELEMETRY_SENDER_ENDPOINT``),
  never the command line, where other users could read it;
* holds ``sender.lock`` in the spool folder: one sender per spool, a second
  one exits at once; so after letting the lock go, a sender looks once more,
  and takes it again for a batch spooled meanwhile (whose own sender found
  the lock taken), so that no batch waits for the next run;
* sends only the batches spooled for the kind of endpoint it was given: an
  ``otlp+http(s)://`` endpoint gets the ``otlp`` bodies (POSTed to its logs
  URL, see :func:`.otlp.otlp_logs_url`), any other URL the ``nemo`` ones;
  batches of the other kind stay for a sender configured for them (or
  expire by the spool's own rules);
* sends ``Authorization: Bearer`` with ``NAT_TELEMETRY_TOKEN`` from its
  environment when that is set and sendable, as the handler does (never
  logged, never on its command line);
* claims batches oldest first and POSTs each: delivered or refused for good
  (2xx, 4xx) deletes it, 413 deletes it too (it will never fit), anything
  transient puts it back and backs off with the retry policy; after
  ``max_retries`` consecutive transient failures it leaves the rest for the
  next sender.  A ``Retry-After`` is honoured across processes: the time is
  written to ``sender.backoff`` and no sender POSTs before it.  An OTLP
  partial success counts the records it names as rejected, the rest as sent;
* lives at most ``lifetime_seconds`` (30 s by default): every POST's timeout
  fits in what is left, a wait that would not fit ends the run, and an alarm
  ends the process a few seconds after its lifetime whatever happens.

It writes nothing to standard output or error, ever.
"""

from __future__ import annotations

import os
import sys
import time

from . import _spoolfile as sf
from .spool import BACKOFF_NAME, LOCK_NAME, PIDFILE_NAME, Spool, note_delivery

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Callable

    from .http_client import HttpClient as Transport
    from .retry import RetryPolicy

__all__ = [
    "DEFAULT_LIFETIME_SECONDS",
    "ENDPOINT_ENV_VAR",
    "acquire_lock",
    "main",
    "run_sender",
    "start_detached_sender",
    "start_sender",
]

ENDPOINT_ENV_VAR = "NAT_TELEMETRY_SENDER_ENDPOINT"
DEFAULT_LIFETIME_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 10.0  # nobody waits for this process: be patient, within the lifetime
NICENESS = 10
# The alarm that ends a sender stuck past its lifetime (e.g. in a slow DNS lookup).
WATCHDOG_GRACE_SECONDS = 5
# How many times a sender takes the lock again for batches spooled while it held it.
_LATE_LOOKS = 5
# A pid-file lock (platforms without fcntl) older than this is taken over.
PIDFILE_STALE_SECONDS = 120.0

# Started senders not yet reaped (pids, or Popen objects on the fallback path):
# a long-running caller must not collect zombies.
_children: list[Any] = []


# ------------------------------------------------------------ the caller side


def start_detached_sender(spool_dir: str, endpoint: str, *,
                          lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
                          environ: Mapping[str, str] | None = None) -> bool:
    """Start a sender for ``spool_dir`` that POSTs to ``endpoint``; never waits, never raises.

    ``environ`` is the sender's environment (default: this process's; the
    proxy variables in it are honoured).  Returns False when no sender could
    be started (no usable interpreter, e.g. in a frozen application; the
    spawn failed), True otherwise: then the caller may exit at once.
    """
    try:
        _reap()
        argv = _command(spool_dir, lifetime_seconds)
        if argv is None:
            return False
        env = dict(os.environ if environ is None else environ)
        env[ENDPOINT_ENV_VAR] = endpoint
        child = _spawn_posix(argv, env) if _HAVE_POSIX_SPAWN else None
        if child is None:
            child = _spawn_subprocess(argv, env)
        _children.append(child)
        return True
    except Exception:
        return False


def start_sender(directory: str, url: str, budget: float) -> None:
    """A detached sender for ``directory``; where none can be started, deliver
    in-process for at most ``budget`` seconds."""
    if not start_detached_sender(directory, url):
        run_sender(directory, url, lifetime_seconds=budget)


def _command(spool_dir: str, lifetime_seconds: float) -> list[str] | None:
    executable = sys.executable
    if not executable or getattr(sys, "frozen", False) or not os.access(executable, os.X_OK):
        return None  # a frozen app's executable is the app itself, not a Python
    here = os.path.dirname(os.path.abspath(__file__))
    parent, package = os.path.split(here)
    if not package.isidentifier():
        return None
    # Appended, not prepended: the standard library must win over whatever
    # else lives beside the package (site-packages, a vendor folder).
    code = (f"import sys; sys.path.append({parent!r}); "
            f"from {package}.sender import main; sys.exit(main())")
    return [executable, "-I", "-S", "-c", code, os.path.abspath(spool_dir),
            repr(float(lifetime_seconds))]


_HAVE_POSIX_SPAWN = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN")


def _spawn_posix(argv: list[str], env: dict[str, str]) -> int | None:
    """``os.posix_spawn``: no ``import subprocess`` (~3 ms) on the caller's exit path."""
    inherited = _inheritable_fds()
    if inherited is None:
        return None
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited]
    try:
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    except (NotImplementedError, TypeError, ValueError):
        return None  # no setsid support here: the subprocess path has it


def _inheritable_fds() -> list[int] | None:
    """Descriptors above 2 an exec would pass on; None when they cannot be listed."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found = []
        for name in names:
            fd = int(name) if name.isdigit() else -1
            if fd > 2:
                try:
                    if os.get_inheritable(fd):
                        found.append(fd)
                except OSError:
                    pass  # the listing's own descriptor, closed by now
        return found
    return None


def _spawn_subprocess(argv: list[str], env: dict[str, str]) -> Any:
    import subprocess

    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = (getattr(subprocess, "DETACHED_PROCESS", 0)
                                    | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
    else:
        options["start_new_session"] = True
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True, env=env,
                            cwd=os.path.abspath(os.sep), **options)


def _reap() -> None:
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
        self._fd = fd
        self._pidfile = pidfile

    def release(self) -> None:
        if self._fd is not None:
            sf.quietly(os.close, self._fd)  # closing drops the flock
            self._fd = None
        if self._pidfile is not None:
            if _read_pid(self._pidfile) == os.getpid():
                sf.quietly(os.unlink, self._pidfile)
            self._pidfile = None


def acquire_lock(directory: str, *, use_fcntl: bool | None = None) -> _Lock | None:
    """The spool's sender lock, or None when another sender holds it (or no lock can be made).

    ``fcntl.flock`` on ``sender.lock`` where it exists (released by the
    kernel when the holder dies); elsewhere an ``O_EXCL`` pid file, taken
    over when its owner is gone or it is older than PIDFILE_STALE_SECONDS.
    """
    if use_fcntl is None:
        use_fcntl = os.name == "posix"
    if use_fcntl:
        import fcntl

        try:
            fd = os.open(os.path.join(directory, LOCK_NAME),
                         os.O_RDWR | os.O_CREAT | sf.NOFOLLOW, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return _Lock(fd=fd)
    path = os.path.join(directory, PIDFILE_NAME)
    for _attempt in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | sf.NOFOLLOW | sf.BINARY,
                         0o600)
        except FileExistsError:
            if not _pidfile_stale(path) or not sf.quietly(os.unlink, path):
                return None
            continue  # two takers may race here; claims still keep each batch single
        except OSError:
            return None
        try:
            os.write(fd, str(os.getpid()).encode("ascii"))
        finally:
            os.close(fd)
        return _Lock(pidfile=path)
    return None


def _read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as reader:
            text = reader.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pidfile_stale(path: str) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return False
    pid = _read_pid(path)
    return age > PIDFILE_STALE_SECONDS or (pid is not None and not sf.pid_alive(pid))


# ---------------------------------------------------------- the sender side


def main(argv: Sequence[str] | None = None) -> int:
    """The sender process's entry point: ``SPOOL_DIR [LIFETIME_SECONDS]``.

    Meant for the process :func:`start_detached_sender` starts: it changes
    the folder, the priority and the alarm of the process it runs in.
    Returns 0 after a run (an absent or untrusted spool is an empty one), 1
    when another sender holds the spool, 2 for bad arguments, 3 for anything
    unexpected; prints nothing.
    """
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        endpoint = os.environ.get(ENDPOINT_ENV_VAR, "")
        lifetime = float(args[1]) if len(args) > 1 else DEFAULT_LIFETIME_SECONDS
        if not args or not endpoint or not 0 < lifetime < 86400:
            return 2
        _settle_in(lifetime)
        result = run_sender(args[0], endpoint, lifetime_seconds=lifetime)
        return 1 if result["busy"] else 0
    except BaseException:  # nobody is listening: exit quietly whatever happened
        return 3


def _settle_in(lifetime: float) -> None:
    os.chdir(os.path.abspath(os.sep))  # never keep the caller's folder busy
    if hasattr(os, "nice"):
        sf.quietly(os.nice, NICENESS)
    try:
        import signal

        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
        signal.alarm(int(lifetime) + 1 + WATCHDOG_GRACE_SECONDS)
    except (ImportError, AttributeError, ValueError, OSError):
        pass  # no SIGALRM here: every POST is still bounded by the lifetime


def run_sender(spool_dir: str, endpoint: str, *,
               lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
               transport: Transport | None = None, policy: RetryPolicy | None = None,
               request_timeout: float = REQUEST_TIMEOUT_SECONDS,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, int]:
    """Deliver ``spool_dir`` to ``endpoint`` for at most ``lifetime_seconds``; the loop of
    :func:`main`, usable in-process.  Returns what it did: ``locked`` (1 when it
    held the lock, else it did nothing), ``busy`` (1 when another sender held
    it), ``deferred`` (1 when a Retry-After
    kept it from posting), ``batches_sent``, ``events_sent``,
    ``events_rejected``, ``events_too_large``, ``transient_failures``.

    Only batches of the kind ``endpoint`` takes are sent (see the module's
    documentation); an OTLP endpoint no URL can be made of sends nothing.
    """
    from .http_client import TransportError, UrllibClient
    from .retry import Outcome, RetryPolicy, classify_status, parse_retry_after

    deadline = clock() + lifetime_seconds
    result = dict.fromkeys(("locked", "busy", "deferred", "batches_sent", "events_sent",
                            "events_rejected", "events_too_large", "transient_failures"), 0)
    target = _target(endpoint)
    spool = Spool(spool_dir)
    if target is None or not spool.available():
        return result
    kind, url = target
    headers = _auth_headers()
    policy = policy if policy is not None else RetryPolicy()
    poster = transport if transport is not None else UrllibClient()

    def send_batches() -> bool:
        """Send claims until none is left (True) or it must stop (False)."""
        if time.time() < _backoff_until(spool_dir, policy.retry_after_max):
            result["deferred"] = 1
            return False
        failures = 0
        backoff_file = True  # maybe one left from an earlier run, now past
        while True:
            claimed = stop = False
            for claim in spool.claim():
                with claim:  # released unless completed below
                    if claim.kind != kind:
                        continue  # another endpoint's: released, and not counted as work
                    claimed = True
                    remaining = deadline - clock()
                    if remaining <= 0:
                        stop = True
                        break
                    rejected = 0
                    try:
                        timeout = min(request_timeout, remaining)
                        if headers:
                            answer = poster.post(url, claim.body, timeout, headers=headers)
                        else:  # a caller's client may take only the first three arguments
                            answer = poster.post(url, claim.body, timeout)
                        outcome, retry_after = classify_status(answer.status), answer.retry_after
                        if outcome is Outcome.SENT and kind == "otlp":
                            rejected = _rejected(getattr(answer, "body", b""), claim.events)
                    except TransportError:
                        outcome, retry_after = Outcome.TRANSIENT, None
                    if outcome is not Outcome.TRANSIENT:
                        claim.complete()
                        failures = 0
                        _count_outcome(result, outcome.value, claim.events, rejected)
                        if outcome is Outcome.SENT and not result["batches_sent"] - 1:
                            note_delivery(spool_dir)
                        if backoff_file and outcome is Outcome.SENT:
                            sf.quietly(os.unlink, os.path.join(spool_dir, BACKOFF_NAME))
                            backoff_file = False
                        continue
                    claim.release()
                    failures += 1
                    result["transient_failures"] += 1
                    asked = parse_retry_after(retry_after)
                    if asked is not None:
                        _set_backoff(spool_dir, time.time() + min(asked, policy.retry_after_max))
                        backoff_file = True
                    wait = policy.delay(failures, retry_after)
                    stop = policy.exhausted(failures) or clock() + wait >= deadline
                    if not stop:
                        sleep(wait)
                    break  # start again from the oldest batch
            if stop or not claimed:
                return not stop

    try:
        for _ in range(1 + _LATE_LOOKS):
            started_ns = time.time_ns()
            lock = acquire_lock(spool_dir)
            if lock is None:
                result["busy"] = 1
                return result
            result["locked"] = 1
            try:
                drained = send_batches()
            finally:
                lock.release()
            # A batch spooled after the last look, while the lock was still
            # held, had its own sender find the spool busy: one more look
            # after letting go, so that no batch waits for the next run.
            # Only at batches newer than this round, and only a few times: one
            # it could not take (a newer format's, one dated ahead by a clock
            # that was set back) must not keep it going round.
            if (not drained or clock() >= deadline
                    or not spool.waiting(kind, since_ns=started_ns)):
                break
    finally:
        poster.close()
    return result


def _target(endpoint: str) -> tuple[str, str] | None:
    """``(kind, url)``: which spooled batches ``endpoint`` takes, and where they are
    POSTed; None for an OTLP endpoint no URL can be made of."""
    from .otlp import is_otlp_endpoint, otlp_logs_url

    if not is_otlp_endpoint(endpoint):
        return "nemo", endpoint
    try:
        return "otlp", otlp_logs_url(endpoint)
    except ValueError:
        return None  # the handler reported it already; its batches expire in the spool


def _auth_headers() -> dict[str, str]:
    """The bearer token of ``NAT_TELEMETRY_TOKEN``, as the handler sends it; none when
    unset or not sendable (quietly: the handler that spooled has said so)."""
    from . import config
    from .transport import HttpTransport

    token = os.environ.get(config.TOKEN_ENV_VAR, "").strip()
    if not token or not HttpTransport.is_sendable_token(token):
        return {}
    return {"Authorization": f"Bearer {token}"}


def _rejected(body: bytes, events: int) -> int:
    """How many of a batch's ``events`` an OTLP partial success rejected."""
    from .otlp import rejected_log_records

    return min(rejected_log_records(body or b""), events)


def _count_outcome(result: dict[str, int], outcome: str, events: int,
                   rejected: int = 0) -> None:
    if outcome == "sent":
        result["batches_sent"] += 1
        result["events_sent"] += events - rejected
        result["events_rejected"] += rejected
    elif outcome == "too_large":
        result["events_too_large"] += events
    else:
        result["events_rejected"] += events


def _backoff_until(spool_dir: str, longest: float) -> float:
    """The epoch time a Retry-After forbids posting before (0 when none, or absurd)."""
    try:
        with open(os.path.join(spool_dir, BACKOFF_NAME), "rb") as reader:
            until = float(reader.read(64))
    except (OSError, ValueError):
        return 0.0
    return until if until - time.time() <= longest else 0.0


def _set_backoff(spool_dir: str, until: float) -> None:
    sf.quietly(sf.write_atomically, spool_dir, BACKOFF_NAME, sf.tmp_name(0),
               repr(until).encode("ascii"), False)
