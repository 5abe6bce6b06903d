"""The collection catalog: each collection's identity, kind and indexes, as the oplog's changes left them.

MongoDB gives a collection a UUID when it is made, and a collection dropped
and made again gets a new one: that is how a consumer tells them apart
(``collectionUUID`` in change events). An rxcs oplog records changes made
elsewhere, so it keeps the same knowledge itself, updated by every append:

- ``create`` gives the namespace a new identity (and its kind: a collection,
  a view, a time series);
- any other change to a namespace the catalog does not hold gives it one
  (the first write makes a collection, as in MongoDB);
- ``drop`` forgets the namespace, ``dropDatabase`` every namespace of the
  database, ``rename`` moves the identity to the target, dropping what was
  there (when ``drop_target`` says so, or the catalog holds the target);
- ``createIndexes`` keeps each index's ``{v, key}`` by name, so a later
  ``dropIndexes`` can say which key it dropped.

Each entry records what the catalog said when it was appended:
``OplogEntry.collection_uuid`` and ``OplogEntry.dropped``. So an event shows
the identity the collection had at the time of its entry, however the
catalog moved on since, and readers never consult the catalog.

Where the catalog lives is the backend's business: ``MemoryOplog`` keeps a
``Catalog`` in memory; ``FileOplog``'s writer keeps one in memory and saves it
beside the segments (``save``/``load``), replaying the entries appended since
the save when it opens; ``RedisOplog`` keeps it in a hash that its append
script updates with the same rules (``catalog_action`` says what each change
asks of it), atomically with the append.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NamedTuple, final

import msgpack

from rxcs.events import Namespace as EventNamespace
from rxcs.events import NsType, ns_type_of
from rxcs.oplog.codec import encode_value
from rxcs.oplog.entry import Change, OplogEntry

__all__ = ["Catalog", "CatalogDamaged", "CollectionInfo", "catalog_action", "index_spec", "parse_hash"]

KIND_CODES: Final[dict[NsType, str]] = {"collection": "c", "view": "v", "timeseries": "t"}
"""How a kind is written where bytes are kept (the Redis hash)."""
_KINDS: Final[dict[str, NsType]] = {code: kind for kind, code in KIND_CODES.items()}
_MAGIC: Final = b"RXCSCAT1"
_HEAD: Final = struct.Struct("<8sI")  # magic, CRC-32 of the payload
_MISSING: Final = object()

_Key = tuple[str, str]  # (db, coll)


class CollectionInfo(NamedTuple):
    """A collection as an oplog's catalog holds it: its identity, its kind, its indexes by name (``{v, key}``)."""

    uuid: uuid.UUID
    kind: NsType
    indexes: dict[str, dict[str, Any]]


class CatalogDamaged(ValueError):
    """A saved catalog that does not read back (bad magic, checksum or shape)."""


