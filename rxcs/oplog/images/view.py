"""``DocumentImages``: an oplog's document images, as its writers keep them and its streams ask for them.

The store (``rxcs.oplog.images.store``) is a view of the oplog brought up to
date by applying entries in op_id order from its checkpoint: writers do it
after their appends (``catch_up``), each commit moving the checkpoint only if
nobody moved it meanwhile. A stream may meet an entry before its writer has
applied it (a reader in another process sees an append the moment it is
written): it then applies the entries between the store's checkpoint and
that one itself, in memory (an ``Overlay``), reading them from the oplog. So
the image an event gets is always the one its change left, never one of a
later or a missing change, whoever is behind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final, Protocol, final

from rxcs.errors import ChangeStreamHistoryLost, RxcsError
from rxcs.log import log
from rxcs.oplog.codec import decode_value, encode_value
from rxcs.oplog.entry import OplogEntry
from rxcs.oplog.images.overlay import DATA_CHANGES, Overlay, StoreMoved
from rxcs.oplog.images.store import ImageStore, Key


class EntryLog(Protocol):
    """What document images read of their oplog (an ``rxcs.Oplog``): where it starts and ends, and its entries."""

    @property
    def first_op_id(self) -> int: ...

    @property
    def last_op_id(self) -> int: ...

    def read(self, after: int, limit: int) -> list[OplogEntry]: ...

__all__ = ["DocumentImages"]

_READ_CHUNK: Final = 1000


class _Unavailable(Exception):  # internal: the entries needed to compute an image are gone
    """The entries between the store's checkpoint and the one asked about can no longer be read."""


