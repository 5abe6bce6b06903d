"""``FileOplog``: the embedded, durable oplog, a directory of segment files.

One writer process at a time holds ``writer.lock`` (an OS file lock taken at
the first write, so consumers can open the oplog freely); any number of
readers tail the files. See ``rxcs.oplog.segments`` for the file format and
docs/oplog.md for the whole design: durability modes, recovery, retention
and wake-ups.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import os
import select
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal, final

import msgpack

from rxcs.errors import (
    ChangeStreamHistoryLost,
    OplogClosedError,
    OplogCorruptedError,
    OplogLockedError,
    RxcsError,
)
from rxcs.events import ClusterTime
from rxcs.log import log
from rxcs.oplog.base import Clock, Oplog, OplogCursor, Sift
from rxcs.oplog.codec import UNPACK_OPTIONS, EntryDecodeError, encode_entry, entry_from_record
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.segments import (
    FRAME_HEADER,
    HEADER,
    INDEX_INTERVAL,
    BadFrame,
    SegmentIndex,
    check_header,
    encode_frame,
    encode_header,
    frame_at,
    index_path,
    list_segments,
    segment_path,
    valid_frame_after,
)

try:  # inotify wakes readers in other processes at once; elsewhere they poll adaptively
    import inotify_simple
except ImportError:  # pragma: no cover - not Linux
    inotify_simple = None

__all__ = ["Durability", "FileOplog", "FileOplogInfo", "FileOplogStatistics"]


Durability = Literal["fsync", "group", "none"]
META_NAME: Final = "oplog.meta"
LOCK_NAME: Final = "writer.lock"
FORMAT: Final = "rxcs-oplog"
FORMAT_VERSION: Final = 1
GROUP_COMMIT_INTERVAL: Final = 0.005
READ_CHUNK: Final = 256 * 1024
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024


@final
@dataclass(frozen=True, slots=True)
class FileOplogInfo:
    """What ``rxcs oplog info`` shows."""

    path: str
    oplog_id: str
    first_op_id: int
    last_op_id: int
    entries: int
    bytes: int
    segments: int
    durability: str
    segment_bytes: int
    retain_bytes: int | None
    retain_entries: int | None
    retain_age_seconds: float | None


@final
@dataclass(frozen=True, slots=True)
class FileOplogStatistics:
    """Counters of the work this FileOplog instance did."""

    frames_decoded: int
    bytes_read: int
    fsyncs: int
    segments_rolled: int


@final
class FileOplog(Oplog):
    """A durable oplog in a directory: segment files of CRC-checked msgpack frames.

    ``durability``: ``"fsync"`` (each commit is on disk before append
    returns), ``"group"`` (default: every append is written to the file
    before it returns, so a killed process loses nothing, and fsynced within
    a few milliseconds, one fsync for many appends) or ``"none"`` (the OS
    decides). ``readonly=True`` refuses writes. Retention: ``retain_bytes``,
    ``retain_entries``, ``retain_age`` (seconds or timedelta), applied by the
    writer whenever it starts a new segment; ``trim()`` on demand.

    Examples:
        >>> import tempfile, rxcs
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with rxcs.open_oplog(tmp + "/oplog") as oplog:
        ...         oplog.insert("shop", "users", {"_id": 1})
        ...     with rxcs.open_oplog(tmp + "/oplog", readonly=True) as oplog:
        ...         oplog.last_op_id
        1
        1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        durability: Durability = "group",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        retain_bytes: int | None = None,
        retain_entries: int | None = None,
        retain_age: float | timedelta | None = None,
    ) -> None:
        if durability not in ("fsync", "group", "none"):
            raise ValueError(f"durability must be 'fsync', 'group' or 'none', not {durability!r}")
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be an int of at least 4096, not {segment_bytes!r}")
        for name, value in (("retain_bytes", retain_bytes), ("retain_entries", retain_entries)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        age = retain_age.total_seconds() if isinstance(retain_age, timedelta) else retain_age
        if age is not None and not age > 0:
            raise ValueError(f"retain_age must be positive, not {retain_age!r}")
        self._dir = Path(path)
        self._readonly = readonly
        self._durability: Durability = durability
        self._segment_bytes = segment_bytes
        self._retain_bytes = retain_bytes
        self._retain_entries = retain_entries
        self._retain_age = age
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)
        self._closed = False
        self._oplog_id = self._open_meta()
        self._id_bytes = self._oplog_id.bytes
        # Writer state, set when the writer lock is taken.
        self._lock_fd: int | None = None
        self._write_fd: int | None = None
        self._active: int | None = None  # first op_id of the segment being written
        self._active_size = 0
        self._active_index: SegmentIndex | None = None
        self._clock: Clock | None = None
        self._dirty = False
        self._flusher: threading.Thread | None = None
        self._flush_wanted = threading.Event()
        # What every instance knows of the log; readers refresh it from the files.
        self._segments = list_segments(self._dir)
        self._last_op_id = 0
        self._tail_offset = 0  # where the reader's tail scan stopped in the last segment
        self._tail_segment: int | None = None
        self._indexes: dict[int, SegmentIndex] = {}
        # Wake-ups for waiters.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._watcher: Any = None
        self._fs_waiters = 0
        self._idle_polls = 0
        self._polled_op_id = -1
        # Counters.
        self._frames_decoded = 0
        self._bytes_read = 0
        self._fsyncs = 0
        self._rolled = 0
        self._refresh_tail()
        log.info("oplog opened", path=str(self._dir), oplog_id=str(self._oplog_id), last_op_id=self._last_op_id)

    # -- opening ---------------------------------------------------------------------

    def _open_meta(self) -> uuid.UUID:
        meta = self._dir / META_NAME
        if not meta.exists():
            if self._readonly:
                raise RxcsError(f"{self._dir}: no oplog here (no {META_NAME})")
            self._dir.mkdir(parents=True, exist_ok=True)
            stray = [name for name in os.listdir(self._dir) if not name.startswith(".")]
            if stray:
                raise RxcsError(f"{self._dir}: not an rxcs oplog (it holds {sorted(stray)[:3]} but no {META_NAME})")
            document = {"format": FORMAT, "version": FORMAT_VERSION, "oplog_id": str(uuid.uuid4())}
            temporary = self._dir / f".{META_NAME}.{os.getpid()}.{threading.get_ident()}"
            temporary.write_text(json.dumps(document))
            try:
                os.link(temporary, meta)  # atomic create-if-absent: two creators agree on one identity
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
            _fsync_directory(self._dir)
        try:
            document = json.loads(meta.read_text())
            if document.get("format") != FORMAT:
                raise ValueError("not an rxcs oplog")
            if document.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {document.get('version')}, this rxcs reads {FORMAT_VERSION}")
            return uuid.UUID(document["oplog_id"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OplogCorruptedError(f"bad metadata ({exc})", path=str(meta), offset=0) from None

    # -- the contract ----------------------------------------------------------------

    @property
    def oplog_id(self) -> uuid.UUID:
        return self._oplog_id

    @property
    def path(self) -> Path:
        """The oplog's directory."""
        return self._dir

    @property
    def first_op_id(self) -> int:
        with self._lock:
            if self._write_fd is None:
                self._segments = list_segments(self._dir)
            if not self._segments:
                return self._last_op_id + 1
            return self._segments[0]

    @property
    def last_op_id(self) -> int:
        with self._lock:
            if self._write_fd is None and not self._closed:
                self._refresh_tail()
            return self._last_op_id

    @property
    def closed(self) -> bool:
        return self._closed

    def append_many(self, changes: Iterable[Change]) -> list[int]:
        changes = list(changes)
        for index, change in enumerate(changes):
            if not isinstance(change, Change):
                raise TypeError(f"changes[{index}]: expected a Change, got {type(change).__name__}")
        if not changes:
            return []
        with self._lock:
            self._become_writer()
            assert self._clock is not None
            first = self._last_op_id + 1
            frames = []
            for offset, change in enumerate(changes):
                cluster_time, wall_ms = self._clock.tick()
                frames.append(encode_frame(first + offset, encode_entry(first + offset, cluster_time, wall_ms, change)))
            # Everything encoded before anything is written: a bad change appends nothing.
            self._write_frames(first, frames)
            self._last_op_id = first + len(frames) - 1
            self._appended.notify_all()
        self._poke()
        return list(range(first, first + len(frames)))

    def sync(self) -> None:
        """Sync the segment being written now (earlier segments were synced when the writer left them)."""
        with self._lock:
            if self._write_fd is None or self._durability == "fsync":
                return
            # Even when not dirty: the group flusher may have taken the flag and not finished its sync yet.
            self._dirty = False
            fd = os.dup(self._write_fd)
        try:
            os.fdatasync(fd)  # outside the lock, as the group flusher does
            self._fsyncs += 1
        finally:
            os.close(fd)

    def trim(self, before_op_id: int) -> int:
        with self._lock:
            self._become_writer()
            return self._trim_locked(before_op_id, reason="trim")

    def cursor(self, after: int) -> OplogCursor:
        if after < 0:
            raise ValueError(f"after must be >= 0, not {after}")
        self._check_open()
        with self._lock:
            if self._write_fd is None:
                self._refresh_tail()
            first = self.first_op_id
            if after + 1 < first and after < self._last_op_id + 1:
                raise ChangeStreamHistoryLost(f"op_id {after + 1} was trimmed; the oldest retained is {first}")
        return _FileCursor(self, after)

    def wait(self, after: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                return False
            if self.last_op_id > after:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._write_fd is not None:  # the writer: nobody else can append
                with self._lock:
                    if self._last_op_id > after or self._closed:
                        continue
                    self._appended.wait(remaining)
                    return self._last_op_id > after
            if not self._wait_for_files(remaining):
                return self.last_op_id > after

    def wake_waiters(self) -> None:
        with self._lock:
            self._appended.notify_all()
        self._poke()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._appended.notify_all()
        self._poke()
        flusher = self._flusher
        if flusher is not None:
            self._flush_wanted.set()
            flusher.join()
        with self._lock:
            # Waiters in select() were poked awake; their descriptors close once they are out.
            deadline = time.monotonic() + 5
            while self._fs_waiters and time.monotonic() < deadline:
                self._poke()
                self._appended.wait(0.05)
            if self._write_fd is not None:
                if self._durability != "none" or self._dirty:
                    self._fsync()
                os.close(self._write_fd)
                self._write_fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the writer lock
                self._lock_fd = None
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
        log.info("oplog closed", path=str(self._dir))

    # -- writer ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise OplogClosedError(f"{self._dir}: the oplog is closed")

    def _become_writer(self) -> None:
        self._check_open()
        if self._write_fd is not None:
            return
        if self._readonly:
            raise RxcsError(f"{self._dir}: opened readonly; writes are refused")
        lock_fd = os.open(self._dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(lock_fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = int(holder) if holder.isdigit() else None
            raise OplogLockedError(
                f"{self._dir}: another writer holds the oplog (pid {pid if pid is not None else 'unknown'})",
                pid=pid,
            ) from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
        self._lock_fd = lock_fd
        try:
            self._recover()
        except BaseException:
            os.close(lock_fd)
            self._lock_fd = None
            raise

    def _recover(self) -> None:
        """Open the last segment for appending, cutting a torn tail, refusing real damage."""
        self._segments = list_segments(self._dir)
        if not self._segments:
            self._start_segment(1)
            self._clock = Clock()
            self._last_op_id = 0
            return
        first = self._segments[-1]
        path = segment_path(self._dir, first)
        data = path.read_bytes()
        problem = check_header(data, self._id_bytes, first)
        if problem is not None:
            if len(data) < HEADER.size and len(self._segments) > 1:
                # A crash while starting this segment: nothing was ever written to it.
                path.unlink()
                index_path(self._dir, first).unlink(missing_ok=True)
                self._segments.pop()
                log.warning("oplog recovered", path=str(path), truncated_bytes=len(data), reason=problem)
                self._recover()
                return
            raise OplogCorruptedError(problem, path=str(path), offset=0)
        index = SegmentIndex.load(index_path(self._dir, first), max_offset=len(data))
        view = memoryview(data)
        start_op, start_offset = index.start_for(2**64) or (first, HEADER.size)
        end, last, last_entry = self._scan_segment(view, path, start_offset, start_op, first, index)
        if end < len(data):
            log.warning("oplog recovered", path=str(path), truncated_bytes=len(data) - end, at_offset=end)
            with open(path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
            index = SegmentIndex.load(index_path(self._dir, first), max_offset=end)
            index.rewrite()
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._active = first
        self._active_size = end
        self._active_index = index
        self._indexes[first] = index
        self._last_op_id = last
        self._tail_segment, self._tail_offset = first, end
        previous = last_entry.cluster_time if last_entry is not None else self._previous_cluster_time(first)
        self._clock = Clock(previous)

    def _scan_segment(
        self, view: memoryview, path: Path, offset: int, op_id: int, first: int, index: SegmentIndex
    ) -> tuple[int, int, OplogEntry | None]:
        """Walk frames from a known-good point; return (end of good data, last op_id, last entry)."""
        position, expected = offset, op_id
        last_entry: OplogEntry | None = None
        while True:
            try:
                frame = frame_at(view, position, 0, expected)
            except BadFrame as bad:
                if valid_frame_after(view, bad.offset) is not None:
                    log.error("oplog corrupt", path=str(path), offset=bad.offset, reason=bad.reason)
                    raise OplogCorruptedError(bad.reason, path=str(path), offset=bad.offset) from None
                frame = None
            if frame is None:
                if position < len(view) and valid_frame_after(view, position) is not None:
                    raise OplogCorruptedError("frame runs past the end of data", path=str(path), offset=position)
                return position, expected - 1, last_entry
            last_entry = self._decode(frame.payload, path, frame.offset, frame.op_id)
            position, expected = frame.end, expected + 1

    def _previous_cluster_time(self, first: int) -> ClusterTime:
        """The cluster time of the entry before segment ``first`` (its predecessor's last)."""
        if first <= 1 or len(self._segments) < 2:
            return ClusterTime(0, 0)
        with self.cursor(first - 2) as cursor:
            entries = cursor.read(1)
        return entries[0].cluster_time if entries else ClusterTime(0, 0)

    def _start_segment(self, first: int) -> None:
        path = segment_path(self._dir, first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, encode_header(self._id_bytes, first))
        os.fsync(fd)
        _fsync_directory(self._dir)
        if self._write_fd is not None:
            os.close(self._write_fd)
        self._write_fd = fd
        self._active = first
        self._active_size = HEADER.size
        self._active_index = SegmentIndex(index_path(self._dir, first))
        self._indexes[first] = self._active_index
        bisect.insort(self._segments, first)
        self._tail_segment, self._tail_offset = first, HEADER.size

    def _write_frames(self, first: int, frames: list[bytes]) -> None:
        assert self._active_index is not None
        if self._active_size + sum(map(len, frames)) > self._segment_bytes and self._active_size > HEADER.size:
            self._roll(first)
        index = self._active_index
        position = self._active_size
        index_bytes = []
        for offset, frame in enumerate(frames):
            if position - index.last_offset >= INDEX_INTERVAL or not index.op_ids:
                index_bytes.append(index.add(first + offset, position))
            position += len(frame)
        assert self._write_fd is not None
        _write_all(self._write_fd, b"".join(frames))
        self._active_size = position
        self._tail_offset = position
        if index_bytes:
            with open(index.path, "ab") as handle:
                handle.write(b"".join(index_bytes))
        self._after_write()

    def _after_write(self) -> None:
        if self._durability == "fsync":
            self._fsync()
        else:
            self._dirty = True  # a segment left dirty is synced when the writer rolls past it, or closes
        if self._durability == "group":
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="rxcs-oplog-flush", daemon=True)
                self._flusher.start()
            self._flush_wanted.set()

    def _flush_loop(self) -> None:
        while True:
            self._flush_wanted.wait()
            time.sleep(GROUP_COMMIT_INTERVAL)  # gather the appends of the next few ms into one fsync
            with self._lock:
                if self._closed:  # close() fsyncs itself
                    return
                self._flush_wanted.clear()
                if not self._dirty or self._write_fd is None:
                    continue
                self._dirty = False
                fd = os.dup(self._write_fd)  # the writer may roll to a new segment meanwhile
            try:
                os.fdatasync(fd)  # outside the lock: appends go on while the disk works
                self._fsyncs += 1
            finally:
                os.close(fd)

    def _fsync(self) -> None:
        assert self._write_fd is not None
        os.fdatasync(self._write_fd)
        self._dirty = False
        self._fsyncs += 1

    def _roll(self, first: int) -> None:
        if self._dirty and self._write_fd is not None:
            self._fsync()
        self._start_segment(first)
        self._rolled += 1
        log.info("oplog segment started", path=str(self._dir), first_op_id=first)
        self._apply_retention()

    def _apply_retention(self) -> None:
        keep_from = 0
        if self._retain_entries is not None:
            keep_from = max(keep_from, self._last_op_id + 1 - self._retain_entries)
        if self._retain_bytes is not None:
            keep_from = max(keep_from, self._op_id_keeping_bytes(self._retain_bytes))
        if self._retain_age is not None:
            keep_from = max(keep_from, self._op_id_younger_than(self._retain_age))
        if keep_from > (self._segments[0] if self._segments else 0):
            self._trim_locked(keep_from, reason="retention")

    def _op_id_keeping_bytes(self, keep: int) -> int:
        total = 0
        for first in reversed(self._segments):
            total += os.path.getsize(segment_path(self._dir, first))
            if total > keep:
                following = self._segments.index(first) + 1
                return self._segments[following] if following < len(self._segments) else first
        return 0

    def op_id_keeping_bytes(self, keep: int) -> int:
        """The op_id to trim before so that at most ``keep`` bytes of segments remain."""
        with self._lock:
            self._segments = list_segments(self._dir)
            return self._op_id_keeping_bytes(keep)

    def _op_id_younger_than(self, seconds: float) -> int:
        horizon = time.time() - seconds
        for position, first in enumerate(self._segments[:-1]):
            following = self._segments[position + 1]
            newest = self.read(following - 2, 1)
            if newest and newest[0].wall_time_ms / 1000 >= horizon:
                return first
        return self._segments[-1] if self._segments else 0

    def _trim_locked(self, before_op_id: int, *, reason: str) -> int:
        dropped = 0
        while len(self._segments) > 1 and self._segments[1] <= before_op_id:
            first = self._segments.pop(0)
            dropped += self._segments[0] - first
            segment_path(self._dir, first).unlink(missing_ok=True)
            index_path(self._dir, first).unlink(missing_ok=True)
            self._indexes.pop(first, None)
        if dropped:
            _fsync_directory(self._dir)
            log.info("oplog trimmed", path=str(self._dir), entries=dropped, reason=reason,
                     first_op_id=self._segments[0])
        return dropped

    # -- readers -----------------------------------------------------------------------------

    def _decode(self, payload: memoryview, path: Path, offset: int, op_id: int) -> OplogEntry:
        self._frames_decoded += 1
        try:
            record = msgpack.unpackb(payload, **UNPACK_OPTIONS)
            entry = entry_from_record(record)
        except (ValueError, TypeError, EntryDecodeError, msgpack.UnpackException) as exc:
            raise OplogCorruptedError(f"frame payload is not an entry ({exc})", path=str(path), offset=offset) from None
        if entry.op_id != op_id:
            raise OplogCorruptedError(
                f"frame header says op_id {op_id}, its entry says {entry.op_id}", path=str(path), offset=offset
            )
        return entry

    def _refresh_tail(self) -> None:
        """Follow the writer (another process) to the end of the log; caller holds the lock."""
        segments = self._segments = list_segments(self._dir)
        if not segments:
            return
        if self._tail_segment is None or self._tail_segment not in segments:
            self._tail_segment = segments[-1]
            index = SegmentIndex.load(index_path(self._dir, self._tail_segment))
            start = index.start_for(2**64)
            self._tail_offset = start[1] if start else HEADER.size
            self._last_op_id = (start[0] if start else self._tail_segment) - 1
        while True:
            first = self._tail_segment
            path = segment_path(self._dir, first)
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                self._tail_segment = None
                return
            if size > self._tail_offset:
                self._scan_tail(path, size)
            following = bisect.bisect_right(segments, first)
            if following >= len(segments):
                return
            if os.path.getsize(path) > self._tail_offset:
                continue  # the writer finished this segment after our scan: read the rest first
            self._tail_segment = segments[following]
            self._tail_offset = HEADER.size
            self._last_op_id = segments[following] - 1

    def _scan_tail(self, path: Path, size: int) -> None:
        with open(path, "rb", buffering=0) as handle:
            position = self._tail_offset
            while position < size:
                data = os.pread(handle.fileno(), min(READ_CHUNK, size - position), position)
                self._bytes_read += len(data)
                view = memoryview(data)
                cursor = 0
                while True:
                    try:
                        frame = frame_at(view, cursor, position, self._last_op_id + 1)
                    except BadFrame:
                        frame = None  # being written, or damage: cursors report damage, the tail waits
                    if frame is None:
                        break
                    cursor = frame.end - position
                    self._last_op_id = frame.op_id
                if cursor == 0:
                    break
                position += cursor
            self._tail_offset = position

    def _segment_for(self, op_id: int) -> int | None:
        segments = self._segments
        position = bisect.bisect_right(segments, op_id) - 1
        return segments[position] if position >= 0 else None

    def _index(self, first: int) -> SegmentIndex:
        index = self._indexes.get(first)
        if index is None:
            index = SegmentIndex.load(index_path(self._dir, first))
        elif first == self._segments[-1] and self._write_fd is None:
            index = index.refreshed()  # a reader: the writer may have indexed more of this segment
        self._indexes[first] = index
        return index

    # -- waiting ----------------------------------------------------------------------------

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"!")

    def _wait_for_files(self, timeout: float | None) -> bool:
        """Wait for a change in the directory or a wake-up.

        True when the caller should look at the log again; False when the
        time ran out quietly or ``wake_waiters()`` asked the waiter to return.
        With inotify the wait is one select(); without it, an adaptive poll
        (0.5 ms doubling to 50 ms while nothing changes).
        """
        watcher = self._file_watcher()
        watched = [self._wake_read]
        if watcher is not None:
            watched.append(watcher.fileno())
            wait = timeout
        else:
            wait = min(0.05, 0.0005 * 2 ** min(self._idle_polls, 7))
            wait = wait if timeout is None else min(wait, timeout)
        with self._lock:
            if self._closed:
                return False
            self._fs_waiters += 1
        try:
            ready, _, _ = select.select(watched, [], [], wait)
            woken = self._wake_read in ready
            if woken:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
            if watcher is not None and watcher.fileno() in ready:
                watcher.read(timeout=0)
        finally:
            with self._lock:
                self._fs_waiters -= 1
                self._appended.notify_all()
        if woken:
            return False
        if watcher is None:
            self._idle_polls = 0 if self._last_op_id != self._polled_op_id else self._idle_polls + 1
            self._polled_op_id = self._last_op_id
            return True
        return bool(ready)

    def _file_watcher(self) -> Any:
        if inotify_simple is None:
            return None
        with self._lock:
            if self._watcher is None and not self._closed:
                watcher = inotify_simple.INotify()
                events = inotify_simple.flags
                watcher.add_watch(self._dir, events.MODIFY | events.CREATE | events.MOVED_TO | events.DELETE)
                self._watcher = watcher
            return self._watcher

    # -- tools ------------------------------------------------------------------------------

    def statistics(self) -> FileOplogStatistics:
        """Counters of this instance's work: frames decoded, bytes read, fsyncs, segments rolled."""
        return FileOplogStatistics(self._frames_decoded, self._bytes_read, self._fsyncs, self._rolled)

    def info(self) -> FileOplogInfo:
        """The oplog's range, size, segments, identity and settings."""
        with self._lock:
            last, first = self.last_op_id, self.first_op_id
            sizes = [os.path.getsize(segment_path(self._dir, s)) for s in self._segments]
            return FileOplogInfo(
                path=str(self._dir), oplog_id=str(self._oplog_id), first_op_id=first, last_op_id=last,
                entries=max(0, last - first + 1), bytes=sum(sizes), segments=len(sizes),
                durability=self._durability, segment_bytes=self._segment_bytes, retain_bytes=self._retain_bytes,
                retain_entries=self._retain_entries, retain_age_seconds=self._retain_age,
            )

    def verify(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Check every frame of every segment; return the number of entries checked.

        Raises ``OplogCorruptedError`` naming the file and byte offset of the
        first bad frame. ``progress(done_bytes, total_bytes)`` is called as it goes.
        """
        with self._lock:
            segments = list_segments(self._dir)
        sizes = {first: os.path.getsize(segment_path(self._dir, first)) for first in segments}
        total, done, checked = sum(sizes.values()), 0, 0
        for position, first in enumerate(segments):
            path = segment_path(self._dir, first)
            data = path.read_bytes()
            problem = check_header(data, self._id_bytes, first)
            if problem is not None:
                raise OplogCorruptedError(problem, path=str(path), offset=0)
            view = memoryview(data)
            offset, expected = HEADER.size, first
            while offset < len(data):
                try:
                    frame = frame_at(view, offset, 0, expected)
                except BadFrame as bad:
                    raise OplogCorruptedError(bad.reason, path=str(path), offset=bad.offset) from None
                if frame is None:
                    if position == len(segments) - 1:
                        break  # an append in progress
                    raise OplogCorruptedError("segment ends inside a frame", path=str(path), offset=offset)
                self._decode(frame.payload, path, frame.offset, frame.op_id)
                offset, expected, checked = frame.end, expected + 1, checked + 1
            if position + 1 < len(segments) and expected != segments[position + 1]:
                raise OplogCorruptedError(
                    f"segment ends at op_id {expected - 1} but the next starts at {segments[position + 1]}",
                    path=str(path), offset=len(data),
                )
            done += sizes[first]
            if progress is not None:
                progress(done, total)
        return checked


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@final
class _FileCursor(OplogCursor):
    """Reads frames in order across segments, a large block at a time."""

    def __init__(self, oplog: FileOplog, after: int) -> None:
        self._oplog = oplog
        self.position = after
        self._segment: int | None = None
        self._handle: int | None = None
        self._offset = 0
        self._data = b""  # the block last read; _buffer views it
        self._buffer = memoryview(self._data)
        self._buffer_base = 0
        self._placed = False

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def _place(self) -> bool:
        """Open the segment holding position + 1 at the right offset; False when it is not written yet."""
        oplog = self._oplog
        target = self.position + 1
        with oplog._lock:
            if oplog._write_fd is None:
                oplog._segments = list_segments(oplog._dir)
            first = oplog._segment_for(target)
            if first is None:
                segments = oplog._segments
                if segments and target < segments[0]:
                    raise ChangeStreamHistoryLost(
                        f"op_id {target} was trimmed; the oldest retained is {segments[0]}"
                    )
                return False
            start = oplog._index(first).start_for(target) or (first, HEADER.size)
        path = segment_path(oplog._dir, first)
        try:
            handle = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChangeStreamHistoryLost(f"op_id {target} was trimmed while being read") from None
        self.close()
        self._handle, self._segment = handle, first
        self._offset, self._data, self._buffer_base = start[1], b"", start[1]
        self._buffer = memoryview(self._data)
        # Walk frame headers from the indexed point to the target: nothing is decoded.
        skip_to = start[0]
        while skip_to < target:
            position = self._offset - self._buffer_base
            if len(self._buffer) - position < FRAME_HEADER.size and not self._fill():
                return False
            length, _, op_id = FRAME_HEADER.unpack_from(self._buffer, self._offset - self._buffer_base)
            if op_id != skip_to:
                raise OplogCorruptedError(
                    f"frame holds op_id {op_id}, expected {skip_to}", path=str(path), offset=self._offset
                )
            self._offset += FRAME_HEADER.size + length
            skip_to += 1
        self._placed = True
        return True

    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        oplog = self._oplog
        oplog._check_open()
        if not self._placed and not self._place():
            return []
        entries: list[OplogEntry] = []
        stop = self.position + limit  # op_ids rise by one: the last op_id this read may pass
        while self.position < stop:
            self._read_whole_frames(entries, stop, sift)
            if self.position >= stop:
                break
            # The edges, one frame at a time: a frame across the buffer's end, the tail, damage.
            frame = self._next_frame()
            if frame is None:
                if not self._next_segment():
                    break
                continue
            path = segment_path(oplog._dir, self._segment or 0)
            entries.append(oplog._decode(frame.payload, path, frame.offset, frame.op_id))
            self.position = frame.op_id
        return entries

    def _read_whole_frames(self, entries: list[OplogEntry], stop: int, sift: Sift | None) -> None:
        """The hot path: take the frames, up to op_id ``stop``, that lie wholly in the buffer and pass every check.

        Anything unusual (a partial frame, a bad checksum, an unexpected op_id,
        an undecodable payload) stops it; ``_next_frame`` then handles that
        frame. A frame whose payload fails ``sift`` is checked but not decoded.
        """
        data, buffer, base = self._data, self._buffer, self._buffer_base  # sift searches data in place
        size = len(buffer)
        position = self._offset - base
        expected = self.position + 1
        header_size = FRAME_HEADER.size
        unpack_header = FRAME_HEADER.unpack_from
        crc32 = zlib.crc32
        unpackb = msgpack.unpackb
        ext_hook = UNPACK_OPTIONS["ext_hook"]
        make_entry = entry_from_record
        append = entries.append
        first = expected
        decoded = 0
        while expected <= stop and size - position >= header_size:
            length, crc, op_id = unpack_header(buffer, position)
            body = position + header_size
            end = body + length
            if op_id != expected or length == 0 or end > size:
                break
            if crc32(buffer[position + 8 : end]) != crc:  # op_id and payload lie side by side: one call
                break
            if sift is None or sift(data, body, end):
                try:
                    entry = make_entry(unpackb(
                        buffer[body:end], raw=False, timestamp=3, strict_map_key=False, ext_hook=ext_hook
                    ))
                except (ValueError, TypeError, EntryDecodeError, msgpack.UnpackException):
                    break
                if entry.op_id != op_id:
                    break
                append(entry)
                decoded += 1
            position = end
            expected += 1
        if expected > first:
            self._offset = base + position
            self.position = expected - 1
            self._oplog._frames_decoded += decoded

    def _next_frame(self) -> Any:
        while True:
            position = self._offset - self._buffer_base
            try:
                frame = frame_at(self._buffer, position, self._buffer_base, self.position + 1)
            except BadFrame as bad:
                if self._is_tail(bad.offset):
                    return None  # the writer is writing it now
                raise OplogCorruptedError(
                    bad.reason, path=str(segment_path(self._oplog._dir, self._segment or 0)), offset=bad.offset
                ) from None
            if frame is not None:
                self._offset = frame.end
                return frame
            if not self._fill():
                return None

    def _fill(self) -> bool:
        """Read the next block from the current offset; False when nothing more is there."""
        assert self._handle is not None
        pending = self._offset - self._buffer_base
        need = READ_CHUNK
        if len(self._buffer) - pending >= FRAME_HEADER.size:
            length = FRAME_HEADER.unpack_from(self._buffer, pending)[0]
            need = max(need, FRAME_HEADER.size + length)
        data = os.pread(self._handle, need, self._offset)
        self._oplog._bytes_read += len(data)
        if len(data) <= len(self._buffer) - pending:
            return False
        self._data, self._buffer, self._buffer_base = data, memoryview(data), self._offset
        return True

    def _is_tail(self, offset: int) -> bool:
        """True when a bad frame is one the writer is still writing, not damage.

        Only the newest segment grows, and a frame being written is the last
        thing in it: with a newer segment, or a valid frame after it, it is damage.
        """
        oplog = self._oplog
        assert self._handle is not None
        with oplog._lock:
            if oplog._write_fd is not None:
                return False  # this process is the writer: its data is whole
            newest = list_segments(oplog._dir)
        if not newest or self._segment != newest[-1]:
            return False
        size = os.fstat(self._handle).st_size
        rest = os.pread(self._handle, min(size - offset, 4 * READ_CHUNK), offset)
        return valid_frame_after(memoryview(rest), 0) is None

    def _next_segment(self) -> bool:
        """At the end of a segment: move to the next one if the writer has started it."""
        oplog = self._oplog
        with oplog._lock:
            if oplog._write_fd is None:
                oplog._segments = list_segments(oplog._dir)
            segments = oplog._segments
            following = bisect.bisect_right(segments, self._segment or 0)
            if following >= len(segments):
                return False
            nxt = segments[following]
        assert self._handle is not None
        if os.fstat(self._handle).st_size > self._offset:
            # The writer finished this segment after our last read: read its rest first.
            if self._fill():
                return True
            raise OplogCorruptedError(
                "segment ends inside a frame", path=str(segment_path(oplog._dir, self._segment or 0)),
                offset=self._offset,
            )
        if nxt != self.position + 1:
            raise OplogCorruptedError(
                f"segment ends at op_id {self.position} but the next starts at {nxt}",
                path=str(segment_path(oplog._dir, self._segment or 0)), offset=self._offset,
            )
        self._placed = False
        return self._place()

