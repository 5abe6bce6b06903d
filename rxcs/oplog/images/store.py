"""What an image store keeps, the writes that change it, and the store held in memory.

A store is the state of the oplog's documents as of one op_id, its
*checkpoint*:

- **images**: per change, the document it left (its post-image; none for a
  delete) and the op_id of the key's change before it (whose image is this
  change's pre-image). An image *expires* at the op_id of the change that made
  it no longer the current one (its successor; a deletion at its own op_id):
  it is dropped once that op_id is trimmed from the oplog, since no retained
  entry needs it any more;
- **documents**: per namespace and document key, the op_id of its current
  image (the document now); a deleted document has none;
- **settings**: whether images are kept for every collection, and the
  collections' own setting (``changeStreamPreAndPostImages``).

Stores differ in where this lives (``MemoryImageStore`` here, SQLite beside a
FileOplog, hashes beside a RedisOplog); the writes are computed once, by
``rxcs.oplog.images.overlay``, and each store applies them in order, all or
nothing, only if its checkpoint is still the one they were computed from.
"""

from __future__ import annotations

import abc
import heapq
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

__all__ = [
    "DROP", "DROP_DATABASE", "EXPIRE", "RENAME", "ROW", "SET", "SETTING", "UNSET",
    "Checkpoint", "ImageStore", "Key", "MemoryImageStore", "Namespace", "Settings", "StoreState", "Write",
]

Namespace = tuple[str, str]
"""``(db, coll)``."""
Key = tuple[str, str, bytes]
"""``(db, coll, document key)``, the key encoded (``rxcs.oplog.codec.encode_value``)."""
Write = tuple[Any, ...]
"""One change to a store, a tuple led by its kind (below)."""

ROW: Final = "row"
"""``(ROW, op_id, prev, document)``: the image change ``op_id`` left (None: it deleted the document)."""
EXPIRE: Final = "expire"
"""``(EXPIRE, op_id, at)``: image ``op_id`` is no longer current since change ``at``."""
SET: Final = "set"
"""``(SET, db, coll, key, op_id)``: the document's current image is ``op_id``."""
UNSET: Final = "unset"
"""``(UNSET, db, coll, key)``: the document has no current image (deleted, or no longer known)."""
SETTING: Final = "setting"
"""``(SETTING, db, coll, enabled, at)``: a collection's own setting; when False its documents are forgotten."""
DROP: Final = "drop"
"""``(DROP, db, coll, at)``: the collection is gone: its documents and its setting."""
RENAME: Final = "rename"
"""``(RENAME, db, coll, to_db, to_coll, at)``: the target is dropped, then documents and setting move to it."""
DROP_DATABASE: Final = "dropDatabase"
"""``(DROP_DATABASE, db, at)``: every collection of ``db`` is dropped."""

Checkpoint = tuple[int, tuple[int, int, int] | None]
"""The op_id a store is at, and the stamp of that entry (cluster time and inc, wall ms), where recorded."""


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Which collections images are kept for: every one, unless its own setting says otherwise."""

    every_collection: bool = False
    collections: Mapping[Namespace, bool] = field(default_factory=dict)

    def enabled(self, db: str, coll: str) -> bool:
        """Whether images are kept for ``db.coll``."""
        return self.collections.get((db, coll), self.every_collection)


@final
@dataclass(frozen=True, slots=True)
class StoreState:
    """A store's checkpoint and its settings as of it."""

    applied: int
    settings: Settings


class ImageStore(abc.ABC):
    """Where an oplog's document images are kept; every method is safe to call from any thread."""

    @abc.abstractmethod
    def state(self) -> StoreState:
        """The checkpoint and the settings as of it, read together."""

    @abc.abstractmethod
    def checkpoint(self) -> Checkpoint:
        """The checkpoint and its entry's stamp."""

    @abc.abstractmethod
    def documents(self, keys: Sequence[Key]) -> tuple[int, dict[Key, tuple[int, bytes]]]:
        """The current images of ``keys`` (op_id, document), those that have one, and the checkpoint they are of."""

    @abc.abstractmethod
    def images(self, op_id: int) -> tuple[int, bytes | None, bytes | None]:
        """``(checkpoint, pre-image, post-image)`` of change ``op_id``; the images are None unless known.

        Only meaningful when the checkpoint returned is at or past ``op_id``.
        """

    @abc.abstractmethod
    def current(self, key: Key) -> tuple[int, bytes | None]:
        """``(checkpoint, document)``: the document's current image, None when deleted or not known."""

    @abc.abstractmethod
    def commit(self, expected: int, writes: Sequence[Write], applied: int, stamp: tuple[int, int, int] | None) -> bool:
        """Apply ``writes`` and move the checkpoint from ``expected`` to ``applied``, atomically.

        False, changing nothing, when the checkpoint is no longer ``expected``
        (another process committed first).
        """

    @abc.abstractmethod
    def set_every_collection(self, enabled: bool) -> None:
        """Keep images for every collection (True) or only for those whose own setting says so."""

    @abc.abstractmethod
    def reset(self, applied: int, *, expected: int) -> bool:
        """Forget every document and image and start again at ``applied`` (settings are kept).

        False, changing nothing, when the checkpoint is no longer ``expected``
        (another writer moved it meanwhile).
        """

    @abc.abstractmethod
    def trim(self, before_op_id: int) -> int:
        """Drop the images no entry from ``before_op_id`` on needs (expired before it); return how many."""

    @abc.abstractmethod
    def statistics(self) -> dict[str, int]:
        """What the store holds: ``applied``, ``images``, ``documents``."""

    def close(self) -> None:  # noqa: B027 - a store in memory holds nothing to release
        """Release what the store holds open."""