def index_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the catalog keeps of an index: its version (2 when not given, as MongoDB makes them) and key."""
    return {"v": spec.get("v", 2), "key": spec["key"]}


@final
class Catalog:
    """Namespaces and their identity and kind, indexes by collection and name; changed by ``apply``.

    ``begin()`` starts a batch whose changes ``rollback()`` undoes (an append
    that fails appends nothing, and leaves the catalog as it was) and
    ``commit()`` keeps. ``changed`` counts the changes applied, so an owner
    knows when it has something new to save.

    Examples:
        >>> catalog = Catalog()
        >>> made, _ = catalog.apply(Change.insert("shop", "users", {"_id": 1}))
        >>> again, _ = catalog.apply(Change.insert("shop", "users", {"_id": 2}))
        >>> made == again
        True
        >>> catalog.apply(Change.drop_collection("shop", "users"))[0] == made
        True
        >>> catalog.apply(Change.insert("shop", "users", {"_id": 3}))[0] == made
        False
    """

    __slots__ = ("_indexes", "_journal", "_namespaces", "changed", "through")

    def __init__(self) -> None:
        self._namespaces: dict[_Key, tuple[uuid.UUID, NsType]] = {}
        self._indexes: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
        self._journal: list[tuple[dict[Any, Any], Any, Any]] | None = None
        self.changed = 0
        self.through = 0  # the op_id of the last entry applied, for an owner that saves it

    # -- reading --------------------------------------------------------------------------

    def identity(self, db: str, coll: str) -> uuid.UUID | None:
        """The UUID of collection ``db.coll``, None when the catalog does not hold it."""
        held = self._namespaces.get((db, coll))
        return None if held is None else held[0]

    def kind(self, db: str, coll: str) -> NsType | None:
        """``"collection"``, ``"view"`` or ``"timeseries"``; None when the catalog does not hold ``db.coll``."""
        held = self._namespaces.get((db, coll))
        return None if held is None else held[1]

    def indexes(self, db: str, coll: str) -> dict[str, dict[str, Any]]:
        """The indexes of ``db.coll`` the catalog knows, by name: ``{"v": ..., "key": {...}}`` each."""
        held = self._namespaces.get((db, coll))
        if held is None:
            return {}
        return {name: dict(spec) for (owner, name), spec in self._indexes.items() if owner == held[0]}

    def snapshot(self) -> dict[EventNamespace, CollectionInfo]:
        """Every collection held, by namespace (what ``Oplog.collections()`` returns)."""
        indexes: dict[uuid.UUID, dict[str, dict[str, Any]]] = {}
        for (owner, name), spec in self._indexes.items():
            indexes.setdefault(owner, {})[name] = dict(spec)
        return {
            EventNamespace(db, coll): CollectionInfo(made, kind, indexes.get(made, {}))
            for (db, coll), (made, kind) in sorted(self._namespaces.items())
        }

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._namespaces))

    def __len__(self) -> int:
        return len(self._namespaces)

    # -- changing -------------------------------------------------------------------------

    def apply(
        self, change: Change, recorded: OplogEntry | None = None, mint: Callable[[], uuid.UUID] = uuid.uuid4
    ) -> tuple[uuid.UUID | None, Any]:
        """Apply one change; return the ``(collection_uuid, dropped)`` its entry records.

        ``recorded`` replays an entry appended before: the identities it
        recorded are taken, not made (an entry of an older rxcs, without one,
        leaves the namespace to get one at its next change). ``mint`` makes a
        new identity.
        """
        op, db, coll = change.op, change.db, change.coll
        wanted = None if recorded is None else recorded.collection_uuid
        if op == "dropDatabase":
            gone = {name: self._forget((owner, name)) for owner, name in list(self._namespaces) if owner == db}
            return None, {name: made for name, made in gone.items() if made is not None} or None
        if coll is None:
            return None, None
        key = (db, coll)
        if op == "create":
            self._forget(key)
            made = wanted if wanted is not None else (mint() if recorded is None else None)
            if made is not None:
                self._set(self._namespaces, key, (made, ns_type_of(change.operation_description)))
            return made, None
        identity = self._identity(key, wanted, mint if recorded is None else None)
        if op == "drop":
            self._forget(key)
            return identity, None
        if op == "rename" and change.to is not None and change.to.coll is not None:
            target = (change.to.db, change.to.coll)
            description = change.operation_description or {}
            dropped: Any = None
            if target in self._namespaces or description.get("dropTarget"):
                dropped = self._forget(target)
                if dropped is None and recorded is None:
                    dropped = mint()  # a collection the oplog never saw a change of: it had an identity all the same
            held = self._namespaces.get(key)
            self._pop(self._namespaces, key)
            if held is not None:
                self._set(self._namespaces, target, held)
            return identity, dropped
        if identity is None or op not in ("createIndexes", "dropIndexes"):
            return identity, None
        named = _named_indexes(change)
        if op == "createIndexes":
            for spec in named:
                self._set(self._indexes, (identity, spec["name"]), index_spec(spec))
            return identity, None
        if not named:
            return identity, None
        found = self._indexes.get((identity, named[0]["name"]))
        self._pop(self._indexes, (identity, named[0]["name"]))
        return identity, found

    def replay(self, entry: OplogEntry) -> None:
        """Apply an entry appended before (a writer catching up with its log), taking the identities it recorded."""
        self.apply(entry.change, entry)
        self.through = entry.op_id

    def _identity(
        self, key: _Key, wanted: uuid.UUID | None, mint: Callable[[], uuid.UUID] | None
    ) -> uuid.UUID | None:
        held = self._namespaces.get(key)
        if wanted is not None:
            if held is None or held[0] != wanted:
                self._set(self._namespaces, key, (wanted, "collection" if held is None else held[1]))
            return wanted
        if held is not None:
            return held[0]
        if mint is None:
            return None
        made = mint()
        self._set(self._namespaces, key, (made, "collection"))
        return made

    def _forget(self, key: _Key) -> uuid.UUID | None:
        """Drop a namespace and its indexes; return the identity it had."""
        held = self._namespaces.get(key)
        if held is None:
            return None
        self._pop(self._namespaces, key)
        for index in [index for index in self._indexes if index[0] == held[0]]:
            self._pop(self._indexes, index)
        return held[0]

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if self._journal is not None:
            self._journal.append((table, key, table.get(key, _MISSING)))
        table[key] = value
        self.changed += 1

    def _pop(self, table: dict[Any, Any], key: Any) -> None:
        if key not in table:
            return
        if self._journal is not None:
            self._journal.append((table, key, table[key]))
        del table[key]
        self.changed += 1

    # -- batches --------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a batch: what is applied until ``commit()`` can be undone by ``rollback()``."""
        self._journal = []

    def commit(self, through: int) -> None:
        """Keep the batch's changes; ``through`` is the op_id of its last entry."""
        self._journal = None
        self.through = through

    def rollback(self) -> None:
        """Undo the batch's changes."""
        journal, self._journal = self._journal or [], None
        for table, key, old in reversed(journal):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old

    # -- saving ---------------------------------------------------------------------------

    def dump(self) -> bytes:
        """The catalog as bytes to keep beside a log: a checked msgpack document, ``through`` included.

        Inside a batch it is the catalog as the last commit left it (what
        ``rollback()`` would give back): a save never holds changes of entries
        that are not written yet.
        """
        namespaces, indexes = self._namespaces, self._indexes
        if self._journal:
            namespaces, indexes = dict(namespaces), dict(indexes)
            tables: dict[int, dict[Any, Any]] = {id(self._namespaces): namespaces, id(self._indexes): indexes}
            for table, key, old in reversed(self._journal):
                undone = tables[id(table)]
                if old is _MISSING:
                    undone.pop(key, None)
                else:
                    undone[key] = old
        payload = encode_value({
            "through": self.through,
            "namespaces": [
                [db, coll, made.bytes, KIND_CODES.get(kind, "c")] for (db, coll), (made, kind) in namespaces.items()
            ],
            "indexes": [[owner.bytes, name, spec] for (owner, name), spec in indexes.items()],
        })
        return _HEAD.pack(_MAGIC, zlib.crc32(payload)) + payload

    @classmethod
    def load(cls, data: bytes) -> Catalog:
        """A catalog from ``dump()``'s bytes; ``CatalogDamaged`` saying what is wrong otherwise."""
        if len(data) < _HEAD.size:
            raise CatalogDamaged("the catalog is shorter than its header")
        magic, crc = _HEAD.unpack_from(data)
        payload = data[_HEAD.size:]
        if magic != _MAGIC:
            raise CatalogDamaged("not an rxcs catalog (bad magic)")
        if zlib.crc32(payload) != crc:
            raise CatalogDamaged("the catalog fails its checksum")
        try:
            document = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            catalog = cls()
            catalog.through = int(document["through"])
            for db, coll, made, code in document["namespaces"]:
                catalog._namespaces[(db, coll)] = (uuid.UUID(bytes=made), _KINDS[code])
            for owner, name, spec in document["indexes"]:
                catalog._indexes[(uuid.UUID(bytes=owner), name)] = spec
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise CatalogDamaged(f"the catalog does not read back ({exc!r})") from None
        return catalog


