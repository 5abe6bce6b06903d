"""``FileOplog``: the embedded, durable oplog, a directory of segment files.

One writer process at a time holds ``writer.lock`` (an OS file lock taken at
the first write, so consumers can open the oplog freely); any number of
readers tail the files. See ``rxcs.oplog.segments`` for the file format and
docs/oplog.md for the whole design: durability modes, recovery, retention
and wake-ups.

The writer keeps the collection catalog (``rxcs.oplog.catalog``) in memory
and saves it beside the segments, in ``oplog.catalog``, with the op_id it is
saved through: whenever it starts a segment, before it deletes any, and when
it closes. A writer that opens the oplog loads it and replays the entries
appended since (they record the identities they were given), so a crash
loses nothing of it; trimming deletes only entries the saved catalog
already holds.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import itertools
import json
import os
import select
import sqlite3
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
from rxcs.events import ClusterTime, Namespace
from rxcs.log import log
from rxcs.oplog import osio
from rxcs.oplog.base import Clock, Oplog, OplogCursor, Sift
from rxcs.oplog.catalog import Catalog, CatalogDamaged, CollectionInfo
from rxcs.oplog.check import RepairPlan, RepairStep, plan_repair, verify_directory
from rxcs.oplog.checkpoints import CheckpointStore, FileCheckpoints
from rxcs.oplog.codec import (
    DATA_CHANGE_HEAD,
    UNPACK_OPTIONS,
    EntryDecodeError,
    encode_entry,
    entry_from_record,
    sift_needle,
)
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.images import DocumentImages
from rxcs.oplog.images.overlay import enables_images
from rxcs.oplog.images.sqlite import SqliteImageStore
from rxcs.oplog.retention import Retention, RetentionStatistics, SegmentKeeper
from rxcs.oplog.segments import (
    CONTINUES,
    FRAME_HEADER,
    FRAME_LIMIT,
    HEADER,
    INDEX_INTERVAL,
    OP_ID_MASK,
    TEMPORARY_SUFFIX,
    BadFrame,
    Frame,
    SegmentIndex,
    check_header,
    encode_frame,
    encode_header,
    frame_at,
    frame_starts_at,
    index_file_records,
    index_path,
    list_segments,
    scan_segment,
    segment_path,
    tail_damage,
    temporary_path,
)
from rxcs.oplog.timings import Timings

try:  # inotify wakes readers in other processes at once; elsewhere they poll adaptively
    import inotify_simple
except ImportError:  # pragma: no cover - not Linux
    inotify_simple = None

__all__ = ["Durability", "FileOplog", "FileOplogInfo", "FileOplogStatistics", "RepairPlan", "RepairStep"]


Durability = Literal["fsync", "group", "none"]
META_NAME: Final = "oplog.meta"
CATALOG_NAME: Final = "oplog.catalog"
LOCK_NAME: Final = "writer.lock"
FORMAT: Final = "rxcs-oplog"
FORMAT_VERSION: Final = 1  # a new oplog's: every commit one frame, as every rxcs reads
COMMITS_FORMAT_VERSION: Final = 2  # from the first commit of several frames on: rxcs before it refuses the oplog
IDENTITIES_FORMAT_VERSION: Final = 3  # from the first record with a collection UUID (16 or 17 fields) on
READ_FORMAT_VERSIONS: Final = (FORMAT_VERSION, COMMITS_FORMAT_VERSION, IDENTITIES_FORMAT_VERSION)
GROUP_COMMIT_INTERVAL: Final = 0.005
READ_CHUNK: Final = 256 * 1024
LOOK_AHEAD_BYTES: Final = 8 * 1024 * 1024  # the most a read's buffer grows to hold the rest of a commit it is inside
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
_SEEK_CANDIDATES: Final = 8  # index records tried before a seek falls back to the segment's first frame
_IMAGES_LOOK_AGAIN: Final = 1.0  # seconds between looks for document images another process turned on


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
    recoveries: int = 0  # torn tails cut (or a half-made newest segment removed) when this writer opened
    corruptions: int = 0  # reads by this instance's cursors that met damage (OplogCorruptedError)


@final
class FileOplog(Oplog):
    """A durable oplog in a directory: segment files of CRC-checked msgpack frames.

    ``durability``: ``"fsync"`` (each commit is on disk before append
    returns), ``"group"`` (default: every append is written to the file
    before it returns, so a killed process loses nothing, and fsynced within
    a few milliseconds, one fsync for many appends) or ``"none"`` (the OS
    decides). ``readonly=True`` refuses writes. Retention: ``retain_bytes``,
    ``retain_entries``, ``retain_age`` (seconds or timedelta), each a floor
    ("at least this much is kept"), enforced continuously by the writer in
    whole segments (``rxcs.oplog.retention``); ``trim()`` on demand.
    ``document_images=True`` keeps document images for every collection, in
    ``images.sqlite`` beside the segments; the setting stays with the oplog
    (docs/images.md).
    ``retain_for_consumers=True`` keeps what consumers' checkpoints still
    need (kept in the directory's ``consumers/`` folder).

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
        document_images: bool = False,
        retain_for_consumers: bool = False,
    ) -> None:
        if not isinstance(document_images, bool):
            raise ValueError(f"document_images must be True or False, not {document_images!r}")
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
        self._retention = Retention(retain_entries, retain_bytes, age)
        self._keeper: SegmentKeeper | None = None  # started with the writer, when a limit is set
        self.retain_for_consumers = bool(retain_for_consumers)
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)
        self._closed = False
        self._oplog_id, self._format_version = self._open_meta()
        self._id_bytes = self._oplog_id.bytes
        # Writer state, set when the writer lock is taken.
        self._lock_fd: int | None = None
        self._write_fd: int | None = None
        self._index_fd: int | None = None
        self._active: int | None = None  # first op_id of the segment being written
        self._active_size = 0
        self._active_index: SegmentIndex | None = None
        self._clock: Clock | None = None
        self._catalog: Catalog | None = None
        self._catalog_saved = (0, 0)  # (catalog.changed, catalog.through) when last saved
        self._dirty = False
        self._flusher: threading.Thread | None = None
        self._flush_wanted = threading.Event()
        # What every instance knows of the log; readers refresh it from the files.
        self._segments = list_segments(self._dir)
        self._last_op_id = 0
        self._tail_offset = 0  # where the reader's tail scan stopped in the last segment
        self._tail_segment: int | None = None
        self._torn_tail: tuple[str, int, int] | None = None  # (path, tail offset, size) of a tail known torn
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
        self._fsync_times = Timings()
        self._recoveries = 0
        self._corruptions = 0
        with contextlib.suppress(OplogCorruptedError):  # opening never fails on damage; reading there does
            self._refresh_tail()
        self._images: DocumentImages | None = None
        self._images_looked = 0.0
        self._open_images(turn_on=document_images)
        log.info("oplog opened", path=str(self._dir), oplog_id=str(self._oplog_id), last_op_id=self._last_op_id)

    # -- opening ---------------------------------------------------------------------

    def _open_meta(self) -> tuple[uuid.UUID, int]:
        meta = self._dir / META_NAME
        if not meta.exists():
            if self._readonly:
                raise RxcsError(f"{self._dir}: no oplog here (no {META_NAME})")
            self._dir.mkdir(parents=True, exist_ok=True)
            stray = [name for name in os.listdir(self._dir) if not name.startswith(".")]
            if stray:
                raise RxcsError(f"{self._dir}: not an rxcs oplog (it holds {sorted(stray)[:3]} but no {META_NAME})")
            identity = str(uuid.uuid4())
            document = {
                "format": FORMAT, "version": FORMAT_VERSION, "oplog_id": identity,
                "oplog_id_crc32": zlib.crc32(identity.encode()),
            }
            temporary = self._dir / f".{META_NAME}.{os.getpid()}.{threading.get_ident()}"
            fd = osio.open_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                osio.write_all(fd, json.dumps(document).encode())
                osio.fsync(fd)  # the name below must never come to hold an empty file
            finally:
                osio.close(fd)
            try:
                osio.link(temporary, meta)  # atomic create-if-absent: two creators agree on one identity
            except FileExistsError:
                pass
            finally:
                osio.unlink(temporary)
            osio.fsync_directory(self._dir)
        return _read_meta(meta)

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

    @property
    def document_images(self) -> DocumentImages | None:
        if self._images is None and not self._closed:
            with self._lock:
                self._open_images()
        return self._images

    def _open_images(self, *, turn_on: bool = False, create_at: int | None = None) -> DocumentImages | None:
        """Find the oplog's document images (another process may have turned them on); with ``turn_on`` or
        ``create_at`` (a checkpoint), make them when there are none. ``turn_on`` keeps them for every collection."""
        self._images_looked = time.monotonic()
        store = self._images.store if self._images is not None else None
        if store is None:
            store = SqliteImageStore.open(self._dir, self._oplog_id, readonly=self._readonly)
        if store is None and (turn_on or create_at is not None):
            if self._readonly:
                raise RxcsError(f"{self._dir}: opened readonly; document images cannot be turned on")
            applied = self._last_op_id if create_at is None else create_at
            store = SqliteImageStore.create(self._dir, self._oplog_id, applied, every_collection=turn_on)
            log.info("document images turned on", path=str(self._dir), from_op_id=applied + 1,
                     every_collection=turn_on)
        elif store is not None and turn_on and not store.state().settings.every_collection:
            if self._readonly:
                raise RxcsError(f"{self._dir}: opened readonly; document images cannot be turned on")
            store.set_every_collection(True)
        if store is not None and self._images is None:
            self._images = DocumentImages(store, self)
        return self._images

    def _recover_images(self) -> None:
        """Check the document images against the oplog and catch them up (``DocumentImages.recover``); never raises,
        as ``_update_images``."""
        images = self._images
        if images is None:
            return
        try:
            images.recover()
        except Exception as exc:  # noqa: BLE001 - the images must not keep the writer from appending
            log.error("document images not brought up to date", path=str(self._dir), error=repr(exc))

    def _update_images(self, through: int) -> None:
        """Bring the document images up to ``through``, an op_id whose entries are as durable as they get.

        Never raises: the entries are recorded whatever happens to their
        images, which a reader then computes itself and the next writer catches up.
        """
        images = self._images
        if images is None or self._closed:
            return
        try:
            images.catch_up(through)
        except OplogClosedError:
            return  # closed meanwhile: close() brought them up to date first
        except Exception as exc:  # noqa: BLE001 - the entries are written: an append must not fail for its images
            log.error("document images not brought up to date", path=str(self._dir), through_op_id=through,
                      error=repr(exc))

    def append_many(self, changes: Iterable[Change]) -> list[int]:
        changes = list(changes)
        for index, change in enumerate(changes):
            if not isinstance(change, Change):
                raise TypeError(f"changes[{index}]: expected a Change, got {type(change).__name__}")
        if not changes:
            return []
        enabling = enables_images(changes)
        with self._lock:
            self._become_writer()
            assert self._clock is not None
            assert self._catalog is not None
            looking = self._images is None and (enabling or time.monotonic() - self._images_looked > _IMAGES_LOOK_AGAIN)
            if looking and self._open_images(create_at=self._last_op_id if enabling else None) is not None:
                self._recover_images()  # turned on by another process meanwhile, or now
            first = self._last_op_id + 1
            frames = []
            catalog = self._catalog
            catalog.begin()
            try:
                more = len(changes) - 1  # every frame but the last says that its commit goes on
                needed = COMMITS_FORMAT_VERSION if more else FORMAT_VERSION
                for offset, change in enumerate(changes):
                    cluster_time, wall_ms = self._clock.tick()
                    identity, dropped = catalog.apply(change)
                    if identity is not None or dropped is not None:
                        needed = IDENTITIES_FORMAT_VERSION  # a record of 16 or 17 fields
                    payload = encode_entry(first + offset, cluster_time, wall_ms, change, identity, dropped)
                    frames.append(encode_frame(first + offset, payload, continues=offset < more))
                # Everything encoded before anything is written: a bad change appends nothing.
                if needed > self._format_version:
                    self._raise_format(needed)
                self._write_frames(first, frames)
            except BaseException:
                catalog.rollback()
                raise
            self._last_op_id = first + len(frames) - 1
            catalog.commit(self._last_op_id)
            if self._durability != "group":  # the entries are synced ("fsync") or never will be before close ("none")
                self._update_images(self._last_op_id)
            self._appended.notify_all()
            if self._keeper is not None:
                self._keeper.appended_at(self._last_op_id, self._active_size)
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
            through = self._last_op_id
        try:
            began = time.perf_counter()
            os.fdatasync(fd)  # outside the lock, as the group flusher does
            self._fsync_times.add(time.perf_counter() - began)
            self._fsyncs += 1
        finally:
            os.close(fd)
        self._update_images(through)

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
                with contextlib.suppress(OplogCorruptedError):  # the cursor reports damage where it meets it
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
        if self._write_fd is not None and self._images is not None and not self._closed:
            self.sync()  # the document images catch up with every entry while the oplog can still be read
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
        if self._keeper is not None:
            self._keeper.close()
        with self._lock:
            # Waiters in select() were poked awake; their descriptors close once they are out.
            deadline = time.monotonic() + 5
            while self._fs_waiters and time.monotonic() < deadline:
                self._poke()
                self._appended.wait(0.05)
            if self._write_fd is not None:
                try:
                    self._save_catalog()
                except OSError as exc:  # the next writer replays the log instead: nothing is lost
                    log.warning("oplog catalog not saved at close", path=str(self._dir), error=str(exc))
            self._stop_writing()
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._images is not None:
                self._images.close()
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
        self._take_lock()
        try:
            self._recover()
            self._catalog = self._load_catalog()
        except BaseException:
            self._stop_writing()
            raise
        self._recover_images()  # a crash may have left them behind the entries; before retention drops any
        if self._retention.active and self._keeper is None:
            self._keeper = SegmentKeeper(self, self._retention, str(self._dir))
            self._keeper.appended()  # what is already beyond the limits goes now

    # -- the collection catalog ----------------------------------------------------------------

    def collections(self) -> dict[Namespace, CollectionInfo]:
        with self._lock:
            self._check_open()
            if self._catalog is not None:
                return self._catalog.snapshot()
            catalog, _ = self._read_catalog()  # a reader: the saved catalog and the entries appended since
            return catalog.snapshot()

    def _load_catalog(self) -> Catalog:
        """The writer's catalog: the saved one brought up to the end of the log (saved again when that changed it)."""
        catalog, replayed = self._read_catalog()
        self._catalog = catalog
        if replayed:
            self._save_catalog()
        else:
            self._catalog_saved = (catalog.changed, catalog.through)
        return catalog

    def _read_catalog(self) -> tuple[Catalog, int]:
        """The saved catalog, brought up to the end of the log by replaying the entries appended since its save.

        A catalog that does not read back, or claims entries the log does not
        hold (the directory was put back from an older copy), is rebuilt from
        the retained entries, with a warning: collections whose last change was
        trimmed get a new identity at their next change.
        """
        path = self._dir / CATALOG_NAME
        catalog: Catalog | None = None
        try:
            catalog = Catalog.load(path.read_bytes())
        except FileNotFoundError:
            pass  # a new oplog, or one written before rxcs kept a catalog: its entries recorded no identities
        except CatalogDamaged as exc:
            log.warning("oplog catalog rebuilt from the retained entries", path=str(path), reason=str(exc))
        last = self.last_op_id
        if catalog is not None and catalog.through > last:
            log.warning(
                "oplog catalog rebuilt from the retained entries", path=str(path),
                reason=f"saved through op_id {catalog.through}, but the log ends at {last}",
            )
            catalog = None
        if catalog is None:
            catalog = Catalog()
        after = max(catalog.through, self.first_op_id - 1)
        replayed = 0
        try:
            with self.cursor(after) as cursor:
                while batch := cursor.read(1000):
                    for entry in batch:
                        catalog.replay(entry)
                    replayed += len(batch)
        except OplogCorruptedError as exc:
            log.warning(
                "oplog catalog replay stopped at damage; collections changed after it get a new identity "
                "at their next change", path=str(path), error=str(exc),
            )
        catalog.through = max(catalog.through, after)
        return catalog, replayed

    def _save_catalog(self) -> None:
        """Write the catalog beside the segments, whole (a temporary file renamed into place); caller holds the lock.

        The segments are synced first: the saved catalog never holds an entry
        that a power loss could take back.
        """
        catalog = self._catalog
        if catalog is None or self._catalog_saved == (catalog.changed, catalog.through):
            return
        if self._dirty and self._write_fd is not None:
            self._fsync()
        path = self._dir / CATALOG_NAME
        osio.write_whole(path, catalog.dump(), temporary_path(path), durable=self._durability != "none")
        self._catalog_saved = (catalog.changed, catalog.through)

    def _take_lock(self, *, record_pid: bool = True) -> None:
        """Take the writer lock or raise ``OplogLockedError`` naming the holder's pid (recorded in the lock file)."""
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
        if record_pid:
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
        self._lock_fd = lock_fd

    def _stop_writing(self) -> None:
        """Sync what is unsynced, close the files being written and release the writer lock; caller holds the lock."""
        if self._write_fd is not None:
            if self._dirty:
                self._fsync()
            osio.close(self._write_fd)
            self._write_fd = None
        if self._index_fd is not None:
            osio.close(self._index_fd)
            self._index_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the writer lock
            self._lock_fd = None

    def _recover(self, start_at: int = 1) -> None:
        """Open the newest segment for appending: check every frame, cut a torn tail, refuse damage.

        ``start_at`` is the op_id a first segment starts at, when none is left.
        """
        self._remove_temporaries()
        self._segments = list_segments(self._dir)
        if not self._segments:
            self._start_segment(start_at)
            self._clock = Clock()
            self._last_op_id = start_at - 1
            return
        first = self._segments[-1]
        path = segment_path(self._dir, first)
        data = path.read_bytes()
        problem = check_header(data, self._id_bytes, first)
        if problem is not None:
            if len(data) < HEADER.size:
                # A crash while starting this segment (earlier versions made it in place): nothing is in it.
                osio.unlink(path)
                osio.unlink(index_path(self._dir, first), missing_ok=True)
                osio.fsync_directory(self._dir)
                log.warning("oplog recovered", path=str(path), truncated_bytes=len(data), reason=problem)
                self._recoveries += 1
                self._recover(start_at=first)
                return
            raise OplogCorruptedError(problem, path=str(path), offset=0)
        scan = scan_segment(data, first, newest=True)
        if scan.problem is not None and scan.problem.damage:
            raise OplogCorruptedError(scan.problem.reason, path=str(path), offset=scan.problem.offset)
        if scan.end < len(data):
            unfinished = [scan.last_op_id + 1, scan.last_frame] if scan.last_frame > scan.last_op_id else None
            log.warning(
                "oplog recovered", path=str(path), truncated_bytes=len(data) - scan.end, at_offset=scan.end,
                dropped_op_ids=unfinished,  # the whole frames of a commit whose last frame is missing
            )
            self._recoveries += 1
            fd = osio.open_file(path, os.O_WRONLY)
            try:
                osio.truncate(fd, scan.end)
                osio.fsync(fd)
            finally:
                osio.close(fd)
        # The index is a hint; the newest one is made anew from the frames whenever it differs.
        index = SegmentIndex.of(index_path(self._dir, first), scan.index)
        try:
            current = index.path.read_bytes()
        except FileNotFoundError:
            current = b""
        if current != index.encoded():
            index.rewrite()
        self._write_fd = osio.open_file(path, os.O_WRONLY | os.O_APPEND)
        self._index_fd = osio.open_file(index.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._active = first
        self._active_size = scan.end
        self._active_index = index
        self._indexes[first] = index
        self._last_op_id = scan.last_op_id
        self._tail_segment, self._tail_offset = first, scan.end
        if scan.last_offset:
            frame = frame_at(memoryview(data), scan.last_offset, 0, scan.last_op_id)
            assert frame is not None
            previous = self._decode(frame.payload, path, frame.offset, frame.op_id).cluster_time
        else:
            previous = self._previous_cluster_time(first)
        self._clock = Clock(previous)

    def _raise_format(self, version: int) -> None:
        """Make ``oplog.meta`` say ``version`` before the first frames that need it are written; durably.

        Version 2 comes before the first commit of several frames, version 3
        before the first record with a collection's UUID (16 or 17 fields,
        and the ``oplog.catalog`` beside the segments). An rxcs that reads
        only older versions then refuses the oplog at open instead of taking
        such frames for damage. The other keys of the metadata are kept as
        they are.
        """
        meta = self._dir / META_NAME
        _read_meta(meta)  # still sound
        document = json.loads(meta.read_bytes())
        if document["version"] < version:
            document["version"] = version
            osio.write_whole(meta, json.dumps(document).encode(), temporary_path(meta), durable=True)
            log.info("oplog format upgraded", path=str(self._dir), version=version)
        self._format_version = max(self._format_version, version)

    def _remove_temporaries(self) -> None:
        """Delete what a crash left half made: a segment being started, an index being rewritten."""
        for name in os.listdir(self._dir):
            if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
                osio.unlink(self._dir / name, missing_ok=True)

    def _previous_cluster_time(self, first: int) -> ClusterTime:
        """The cluster time of the entry before segment ``first`` (its predecessor's last)."""
        if first <= 1 or len(self._segments) < 2:
            return ClusterTime(0, 0)
        with self.cursor(first - 2) as cursor:
            entries = cursor.read(1)
        return entries[0].cluster_time if entries else ClusterTime(0, 0)

    def _start_segment(self, first: int) -> None:
        """Make a new segment with its header, whole: written under a temporary name, synced, renamed."""
        path = segment_path(self._dir, first)
        temporary = temporary_path(path)
        fd = osio.open_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        try:
            osio.write_all(fd, encode_header(self._id_bytes, first))
            osio.fsync(fd)
            osio.replace(temporary, path)
            osio.fsync_directory(self._dir)
            index_fd = osio.open_file(index_path(self._dir, first), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        except BaseException:
            osio.close(fd)
            raise
        if self._write_fd is not None:
            osio.close(self._write_fd)
        if self._index_fd is not None:
            osio.close(self._index_fd)
        self._write_fd, self._index_fd = fd, index_fd
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
        assert self._index_fd is not None
        osio.write_all(self._write_fd, b"".join(frames))
        self._active_size = position
        self._tail_offset = position
        if index_bytes:  # after the frames: a record never points past what was written
            osio.write_all(self._index_fd, b"".join(index_bytes))
        self._after_write()

    def _after_write(self) -> None:
        self._dirty = True
        if self._durability == "fsync":
            self._fsync()
        elif self._durability == "group":
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
                fd = osio.dup(self._write_fd)  # the writer may roll to a new segment meanwhile
                through = self._last_op_id
            try:
                began = time.perf_counter()
                osio.fdatasync(fd)  # outside the lock: appends go on while the disk works
                self._fsync_times.add(time.perf_counter() - began)
                self._fsyncs += 1
            finally:
                osio.close(fd)
            # Images follow the entries only once those are synced: after a power loss the store is never
            # ahead of what survived of the oplog (it may be behind, and catches up).
            self._update_images(through)

    def _fsync(self) -> None:
        assert self._write_fd is not None
        began = time.perf_counter()
        osio.fdatasync(self._write_fd)
        self._fsync_times.add(time.perf_counter() - began)
        self._dirty = False
        self._fsyncs += 1

    def _roll(self, first: int) -> None:
        """Finish the segment being written, synced with its index, and start the next at ``first``."""
        if self._dirty and self._write_fd is not None:
            self._fsync()
        if self._index_fd is not None:
            osio.fsync(self._index_fd)  # once per segment: a finished segment's index survives a power loss
        self._save_catalog()  # through the end of the segment just finished: no trim ever needs what came before
        self._start_segment(first)
        self._rolled += 1
        log.info("oplog segment started", path=str(self._dir), first_op_id=first)
        if self._keeper is not None:
            self._keeper.appended()  # a finished segment may now be beyond a limit

    # -- retention (rxcs.oplog.retention.SegmentedLog: what the keeper thread sees and does) -----------

    def retention_view(self) -> tuple[tuple[int, ...], int, int]:
        """(first op_id of each segment, oldest first; the last op_id; bytes of the segment being written)."""
        with self._lock:
            return tuple(self._segments), self._last_op_id, self._active_size

    def segment_size(self, first: int) -> int:
        """Bytes of the segment starting at ``first``."""
        return os.path.getsize(segment_path(self._dir, first))

    def segment_newest_wall_ms(self, first: int, following: int) -> int | None:
        """Wall time in ms of the newest entry of the finished segment ``first``, whose successor starts at
        ``following``; None when it cannot be read (then its age never lets it go)."""
        try:
            newest = self.read(following - 2, 1)
        except (ChangeStreamHistoryLost, OplogCorruptedError, OSError):
            return None
        return newest[0].wall_time_ms if newest and newest[0].op_id < following else None

    def drop_oldest_segment(self, first: int) -> int:
        """Delete the oldest segment if it still starts at ``first`` and is not the one being written.

        Holds the lock for this one segment's two unlinks; the directory is
        synced after. The saved catalog already holds the segment's entries:
        the writer saved it when the segment was finished. Returns the entries
        dropped.
        """
        with self._lock:
            following = self._segments[1] if len(self._segments) > 1 and self._segments[0] == first else None
        if following is not None and self._keep_for_consumers(following) < following:
            return 0  # a consumer's checkpoint needs it (retain_for_consumers)
        if self._images is not None:
            # The segment's entries were synced when it was finished: the document images take them in before
            # they go (outside the lock, which is held for the unlinks alone).
            with self._lock:
                following = self._segments[1] if len(self._segments) > 1 and self._segments[0] == first else None
            if following is not None:
                self._update_images(following - 1)
        with self._lock:
            segments = self._segments
            if self._write_fd is None or len(segments) < 2 or segments[0] != first:
                return 0
            segments.pop(0)
            osio.unlink(segment_path(self._dir, first), missing_ok=True)
            osio.unlink(index_path(self._dir, first), missing_ok=True)
            self._indexes.pop(first, None)
            dropped = segments[0] - first
            new_first = segments[0]
        osio.fsync_directory(self._dir)
        log.info("oplog trimmed", path=str(self._dir), entries=dropped, reason="retention", first_op_id=new_first)
        self._trim_images(new_first)
        self._trimmed_past_consumers(new_first)
        return dropped

    def fsync_timings(self) -> tuple[list[tuple[float, int]], float]:
        """How long this process's segment syncs took: cumulative counts per bound in seconds, and their sum."""
        return self._fsync_times.snapshot()

    def retention_statistics(self) -> RetentionStatistics:
        """What retention dropped in this process (zeros when no limit is set or nothing was written)."""
        return RetentionStatistics() if self._keeper is None else self._keeper.statistics()

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

    def _trim_locked(self, before_op_id: int, *, reason: str) -> int:
        before_op_id = self._keep_for_consumers(before_op_id)
        going = [first for first in self._segments[1:] if first <= before_op_id]
        if going:
            self._save_catalog()  # the entries about to go must be in the saved catalog
            self._update_images(going[-1] - 1)  # and in the document images (synced: their segments are finished)
        dropped = 0
        while len(self._segments) > 1 and self._segments[1] <= before_op_id:
            first = self._segments.pop(0)
            dropped += self._segments[0] - first
            osio.unlink(segment_path(self._dir, first), missing_ok=True)
            osio.unlink(index_path(self._dir, first), missing_ok=True)
            self._indexes.pop(first, None)
        if dropped:
            osio.fsync_directory(self._dir)
            log.info("oplog trimmed", path=str(self._dir), entries=dropped, reason=reason,
                     first_op_id=self._segments[0])
            self._trim_images(self._segments[0])
            self._trimmed_past_consumers(self._segments[0])
        return dropped

    def _trim_images(self, first: int) -> None:
        """Drop the images only entries before ``first`` (trimmed) needed; an error is logged, the next trim goes on."""
        if self._images is None:
            return
        try:
            self._images.trim(first)
        except sqlite3.Error as exc:
            log.error("document images not trimmed", path=str(self._dir), error=str(exc))

    def _open_checkpoints(self) -> CheckpointStore:
        return FileCheckpoints(self._dir)

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
        """Follow the writer (another process) to the end of the log; caller holds the lock.

        Raises ``OplogCorruptedError`` when what follows the good frames of a
        segment is damage rather than a frame still being written.
        """
        while True:
            try:
                self._follow_tail()
                return
            except FileNotFoundError:  # the segment followed was trimmed meanwhile: start again at the newest
                self._tail_segment = None

    def _follow_tail(self) -> None:
        segments = self._segments = list_segments(self._dir)
        if not segments:
            return
        if self._tail_segment is None or self._tail_segment not in segments:
            self._tail_segment = None  # until a start is found: a failed one is not kept
            self._start_tail(segments[-1])
            self._tail_segment = segments[-1]
        while True:
            first = self._tail_segment
            path = segment_path(self._dir, first)
            size = os.path.getsize(path)
            following = bisect.bisect_right(segments, first)
            if size > self._tail_offset:
                self._scan_tail(path, size, newest=following >= len(segments))
            if following >= len(segments):
                return
            self._tail_segment = segments[following]
            self._tail_offset = HEADER.size
            self._last_op_id = segments[following] - 1

    def _start_tail(self, first: int) -> None:
        """Start following the newest segment at a commit boundary, found from its index: the tail offset and
        ``last_op_id`` end the last whole commit at or after the newest indexed frame that checks out.

        An index record may point inside a commit, so the walk from it counts
        only once it has passed a commit's last frame; when it passes none
        (the commit there was cut short), it starts again at the record
        before, and at last at the segment's first frame, which starts a
        commit. An index record whose frame does not check out (a torn or
        lost index write, a record left from before a recovery) is dropped
        and logged.
        """
        index = self._index(first)
        path = segment_path(self._dir, first)
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            for op_id, offset in index.candidates(2**64):
                if HEADER.size <= offset < size and frame_starts_at(handle.fileno(), offset, op_id):
                    self._tail_offset, self._last_op_id = offset, op_id - 1
                    if self._scan_tail(path, size, newest=True):
                        return
                    continue
                index.discard(op_id)
                log.warning("oplog index record ignored", path=str(index.path), op_id=op_id, offset=offset)
        self._tail_offset, self._last_op_id = HEADER.size, first - 1

    def _scan_tail(self, path: Path, size: int, *, newest: bool) -> bool:
        """Count the whole commits from the tail offset to ``size``: stop where the last one ends, before a
        torn tail or an unfinished commit; raise on damage. True when it passed the end of a commit.

        While it counts the frames of a commit whose last frame it has not
        seen, each further read of the file is followed by a check that the
        commit's first frame is still there: a writer's recovery may cut that
        commit (unfinished then) and write others in its place; the count
        stops there and is taken up anew next time.
        """
        if self._torn_tail == (str(path), self._tail_offset, size):
            return False  # judged before: a commit being written, or a torn tail left for the writer to cut
        passed = False
        with open(path, "rb", buffering=0) as handle:
            fd = handle.fileno()
            position, data, base = self._tail_offset, b"", self._tail_offset
            expected = self._last_op_id + 1
            opened: bytes | None = None  # the header of the first frame of a commit whose last is not seen yet
            while True:
                held = len(data) - (position - base)
                try:
                    frame = frame_at(memoryview(data), position - base, base, expected)
                except BadFrame as bad:
                    reason = bad.reason
                else:
                    if frame is not None:
                        if frame.continues and opened is None:
                            opened = bytes(data[position - base : position - base + FRAME_HEADER.size])
                        position, expected = frame.end, expected + 1
                        if not frame.continues:  # a commit's last frame: its entries are there
                            self._tail_offset, self._last_op_id, passed, opened = position, frame.op_id, True, None
                        continue
                    if position + held < size:  # more is written than held: read on, the whole frame at least
                        need = READ_CHUNK
                        if held >= FRAME_HEADER.size:
                            need = max(need, FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, position - base)[0])
                        data, base = os.pread(fd, min(need, size - position), position), position
                        self._bytes_read += len(data)
                        if opened is not None and os.pread(fd, FRAME_HEADER.size, self._tail_offset) != opened:
                            return passed
                        continue
                    if not held:
                        if position > self._tail_offset:  # whole frames, their commit's last one not among them
                            if not newest:  # a finished segment is whole
                                raise OplogCorruptedError(
                                    f"the segment ends inside a commit: op_ids {self._last_op_id + 1}..{expected - 1} "
                                    "have no last frame", path=str(path), offset=self._tail_offset,
                                )
                            self._torn_tail = (str(path), self._tail_offset, size)
                        return passed
                    reason = "the segment ends inside a frame"
                try:
                    self._tail_problem(fd, path, position, size, reason, expected, newest=newest)
                except OplogCorruptedError:
                    if opened is not None and os.pread(fd, FRAME_HEADER.size, self._tail_offset) != opened:
                        return passed  # not damage: what follows the tail was rewritten while it was read
                    raise
                return passed

    def _tail_problem(
        self, fd: int, path: Path, offset: int, size: int, reason: str, expected: int, *, newest: bool
    ) -> None:
        """A bad or incomplete frame (of op_id ``expected``) where a reader's tail stops: wait at a torn tail,
        raise at damage."""
        if not newest:  # a finished segment is whole
            raise OplogCorruptedError(reason, path=str(path), offset=offset)
        rest = os.pread(fd, size - offset, offset)
        self._bytes_read += len(rest)
        damage = tail_damage(rest, 0, offset, expected)
        if damage is not None:
            raise OplogCorruptedError(f"{reason}; {damage}", path=str(path), offset=offset)
        self._torn_tail = (str(path), self._tail_offset, size)  # being written, or left by a crash: the writer's

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
        """Counters of this instance's work: frames decoded, bytes read, fsyncs, segments rolled, recoveries,
        damage met."""
        return FileOplogStatistics(
            self._frames_decoded, self._bytes_read, self._fsyncs, self._rolled, self._recoveries, self._corruptions
        )

    def info(self) -> FileOplogInfo:
        """The oplog's range, size, segments, identity and settings."""
        with self._lock:
            last, first = self.last_op_id, self.first_op_id
            sizes = []
            for segment in self._segments:
                with contextlib.suppress(FileNotFoundError):  # trimmed meanwhile
                    sizes.append(os.path.getsize(segment_path(self._dir, segment)))
            return FileOplogInfo(
                path=str(self._dir), oplog_id=str(self._oplog_id), first_op_id=first, last_op_id=last,
                entries=max(0, last - first + 1), bytes=sum(sizes), segments=len(sizes),
                durability=self._durability, segment_bytes=self._segment_bytes, retain_bytes=self._retain_bytes,
                retain_entries=self._retain_entries, retain_age_seconds=self._retain_age,
            )

    def verify(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Check every frame, entry and index record of every segment; return the number of entries checked.

        Raises ``OplogCorruptedError`` naming the file and byte offset of the
        first problem: a bad frame or segment header, an entry that does not
        decode, an index record that points at no frame of its op_id, a gap
        between segments. A torn tail, or a newest segment being started, is
        logged, not raised: a writer cuts or finishes it. Safe beside a live
        writer. ``progress(done_bytes, total_bytes)`` is called as it goes.
        """
        self._check_open()
        return verify_directory(self._dir, self._id_bytes, progress)

    def repair(self, *, dry_run: bool = False, truncate_at_damage: bool = False) -> RepairPlan:
        """Rebuild indexes from segments and cut a torn tail; return what it did (or, ``dry_run``, would do).

        Takes the writer lock (``OplogLockedError`` beside a live writer) and
        releases it when done. It fixes what loses no entry: damaged, stale or
        missing indexes, a torn tail (with the whole frames of a commit cut
        short, never entries; the plan lists their op_ids), a newest segment
        whose header was never written, files half made by a crash. A bad frame
        with good frames after it (or a whole last frame that fails its checks)
        in the newest segment is cut, from the start of its commit, dropping the
        op_ids listed in the plan, only with ``truncate_at_damage``; damage in
        an older segment and gaps are never cut. When it will not repair
        something, the plan's ``refusal`` says what and where, and nothing is
        changed.
        """
        with self._lock:
            self._check_open()
            if self._write_fd is not None:
                raise RxcsError(f"{self._dir}: repair an oplog before writing to it, not while")
            if self._readonly:
                raise RxcsError(f"{self._dir}: opened readonly; repair is refused")
            self._take_lock(record_pid=not dry_run)  # a dry run changes no file, not even the lock's
            try:
                plan = plan_repair(self._dir, self._id_bytes, truncate_at_damage=truncate_at_damage)
                if not dry_run and plan.refusal is None:
                    for step in plan.steps:
                        self._apply(step)
                    if plan.steps:
                        osio.fsync_directory(self._dir)
                        log.info("oplog repaired", path=str(self._dir), steps=len(plan.steps))
            finally:
                self._stop_writing()
                self._indexes.clear()  # what was read before may be gone
                self._tail_segment = None
                self._torn_tail = None
            return plan

    def _apply(self, step: RepairStep) -> None:
        if step.action == "remove":
            osio.unlink(step.path, missing_ok=True)
        elif step.action == "rebuild":
            SegmentIndex.of(step.path, index_file_records(step.data)).rewrite(durable=True)
        else:
            fd = osio.open_file(step.path, os.O_WRONLY)
            try:
                osio.truncate(fd, step.offset)
                osio.fsync(fd)
            finally:
                osio.close(fd)


def _read_meta(meta: Path) -> tuple[uuid.UUID, int]:
    """The oplog's identity and format version from its metadata; ``OplogCorruptedError`` with the byte where
    it goes wrong.

    ``oplog_id_crc32`` guards the identity against a flipped character; metadata
    written before it existed has none and is read as it is.
    """
    raw = meta.read_bytes()
    where = 0
    try:
        document = json.loads(raw.decode())
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise _MetaError("not an rxcs oplog", 0)
        version = document.get("version")
        if type(version) is not int or version not in READ_FORMAT_VERSIONS:
            raise _MetaError(
                f"format version {version}, this rxcs reads {', '.join(map(str, READ_FORMAT_VERSIONS))}", 0
            )
        identity = document.get("oplog_id")
        if not isinstance(identity, str):
            raise _MetaError("no oplog_id", 0)
        where = max(0, raw.find(identity.encode()))
        check = document.get("oplog_id_crc32")
        if check is not None and check != zlib.crc32(identity.encode()):
            raise _MetaError(f"oplog_id {identity} fails its checksum", where)
        return uuid.UUID(identity), version
    except UnicodeDecodeError as exc:
        problem, offset = f"not text ({exc.reason})", exc.start
    except json.JSONDecodeError as exc:
        problem, offset = f"not JSON ({exc.msg})", exc.pos
    except _MetaError as exc:
        problem, offset = exc.args
    except ValueError as exc:
        problem, offset = f"oplog_id is not a UUID ({exc})", where
    raise OplogCorruptedError(f"bad metadata: {problem}", path=str(meta), offset=offset)


class _MetaError(Exception):
    """What is wrong with oplog.meta, and the byte where."""


class _CommitRewritten(Exception):
    """The first frame of the commit a cursor's read is inside no longer holds what the read took from it."""


@final
class _SiftedAhead:
    """What a sifted look-ahead found: the frames of the rest of a commit its sift let through, checked.

    ``frames`` holds three ints for each (where the frame starts and ends in
    the file, its op_id; ints, which the garbage collector does not track)
    in the block ``data``; the reads that go on from ``after`` with the same
    sift take them from ``next`` on, and then stand at ``commit_end`` (its
    frame ending at ``commit_end_offset``).
    """

    __slots__ = ("after", "commit_end", "commit_end_offset", "data", "frames", "next", "sift")

    def __init__(
        self, sift: Sift, data: bytes, frames: list[int], after: int, commit_end: int,
        commit_end_offset: int,
    ) -> None:
        self.sift, self.data, self.frames, self.after = sift, data, frames, after
        self.commit_end, self.commit_end_offset = commit_end, commit_end_offset
        self.next = 0


@final
class _FileCursor(OplogCursor):
    """Reads frames in order across segments, a large block at a time; hands over only entries of whole commits.

    A read may take the frames of a commit whose last frame it has not seen
    yet (``_open_at`` says where that commit starts); before it returns it
    either sees that last frame, looking ahead without decoding when it
    stopped at its limit (``_commit_end``; the frames it checked on the way
    are not checked again, ``_checked``, and those a sift let through are
    noted for the next reads, ``_ahead``), or goes back to where the commit
    starts and leaves its entries out: a commit being written, or cut short
    by a crash, is waited at, as a torn frame is. A commit cut short can be
    cut off by a writer's recovery and other commits written in its place
    while a read is inside it, so every read of the file made inside a commit
    first checks that the commit's first frame is still the one read
    (``_CommitRewritten`` when not): a read never joins frames of two writes.
    """

    __slots__ = (
        "_ahead", "_buffer", "_buffer_base", "_checked", "_commit_end", "_damage", "_data", "_handle", "_offset",
        "_open_at", "_oplog", "_placed", "_segment", "position",
    )

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
        self._damage: RxcsError | None = None  # met after the entries a read returned: the next read raises it
        # (op_id, offset, frame header) of the first frame of the commit this read is inside, whose last it has not seen
        self._open_at: tuple[int, int, bytes] | None = None
        self._commit_end = 0  # a commit's last op_id, seen ahead: the entries up to it are of whole commits
        # (block, file offset): the frames of that block (the buffer's) up to that offset were checked by the
        # look-ahead, so a read takes them without checking them again
        self._checked: tuple[bytes, int] | None = None
        # the frames a sifted look-ahead found its sift let through, for the reads that go on through the commit
        self._ahead: _SiftedAhead | None = None

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def _place(self) -> bool:
        """Open the segment holding position + 1 at the right offset; False when it is not written yet.

        A seek starts at the closest index record whose frame checks out (the
        index is a hint) and walks frame headers from there to the target,
        decoding nothing; anything odd on the way sends it back to walk whole,
        checked frames, which names damage exactly.
        """
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
            index = oplog._index(first)
            candidates = list(itertools.islice(index.candidates(target), _SEEK_CANDIDATES))
        path = segment_path(oplog._dir, first)
        try:
            handle = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChangeStreamHistoryLost(f"op_id {target} was trimmed while being read") from None
        self.close()
        self._handle, self._segment = handle, first
        problem = check_header(os.pread(handle, HEADER.size, 0), oplog._id_bytes, first)
        if problem is not None:
            if os.fstat(handle).st_size < HEADER.size and not self._segment_finished():
                return False  # a segment being started
            raise OplogCorruptedError(problem, path=str(path), offset=0)
        start = (first, HEADER.size)
        size = os.fstat(handle).st_size
        for op_id, offset in candidates:
            self._move_to(offset)
            if HEADER.size <= offset < size and self._frame_checks(op_id):
                start = (op_id, offset)
                break
            with oplog._lock:
                index.discard(op_id)
            log.warning("oplog index record ignored", path=str(index.path), op_id=op_id, offset=offset)
        self._move_to(start[1])
        # Walk frame headers from the starting point to the target: nothing is decoded.
        skip_to = start[0]
        while True:
            position = self._offset - self._buffer_base
            while len(self._buffer) - position < FRAME_HEADER.size:
                if not self._fill():
                    finished = self._segment_finished()
                    if self._fill():  # it grew before it was finished: walk on
                        position = self._offset - self._buffer_base
                        continue
                    if os.fstat(handle).st_size != self._offset:
                        return self._place_checked(start, target)  # a partial header, or past the end
                    if not finished:
                        return skip_to == target and self._placed_here()  # the target is not written yet
                    self._end_of_finished_segment(skip_to)
                    return self._place()  # the target lies in a segment started since we looked
                position = self._offset - self._buffer_base
            length, _, field = FRAME_HEADER.unpack_from(self._buffer, position)
            if field & OP_ID_MASK != skip_to or not 0 < length <= FRAME_LIMIT:
                return self._place_checked(start, target)
            if skip_to == target:  # the target's header is where the walk says: placed
                return self._placed_here()
            self._offset += FRAME_HEADER.size + length
            skip_to += 1

    def _placed_here(self) -> bool:
        self._placed = True
        return True

    def _place_checked(self, start: tuple[int, int], target: int) -> bool:
        """Walk whole, checked frames from ``start`` to the target: a torn tail waits, damage raises."""
        after = self.position
        self._move_to(start[1])
        self.position = start[0] - 1
        try:
            while self.position < target - 1:
                frame, finished = self._next_frame(), False
                if frame is None:
                    finished = self._segment_finished()
                    frame = self._next_frame()  # it may have grown before it was finished
                if frame is None:
                    if not finished:
                        return False
                    self._end_of_finished_segment(self.position + 1)
                    self.position = after
                    return self._place()  # the target lies in a segment started since we looked
                self.position = frame.op_id
            self._placed = True
            return True
        finally:
            self.position = after  # placed or not, the cursor stands after ``after``

    def _move_to(self, offset: int) -> None:
        self._offset, self._data, self._buffer_base = offset, b"", offset
        self._buffer = memoryview(self._data)
        self._checked = None
        self._ahead = None

    def _frame_checks(self, op_id: int) -> bool:
        """True when a whole, checksum-valid frame of ``op_id`` starts at the current offset."""
        while True:
            try:
                frame = frame_at(self._buffer, self._offset - self._buffer_base, self._buffer_base, op_id)
            except BadFrame:
                return False
            if frame is not None:
                return True
            if not self._fill():
                return False

    def _segment_finished(self) -> bool:
        """True when a newer segment exists, so this one is written whole."""
        oplog = self._oplog
        with oplog._lock:
            segments = oplog._segments if oplog._write_fd is not None else list_segments(oplog._dir)
        return bool(segments) and (self._segment or 0) < segments[-1]

    def _end_of_finished_segment(self, next_op_id: int) -> None:
        """At the end of a finished segment, ``next_op_id`` must start the next one: return when it does.

        Raises ``ChangeStreamHistoryLost`` when this segment was trimmed under
        the reader (trimming deletes the oldest first, so a missing next segment
        with this one gone is history, with this one present a gap), and
        ``OplogCorruptedError`` for a gap.
        """
        oplog = self._oplog
        with oplog._lock:
            segments = oplog._segments if oplog._write_fd is not None else list_segments(oplog._dir)
        following = bisect.bisect_right(segments, self._segment or 0)
        if following < len(segments) and segments[following] == next_op_id:
            return
        path = segment_path(oplog._dir, self._segment or 0)
        if not path.exists():
            raise ChangeStreamHistoryLost(f"op_id {next_op_id} was trimmed while being read")
        nxt = segments[following] if following < len(segments) else None
        raise OplogCorruptedError(
            f"segment ends at op_id {next_op_id - 1} but the next starts at {nxt}", path=str(path), offset=self._offset
        )

    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        oplog = self._oplog
        oplog._check_open()
        if not self._placed and not self._place():
            return []
        if self._damage is not None:
            raise self._damage
        entries: list[OplogEntry] = []
        stop = self.position + limit  # op_ids rise by one: the last op_id this read passes
        ahead, self._ahead = self._ahead, None
        if (
            ahead is not None and sift is ahead.sift and self._data is ahead.data and self.position == ahead.after
            and not self._read_ahead(ahead, entries, stop)
        ):
            return entries  # the commit goes on past them: its last frame was seen, so they are whole
        failure: OplogCorruptedError | ChangeStreamHistoryLost | None = None
        try:
            while True:
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
                if not frame.continues:
                    self._open_at = None
                elif self._open_at is None:
                    start = frame.offset - self._buffer_base
                    self._open_at = (frame.op_id, frame.offset, bytes(self._buffer[start : start + FRAME_HEADER.size]))
            if self._open_at is not None and self.position >= stop and self.position > self._commit_end:
                self._find_commit_end(sift)
        except (OplogCorruptedError, ChangeStreamHistoryLost) as exc:
            failure = exc
            if isinstance(exc, OplogCorruptedError):
                oplog._corruptions += 1  # counted where met: the metrics' corruption alert rests on it
        except _CommitRewritten:  # what was read of it was cut short, and cut: read it anew next time
            failure = None
            self._commit_end = 0
            self._ahead = None
        if self._open_at is not None and self.position > self._commit_end:
            self._back_to_commit_start(entries)
        self._open_at = None
        if failure is not None:
            if not entries:
                raise failure
            self._damage = failure  # the entries before it first; the next read raises it
        return entries

    def _read_whole_frames(self, entries: list[OplogEntry], stop: int, sift: Sift | None) -> None:
        """The hot path: take the frames, up to op_id ``stop``, that lie wholly in the buffer and pass every check.

        Anything unusual (a partial frame, a bad checksum, an unexpected op_id,
        an undecodable payload) stops it; ``_next_frame`` then handles that
        frame. A frame whose payload fails ``sift`` is checked but not decoded.
        A frame whose commit goes on after it opens that commit (``_open_at``)
        until its last frame.
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
        open_at = self._open_at
        first = expected
        decoded = 0
        checked = self._checked
        checked_to = checked[1] - base if checked is not None and checked[0] is data else 0
        needle = None if sift is None else sift_needle(sift)
        hit, width, find, data_change = -1, len(needle or b""), data.find, DATA_CHANGE_HEAD.match
        while size - position >= header_size:
            if expected > stop:
                break
            length, crc, field = unpack_header(buffer, position)  # field: the op_id, and CONTINUES
            body = position + header_size
            end = body + length
            if (field != expected and field != expected | CONTINUES) or length == 0 or end > size:
                break
            # op_id and payload lie side by side: one call; none for frames of this block the look-ahead checked
            if end > checked_to and crc32(buffer[position + 8 : end]) != crc:
                break
            if needle is not None:  # the sift, inline: one search finds the next frame holding the needle
                if hit < body:
                    hit = find(needle, body)
                    if hit < 0:
                        hit = size
                wanted = hit <= end - width or data_change(data, body, end) is None
            else:
                wanted = sift is None or sift(data, body, end)
            if wanted:
                try:
                    entry = make_entry(unpackb(
                        buffer[body:end], raw=False, timestamp=3, strict_map_key=False, ext_hook=ext_hook
                    ))
                except (ValueError, TypeError, EntryDecodeError, msgpack.UnpackException):
                    break
                if entry.op_id != expected:
                    break
                append(entry)
                decoded += 1
            if field == expected:  # its commit's last frame
                open_at = None
            elif open_at is None:
                open_at = (expected, base + position, bytes(buffer[position:body]))
            position = end
            expected += 1
        if expected > first:
            self._offset = base + position
            self.position = expected - 1
            self._open_at = open_at
            self._oplog._frames_decoded += decoded

    def _read_ahead(self, ahead: _SiftedAhead, entries: list[OplogEntry], stop: int) -> bool:
        """Decode the frames up to op_id ``stop`` a sifted look-ahead let through, checked then: none is walked,
        checked or sifted again. True when it took the last of them (the cursor then stands at the commit's
        last frame, the frames after them having failed the sift); False when some are left for the next read.

        A frame that does not decode stops it before that frame, which the
        read then takes the usual way, reporting what is wrong with it.
        """
        buffer, base, frames = self._buffer, self._buffer_base, ahead.frames
        header_size, unpackb, ext_hook = FRAME_HEADER.size, msgpack.unpackb, UNPACK_OPTIONS["ext_hook"]
        first = index = ahead.next
        count = len(frames)
        append = entries.append
        while index < count:
            start, end, op_id = frames[index : index + 3]
            if op_id > stop and index > first:  # one at least: the read moves on
                break
            try:
                entry = entry_from_record(unpackb(
                    buffer[start + header_size - base : end - base],
                    raw=False, timestamp=3, strict_map_key=False, ext_hook=ext_hook,
                ))
            except (ValueError, TypeError, EntryDecodeError, msgpack.UnpackException):
                entry = None
            if entry is None or entry.op_id != op_id:
                self.position, self._offset = op_id - 1, start
                self._oplog._frames_decoded += (index - first) // 3
                return True
            append(entry)
            index += 3
        self._oplog._frames_decoded += (index - first) // 3
        if index < len(frames):
            self.position, self._offset = frames[index - 1], frames[index - 2]
            ahead.next, ahead.after = index, self.position
            self._ahead = ahead
            return False
        self.position, self._offset = ahead.commit_end, ahead.commit_end_offset
        return True

    def _find_commit_end(self, sift: Sift | None = None) -> None:
        """The read stopped at its limit inside a commit: look ahead for the commit's last frame, decoding
        nothing, and note it in ``_commit_end``; the cursor stays where it is.

        Returns without noting it at the end of what is written (a commit
        being written, or cut short by a crash); raises ``OplogCorruptedError``
        for damage on the way, and for a finished segment that ends inside
        the commit. With a ``sift``, the frames it lets through are noted as
        well (``_ahead``), when the buffer holds the whole rest of the commit:
        the next reads with that sift decode them, walking no frame twice.
        """
        position, offset = self.position, self._offset
        passed: list[int] | None = None if sift is None else []
        try:
            while True:
                commit_ends_at = self._skip_to_commit_end(sift, passed)
                if commit_ends_at:
                    if passed is not None and sift is not None:
                        self._ahead = _SiftedAhead(sift, self._data, passed, position, self._commit_end, commit_ends_at)
                    return
                if self._extend(offset):
                    continue
                passed = None  # the frames the next lines take are not noted
                frame = self._next_frame()
                if frame is None:
                    finished = self._segment_finished()
                    frame = self._next_frame()  # it may have grown before it was finished
                    if frame is None:
                        if finished:
                            raise self._unfinished_commit()
                        return
                self.position = frame.op_id
                if not frame.continues:
                    self._commit_end = frame.op_id
                    return
        finally:
            self.position = position
            if offset >= self._buffer_base:
                self._offset = offset
            else:  # the look-ahead read past the buffer
                self._move_to(offset)

    def _skip_to_commit_end(self, sift: Sift | None = None, passed: list[int] | None = None) -> int:
        """The look-ahead's fast path, through what the buffer holds: check each frame (op_id, length, checksum)
        up to the commit's last one, decoding nothing and making no ``Frame``; note it in ``_commit_end`` and
        return the file offset where that frame ends. How far it checked is noted in ``_checked``: the read
        that takes these frames from the same block does not check them again. The frames ``sift`` lets
        through are added to ``passed`` (three ints each: where the frame starts and ends in the file, its
        op_id).

        Otherwise the cursor is left past the frames checked, and 0 lets
        ``_extend`` read on, or the frame-by-frame path go on from there (a
        frame across the buffer's end, the tail, damage, which it tells apart
        and reports).
        """
        data, buffer = self._data, self._buffer
        size = len(buffer)
        base = self._buffer_base
        position = self._offset - base
        expected = self.position + 1
        header_size, unpack_header, crc32 = FRAME_HEADER.size, FRAME_HEADER.unpack_from, zlib.crc32
        needle = None if sift is None or passed is None else sift_needle(sift)
        hit, width, find, data_change = -1, len(needle or b""), data.find, DATA_CHANGE_HEAD.match
        found = False
        while size - position >= header_size:
            length, crc, field = unpack_header(buffer, position)
            end = position + header_size + length
            if (field != expected and field != expected | CONTINUES) or length == 0 or end > size:
                break
            if crc32(buffer[position + 8 : end]) != crc:  # damage is met here, before any of the commit is taken
                break
            if passed is not None:
                body = position + header_size
                if needle is not None:  # as in _read_whole_frames
                    if hit < body:
                        hit = find(needle, body)
                        if hit < 0:
                            hit = size
                    if hit <= end - width or data_change(data, body, end) is None:
                        passed += (base + position, base + end, expected)
                elif sift is not None and sift(data, body, end):
                    passed += (base + position, base + end, expected)
            position = end
            if field == expected:  # the commit's last frame
                self._commit_end = expected
                found = True
                break
            expected += 1
        checked = self._checked
        if checked is None or checked[0] is not data or checked[1] < base + position:
            self._checked = (data, base + position)
        if found:
            return base + position
        self._offset, self.position = base + position, expected - 1
        return 0

    def _extend(self, origin: int) -> bool:
        """The look-ahead ran out of buffer inside a frame: append the file's next block to the buffer, which
        keeps what it holds from ``origin`` (where the read stands) on; True when it did.

        The frames checked ahead then lie in the block the next read takes
        them from, and are not checked again. False when the buffer no longer
        holds ``origin``, when it would grow past ``LOOK_AHEAD_BYTES`` (a
        commit that large is checked again as it is read), when the frame at
        the offset lies whole in it (damage, for ``_next_frame`` to report),
        or when nothing more is written.
        """
        assert self._handle is not None
        buffer, base = self._buffer, self._buffer_base
        keep, pending = origin - base, self._offset - base
        held = len(buffer) - keep
        if keep < 0 or held >= LOOK_AHEAD_BYTES:
            return False
        if len(buffer) - pending >= FRAME_HEADER.size:
            length = FRAME_HEADER.unpack_from(buffer, pending)[0]
            if length > FRAME_LIMIT or pending + FRAME_HEADER.size + length <= len(buffer):
                return False
        more = os.pread(self._handle, max(READ_CHUNK, held), base + len(buffer))
        self._oplog._bytes_read += len(more)
        self._check_commit_start()
        if not more:
            return False
        checked = self._checked
        data = buffer[keep:].tobytes() + more
        # the bytes checked are in the new block, at the same offsets
        self._checked = (data, checked[1]) if checked is not None and checked[0] is self._data else None
        self._data, self._buffer, self._buffer_base = data, memoryview(data), origin
        return True

    def _back_to_commit_start(self, entries: list[OplogEntry]) -> None:
        """Leave out the entries of the commit whose last frame this read did not see; be before it again.

        What was read of it is dropped too: a writer may cut it and write others there.
        """
        assert self._open_at is not None
        op_id, offset, _ = self._open_at
        while entries and entries[-1].op_id >= op_id:
            entries.pop()
        self.position = op_id - 1
        self._move_to(offset)

    def _check_commit_start(self) -> None:
        """Inside a commit, after reading more of the file: raise ``_CommitRewritten`` when the commit's first
        frame no longer holds what was read there (so what was just read may belong to another write)."""
        if self._open_at is not None:
            assert self._handle is not None
            _, offset, header = self._open_at
            if os.pread(self._handle, FRAME_HEADER.size, offset) != header:
                raise _CommitRewritten

    def _unfinished_commit(self) -> OplogCorruptedError:
        """A finished segment ends inside the commit this read entered: the rest of it is lost."""
        assert self._open_at is not None
        path = segment_path(self._oplog._dir, self._segment or 0)
        return OplogCorruptedError(
            f"the segment ends inside a commit: op_ids {self._open_at[0]}..{self.position} have no last frame",
            path=str(path), offset=self._open_at[1],
        )

    def _next_frame(self) -> Frame | None:
        """The checked frame at the offset; None at the end of what is written (or at a torn tail)."""
        while True:
            position = self._offset - self._buffer_base
            try:
                frame = frame_at(self._buffer, position, self._buffer_base, self.position + 1)
            except BadFrame as bad:
                if self._settle(bad.offset, bad.reason):
                    continue
                return None
            if frame is not None:
                self._offset = frame.end
                return frame
            if self._fill():
                continue
            if len(self._buffer) > position and self._settle(self._offset, "the segment ends inside a frame"):
                continue
            return None

    def _fill(self) -> bool:
        """Read the next block from the current offset; False when nothing more is there."""
        assert self._handle is not None
        pending = self._offset - self._buffer_base
        need = READ_CHUNK
        if len(self._buffer) - pending >= FRAME_HEADER.size:
            length = FRAME_HEADER.unpack_from(self._buffer, pending)[0]
            if length <= FRAME_LIMIT:
                need = max(need, FRAME_HEADER.size + length)
        data = os.pread(self._handle, need, self._offset)
        self._oplog._bytes_read += len(data)
        self._check_commit_start()
        if len(data) <= max(0, len(self._buffer) - pending):
            return False
        self._data, self._buffer, self._buffer_base = data, memoryview(data), self._offset
        return True

    def _settle(self, offset: int, reason: str) -> bool:
        """A bad or incomplete frame at ``offset`` (the cursor's offset): read again, then judge it.

        True when it reads whole now (the buffer predated a write, or the
        writer's recovery of a torn tail): the buffer holds it. False when it is
        a frame still being written, or a torn tail a writer will cut: wait.
        Raises ``OplogCorruptedError`` when it is damage.
        """
        oplog = self._oplog
        assert self._handle is not None
        path = segment_path(oplog._dir, self._segment or 0)
        with oplog._lock:
            writing = oplog._write_fd is not None
            in_progress = writing and self._segment == oplog._active and offset >= oplog._active_size
        finished = self._segment_finished()
        rest = os.pread(self._handle, max(0, os.fstat(self._handle).st_size - offset), offset)
        oplog._bytes_read += len(rest)
        self._check_commit_start()
        with contextlib.suppress(BadFrame):
            if frame_at(memoryview(rest), 0, offset, self.position + 1) is not None:
                self._data, self._buffer, self._buffer_base = rest, memoryview(rest), offset
                return True
        if in_progress:
            return False
        if writing or finished:  # the writer's own data, and a finished segment, are whole
            raise OplogCorruptedError(reason, path=str(path), offset=offset)
        damage = tail_damage(rest, 0, offset, self.position + 1)
        if damage is not None:
            raise OplogCorruptedError(f"{reason}; {damage}", path=str(path), offset=offset)
        return False

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
            return True
        if self._open_at is not None:  # a commit is never split between segments
            raise self._unfinished_commit()
        if nxt != self.position + 1:
            self._end_of_finished_segment(self.position + 1)
        self._placed = False
        return self._place()