@final
class MemoryImageStore(ImageStore):
    """An image store in memory (``MemoryOplog``); documents are kept encoded, so every read is a copy."""

    def __init__(self, applied: int = 0, *, every_collection: bool = False) -> None:
        self._lock = threading.Lock()
        self._applied = applied
        self._stamp: tuple[int, int, int] | None = None
        self._every = every_collection
        self._collections: dict[Namespace, bool] = {}
        self._images: dict[int, list[Any]] = {}  # op_id -> [prev, document, expires]
        self._documents: dict[Namespace, dict[bytes, int]] = {}
        self._expiring: list[tuple[int, int]] = []  # a heap of (expires, op_id)

    def state(self) -> StoreState:
        with self._lock:
            return StoreState(self._applied, Settings(self._every, dict(self._collections)))

    def checkpoint(self) -> Checkpoint:
        with self._lock:
            return self._applied, self._stamp

    def documents(self, keys: Sequence[Key]) -> tuple[int, dict[Key, tuple[int, bytes]]]:
        found: dict[Key, tuple[int, bytes]] = {}
        with self._lock:
            for key in keys:
                op_id = self._documents.get((key[0], key[1]), {}).get(key[2])
                if op_id is not None:
                    found[key] = (op_id, self._images[op_id][1])
            return self._applied, found

    def images(self, op_id: int) -> tuple[int, bytes | None, bytes | None]:
        with self._lock:
            image = self._images.get(op_id)
            if image is None:
                return self._applied, None, None
            previous = None if image[0] is None else self._images.get(image[0])
            return self._applied, None if previous is None else previous[1], image[1]

    def current(self, key: Key) -> tuple[int, bytes | None]:
        with self._lock:
            op_id = self._documents.get((key[0], key[1]), {}).get(key[2])
            return self._applied, None if op_id is None else self._images[op_id][1]

    def commit(self, expected: int, writes: Sequence[Write], applied: int, stamp: tuple[int, int, int] | None) -> bool:
        with self._lock:
            if self._applied != expected:
                return False
            for write in writes:
                self._apply(write)
            self._applied, self._stamp = applied, stamp
            return True

    def _apply(self, write: Write) -> None:
        kind = write[0]
        if kind == ROW:
            _, op_id, prev, document = write
            self._images[op_id] = [prev, document, None]
            if document is None:
                self._expire(op_id, op_id)
        elif kind == EXPIRE:
            self._expire(write[1], write[2])
        elif kind == SET:
            self._documents.setdefault((write[1], write[2]), {})[write[3]] = write[4]
        elif kind == UNSET:
            self._documents.get((write[1], write[2]), {}).pop(write[3], None)
        elif kind == SETTING:
            _, db, coll, enabled, at = write
            self._collections[(db, coll)] = enabled
            if not enabled:
                self._forget((db, coll), at)
        elif kind == DROP:
            self._drop((write[1], write[2]), write[3])
        elif kind == RENAME:
            _, db, coll, to_db, to_coll, at = write
            self._drop((to_db, to_coll), at)
            moved = self._documents.pop((db, coll), None)
            if moved:
                self._documents[(to_db, to_coll)] = moved
            setting = self._collections.pop((db, coll), None)
            if setting is not None:
                self._collections[(to_db, to_coll)] = setting
        elif kind == DROP_DATABASE:
            for namespace in {*self._documents, *self._collections}:
                if namespace[0] == write[1]:
                    self._drop(namespace, write[2])
        else:
            raise ValueError(f"unknown image store write {kind!r}")

    def _expire(self, op_id: int, at: int) -> None:
        image = self._images.get(op_id)
        if image is not None and image[2] is None:
            image[2] = at
            heapq.heappush(self._expiring, (at, op_id))

    def _forget(self, namespace: Namespace, at: int) -> None:
        for op_id in self._documents.pop(namespace, {}).values():
            self._expire(op_id, at)

    def _drop(self, namespace: Namespace, at: int) -> None:
        self._forget(namespace, at)
        self._collections.pop(namespace, None)

    def set_every_collection(self, enabled: bool) -> None:
        with self._lock:
            self._every = enabled

    def reset(self, applied: int, *, expected: int) -> bool:
        with self._lock:
            if self._applied != expected:
                return False
            self._images.clear()
            self._documents.clear()
            self._expiring.clear()
            self._applied, self._stamp = applied, None
            return True

    def trim(self, before_op_id: int) -> int:
        dropped = 0
        with self._lock:
            expiring = self._expiring
            while expiring and expiring[0][0] < before_op_id:
                _, op_id = heapq.heappop(expiring)
                if self._images.pop(op_id, None) is not None:
                    dropped += 1
            return dropped

    def statistics(self) -> dict[str, int]:
        with self._lock:
            documents = sum(len(keys) for keys in self._documents.values())
            return {"applied": self._applied, "images": len(self._images), "documents": documents}
