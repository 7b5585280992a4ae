"""A bounded on-disk spool of batches, each for one destination.

What a process could not deliver before it exits is written here, one file per
batch, for a detached sender (:mod:`.sender`).  A batch holds the events as
recorded and who recorded them: the sender validates and encodes them with the
handler's code.  Its destination is a :func:`~.config.destination_id` (a hash:
never an endpoint's credentials in clear); a sender takes only its own.

* Files are written atomically, 0600, into a folder that is created 0700 and
  used only if it is this user's and not writable by others.  Files not named
  like ours are never touched, so a folder of the user's choosing is safe; one
  named like ours but not a regular file is removed or skipped, never waited on.
* Caps (events, bytes, age) are enforced before each write, oldest batches
  dropped first; an event that leaves other than by being sent is counted
  under a ``DROPPED_SPOOL_*`` reason.  A destination nobody sends to ages out.
* Sending starts with a claim: an atomic rename to a name carrying the
  claimant's pid, so two processes never send one file.  A claim whose owner
  died, or older than :data:`STALE_CLAIM_SECONDS`, is taken back.
* Nothing here raises for a filesystem problem: the result says what happened.

A ready file is named ``created_ns.pid.seq.random.destination.events.size.nsp``
(``size``: the whole file's), so the caps and a destination's batches are known
from a listing; a claim appends ``.claim.<pid>.<claim time ns>``.  The content:
``NATSPOOL 2 <destination> <events> <created_ns> <body bytes>``, a newline, the body.
"""

from __future__ import annotations

import _thread
import itertools
import os
import stat
import time

from . import _process, config

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from types import TracebackType
    from typing import Any, Callable

__all__ = [
    "DEFAULT_MAX_AGE_SECONDS", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_EVENTS", "DROPPED_SPOOL_ERROR",
    "DROPPED_SPOOL_EXPIRED", "DROPPED_SPOOL_FULL", "DROPPED_SPOOL_OVERSIZE",
    "DROPPED_SPOOL_UNTRUSTED", "STALE_CLAIM_SECONDS", "Claim", "Spool", "SpoolWriteResult",
    "decode_batch", "encode_batch", "open_regular",
]

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

FORMAT_VERSION = 2
MAGIC = b"NATSPOOL"
SUFFIX = "nsp"
HEADER_MAX = 128
NS = 1_000_000_000
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_POSIX = os.name == "posix"
# The sender's and status' files: "<destination>.<suffix>" (see .sender, .status).
STATE_SUFFIXES = ("lock", "pid", "backoff", "state")

_sequence = itertools.count()  # next() is atomic under the GIL


def _quietly(function: Callable[..., Any], *args: Any) -> bool:
    """Call ``function(*args)``; False instead of an OSError."""
    try:
        function(*args)
    except OSError:
        return False
    return True


