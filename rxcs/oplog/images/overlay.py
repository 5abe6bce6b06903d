"""Entries applied to an image store's state, in memory: the rules that maintain document images, in one place.

An ``Overlay`` starts from a store's checkpoint and applies the entries after
it, in op_id order. For each change it works out the image the change left
and the one before it, keeps them in memory and, when asked to, records the
writes that bring the store to the same state (``rxcs.oplog.images.store``):

- an **insert** or a **replace** sets the document to the entry's;
- an **update** sets it to the post-image the producer recorded, else to the
  update applied to the document before it (MongoDB's rules,
  ``rxcs.oplog.images.updates``), the one kept or else the pre-image the
  producer recorded; with neither, or when the update does not fit the
  document, the document is no longer known;
- a **delete** removes it; its image row keeps the pre-image for the event;
- a **drop** forgets the collection's documents and its setting, a
  **rename** moves them to the target (whose own go first), a
  **dropDatabase** forgets every collection of the database;
- a **create** or **modify** carrying ``changeStreamPreAndPostImages:
  {enabled: ...}`` sets the collection's own setting (disabling it forgets
  its documents: they would go stale).

Changes to collections whose images are off leave nothing. A change's image
is known only when the document was known before it (or the change carries
the whole document): images begin with the first insert or replace seen
while they are on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from rxcs.errors import InvalidChangeError
from rxcs.log import log
from rxcs.oplog.codec import decode_value, encode_value
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.images.store import (
    DROP,
    DROP_DATABASE,
    EXPIRE,
    RENAME,
    ROW,
    SET,
    SETTING,
    UNSET,
    ImageStore,
    Key,
    Namespace,
    Write,
)
from rxcs.oplog.images.updates import apply_update

__all__ = ["DATA_CHANGES", "IMAGES_OPTION", "Overlay", "StoreMoved", "check_images_option", "enables_images",
           "images_setting"]

DATA_CHANGES: Final = frozenset({"insert", "update", "replace", "delete"})
IMAGES_OPTION: Final = "changeStreamPreAndPostImages"
"""The collection option (of ``create`` and ``modify``) that turns a collection's images on or off."""
_NO_SETTING: Final[Any] = object()


class StoreMoved(Exception):  # a signal between the overlay and the view, never raised to users
    """The store's checkpoint moved while an overlay was being computed over it, in a way it cannot follow."""


def check_images_option(options: Mapping[str, Any] | None, what: str = "options") -> None:
    """Raise ``InvalidChangeError`` unless the option ``changeStreamPreAndPostImages`` is ``{"enabled": bool}``."""
    if not options or IMAGES_OPTION not in options:
        return
    option = options[IMAGES_OPTION]
    if not isinstance(option, Mapping) or set(option) != {"enabled"} or not isinstance(option["enabled"], bool):
        raise InvalidChangeError(f"{what}.{IMAGES_OPTION}: expected {{'enabled': True or False}}, got {option!r}")


def enables_images(changes: Sequence[Change]) -> bool:
    """True when a change turns a collection's images on (a ``create`` or ``modify`` with the option).

    A malformed option is an ``InvalidChangeError``, before anything is appended.
    """
    enabling = False
    for change in changes:
        if change.operation_description is not None:  # rare: only collection and index changes have one
            enabling = _enabling(changes) or enabling
            break
    return enabling


def _enabling(changes: Sequence[Change]) -> bool:
    enabling = False
    for index, change in enumerate(changes):
        if change.op in ("create", "modify") and change.operation_description:
            check_images_option(change.operation_description, f"changes[{index}].operation_description")
            enabling = enabling or images_setting(change.operation_description) is True
    return enabling


def images_setting(description: Mapping[str, Any] | None) -> bool | None:
    """The images setting a ``create`` or ``modify`` entry's description carries; None when it carries none."""
    if not description or IMAGES_OPTION not in description:
        return None
    option = description[IMAGES_OPTION]
    enabled = option.get("enabled") if isinstance(option, Mapping) else None
    return enabled if isinstance(enabled, bool) else None


