"""The ``Oplog`` contract every backend keeps, and the producer helpers on top of it.

op_ids start at 1, rise by exactly one per entry and are never reused, even
after a trim. ``first_op_id`` is the oldest retained entry and ``last_op_id``
the newest ever appended; an empty oplog has ``first_op_id == last_op_id + 1``.
"""

from __future__ import annotations

import abc
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from rxcs.errors import ChangeStreamHistoryLost, OplogCorruptedError, RxcsError
from rxcs.events import ClusterTime, Namespace, OperationType
from rxcs.oplog.catalog import CollectionInfo
from rxcs.oplog.checkpoints import CheckpointStore, trim_floor, warn_trimmed_past
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.images.overlay import check_images_option

if TYPE_CHECKING:
    from rxcs.oplog.images import DocumentImages

__all__ = ["Clock", "Oplog", "OplogCursor", "Sift"]

Document = Mapping[str, Any]

Sift = Callable[[bytes, int, int], bool]
"""A test on an entry's encoded form, ``data[start:end]``: False when no reader wants that entry.

A stream's leading ``$match`` gives one (``rxcs.prefilter``): a cursor that
holds entries encoded may leave out those failing it without decoding them.
It is a necessary condition only: whatever passes is still filtered exactly.
"""
_EPOCH = ClusterTime(0, 0)


class Clock:
    """Hands out cluster times that strictly increase, and wall times in ms.

    The cluster time follows the wall clock's seconds and never goes back,
    even when the wall clock does; ``inc`` orders entries within a second.
    """

    __slots__ = ("_last",)

    def __init__(self, last: ClusterTime = _EPOCH) -> None:
        self._last = last

    def tick(self) -> tuple[ClusterTime, int]:
        """Return the next cluster time and the current wall time in ms."""
        wall_ms = time.time_ns() // 1_000_000
        seconds = wall_ms // 1000
        last = self._last
        now = ClusterTime(seconds, 1) if seconds > last.time else ClusterTime(last.time, last.inc + 1)
        self._last = now
        return now, wall_ms


