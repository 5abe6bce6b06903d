"""``MemoryOplog``: an in-process oplog for tests, demos and short-lived pipelines.

Entries are kept encoded, exactly as the durable backends keep them, so a
producer that mutates a document after appending it does not rewrite history
and every reader gets its own copy. The collection catalog is kept in memory.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import final

from rxcs.errors import ChangeStreamHistoryLost, OplogClosedError
from rxcs.events import Namespace
from rxcs.log import log
from rxcs.oplog.base import Clock, Oplog, OplogCursor, Sift
from rxcs.oplog.catalog import Catalog, CollectionInfo
from rxcs.oplog.checkpoints import CheckpointStore, MemoryCheckpoints
from rxcs.oplog.codec import decode_entry, encode_entry
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.images import DocumentImages, MemoryImageStore
from rxcs.oplog.images.overlay import enables_images

__all__ = ["MemoryOplog"]

@final
class MemoryOplog(Oplog):
    """A thread-safe oplog held in memory; trims exactly to the entry.

    ``max_entries`` keeps at most that many entries (older ones are trimmed
    on append). ``document_images=True`` keeps document images for every
    collection (``document_images``, docs/images.md); a collection created or
    modified with ``{"changeStreamPreAndPostImages": {"enabled": True}}``
    turns them on for itself. Images are kept in memory, brought up to date
    within each append.
    ``retain_for_consumers=True`` keeps what consumers' checkpoints still need.

    Examples:
        >>> oplog = MemoryOplog()
        >>> oplog.insert("shop", "users", {"_id": 1})
        1
        >>> oplog.read(after=0, limit=1)[0].full_document
        {'_id': 1}
    """

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        oplog_id: uuid.UUID | None = None,
        document_images: bool = False,
        retain_for_consumers: bool = False,
    ) -> None:
        if max_entries is not None and (isinstance(max_entries, bool) or max_entries < 1):
            raise ValueError(f"max_entries must be a positive int or None, not {max_entries!r}")
        if not isinstance(document_images, bool):
            raise ValueError(f"document_images must be True or False, not {document_images!r}")
        self._oplog_id = oplog_id or uuid.uuid4()
        self._max_entries = max_entries
        self._frames: list[bytes] = []
        self._first = 1  # op_id of self._frames[0]
        self._clock = Clock()
        self._catalog = Catalog()
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self._images: DocumentImages | None = None
        if document_images:
            self._images = DocumentImages(MemoryImageStore(every_collection=True), self)
        self.retain_for_consumers = bool(retain_for_consumers)

    @property
    def document_images(self) -> DocumentImages | None:
        return self._images

    def _update_images(self, through: int, frames: list[bytes]) -> None:
        """Bring the images up to ``through``; never raises (the entries are appended: readers compute what the
        store misses, and the next append's catch-up applies it)."""
        assert self._images is not None
        try:
            self._images.catch_up(through, [decode_entry(frame) for frame in frames])
        except Exception as exc:  # noqa: BLE001 - the entries are appended: an append must not fail for its images
            log.error("document images not brought up to date", backend="memory", through_op_id=through,
                      error=repr(exc))

    def _open_checkpoints(self) -> CheckpointStore:
        return MemoryCheckpoints()

    @property
    def oplog_id(self) -> uuid.UUID:
        return self._oplog_id

    @property
    def first_op_id(self) -> int:
        return self._first

    @property
    def last_op_id(self) -> int:
        return self._first + len(self._frames) - 1

    @property
    def closed(self) -> bool:
        return self._closed

    def append_many(self, changes: Iterable[Change]) -> list[int]:
        changes = list(changes)
        for index, change in enumerate(changes):
            if not isinstance(change, Change):
                raise TypeError(f"changes[{index}]: expected a Change, got {type(change).__name__}")
        enabling = enables_images(changes)
        with self._changed:
            self._check_open()
            if enabling and self._images is None:
                self._images = DocumentImages(MemoryImageStore(self.last_op_id), self)
            op_id = self.last_op_id
            frames = []
            catalog = self._catalog
            catalog.begin()
            try:
                for change in changes:
                    op_id += 1
                    cluster_time, wall_ms = self._clock.tick()
                    identity, dropped = catalog.apply(change)
                    frames.append(encode_entry(op_id, cluster_time, wall_ms, change, identity, dropped))
            except BaseException:
                catalog.rollback()
                raise
            # Encoding all first: one bad change appends nothing, and leaves the catalog as it was.
            catalog.commit(op_id)
            self._frames.extend(frames)
            if self._images is not None and frames:  # in the same lock: readers never find the store behind
                self._update_images(op_id, frames)
            if self._max_entries is not None and len(self._frames) > self._max_entries:
                self._trim_locked(self.last_op_id - self._max_entries + 1)
            self._changed.notify_all()
        first = op_id - len(frames) + 1
        return list(range(first, op_id + 1))

    def collections(self) -> dict[Namespace, CollectionInfo]:
        with self._changed:
            self._check_open()
            return self._catalog.snapshot()

    def trim(self, before_op_id: int) -> int:
        with self._changed:
            self._check_open()
            return self._trim_locked(before_op_id)

    def _trim_locked(self, before_op_id: int) -> int:
        before_op_id = self._keep_for_consumers(before_op_id)
        count = max(0, min(before_op_id, self.last_op_id + 1) - self._first)
        if count:
            del self._frames[:count]
            self._first += count
            if self._images is not None:
                self._images.trim(self._first)
            log.info("oplog trimmed", backend="memory", entries=count, first_op_id=self._first)
            self._trimmed_past_consumers(self._first)
        return count

    def cursor(self, after: int) -> OplogCursor:
        self._check_open()
        cursor = _MemoryCursor(self, after)
        cursor.check_retained()
        return cursor

    def wait(self, after: int, timeout: float | None) -> bool:
        with self._changed:
            if self.last_op_id > after:
                return True
            if self._closed:
                return False
            self._changed.wait(timeout)
            return self.last_op_id > after

    def wake_waiters(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise OplogClosedError("the memory oplog is closed")

    def _frames_after(self, after: int, limit: int) -> list[bytes]:
        with self._changed:
            self._check_open()
            start = after + 1 - self._first
            if start < 0:
                raise ChangeStreamHistoryLost(
                    f"op_id {after + 1} was trimmed; the oldest retained is {self._first}"
                )
            return self._frames[start : start + limit]


@final
class _MemoryCursor(OplogCursor):
    __slots__ = ("_oplog", "position")

    def __init__(self, oplog: MemoryOplog, after: int) -> None:
        if after < 0:
            raise ValueError(f"after must be >= 0, not {after}")
        self._oplog = oplog
        self.position = after

    def check_retained(self) -> None:
        self._oplog._frames_after(self.position, 0)

    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        frames = self._oplog._frames_after(self.position, limit)
        if sift is None:
            entries = [decode_entry(frame) for frame in frames]
        else:
            entries = [decode_entry(frame) for frame in frames if sift(frame, 0, len(frame))]
        self.position += len(frames)  # op_ids rise by one: the last frame's is this
        return entries