class Overlay:
    """What the entries after a store's checkpoint change, held in memory over the store's state.

    ``base`` is the checkpoint it started from and ``end`` the last op_id it
    applied. ``rows`` holds, per change applied, its ``(pre-image,
    post-image)`` (encoded; None where not known). With ``record``, ``writes``
    lists the store writes that make the same state, for ``store.commit``;
    the store must then not move while the overlay is computed
    (``StoreMoved``). Without it (a reader's overlay), the store may move
    forward below ``end`` unless the overlay holds namespace changes.
    """

    __slots__ = (
        "_current", "_dropped_databases", "_fetched", "_own_settings", "_settings", "_sources", "_store",
        "base", "end", "rows", "stamp", "structural", "writes",
    )

    def __init__(self, store: ImageStore, *, record: bool) -> None:
        state = store.state()
        self._store = store
        self.base = self.end = state.applied
        self.stamp: tuple[int, int, int] | None = None
        self._settings = state.settings
        self.rows: dict[int, tuple[bytes | None, bytes | None]] = {}
        self._current: dict[Key, tuple[int, bytes] | None] = {}  # documents changed here; None: none now
        self._fetched: dict[Key, tuple[int, bytes] | None] = {}  # the store's, as of base, by the store's key
        self._sources: dict[Namespace, Namespace | None] = {}  # where a collection's documents were at base
        self._dropped_databases: set[str] = set()
        self._own_settings: dict[Namespace, bool | None] = {}
        self.structural = False
        self.writes: list[Write] | None = [] if record else None

    # -- applying ----------------------------------------------------------------------

    def apply(self, entries: Sequence[OplogEntry]) -> None:
        """Apply ``entries``, which must follow ``end`` one by one."""
        if not entries:
            return
        self._prefetch(entries)
        for entry in entries:
            if entry.op_id != self.end + 1:
                raise ValueError(f"entry {entry.op_id} does not follow {self.end}")
            op = entry.op
            if op in DATA_CHANGES:
                self._document_change(entry)
            elif op == "drop":
                self._drop((entry.db, entry.coll), entry.op_id)  # type: ignore[arg-type]
            elif op == "rename" and entry.to is not None:
                self._rename((entry.db, entry.coll), (entry.to.db, entry.to.coll), entry.op_id)  # type: ignore[arg-type]
            elif op == "dropDatabase":
                self._drop_database(entry.db, entry.op_id)
            elif op in ("create", "modify"):
                enabled = images_setting(entry.operation_description)
                if enabled is not None:
                    self._set_setting((entry.db, entry.coll), enabled, entry.op_id)  # type: ignore[arg-type]
            self.end = entry.op_id
            self.stamp = (entry.cluster_time[0], entry.cluster_time[1], entry.wall_time_ms)

    def _document_change(self, entry: OplogEntry) -> None:
        db, coll = entry.db, entry.coll
        assert coll is not None
        if not self._enabled((db, coll)):
            return
        key = (db, coll, encode_value(entry.document_key))
        previous = self.lookup(key, entry.op_id)
        op_id, op = entry.op_id, entry.op
        if previous is not None:
            self._write((EXPIRE, previous[0], op_id))
        if op == "delete":
            document = None
        elif op != "update" or entry.full_document is not None:
            document = entry.full_document
        else:
            document = self._updated(entry, previous)
        if document is None:  # deleted, or no longer known; the row keeps the pre-image for the event
            if previous is not None:
                self._write((ROW, op_id, previous[0], None))
                self._write((UNSET, db, coll, key[2]))
                self.rows[op_id] = (previous[1], None)
            self._current[key] = None
            return
        encoded = encode_value(document)
        before = previous if previous is not None and op != "insert" else None
        self._write((ROW, op_id, None if before is None else before[0], encoded))
        self._write((SET, db, coll, key[2], op_id))
        self.rows[op_id] = (None if before is None else before[1], encoded)
        self._current[key] = (op_id, encoded)

    @staticmethod
    def _updated(entry: OplogEntry, previous: tuple[int, bytes] | None) -> dict[str, Any] | None:
        try:
            base = decode_value(previous[1]) if previous is not None else entry.full_document_before_change
            if not isinstance(base, dict) or entry.update_description is None:
                return None
            return apply_update(base, entry.update_description)
        except ValueError as exc:  # UpdateConflict, or a kept image that does not decode (msgpack's ValueErrors)
            log.warning(
                "document image no longer known: the update does not fit it", op_id=entry.op_id,
                ns=f"{entry.db}.{entry.coll}", problem=str(exc) or repr(exc),
            )
            return None

    def _drop(self, namespace: Namespace, at: int) -> None:
        self._forget(namespace)
        self._own_settings[namespace] = None
        self._write((DROP, *namespace, at))

    def _rename(self, namespace: Namespace, target: Namespace, at: int) -> None:
        self._forget(target)
        for key in [key for key in self._current if key[:2] == namespace]:
            self._current[(*target, key[2])] = self._current.pop(key)
        self._sources[target] = self._source(namespace)
        self._sources[namespace] = None
        own = self._own_setting(namespace)
        self._own_settings[target] = None if own is _NO_SETTING else own
        self._own_settings[namespace] = None
        self._write((RENAME, *namespace, *target, at))

    def _drop_database(self, db: str, at: int) -> None:
        self.structural = True
        for key in [key for key in self._current if key[0] == db]:
            del self._current[key]  # looked up now, they are found gone (the database was dropped)
        for namespaces in (self._sources, self._own_settings):
            for namespace in [namespace for namespace in namespaces if namespace[0] == db]:
                del namespaces[namespace]
        self._dropped_databases.add(db)
        self._write((DROP_DATABASE, db, at))

    def _set_setting(self, namespace: Namespace, enabled: bool, at: int) -> None:
        self._own_settings[namespace] = enabled
        if not enabled:
            self._forget(namespace)
        self._write((SETTING, *namespace, enabled, at))

    def _forget(self, namespace: Namespace) -> None:
        """The collection's documents are gone (from here on, looking one up finds none)."""
        self.structural = True
        for key in [key for key in self._current if key[:2] == namespace]:
            del self._current[key]  # looked up now, they follow _sources: none, unless a rename sets them
        self._sources[namespace] = None

    def _write(self, write: Write) -> None:
        if self.writes is not None:
            self.writes.append(write)

    # -- looking up --------------------------------------------------------------------

    def _source(self, namespace: Namespace) -> Namespace | None:
        """Where the collection's documents were at ``base``; None when it has none left from then."""
        if namespace in self._sources:
            return self._sources[namespace]
        return None if namespace[0] in self._dropped_databases else namespace

    def _own_setting(self, namespace: Namespace) -> Any:
        if namespace in self._own_settings:
            own = self._own_settings[namespace]
            return _NO_SETTING if own is None else own
        if namespace[0] in self._dropped_databases:
            return _NO_SETTING
        return self._settings.collections.get(namespace, _NO_SETTING)

    def _enabled(self, namespace: Namespace) -> bool:
        own = self._own_setting(namespace)
        return self._settings.every_collection if own is _NO_SETTING else bool(own)

    def lookup(self, key: Key, op_id: int | None = None) -> tuple[int, bytes] | None:
        """The document's current image as of ``end``: (op_id, document), or None when it has none.

        ``op_id`` is the change about to be applied, if any: a store found at
        or past it raises ``StoreMoved``.
        """
        if key in self._current:
            return self._current[key]
        source = self._source((key[0], key[1]))
        if source is None:
            return None
        stored = (*source, key[2])
        if stored not in self._fetched:
            self._fetch([stored], self.end + 1 if op_id is None else op_id)
        return self._fetched[stored]

    def _prefetch(self, entries: Sequence[OplogEntry]) -> None:
        """Read the documents the entries change from the store in one go (renames may still need more)."""
        wanted: dict[Key, None] = {}
        for entry in entries:
            if entry.op in DATA_CHANGES:
                source = self._source((entry.db, entry.coll))  # type: ignore[arg-type]
                if source is not None:
                    key = (*source, encode_value(entry.document_key))
                    if key not in self._fetched and (entry.db, entry.coll, key[2]) not in self._current:
                        wanted[key] = None
        if wanted:
            self._fetch(list(wanted), entries[0].op_id)

    def _fetch(self, keys: list[Key], upcoming: int) -> None:
        applied, found = self._store.documents(keys)
        # A writer's overlay must see the store as it started; a reader's may see it moved on below the
        # change about to be applied (those documents did not change since base: they would be in
        # _current), unless namespaces moved meanwhile (the store's documents moved with them).
        if applied != self.base and (
            self.writes is not None or applied < self.base or applied >= upcoming or self.structural
        ):
            raise StoreMoved
        for key in keys:
            self._fetched[key] = found.get(key)