@final
class DocumentImages:
    """The document images an oplog keeps: what each change left and what was there before it, and the documents now.

    ``oplog.document_images`` is one of these when the oplog keeps images
    (``open_oplog(..., document_images=True)``, or a collection created or
    modified with ``{"changeStreamPreAndPostImages": {"enabled": True}}``).
    Change streams use it for ``full_document`` and
    ``full_document_before_change`` when the producer recorded no image.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:", document_images=True)
        >>> _ = oplog.insert("shop", "users", {"_id": 1, "name": "Ada", "tags": ["a"]})
        >>> op_id = oplog.update("shop", "users", 1, updated_fields={"tags.1": "b"}, removed_fields=["name"])
        >>> update = oplog.read(op_id - 1, 1)[0]
        >>> oplog.document_images.images(update)
        ({'_id': 1, 'name': 'Ada', 'tags': ['a']}, {'_id': 1, 'tags': ['a', 'b']})
        >>> oplog.document_images.current("shop", "users", {"_id": 1})
        {'_id': 1, 'tags': ['a', 'b']}
    """

    __slots__ = ("_lock", "_oplog", "_overlay", "_store", "_unavailable_logged")

    def __init__(self, store: ImageStore, oplog: EntryLog) -> None:
        self._store = store
        self._oplog = oplog
        self._lock = threading.Lock()
        self._overlay: Overlay | None = None
        self._unavailable_logged = False

    @property
    def store(self) -> ImageStore:
        """Where the images are kept."""
        return self._store

    # -- what streams ask ----------------------------------------------------------------

    def images(self, entry: OplogEntry) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(pre-image, post-image)`` of an entry's change: the document right before and right after it.

        Either is None when not known: the change is not an update, replace or
        delete of a collection whose images are kept, the document was not
        known before it, or (a delete) there is no post-image.
        """
        applied, before, after = self._store.images(entry.op_id)
        if applied < entry.op_id:
            with self._lock:
                try:
                    overlay = self._overlay_through(entry.op_id, entry)
                except _Unavailable:
                    return None, None
                if overlay is None:  # the store reached the entry meanwhile
                    _, before, after = self._store.images(entry.op_id)
                else:
                    before, after = overlay.rows.get(entry.op_id, (None, None))
        what = f"the images of op_id {entry.op_id}"
        return _decoded(before, what), _decoded(after, what)

    def current_of(self, entry: OplogEntry) -> dict[str, Any] | None:
        """The entry's document as it is now (``updateLookup``); None once deleted.

        Now is the store's checkpoint when that is at or past the entry (a
        writer keeps it within milliseconds of the oplog's end), else the
        oplog's last entry: never older than the entry.
        """
        key = (entry.db, entry.coll or "", encode_value(entry.document_key))
        applied, document = self._store.current(key)
        if applied >= entry.op_id:
            return _decoded(document, f"the current document of op_id {entry.op_id}")
        return self._current(key, max(entry.op_id, self._oplog.last_op_id), entry)

    def current(self, db: str, coll: str, document_key: Any) -> dict[str, Any] | None:
        """The document as of the oplog's last entry (``document_key``: ``{"_id": ...}`` or the ``_id``); None if
        it has none (deleted, never seen, or its collection keeps no images)."""
        key_document = document_key if isinstance(document_key, dict) else {"_id": document_key}
        return self._current((db, coll, encode_value(key_document)), self._oplog.last_op_id, None)

    def _current(self, key: Key, target: int, entry: OplogEntry | None) -> dict[str, Any] | None:
        """The document as of op_id ``target`` at the oldest."""
        applied, document = self._store.current(key)
        if applied < target:
            with self._lock:
                try:
                    overlay = self._overlay_through(target, entry)
                    found = None if overlay is None else overlay.lookup(key)
                except _Unavailable:
                    return None
                except StoreMoved:  # the store went past the overlay's end: it is newer
                    self._overlay = overlay = None
                if overlay is None:
                    _, document = self._store.current(key)
                else:
                    document = None if found is None else found[1]
        return _decoded(document, f"the current document of {key[0]}.{key[1]} {decode_value(key[2])!r}")

    def _overlay_through(self, target: int, entry: OplogEntry | None) -> Overlay | None:
        """This process's overlay, applied through op_id ``target`` (``entry``, when at hand); None when the store
        has reached it. Holds the lock."""
        while True:
            overlay = self._overlay
            applied = self._store.checkpoint()[0]
            if applied >= target:
                return None
            if overlay is not None and (
                applied >= overlay.end or applied < overlay.base or (applied > overlay.base and overlay.structural)
            ):
                overlay = None  # the store has caught up with it, or moved where it cannot follow
            if overlay is None:
                overlay = Overlay(self._store, record=False)
                if overlay.base >= target:
                    return None
            try:
                while overlay.end < target:
                    overlay.apply(self._following(overlay.end, target, entry))
            except StoreMoved:
                self._overlay = None
                continue
            except ChangeStreamHistoryLost as exc:
                self._overlay = None
                if self._store.checkpoint()[0] != applied:
                    continue  # a writer moved the store on meanwhile, past what was trimmed: compute from there
                if not self._unavailable_logged:
                    self._unavailable_logged = True
                    log.warning("document images unavailable: entries they need were trimmed", op_id=target,
                                store_op_id=applied, error=str(exc))
                raise _Unavailable from None
            self._overlay = overlay
            return overlay

    def _following(self, end: int, target: int, entry: OplogEntry | None) -> Sequence[OplogEntry]:
        """The entries after ``end`` up to ``target`` (at most a chunk): ``entry`` itself when it is next."""
        if entry is not None and end + 1 == entry.op_id == target and entry.op in DATA_CHANGES:
            return (entry,)
        batch = self._oplog.read(end, min(target - end, _READ_CHUNK))
        if not batch:
            raise ChangeStreamHistoryLost(f"op_id {end + 1} is no longer in the oplog")
        return batch

    # -- what writers do -----------------------------------------------------------------------

    def catch_up(self, through: int, entries: Sequence[OplogEntry] = ()) -> int:
        """Apply the entries after the store's checkpoint up to op_id ``through``, commit them; return the checkpoint.

        ``entries`` may hold entries the caller has at hand (just appended):
        those that follow the checkpoint are used instead of reading the oplog.
        Safe to run in many processes at once: a commit that finds the store
        moved is dropped, and the work goes on from the new checkpoint. When the
        entries after the checkpoint were trimmed before anyone applied them,
        the store starts again at the oldest retained entry (logged).
        """
        while True:
            overlay = Overlay(self._store, record=True)
            base = overlay.base
            if base >= through:
                return base
            if entries and entries[0].op_id <= base + 1 <= entries[-1].op_id:
                start = base + 1 - entries[0].op_id
                batch: Sequence[OplogEntry] = entries[start : start + min(through - base, _READ_CHUNK)]
            else:
                try:
                    batch = self._oplog.read(base, min(through - base, _READ_CHUNK))
                except ChangeStreamHistoryLost:
                    self._restart("the entries after its checkpoint were trimmed before it applied them", base)
                    continue
                if not batch:
                    return base
            try:
                overlay.apply(batch)
            except StoreMoved:
                continue
            assert overlay.writes is not None
            if self._store.commit(base, overlay.writes, overlay.end, overlay.stamp) and overlay.end >= through:
                return overlay.end  # done, without reading the store's state again

    def recover(self) -> int:
        """Check the store against the oplog, then catch up with its end; a writer does this when it takes the oplog.

        A store that is past the oplog's end, or whose checkpoint entry is not
        the one the oplog holds at that op_id (entries lost and written again),
        or that fell behind the oldest retained entry, starts again from the
        oldest retained entry, logged: the images of documents last written
        before it are then not known.
        """
        oplog = self._oplog
        applied, stamp = self._store.checkpoint()
        last, first = oplog.last_op_id, oplog.first_op_id
        problem = None
        if applied > last:
            problem = f"it is at op_id {applied}, past the oplog's last entry ({last})"
        elif applied < first - 1:
            problem = f"the entries after its checkpoint (op_id {applied}) were trimmed before it applied them"
        elif stamp is not None and applied >= first:
            found = oplog.read(applied - 1, 1)
            if not found or (*found[0].cluster_time, found[0].wall_time_ms) != tuple(stamp):
                problem = f"the oplog's entry {applied} is not the one it applied (entries were lost and written again)"
        if problem is not None:
            self._restart(problem, applied)
        return self.catch_up(last)

    def _restart(self, problem: str, applied: int) -> None:
        """Start the store again at the oldest retained entry, unless another writer moved it from ``applied``."""
        first = self._oplog.first_op_id
        if self._store.reset(first - 1, expected=applied):
            log.warning("document images started again", problem=problem, store_op_id=applied, from_op_id=first)

    def trim(self, before_op_id: int) -> int:
        """Drop the images that only entries before ``before_op_id`` need; return how many went."""
        return self._store.trim(before_op_id)

    def statistics(self) -> dict[str, int]:
        """What the store holds: its checkpoint (``applied``), ``images`` and ``documents``."""
        return self._store.statistics()

    def describe(self) -> dict[str, Any]:
        """Which collections images are kept for, and what the store holds, as a plain JSON-able document.

        What ``rxcs oplog images`` prints: ``every_collection``, ``collections``
        (``"db.coll"``: their own setting), ``applied``, ``images``, ``documents``.
        """
        settings = self._store.state().settings
        collections = {f"{db}.{coll}": enabled for (db, coll), enabled in sorted(settings.collections.items())}
        return {"every_collection": settings.every_collection, "collections": collections, **self.statistics()}

    def close(self) -> None:
        """Release the store."""
        self._store.close()


def _decoded(document: bytes | None, what: str) -> dict[str, Any] | None:
    """A kept document, decoded; one that does not decode is an ``RxcsError`` naming ``what`` it is."""
    if document is None:
        return None
    try:
        value = decode_value(document)
    except ValueError as exc:  # msgpack's errors are ValueErrors
        raise RxcsError(f"document images: {what} does not decode ({exc!r}); the store is damaged") from None
    if not isinstance(value, dict):
        raise RxcsError(f"document images: {what} is a {type(value).__name__}, not a document; the store is damaged")
    return value