def open_regular(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """:func:`.config.open_regular`, never through a symbolic link: the spool's files
    are its own."""
    return config.open_regular(path, flags | _NOFOLLOW, mode)


def read_small(path: str, limit: int = 4096) -> bytes:
    """At most ``limit`` bytes of a regular file; OSError for anything else."""
    fd = open_regular(path)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write_atomically(directory: str, name: str, data: bytes, fsync: bool = False) -> None:
    """``data`` into ``directory/name`` through a temporary file: all or nothing, 0600."""
    tmp = f".{os.getpid()}.{next(_sequence)}.{os.urandom(4).hex()}.tmp"
    tmp_path = os.path.join(directory, tmp)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o600)
    try:
        try:
            if _POSIX:
                os.fchmod(fd, 0o600)  # the umask can only remove bits; be exact anyway
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, os.path.join(directory, name))
    except BaseException:
        _quietly(os.unlink, tmp_path)
        raise


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` may still be running (True when it cannot be told)."""
    if pid == os.getpid() or not _POSIX:
        return True  # os.kill(pid, 0) would terminate it on Windows: age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, but is someone else's (EPERM)
    return True


# ------------------------------------------------------------------ batches

def encode_batch(identity: Mapping[str, Any], records: Sequence[Sequence[Any]]) -> bytes:
    """A batch's body: ``identity`` (``session_id``, ``client_version``, ``product``)
    and its records, each ``[name, schema version or None, time (seconds since the
    epoch), retry count, parameters]``."""
    from .payload import dumps

    return dumps({"identity": dict(identity), "events": [list(r) for r in records]}).encode()


def decode_batch(body: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    """``(identity, records)`` of a body; ValueError when it is not one."""
    import json

    document = json.loads(body)
    if not (isinstance(document, dict) and isinstance(document.get("identity"), dict)
            and isinstance(document.get("events"), list)):
        raise ValueError("not a spooled batch")
    return document["identity"], document["events"]


class _Entry:
    """One spool file, as its name describes it."""

    __slots__ = ("claim_ns", "claimant", "created_ns", "destination", "events", "name",
                 "ready_name", "size")

    def __init__(self, name: str) -> None:
        parts = name.split(".")
        claimed = (len(parts) == 11 and parts[8] == "claim" and parts[9].isdigit()
                   and parts[10].isdigit())
        if not (len(parts) == 8 or claimed) or parts[7] != SUFFIX or not all(
                parts[i].isdigit() for i in (0, 1, 2, 5, 6)) or not parts[4].isalnum():
            raise ValueError(name)
        self.name, self.ready_name = name, ".".join(parts[:8])
        self.created_ns, self.destination = int(parts[0]), parts[4]
        self.events, self.size = int(parts[5]), int(parts[6])
        self.claimant = int(parts[9]) if claimed else None
        self.claim_ns = int(parts[10]) if claimed else 0


def _entry(name: str) -> _Entry | None:
    try:
        return _Entry(name)
    except ValueError:
        return None


class SpoolWriteResult:
    """What :meth:`Spool.write` did: ``written`` (account its events as spooled), or
    the ``reason`` to count them under; ``evicted``, events of *other*, older
    batches it removed (reason -> events); ``error``, a filesystem problem."""

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
    """A folder of batches waiting to be sent, safe to share between threads and
    processes.  ``clock_ns``: the wall clock in nanoseconds (for tests); ``fsync``
    makes each write survive a power loss, at the cost of a disk flush."""

    def __init__(self, directory: str, *, max_events: int = DEFAULT_MAX_EVENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
                 fsync: bool = False, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.directory = directory
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_seconds * NS)
        self.fsync = fsync
        self._clock_ns = clock_ns
        self._lock = _thread.allocate_lock()
        self._counters: dict[str, int] = {}

    def counters(self) -> dict[str, int]:
        """What this object did: ``written_batches``, ``written_events``, the drop
        reasons (in events) and, in files, ``spool_corrupt`` (unreadable, deleted),
        ``spool_foreign`` (a newer format's, left) and ``spool_reclaimed`` (claims)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._counters[name] = self._counters.get(name, 0) + amount

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def problem(self, create: bool = False) -> tuple[str, str] | None:
        """``(drop reason, why in words)`` when the folder cannot be used, else None.
        A missing folder is created (0700) with ``create``, else it is a problem."""
        try:
            try:
                info = os.stat(self.directory)
            except FileNotFoundError:
                if not create:
                    return DROPPED_SPOOL_ERROR, "not created yet"
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                info = os.stat(self.directory)
                if _POSIX and info.st_uid == os.geteuid():
                    os.chmod(self.directory, 0o700)  # whatever the umask did
                    info = os.stat(self.directory)
        except OSError as exc:
            return DROPPED_SPOOL_ERROR, f"cannot be created: {exc.strerror or exc}"
        if not stat.S_ISDIR(info.st_mode):
            return DROPPED_SPOOL_ERROR, "not a folder"
        if _POSIX and info.st_uid != os.geteuid():
            return DROPPED_SPOOL_UNTRUSTED, "not owned by this user"
        if _POSIX and info.st_mode & 0o022:
            return DROPPED_SPOOL_UNTRUSTED, "writable by other users"
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return DROPPED_SPOOL_ERROR, "not writable"
        return None

    def available(self) -> bool:
        """The folder exists and can be used (creates nothing)."""
        return self.problem() is None

    def _listed(self) -> list[_Entry]:
        """Every batch the listing names, claimed ones included (none when unlistable)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return [entry for entry in map(_entry, names) if entry is not None]

    def _scan(self, now: int) -> list[_Entry]:
        """Ready batches, oldest first; dead or stale claims are made ready again."""
        ready: list[_Entry] = []
        for name in os.listdir(self.directory):
            entry = _entry(name)
            if entry is None:
                if name.startswith(".") and name.endswith(".tmp"):  # left by a dead writer?
                    try:
                        if now - os.stat(self.path(name)).st_mtime_ns > STALE_CLAIM_SECONDS * NS:
                            os.unlink(self.path(name))
                    except OSError:
                        pass
                continue
            if entry.claimant is not None:
                if now - entry.claim_ns < STALE_CLAIM_SECONDS * NS and pid_alive(entry.claimant):
                    continue
                if not _quietly(os.rename, self.path(name), self.path(entry.ready_name)):
                    continue  # someone else took it back first
                self._count("spool_reclaimed")
                entry.name, entry.claimant = entry.ready_name, None
            ready.append(entry)
        ready.sort(key=lambda e: e.name)
        return ready

    def _expired(self, entry: _Entry, now: int) -> bool:
        return abs(now - entry.created_ns) > self.max_age_ns

    def _drop(self, entry: _Entry, reason: str, tally: dict[str, int]) -> None:
        if _quietly(os.unlink, self.path(entry.name)):  # counted by whoever removed it
            tally[reason] = tally.get(reason, 0) + entry.events
            self._count(reason, entry.events)

    def write(self, body: bytes, events: int, destination: str) -> SpoolWriteResult:
        """Spool one batch (see :func:`encode_batch`) of ``events`` events for
        ``destination``; ValueError only for arguments no caller should pass."""
        if not destination.isalnum() or not destination.isascii():
            raise ValueError(f"a destination is a short name of letters and digits, "
                             f"not {destination!r}")
        if events < 1:
            raise ValueError(f"a batch carries at least one event, got {events}")
        evicted: dict[str, int] = {}
        try:
            now = self._clock_ns()
            data = b"%s %d %s %d %d %d\n" % (MAGIC, FORMAT_VERSION, destination.encode(),
                                             events, now, len(body)) + body
            if events > self.max_events or len(data) > self.max_bytes:
                return self._refused(DROPPED_SPOOL_OVERSIZE, events, evicted, "over a cap")
            problem = self.problem(create=True)
            if problem is not None:
                return self._refused(problem[0], events, evicted, problem[1])
            self._make_room(now, events, len(data), evicted)
            name = (f"{now:020d}.{os.getpid()}.{next(_sequence)}.{os.urandom(4).hex()}"
                    f".{destination}.{events}.{len(data)}.{SUFFIX}")
            write_atomically(self.directory, name, data, self.fsync)
        except Exception as exc:  # telemetry never breaks the caller
            return self._refused(DROPPED_SPOOL_ERROR, events, evicted,
                                 f"{type(exc).__name__}: {exc}")
        self._count("written_batches")
        self._count("written_events", events)
        return SpoolWriteResult(True, None, evicted, self.path(name))

    def _refused(self, reason: str, events: int, evicted: dict[str, int],
                 error: str | None) -> SpoolWriteResult:
        self._count(reason, events)
        return SpoolWriteResult(False, reason, evicted, None, error)

    def _make_room(self, now: int, events: int, size: int, evicted: dict[str, int]) -> None:
        kept: list[_Entry] = []
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

    def claim(self, destination: str, limit: int | None = None) -> Iterator[Claim]:
        """Claim ready batches for ``destination``, oldest first, at most ``limit``:
        each this process's alone until settled (or it dies).  Expired batches met on
        the way are deleted, unreadable ones too (``spool_corrupt``), a newer
        format's left alone (``spool_foreign``).  Nothing when the folder is unusable."""
        try:
            now = self._clock_ns()
            if self.problem() is not None:
                return
            ready = self._scan(now)
        except Exception:  # the batches stay where they are, for a later claim
            _process.debug("telemetry spool could not be listed", exc_info=True)
            return
        taken = 0
        for entry in ready:
            if limit is not None and taken >= limit:
                return
            if self._expired(entry, now):
                self._drop(entry, DROPPED_SPOOL_EXPIRED, {})
            elif entry.destination == destination:
                claim = self._take(entry)
                if claim is not None:
                    taken += 1
                    yield claim

    def _take(self, entry: _Entry) -> Claim | None:
        ready = self.path(entry.ready_name)
        claimed = self.path(f"{entry.ready_name}.claim.{os.getpid()}.{self._clock_ns()}")
        if not _quietly(os.rename, ready, claimed):
            return None  # another process claimed it first
        try:
            body = self._read(claimed, entry)
        except _FutureVersion:
            self._count("spool_foreign")
            _quietly(os.rename, claimed, ready)
            return None
        except (OSError, ValueError):
            self._count("spool_corrupt")
            _quietly(os.unlink, claimed) or _quietly(os.rmdir, claimed)
            return None
        return Claim(claimed, ready, entry.destination, entry.events, entry.created_ns, body)

    def _read(self, path: str, entry: _Entry) -> bytes:
        """The body of a batch file: a regular file of ours, whole, matching its name."""
        with open(open_regular(path), "rb") as file:
            info = os.fstat(file.fileno())
            if _POSIX and info.st_uid != os.geteuid():
                raise ValueError("not written by this user")
            if info.st_size > max(self.max_bytes, DEFAULT_MAX_BYTES) + HEADER_MAX:
                raise ValueError("larger than any batch")
            data = file.read(info.st_size + 1)  # one byte more tells a file that grew
        end = data.find(b"\n", 0, HEADER_MAX)
        fields = data[:end].split(b" ") if end > 0 else []
        if len(fields) < 2 or fields[0] != MAGIC or not fields[1].isdigit():
            raise ValueError("not a spool file")
        if int(fields[1]) > FORMAT_VERSION:
            raise _FutureVersion(fields[1].decode())
        body = data[end + 1:]
        if (int(fields[1]) != FORMAT_VERSION or len(fields) != 6
                or fields[2].decode("ascii", "replace") != entry.destination
                or fields[3:] != [b"%d" % entry.events, fields[4], b"%d" % len(body)]
                or not fields[4].isdigit()):
            raise ValueError("bad header or truncated body")
        return body

    def waiting(self, destination: str, since_ns: int = 0) -> bool:
        """A batch for ``destination`` spooled at or after ``since_ns`` waits, unclaimed."""
        return any(entry.claimant is None and entry.destination == destination
                   and entry.created_ns >= since_ns for entry in self._listed())

    def summary(self) -> dict[str, tuple[int, int, int, float | None]]:
        """Per destination: ``(files, events, bytes, oldest_created_at)`` of every batch,
        claimed ones included (seconds since the epoch); reads only the listing."""
        found: dict[str, tuple[int, int, int, float | None]] = {}
        for entry in self._listed():
            files, events, size, oldest = found.get(entry.destination, (0, 0, 0, None))
            created = entry.created_ns / NS
            found[entry.destination] = (files + 1, events + entry.events, size + entry.size,
                                        created if oldest is None else min(oldest, created))
        return found

    def note(self, destination: str, endpoint: str, problem: str | None = None) -> None:
        """Record for ``status`` a delivery to ``destination`` now, or a failure's
        ``problem`` (``refused``, ``tls``, ``http 401``...).  ``endpoint`` must be
        redacted already.  Only into a folder that exists; never fails."""
        if not os.path.isdir(self.directory):
            return
        state = self.states().get(destination, {})
        key = "failed" if problem else "delivered"
        state.update({"endpoint": endpoint, f"{key}_at": time.time()})
        if problem:
            state["failure"] = problem
        from .payload import dumps

        _quietly(write_atomically, self.directory, f"{destination}.state",
                 dumps(state).encode())

    def states(self) -> dict[str, dict[str, Any]]:
        """Per destination, what :meth:`note` recorded: ``endpoint``, ``delivered_at``,
        ``failed_at`` (seconds since the epoch), ``failure``; unreadable ones left out."""
        import json

        found: dict[str, dict[str, Any]] = {}
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(".state")]
        except OSError:
            return found
        for name in names:
            try:
                state = json.loads(read_small(self.path(name)))
            except (OSError, ValueError):
                continue
            if isinstance(state, dict):
                found[name[:-len(".state")]] = {
                    key: value for key, value in state.items()
                    if ((key == "endpoint" or key == "failure") and isinstance(value, str))
                    or (key.endswith("_at") and type(value) in (int, float))}
        return found

    def clear(self) -> int:
        """Delete every batch (claimed ones too), the senders' files, and the folder if
        that empties it; returns the events deleted.  Others' files are left alone."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        removed = 0
        for name in names:
            entry = _entry(name)
            ours = entry is not None or (name.startswith(".") and name.endswith(".tmp")) or (
                name.rpartition(".")[2] in STATE_SUFFIXES and name.partition(".")[0].isalnum())
            if ours and (_quietly(os.unlink, self.path(name))
                         or _quietly(os.rmdir, self.path(name))) and entry is not None:
                removed += entry.events
        _quietly(os.rmdir, self.directory)
        return removed


class _FutureVersion(ValueError):
    """A header from a newer format: leave the file for a newer reader."""


class Claim:
    """A batch this process took from the spool: send ``body``, then :meth:`complete`
    it (delivered, or never will be) or :meth:`release` it (for later); one not settled
    by the end of a ``with`` block is released.  ``created_at``: when it was spooled."""

    __slots__ = ("_path", "_ready_path", "_settled", "body", "created_at", "destination",
                 "events")

    def __init__(self, path: str, ready_path: str, destination: str, events: int,
                 created_ns: int, body: bytes) -> None:
        self._path = path
        self._ready_path = ready_path
        self._settled = False
        self.body = body
        self.destination = destination
        self.events = events
        self.created_at = created_ns / NS

    @property
    def settled(self) -> bool:
        """complete() or release() was called."""
        return self._settled

    def complete(self) -> bool:
        """Delete the batch.  False if it was gone already (e.g. the spool was cleared)."""
        return self._settle(os.unlink, self._path)

    def release(self) -> bool:
        """Put the batch back for a later sender.  False if it is gone."""
        return self._settle(os.rename, self._path, self._ready_path)

    def _settle(self, function: Callable[..., Any], *args: Any) -> bool:
        settled, self._settled = self._settled, True
        return not settled and _quietly(function, *args)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Claim(destination={self.destination!r}, events={self.events})"
