"""A bounded on-disk spool of ready-to-send request bodies.

What a process could not deliver before it exits is written here, one file
per batch, and sent later by a detached sender (:mod:`.sender`) or by the
next process that starts with telemetry enabled.  The files hold only the
bodies that would have been POSTed anyway.  The folder is
``$XDG_STATE_HOME/nat/telemetry-spool`` by default (:func:`default_spool_dir`);
the file format is described in :mod:`._spoolfile`.

* Writing is atomic (a temporary file, mode 0600, renamed into place): a
  reader never sees half a file.
* The folder is created 0700 and used only if it belongs to this user and is
  not writable by group or others; files not named like ours are never
  touched, so a folder of the user's choosing is safe.
* Caps (events, bytes, age) are enforced before each write, oldest batches
  dropped first.  Every event that leaves the spool other than by being sent
  is counted under a named reason (the ``DROPPED_SPOOL_*`` constants).  Live
  claims do not count against the caps.  Concurrent writers can overshoot a
  cap by their own batches until the next write trims it.
* Sending starts with a claim: an atomic rename to a name carrying the
  claimant's pid, so two processes never send one file.  A claim whose owner
  died, or older than :data:`STALE_CLAIM_SECONDS`, is taken back.
* Nothing here raises for a filesystem problem (read-only or full disk, no
  folder, a file that vanished under us): the result says what happened.

Only modules ``os`` itself loads are imported, so this is cheap on an exit path.
"""

from __future__ import annotations

import _thread
import itertools
import os
import stat
import time

from . import _spoolfile as sf
from ._spoolfile import KINDS, Claim

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Callable

__all__ = [
    "BACKOFF_NAME",
    "DEFAULT_MAX_AGE_SECONDS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "DISABLED_VALUES",
    "DROPPED_SPOOL_ERROR",
    "DROPPED_SPOOL_EXPIRED",
    "DROPPED_SPOOL_FULL",
    "DROPPED_SPOOL_OVERSIZE",
    "DROPPED_SPOOL_UNTRUSTED",
    "KINDS",
    "LAST_DELIVERY_NAME",
    "LOCK_NAME",
    "PIDFILE_NAME",
    "SPOOL_DIR_ENV_VAR",
    "STALE_CLAIM_SECONDS",
    "Claim",
    "Spool",
    "SpoolWriteResult",
    "default_spool_dir",
    "last_delivery",
    "note_delivery",
]

SPOOL_DIR_ENV_VAR = "NAT_TELEMETRY_SPOOL_DIR"
# Values of NAT_TELEMETRY_SPOOL_DIR (any case) that turn the spool off.  An
# empty value counts as unset: the default folder.
DISABLED_VALUES = frozenset({"off", "none", "0", "false", "no", "disabled"})

DEFAULT_MAX_EVENTS = 1000
DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_AGE_SECONDS = 7 * 86400.0
# A claim older than this is taken back even if its pid looks alive (the pid
# may have been reused); a sender lives 30 s, so a real one is long done.
STALE_CLAIM_SECONDS = 300.0

# Drop reasons, counted in events.
DROPPED_SPOOL_FULL = "dropped_spool_full"  # an older batch evicted to respect a cap
DROPPED_SPOOL_EXPIRED = "dropped_spool_expired"  # an older batch past max_age
DROPPED_SPOOL_OVERSIZE = "dropped_spool_oversize"  # the batch alone exceeds a cap
DROPPED_SPOOL_UNTRUSTED = "dropped_spool_untrusted"  # folder not ours or writable by others
DROPPED_SPOOL_ERROR = "dropped_spool_error"  # no folder, read-only, disk full, ...

# The detached sender's own files in the folder (see .sender); clear() removes them.
LOCK_NAME = "sender.lock"
PIDFILE_NAME = "sender.pid"  # the lock where fcntl does not exist
BACKOFF_NAME = "sender.backoff"
# When a batch was last delivered (seconds since the epoch), for `status`.
LAST_DELIVERY_NAME = "last-delivery"
_SENDER_FILES = (LOCK_NAME, PIDFILE_NAME, BACKOFF_NAME, LAST_DELIVERY_NAME)

_sequence = itertools.count()  # next() is atomic under the GIL