class OplogCursor(abc.ABC):
    """Reads entries in op_id order from a position, batch by batch.

    ``position`` is the op_id of the last entry read past (or the start).
    A cursor whose next entry was trimmed away raises ``ChangeStreamHistoryLost``.
    An entry that cannot be read (damage) raises after the entries before
    it: a read may return those and leave the error to the next read.
    """

    position: int

    @abc.abstractmethod
    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        """Read up to ``limit`` entries after ``position`` and return them; caught up when it does not move.

        With ``sift``, a cursor may leave out, undecoded, the entries whose
        encoded form fails it: ``position`` still moves past them, so a read
        can return nothing and yet have made progress. A cursor is free to
        ignore ``sift`` and return every entry.
        """

    def close(self) -> None:  # noqa: B027 - cursors without resources need nothing
        """Release what the cursor holds open."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Oplog(abc.ABC):
    """A durable, ordered log of changes; producers append, streams tail it.

    Examples:
        >>> import rxcs
        >>> with rxcs.open_oplog(":memory:") as oplog:
        ...     oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        ...     oplog.update("shop", "users", 1, updated_fields={"name": "Ada L."})
        ...     [entry.op for entry in oplog.read(after=0, limit=10)]
        1
        2
        ['insert', 'update']
    """

    # -- identity and range -------------------------------------------------

    @property
    @abc.abstractmethod
    def oplog_id(self) -> uuid.UUID:
        """The oplog's identity, kept for life; resume tokens carry it."""

    @property
    @abc.abstractmethod
    def first_op_id(self) -> int:
        """The op_id of the oldest retained entry (``last_op_id + 1`` when empty)."""

    @property
    @abc.abstractmethod
    def last_op_id(self) -> int:
        """The op_id of the newest entry ever appended (0 before the first)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``close()`` was called."""

    @property
    def document_images(self) -> DocumentImages | None:
        """The document images the oplog keeps, or None when it keeps none (docs/images.md).

        An oplog keeps them when opened with ``document_images=True`` (for
        every collection; recorded with the oplog, so every process that
        opens it afterwards keeps them too) or once a collection is created or
        modified with ``{"changeStreamPreAndPostImages": {"enabled": True}}``
        (for that collection). Change streams use them for ``updateLookup``
        and for the pre- and post-images the producer did not record.
        """
        return None

    # -- writing ---------------------------------------------------------------

    @abc.abstractmethod
    def append_many(self, changes: Iterable[Change]) -> list[int]:
        """Append changes as one commit and return their op_ids, in order."""

    def append(self, change: Change) -> int:
        """Append one change and return its op_id."""
        return self.append_many((change,))[0]

    def sync(self) -> None:  # noqa: B027 - backends whose appends are durable when they return need nothing
        """Return once every entry appended so far is as durable as the backend makes anything.

        ``FileOplog`` with ``durability="group"`` or ``"none"`` syncs its file
        now (its appends survive a killed process at once, a power loss only
        once synced); ``MemoryOplog`` has nothing to do; ``RedisOplog``'s
        appends are what the server's persistence makes them when the append
        returns. A capture confirms its source position only after this.
        """

    @abc.abstractmethod
    def collections(self) -> dict[Namespace, CollectionInfo]:
        """The collections the oplog's catalog holds now, by namespace: each one's UUID, kind and indexes.

        Every append keeps the catalog (``rxcs.oplog.catalog``): a ``create``
        or the first change of a namespace gives it an identity, a drop or a
        dropped database forgets it, a rename moves it. Entries record the
        identity they were appended with, and change events show it as
        ``collectionUUID`` (with ``show_expanded_events``).

        Examples:
            >>> import rxcs
            >>> with rxcs.open_oplog(":memory:") as oplog:
            ...     _ = oplog.create_collection("shop", "users")
            ...     _ = oplog.create_index("shop", "users", {"key": {"email": 1}})
            ...     users = oplog.collections()[rxcs.Namespace("shop", "users")]
            >>> users.kind, users.indexes
            ('collection', {'email_1': {'v': 2, 'key': {'email': 1}}})
        """

    @abc.abstractmethod
    def trim(self, before_op_id: int) -> int:
        """Drop retained entries with op_id below ``before_op_id``; return how many went.

        A backend that stores entries in segments drops only whole segments, so it
        may keep a few entries below ``before_op_id``.
        """

    # -- reading ---------------------------------------------------------------

    @abc.abstractmethod
    def cursor(self, after: int) -> OplogCursor:
        """A cursor positioned after ``after`` (0 or ``first_op_id - 1`` for the oldest).

        Raises ``ChangeStreamHistoryLost`` when the entry after ``after`` was trimmed.
        """

    def continuing_cursor(self, after: int) -> OplogCursor:
        """A cursor for a stream that was reading already and picks up again at ``after`` (after a pause).

        The same as ``cursor()`` here; RedisOplog also refuses a position
        that a range lost in a failover, learned while the stream ran, leaves
        in doubt (docs/redis.md, "Epochs and lost ranges").
        """
        return self.cursor(after)

    def _inspecting_cursor(self, after: int) -> OplogCursor:
        """A cursor for looking at entries (``read``, ``verify``), not for a stream: a backend that checks
        where a stream may start (RedisOplog, against ranges a failover lost) does not check it here."""
        return self.cursor(after)

    def read(self, after: int, limit: int) -> list[OplogEntry]:
        """Return up to ``limit`` entries with op_id greater than ``after``.

        Fewer come back only at the end of the log: an entry that cannot be
        read raises, even when the entries before it were read.
        """
        with self._inspecting_cursor(after) as cursor:
            entries = cursor.read(limit)
            while entries and len(entries) < limit:  # a short batch: the end, or a cursor that stopped at damage
                more = cursor.read(limit - len(entries))
                if not more:
                    break
                entries.extend(more)
            return entries

    @abc.abstractmethod
    def wait(self, after: int, timeout: float | None) -> bool:
        """Block until an entry after ``after`` exists; False on timeout or close.

        Returns at once when such an entry already exists. Spurious early
        returns are allowed (see ``wake_waiters``); callers re-check.
        """

    @abc.abstractmethod
    def wake_waiters(self) -> None:
        """Make every thread blocked in ``wait()`` return now (to notice a stop)."""

    def op_id_at(self, when: ClusterTime | datetime) -> int:
        """The op_id after which entries have a cluster time at or after ``when``.

        A datetime is taken as its second. Raises ``ChangeStreamHistoryLost``
        when entries at ``when`` may have been trimmed. O(log n) reads.
        """
        target = ClusterTime(int(when.timestamp()), 0) if isinstance(when, datetime) else when
        low, high = self.first_op_id, self.last_op_id
        if low > high:
            return high
        first = self.read(low - 1, 1)
        if first and first[0].cluster_time >= target and low > 1:
            raise ChangeStreamHistoryLost(
                f"entries at {target} are older than the oldest retained entry (op_id {low})"
            )
        # Find the first op_id in [low, high + 1) whose cluster time is >= target.
        high += 1
        while low < high:
            mid = (low + high) // 2
            entry = self.read(mid - 1, 1)
            if entry and entry[0].cluster_time < target:
                low = mid + 1
            else:
                high = mid
        return low - 1

    def describe(self) -> dict[str, Any]:
        """The oplog as a plain JSON-able document: backend, identity, range, and the backend's ``info()``.

        What ``rxcs oplog info`` prints and ``rxcs serve`` answers at ``GET /oplog``.

        Examples:
            >>> import rxcs
            >>> with rxcs.open_oplog(":memory:") as oplog:
            ...     _ = oplog.insert("shop", "users", {"_id": 1})
            ...     description = oplog.describe()
            >>> description["backend"], description["first_op_id"], description["last_op_id"]
            ('MemoryOplog', 1, 1)
        """
        document: dict[str, Any] = {
            "backend": type(self).__name__, "oplog_id": str(self.oplog_id),
            "first_op_id": self.first_op_id, "last_op_id": self.last_op_id,
        }
        info = getattr(self, "info", None)
        if callable(info):
            details = info()
            fields = getattr(details, "__dataclass_fields__", None)
            items = ((name, getattr(details, name)) for name in fields) if fields is not None else dict(details).items()
            document.update((str(name), _plain(value)) for name, value in items)
        return document

    def verify(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Read every retained entry and check it; return how many were checked.

        Entries must decode and carry consecutive op_ids from ``first_op_id``
        on; a damaged one raises ``OplogCorruptedError`` (the backend says
        where). ``progress(done, total)`` counts entries as it goes. Backends
        with a storage format of their own check more (``FileOplog``: every
        frame's checksum, file and byte offset).
        """
        first, last = self.first_op_id, self.last_op_id
        total = max(0, last - first + 1)
        checked, expected = 0, first
        with self._inspecting_cursor(first - 1) as cursor:
            while batch := cursor.read(1000):
                for entry in batch:
                    if entry.op_id != expected:
                        raise OplogCorruptedError(
                            f"op_id {entry.op_id} where {expected} was expected",
                            path=f"{type(self).__name__} {self.oplog_id}", offset=0,
                        )
                    expected += 1
                checked += len(batch)
                if progress is not None:
                    progress(min(checked, total), total)
                if expected > last:
                    break
        return checked

    # -- consumers' checkpoints ---------------------------------------------------

    retain_for_consumers: bool = False
    """When True, trimming (``trim()`` and retention) keeps every entry a consumer's checkpoint still needs;
    otherwise a trim that passes a checkpoint is logged as a warning. Backends take it as a keyword."""

    @property
    def checkpoints(self) -> CheckpointStore:
        """The named records this oplog keeps for its consumers and groups (``rxcs.consumers`` reads them)."""
        store: CheckpointStore | None = getattr(self, "_checkpoint_store", None)
        if store is None:
            with _checkpoint_stores_lock:
                store = getattr(self, "_checkpoint_store", None)
                if store is None:
                    store = self._open_checkpoints()
                    self._checkpoint_store = store
        return store

    def _open_checkpoints(self) -> CheckpointStore:
        """The backend's checkpoint store, made once on first use."""
        raise RxcsError(f"{type(self).__name__} keeps no consumer checkpoints")

    def _keep_for_consumers(self, before_op_id: int) -> int:
        """Where a trim to ``before_op_id`` may go: not past a checkpoint when ``retain_for_consumers``."""
        return trim_floor(self.checkpoints, before_op_id, retain=self.retain_for_consumers)

    def _trimmed_past_consumers(self, first_op_id: int) -> None:
        """Warn about each consumer whose checkpoint a trim (now at ``first_op_id``) passed."""
        warn_trimmed_past(self.checkpoints, first_op_id, str(self.oplog_id))

    # -- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the oplog; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- producer helpers ---------------------------------------------------------

    def insert(self, db: str, coll: str, document: Document, *, txn: int | None = None) -> int:
        """Record an inserted document (it must carry ``_id``); return its op_id."""
        return self.append(Change.insert(db, coll, document, txn=txn))

    def update(
        self,
        db: str,
        coll: str,
        document_key: Any,
        *,
        updated_fields: Document | None = None,
        removed_fields: Iterable[str] | None = None,
        truncated_arrays: Iterable[Document] | None = None,
        full_document: Document | None = None,
        full_document_before_change: Document | None = None,
        txn: int | None = None,
        disambiguated_paths: Mapping[str, Iterable[str | int]] | None = None,
    ) -> int:
        """Record an update; ``document_key`` is ``{"_id": ...}`` or the ``_id`` itself.

        ``disambiguated_paths`` spells out ambiguous paths (see ``Change.update``).
        """
        return self.append(
            Change.update(
                db, coll, document_key,
                updated_fields=updated_fields, removed_fields=removed_fields,
                truncated_arrays=truncated_arrays, full_document=full_document,
                full_document_before_change=full_document_before_change, txn=txn,
                disambiguated_paths=disambiguated_paths,
            )
        )

    def replace(
        self,
        db: str,
        coll: str,
        document_key: Any,
        document: Document,
        *,
        full_document_before_change: Document | None = None,
        txn: int | None = None,
    ) -> int:
        """Record a whole-document replacement; return its op_id."""
        return self.append(
            Change.replace(
                db, coll, document_key, document,
                full_document_before_change=full_document_before_change, txn=txn,
            )
        )

    def delete(
        self,
        db: str,
        coll: str,
        document_key: Any,
        *,
        full_document_before_change: Document | None = None,
        txn: int | None = None,
    ) -> int:
        """Record a deleted document; return its op_id."""
        return self.append(
            Change.delete(
                db, coll, document_key,
                full_document_before_change=full_document_before_change, txn=txn,
            )
        )

    def create_collection(self, db: str, coll: str, options: Document | None = None) -> int:
        """Record a created collection; return its op_id.

        ``options`` are the collection's (shown as the create event's
        ``operationDescription``); ``{"changeStreamPreAndPostImages":
        {"enabled": True}}`` among them keeps document images for it.
        """
        check_images_option(options)
        return self.append(Change.create_collection(db, coll, options))

    def modify_collection(self, db: str, coll: str, options: Document) -> int:
        """Record a collection's changed options (MongoDB's ``collMod``, a ``modify`` event); return its op_id.

        ``{"changeStreamPreAndPostImages": {"enabled": True}}`` turns document
        images on for the collection from this entry on, ``False`` off.

        Examples:
            >>> import rxcs
            >>> with rxcs.open_oplog(":memory:") as oplog:
            ...     _ = oplog.modify_collection("shop", "users", {"changeStreamPreAndPostImages": {"enabled": True}})
            ...     _ = oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            ...     oplog.document_images.current("shop", "users", 1)
            {'_id': 1, 'name': 'Ada'}
        """
        check_images_option(options)
        # A modify carries its options as a create does: the same checks, another operation.
        return self.append(Change.create_collection(db, coll, options)._replace(op=OperationType.MODIFY))

    def drop_collection(self, db: str, coll: str) -> int:
        """Record a dropped collection; return its op_id."""
        return self.append(Change.drop_collection(db, coll))

    def rename_collection(self, db: str, coll: str, to_db: str, to_coll: str, *, drop_target: bool = False) -> int:
        """Record a renamed collection (``drop_target``: it dropped a collection at the target); return its op_id."""
        return self.append(Change.rename_collection(db, coll, to_db, to_coll, drop_target=drop_target))

    def drop_database(self, db: str) -> int:
        """Record a dropped database; return its op_id."""
        return self.append(Change.drop_database(db))

    def create_index(self, db: str, coll: str, index_spec: Document) -> int:
        """Record a created index (``{"key": {...}, "name": ...}``); return its op_id."""
        return self.append(Change.create_index(db, coll, index_spec))

    def drop_index(self, db: str, coll: str, index_name: str) -> int:
        """Record a dropped index; return its op_id."""
        return self.append(Change.drop_index(db, coll, index_name))


_checkpoint_stores_lock = threading.Lock()


def _plain(value: Any) -> Any:
    """A value as JSON can carry it: containers of plain values, other things as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
