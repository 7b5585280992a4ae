"""The spool's files: names, header, reading, and the claim on one file.

A ready file is named ``created_ns.pid.seq.random.kind.events.size.nsp``
(``created_ns`` zero-padded to 20 digits, so names sort by creation time;
``size`` is the whole file's, header included); a claimed one appends
``.claim.<claimant pid>.<claim time ns>``.  Its content is a one-line ASCII
header and the body::

    NATSPOOL <version> <kind> <events> <created_ns> <body bytes>\\n<body>

The name lets the caps be enforced from a directory listing alone; the
header lets a reader check that the file is whole and really ours.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Callable

FORMAT_VERSION = 1
KINDS = frozenset({"nemo", "otlp"})
MAGIC = b"NATSPOOL"
SUFFIX = "nsp"
CLAIM = "claim"
TMP_SUFFIX = ".tmp"
HEADER_MAX = 128
NS = 1_000_000_000
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BINARY = getattr(os, "O_BINARY", 0)
POSIX = os.name == "posix"


def quietly(function: Callable[..., Any], *args: Any) -> bool:
    """Call ``function(*args)``; False instead of an OSError."""
    try:
        function(*args)
    except OSError:
        return False
    return True


class Entry:
    """One spool file, as its name describes it."""

    __slots__ = ("claim_ns", "claimant", "created_ns", "events", "kind", "name",
                 "ready_name", "size")

    def __init__(self, name: str, ready_name: str, created_ns: int, kind: str,
                 events: int, size: int, claimant: int | None, claim_ns: int) -> None:
        self.name = name
        self.ready_name = ready_name
        self.created_ns = created_ns
        self.kind = kind
        self.events = events
        self.size = size
        self.claimant = claimant
        self.claim_ns = claim_ns


def ready_name(created_ns: int, seq: int, kind: str, events: int, size: int) -> str:
    return (f"{created_ns:020d}.{os.getpid()}.{seq}.{os.urandom(4).hex()}"
            f".{kind}.{events}.{size}.{SUFFIX}")


def claimed_name(ready: str, now_ns: int) -> str:
    return f"{ready}.{CLAIM}.{os.getpid()}.{now_ns}"


def tmp_name(seq: int) -> str:
    return f".{os.getpid()}.{seq}.{os.urandom(4).hex()}{TMP_SUFFIX}"


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def parse_name(name: str) -> Entry | None:
    """The entry a ready or claimed name describes; None for any other name."""
    parts = name.split(".")
    if len(parts) == 8:
        claimant, claim_ns = None, 0
    elif len(parts) == 11 and parts[8] == CLAIM and parts[9].isdigit() and parts[10].isdigit():
        claimant, claim_ns = int(parts[9]), int(parts[10])
    else:
        return None
    created, pid, seq, _rand, kind, events, size, suffix = parts[:8]
    if (suffix != SUFFIX or not kind.isalnum() or not created.isdigit() or not pid.isdigit()
            or not seq.isdigit() or not events.isdigit() or not size.isdigit()):
        return None
    return Entry(name, ".".join(parts[:8]), int(created), kind, int(events), int(size),
                 claimant, claim_ns)


def header(kind: str, events: int, created_ns: int, body_len: int) -> bytes:
    return b"%s %d %s %d %d %d\n" % (MAGIC, FORMAT_VERSION, kind.encode("ascii"), events,
                                     created_ns, body_len)


class FutureVersion(ValueError):
    """A header from a newer format: leave the file for a newer reader."""


def parse_record(data: bytes) -> tuple[str, int, int, bytes]:
    """``(kind, events, created_ns, body)`` of a spool file's bytes; ValueError if malformed."""
    end = data.find(b"\n", 0, HEADER_MAX)
    if end < 0:
        raise ValueError("no header")
    fields = data[:end].split(b" ")
    if len(fields) < 2 or fields[0] != MAGIC or not fields[1].isdigit():
        raise ValueError("not a spool file")
    version = int(fields[1])
    if version > FORMAT_VERSION:
        raise FutureVersion(f"format version {version}")
    if version != FORMAT_VERSION or len(fields) != 6 or not all(
            f.isdigit() for f in fields[3:]):
        raise ValueError("bad header")
    kind = fields[2].decode("ascii", "replace")
    events, created_ns, body_len = (int(f) for f in fields[3:])
    body = data[end + 1:]
    if kind not in KINDS or events < 1 or len(body) != body_len:
        raise ValueError("bad header or truncated body")
    return kind, events, created_ns, body


def read_record(path: str, max_size: int) -> tuple[str, int, int, bytes]:
    """Read and parse one file: a regular file of ours, at most ``max_size`` bytes.

    Raises OSError or ValueError (:class:`FutureVersion` for a newer format).
    """
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | BINARY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if POSIX and info.st_uid != os.geteuid():
            raise ValueError("not written by this user")
        if info.st_size > max_size:
            raise ValueError("larger than any batch")
        chunks = []
        remaining = info.st_size + 1  # one byte more tells a file that grew
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return parse_record(b"".join(chunks))


def write_atomically(directory: str, name: str, tmp: str, data: bytes, fsync: bool) -> None:
    """``data`` into ``directory/name`` via ``directory/tmp``: all or nothing, mode 0600."""
    tmp_path = os.path.join(directory, tmp)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | BINARY, 0o600)
    try:
        try:
            if POSIX:
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
        quietly(os.unlink, tmp_path)
        raise


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` may still be running (True when it cannot be told)."""
    if pid == os.getpid():
        return True
    if not POSIX:
        return True  # os.kill(pid, 0) would terminate it on Windows: age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but is someone else's (EPERM)
    return True


class Claim:
    """A batch this process took from the spool.

    Send ``body`` (``kind`` says how: ``"nemo"`` or ``"otlp"``), then call
    :meth:`complete` (delivered, or the endpoint will never take it) or
    :meth:`release` (try again later).  Used as a context manager, a claim
    not settled by the end of the block is released.  ``created_at`` is when
    the batch was spooled, in seconds since the epoch.
    """

    __slots__ = ("_path", "_ready_path", "_settled", "body", "created_at", "events", "kind")

    def __init__(self, path: str, ready_path: str, kind: str, events: int,
                 created_ns: int, body: bytes) -> None:
        self._path = path
        self._ready_path = ready_path
        self._settled = False
        self.body = body
        self.kind = kind
        self.events = events
        self.created_at = created_ns / NS

    @property
    def settled(self) -> bool:
        """complete() or release() was called."""
        return self._settled

    def complete(self) -> bool:
        """Delete the batch.  False if it was gone already (e.g. the spool was cleared)."""
        if self._settled:
            return False
        self._settled = True
        return quietly(os.unlink, self._path)

    def release(self) -> bool:
        """Put the batch back for a later sender.  False if it is gone."""
        if self._settled:
            return False
        self._settled = True
        return quietly(os.rename, self._path, self._ready_path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Claim(kind={self.kind!r}, events={self.events}, bytes={len(self.body)})"