def default_spool_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The spool folder, or None when the spool is turned off.

    ``NAT_TELEMETRY_SPOOL_DIR`` wins: one of :data:`DISABLED_VALUES` (``off``,
    ``none``, ``0``, ``false``, ``no``, ``disabled``, any case) turns the
    spool off, an empty value is ignored, anything else is the folder.  Then
    ``$XDG_STATE_HOME/nat/telemetry-spool`` (an absolute XDG_STATE_HOME only,
    as the XDG spec asks), then ``~/.local/state/nat/telemetry-spool``; None
    when there is no home folder either.
    """
    env = os.environ if environ is None else environ
    chosen = env.get(SPOOL_DIR_ENV_VAR, "").strip()
    if chosen:
        if chosen.lower() in DISABLED_VALUES:
            return None
        return os.path.abspath(os.path.expanduser(chosen))
    state = env.get("XDG_STATE_HOME", "")
    if not state or not os.path.isabs(state):
        home = env.get("HOME") or os.path.expanduser("~")
        if not home or not os.path.isabs(home):
            return None
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "nat", "telemetry-spool")


class SpoolWriteResult:
    """What :meth:`Spool.write` did.

    ``written``: the batch is in the spool (account its events as spooled).
    ``reason``: when not written, the drop reason to count the batch's events
    under.  ``evicted``: events of *other*, older batches this write removed
    (reason -> events); they may come from another process's batches.
    ``error``: a short description of a filesystem problem, for debugging.
    """

    __slots__ = ("error", "evicted", "path", "reason", "written")

    def __init__(self, written: bool, reason: str | None = None,
                 evicted: dict[str, int] | None = None, path: str | None = None,
                 error: str | None = None) -> None:
        self.written = written
        self.reason = reason
        self.evicted: dict[str, int] = evicted if evicted is not None else {}
        self.path = path
        self.error = error

    def __repr__(self) -> str:
        return (f"SpoolWriteResult(written={self.written!r}, reason={self.reason!r}, "
                f"evicted={self.evicted!r}, error={self.error!r})")


class Spool:
    """A folder of batches waiting to be sent; see the module docstring.

    Safe to share between threads and between processes.  ``clock_ns`` (wall
    clock, nanoseconds) is injectable for tests; ``fsync`` makes each write
    durable across a power loss at the cost of a disk flush.
    """

    def __init__(self, directory: str, *, max_events: int = DEFAULT_MAX_EVENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
                 fsync: bool = False, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.directory = directory
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_seconds * sf.NS)
        self.fsync = fsync
        self._clock_ns = clock_ns
        self._lock = _thread.allocate_lock()
        self._counters: dict[str, int] = {}
        self.last_error: str | None = None

    # ------------------------------------------------------------ bookkeeping

    def counters(self) -> dict[str, int]:
        """What this object did, cumulative: ``written_batches``, ``written_events``,
        the ``dropped_spool_*`` reasons (in events) and, in files,
        ``spool_corrupt`` (unreadable files deleted), ``spool_foreign`` (files
        of a newer format, left alone) and ``spool_reclaimed`` (claims taken
        back from dead or stale owners)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._counters[name] = self._counters.get(name, 0) + amount

    def _fail(self, exc: BaseException) -> str:
        self.last_error = f"{type(exc).__name__}: {exc}"
        return self.last_error

    def _check_dir(self, create: bool) -> str | None:
        """None when the folder is usable, else a drop reason.  OSError propagates."""
        try:
            info = os.stat(self.directory)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.stat(self.directory)
            if sf.POSIX and info.st_uid == os.geteuid():
                os.chmod(self.directory, 0o700)  # whatever the umask did
                info = os.stat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            self.last_error = "not a folder"
            return DROPPED_SPOOL_ERROR
        if sf.POSIX and (info.st_uid != os.geteuid() or info.st_mode & 0o022):
            self.last_error = "folder not owned by this user, or writable by others"
            return DROPPED_SPOOL_UNTRUSTED
        return None

    def available(self) -> bool:
        """The folder exists and can be trusted (creates nothing)."""
        try:
            return self._check_dir(create=False) is None
        except OSError:
            return False

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _expired(self, entry: sf.Entry, now: int) -> bool:
        return abs(now - entry.created_ns) > self.max_age_ns

    def _scan(self, now: int) -> list[sf.Entry]:
        """Ready batches, oldest first; dead or stale claims are made ready again."""
        ready: list[sf.Entry] = []
        stale_ns = STALE_CLAIM_SECONDS * sf.NS
        for name in os.listdir(self.directory):
            entry = sf.parse_name(name)
            if entry is None:
                if sf.is_tmp_name(name):
                    self._remove_abandoned_tmp(name, now)
                continue
            if entry.claimant is not None:
                if now - entry.claim_ns < stale_ns and sf.pid_alive(entry.claimant):
                    continue
                if not sf.quietly(os.rename, self._path(name), self._path(entry.ready_name)):
                    continue  # someone else took it back first
                self._count("spool_reclaimed")
                entry.name, entry.claimant = entry.ready_name, None
            ready.append(entry)
        ready.sort(key=lambda e: e.name)
        return ready

    def _remove_abandoned_tmp(self, name: str, now: int) -> None:
        # A writer that died between creating and renaming its temporary file.
        try:
            if now - os.stat(self._path(name)).st_mtime_ns > STALE_CLAIM_SECONDS * sf.NS:
                os.unlink(self._path(name))
        except OSError:
            pass

    def _drop(self, entry: sf.Entry, reason: str, tally: dict[str, int]) -> None:
        if sf.quietly(os.unlink, self._path(entry.name)):  # counted by whoever removed it
            tally[reason] = tally.get(reason, 0) + entry.events
            self._count(reason, entry.events)

    # ------------------------------------------------------------------ write

    def write(self, body: bytes, events: int, kind: str = "nemo") -> SpoolWriteResult:
        """Spool one ready-to-send body carrying ``events`` events.

        Never raises for a filesystem problem; raises ValueError only for
        arguments no caller should pass (an unknown ``kind``, ``events < 1``).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (expected one of {sorted(KINDS)})")
        if events < 1:
            raise ValueError(f"a batch carries at least one event, got {events}")
        evicted: dict[str, int] = {}
        try:
            now = self._clock_ns()
            data = sf.header(kind, events, now, len(body)) + body
            if events > self.max_events or len(data) > self.max_bytes:
                return self._refused(DROPPED_SPOOL_OVERSIZE, events, evicted, "over a cap")
            problem = self._check_dir(create=True)
            if problem is not None:
                return self._refused(problem, events, evicted, self.last_error)
            self._make_room(now, events, len(data), evicted)
            name = sf.ready_name(now, next(_sequence), kind, events, len(data))
            sf.write_atomically(self.directory, name, sf.tmp_name(next(_sequence)), data,
                                self.fsync)
        except Exception as exc:  # telemetry never breaks the caller
            return self._refused(DROPPED_SPOOL_ERROR, events, evicted, self._fail(exc))
        self._count("written_batches")
        self._count("written_events", events)
        return SpoolWriteResult(True, None, evicted, self._path(name))

    def _refused(self, reason: str, events: int, evicted: dict[str, int],
                 error: str | None) -> SpoolWriteResult:
        self._count(reason, events)
        return SpoolWriteResult(False, reason, evicted, None, error)

    def _make_room(self, now: int, events: int, size: int, evicted: dict[str, int]) -> None:
        kept: list[sf.Entry] = []
        for entry in self._scan(now):
            if self._expired(entry, now):
                self._drop(entry, DROPPED_SPOOL_EXPIRED, evicted)
            else:
                kept.append(entry)
        total_events = sum(e.events for e in kept) + events
        total_bytes = sum(e.size for e in kept) + size
        for entry in kept:  # oldest first
            if total_events <= self.max_events and total_bytes <= self.max_bytes:
                break
            self._drop(entry, DROPPED_SPOOL_FULL, evicted)
            total_events -= entry.events
            total_bytes -= entry.size

    # ------------------------------------------------------------------ claim

    def claim(self, limit: int | None = None) -> Iterator[Claim]:
        """Claim ready batches, oldest first, at most ``limit`` of them.

        Each yielded :class:`Claim` is this process's alone until it calls
        ``complete()`` or ``release()`` (or dies).  On the way, expired
        batches are deleted (counted), unreadable ones deleted (counted as
        ``spool_corrupt``), ones of a newer format left for a newer reader
        (``spool_foreign``).  Yields nothing when the folder is missing or
        untrusted.  A batch spooled after the call began may not be seen.
        """
        try:
            now = self._clock_ns()
            if self._check_dir(create=False) is not None:
                return
            ready = self._scan(now)
        except Exception as exc:
            self._fail(exc)
            return
        taken = 0
        for entry in ready:
            if limit is not None and taken >= limit:
                return
            if self._expired(entry, now):
                self._drop(entry, DROPPED_SPOOL_EXPIRED, {})
                continue
            try:
                claim = self._take(entry)
            except Exception as exc:
                self._fail(exc)
                continue
            if claim is not None:
                taken += 1
                yield claim

    def _take(self, entry: sf.Entry) -> Claim | None:
        ready = self._path(entry.ready_name)
        claimed = self._path(sf.claimed_name(entry.ready_name, self._clock_ns()))
        if not sf.quietly(os.rename, ready, claimed):
            return None  # another process claimed it first
        try:
            kind, events, created_ns, body = sf.read_record(
                claimed, max(self.max_bytes, DEFAULT_MAX_BYTES) + sf.HEADER_MAX)
            if kind != entry.kind or events != entry.events:
                raise ValueError("header does not match the file name")
        except sf.FutureVersion:
            self._count("spool_foreign")
            sf.quietly(os.rename, claimed, ready)
            return None
        except (OSError, ValueError):
            self._count("spool_corrupt")
            sf.quietly(os.unlink, claimed)
            return None
        return Claim(claimed, ready, kind, events, created_ns, body)

    # ----------------------------------------------------------- status, clear

    def _listed(self) -> list[sf.Entry]:
        """Every batch the folder's listing names, claimed ones included; none
        when it cannot be listed.  Reads only the listing; changes nothing."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return [entry for entry in map(sf.parse_name, names) if entry is not None]

    def waiting(self, kind: str, since_ns: int = 0) -> bool:
        """A batch of ``kind`` spooled at or after ``since_ns`` waits, unclaimed.
        Reads only the listing."""
        return any(entry.claimant is None and entry.kind == kind
                   and entry.created_ns >= since_ns for entry in self._listed())

    def summary(self) -> tuple[int, int, int, float | None]:
        """``(files, events, bytes, oldest_created_at)`` of every batch, claimed
        ones included; ``oldest_created_at`` is seconds since the epoch, None
        when empty.  Reads only the listing; changes nothing."""
        files = events = size = 0
        oldest: int | None = None
        for entry in self._listed():
            files += 1
            events += entry.events
            size += entry.size
            if oldest is None or entry.created_ns < oldest:
                oldest = entry.created_ns
        return files, events, size, (None if oldest is None else oldest / sf.NS)

    def clear(self) -> int:
        """Delete every batch (claimed ones too), the sender's files, and the
        folder itself when that leaves it empty; returns the number of events
        deleted.  Files not named like ours are left alone."""
        removed = 0
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        for name in names:
            entry = sf.parse_name(name)
            if entry is None and name not in _SENDER_FILES and not sf.is_tmp_name(name):
                continue
            if sf.quietly(os.unlink, self._path(name)) and entry is not None:
                removed += entry.events
        sf.quietly(os.rmdir, self.directory)
        return removed


def note_delivery(directory: str, when: float | None = None) -> None:
    """Record that a batch was delivered now; quietly does nothing on failure.

    Only into a folder that exists already: a delivery never creates the spool.
    """
    if not os.path.isdir(directory):
        return
    stamp = f"{time.time() if when is None else when:.3f}".encode("ascii")
    sf.quietly(sf.write_atomically, directory, LAST_DELIVERY_NAME,
               sf.tmp_name(next(_sequence)), stamp, False)


def last_delivery(directory: str) -> float | None:
    """When a batch was last delivered (seconds since the epoch), or None if never recorded."""
    try:
        with open(os.path.join(directory, LAST_DELIVERY_NAME), "rb") as reader:
            return float(reader.read(32))
    except (OSError, ValueError):
        return None