def _named_indexes(change: Change) -> list[Mapping[str, Any]]:
    """The index descriptions of a createIndexes or dropIndexes change that name an index (and, created, a key)."""
    indexes = (change.operation_description or {}).get("indexes")
    if not isinstance(indexes, list):
        return []
    needed = ("name", "key") if change.op == "createIndexes" else ("name",)
    return [
        spec for spec in indexes
        if isinstance(spec, Mapping) and all(field in spec for field in needed) and isinstance(spec["name"], str)
    ]


def catalog_action(change: Change) -> bytes:
    """What a change asks of a catalog kept elsewhere (the Redis append script), as a msgpack array of strings.

    ``["w", db, coll]`` a change to a collection, ``["c", db, coll, kind code]``
    a create, ``["d", db, coll]`` a drop, ``["r", db, coll, to_db, to_coll,
    "1" or "0"]`` a rename (and whether it asked to drop its target),
    ``["D", db]`` a dropDatabase, ``["i", db, coll, name, spec, ...]``
    created indexes with the msgpack of their ``{v, key}``, ``["x", db,
    coll, name]`` a dropped index, ``[]`` nothing. Strings are UTF-8 and the
    specs raw bytes, all packed as msgpack strings, which the script reads as
    the bytes they are.
    """
    op, db, coll = change.op, change.db, change.coll
    fields: list[str | bytes]
    if op == "dropDatabase":
        fields = ["D", db]
    elif coll is None:
        fields = []
    elif op == "create":
        fields = ["c", db, coll, KIND_CODES[ns_type_of(change.operation_description)]]
    elif op == "drop":
        fields = ["d", db, coll]
    elif op == "rename" and change.to is not None and change.to.coll is not None:
        asked = bool((change.operation_description or {}).get("dropTarget"))
        fields = ["r", db, coll, change.to.db, change.to.coll, "1" if asked else "0"]
    elif op == "createIndexes":
        fields = ["i", db, coll]
        for spec in _named_indexes(change):
            fields += [spec["name"], encode_value(index_spec(spec))]
    elif op == "dropIndexes" and _named_indexes(change):
        fields = ["x", db, coll, _named_indexes(change)[0]["name"]]
    else:
        fields = ["w", db, coll]
    packed: bytes = msgpack.packb(
        [field.encode() if isinstance(field, str) else field for field in fields], use_bin_type=False
    )
    return packed


def parse_hash(fields: Mapping[bytes, bytes]) -> dict[EventNamespace, CollectionInfo]:
    """The collections of a catalog kept in a Redis hash by the append script (see ``rxcs.oplog.redis``)."""
    indexes: dict[bytes, dict[str, dict[str, Any]]] = {}
    for field, value in fields.items():
        if field[:1] == b"i" and len(field) > 17:
            indexes.setdefault(field[1:17], {})[field[17:].decode()] = msgpack.unpackb(value, raw=False)
    found: dict[EventNamespace, CollectionInfo] = {}
    for field, value in fields.items():
        if field[:1] != b"n" or b"\0" not in field or len(value) != 17:
            continue
        db, coll = field[1:].decode().split("\0", 1)
        kind = _KINDS.get(value[16:].decode(), "collection")
        found[EventNamespace(db, coll)] = CollectionInfo(uuid.UUID(bytes=value[:16]), kind, indexes.get(value[:16], {}))
    return dict(sorted(found.items()))
