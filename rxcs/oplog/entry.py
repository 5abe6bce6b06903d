"""What the oplog records: a ``Change`` a producer appends, an ``OplogEntry`` it keeps.

A ``Change`` has no position yet; the oplog gives it an op_id, a cluster time
and a wall time when it appends it, and hands back ``OplogEntry`` values.
Every constructor here validates its input, so nothing malformed reaches disk.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, NamedTuple

from rxcs.errors import InvalidChangeError
from rxcs.events import ClusterTime, Namespace, OperationType
from rxcs.limits import MAX_NESTING

__all__ = ["Change", "OplogEntry", "check_namespace"]

Document = Mapping[str, Any]

_FORBIDDEN_IN_DB = frozenset('/\\. "$\x00')


class OplogEntry(NamedTuple):
    """One recorded change at its position in the oplog.

    ``update_description`` is the MongoDB-shaped document (``updatedFields``,
    ``removedFields``, ``truncatedArrays``, and ``disambiguatedPaths`` when
    the producer gave them); ``to`` is the rename target. ``source`` is where
    a captured change came from (``rxcs.capture``: the source database's
    position), None for changes appended directly.

    The oplog's collection catalog (``rxcs.oplog.catalog``) adds two fields
    when it appends the entry: ``collection_uuid``, the identity of the
    collection the entry changed (None for a ``dropDatabase``, and for
    entries recorded before rxcs kept identities), and ``dropped``, what the
    change took out of the catalog: for a ``rename``, the UUID of the target
    collection it dropped; for a ``dropIndexes``, the dropped index's ``{"v",
    "key"}``; for a ``dropDatabase``, the UUIDs of its collections by name.
    """

    op_id: int
    cluster_time: ClusterTime
    wall_time_ms: int
    op: str
    db: str
    coll: str | None
    document_key: Document | None = None
    full_document: Document | None = None
    full_document_before_change: Document | None = None
    update_description: Document | None = None
    to: Namespace | None = None
    operation_description: Document | None = None
    txn_number: int | None = None
    source: Document | None = None
    collection_uuid: uuid.UUID | None = None
    dropped: Any = None

    @property
    def ns(self) -> Namespace:
        """The namespace the entry changed."""
        return Namespace(self.db, self.coll)

    @property
    def wall_time(self) -> datetime:
        """The wall-clock time of the append, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.wall_time_ms / 1000, UTC)

    @property
    def change(self) -> Change:
        """The change this entry recorded, without its position."""
        return Change(*self[3:])


class Change(NamedTuple):
    """A change to append, before the oplog gives it a position.

    Build one with the class methods (``Change.insert(...)`` and friends):
    they validate their arguments and raise ``InvalidChangeError`` naming the
    bad one. ``oplog.append_many([...])`` takes a list of these.

    ``collection_uuid`` and ``dropped`` are the oplog's to fill in from its
    collection catalog when it appends the change (see ``OplogEntry``): what
    a ``Change`` carries there is replaced.

    Examples:
        >>> Change.insert("shop", "users", {"_id": 1, "name": "Ada"}).document_key
        {'_id': 1}
    """

    op: str
    db: str
    coll: str | None
    document_key: Document | None = None
    full_document: Document | None = None
    full_document_before_change: Document | None = None
    update_description: Document | None = None
    to: Namespace | None = None
    operation_description: Document | None = None
    txn_number: int | None = None
    source: Document | None = None
    collection_uuid: uuid.UUID | None = None
    dropped: Any = None

    def with_source(self, source: Document) -> Change:
        """This change, carrying ``source``: a document naming where it came from (a capture's position).

        The oplog records it with the entry (``OplogEntry.source``); change
        events do not show it. ``rxcs.capture`` keeps its source position there.

        Examples:
            >>> Change.insert("shop", "users", {"_id": 1}).with_source({"lsn": 42}).source
            {'lsn': 42}
        """
        return self._replace(source=_check_document(source, "source"))

    @classmethod
    def insert(
        cls, db: str, coll: str, document: Document, *, txn: int | None = None
    ) -> Change:
        """An inserted document; it must carry an ``_id``."""
        _check_ns(db, coll)
        doc = _check_document(document, "document")
        if "_id" not in doc:
            raise InvalidChangeError("document: has no '_id' field (documentKey needs it)")
        return cls(
            OperationType.INSERT, db, coll, {"_id": doc["_id"]}, doc,
            txn_number=_check_txn(txn),
        )

    @classmethod
    def update(
        cls,
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
    ) -> Change:
        """An update of the document named by ``document_key``.

        ``full_document`` and ``full_document_before_change`` are the post-
        and pre-images, recorded when the producer has them.
        ``disambiguated_paths`` spells out, component by component, paths of
        ``updated_fields``, ``removed_fields`` or ``truncated_arrays`` whose
        dotted form is ambiguous: ``{"a.b": ["a.b"]}`` for a field named
        ``"a.b"``, ``{"a.0.1": ["a", 0, "1"]}`` for index 0 of array ``a``,
        then its field ``"1"``. Without it, change events read such paths
        from the recorded images (``rxcs.expanded``).
        """
        _check_ns(db, coll)
        removed = _check_paths(removed_fields, "removed_fields")
        truncated = [
            _check_truncated(t, f"truncated_arrays.{i}")
            for i, t in enumerate(truncated_arrays or ())
        ]
        description: dict[str, Any] = {
            "updatedFields": _check_updated_fields(updated_fields),
            "removedFields": removed,
            "truncatedArrays": truncated,
        }
        if disambiguated_paths:
            description["disambiguatedPaths"] = _check_disambiguated(disambiguated_paths, description)
        return cls(
            OperationType.UPDATE, db, coll, _document_key(document_key),
            _check_image(full_document, "full_document"),
            _check_image(full_document_before_change, "full_document_before_change"),
            description, txn_number=_check_txn(txn),
        )

    @classmethod
    def replace(
        cls,
        db: str,
        coll: str,
        document_key: Any,
        document: Document,
        *,
        full_document_before_change: Document | None = None,
        txn: int | None = None,
    ) -> Change:
        """A whole-document replacement; ``document`` is the new document."""
        _check_ns(db, coll)
        key = _document_key(document_key)
        doc = _check_document(document, "document")
        if "_id" in doc and doc["_id"] != key["_id"]:
            raise InvalidChangeError(
                f"document._id: {doc['_id']!r} differs from document_key._id {key['_id']!r}"
            )
        return cls(
            OperationType.REPLACE, db, coll, key, doc,
            _check_image(full_document_before_change, "full_document_before_change"),
            txn_number=_check_txn(txn),
        )

    @classmethod
    def delete(
        cls,
        db: str,
        coll: str,
        document_key: Any,
        *,
        full_document_before_change: Document | None = None,
        txn: int | None = None,
    ) -> Change:
        """A deleted document; the pre-image is recorded when given."""
        _check_ns(db, coll)
        return cls(
            OperationType.DELETE, db, coll, _document_key(document_key), None,
            _check_image(full_document_before_change, "full_document_before_change"),
            txn_number=_check_txn(txn),
        )

    @classmethod
    def create_collection(
        cls, db: str, coll: str, options: Document | None = None
    ) -> Change:
        """A created collection (an expanded event).

        ``options`` are MongoDB's ``create`` options: ``{"viewOn": "users",
        "pipeline": [...]}`` makes a view, ``{"timeseries": {...}}`` a
        time-series collection (the event's ``nsType``).
        """
        _check_ns(db, coll)
        description = {} if options is None else _check_document(options, "options")
        view_on = description.get("viewOn")
        if view_on is not None and (not isinstance(view_on, str) or not view_on):
            raise InvalidChangeError(f"options.viewOn: expected the name of a collection, got {view_on!r}")
        if "pipeline" in description and not isinstance(description["pipeline"], list):
            raise InvalidChangeError(f"options.pipeline: expected a list of stages, got {description['pipeline']!r}")
        if "timeseries" in description and not isinstance(description["timeseries"], Mapping):
            raise InvalidChangeError(f"options.timeseries: expected a document, got {description['timeseries']!r}")
        return cls(OperationType.CREATE, db, coll, operation_description=description)

    @classmethod
    def drop_collection(cls, db: str, coll: str) -> Change:
        """A dropped collection; invalidates streams on it."""
        _check_ns(db, coll)
        return cls(OperationType.DROP, db, coll)

    @classmethod
    def rename_collection(
        cls, db: str, coll: str, to_db: str, to_coll: str, *, drop_target: bool = False
    ) -> Change:
        """A renamed collection; invalidates streams on the source and on the target.

        ``drop_target=True`` records that the rename dropped a collection
        already at the target (MongoDB's ``dropTarget``); a target the oplog
        holds as existing is dropped either way. Expanded events show the
        dropped collection's UUID as ``operationDescription.dropTarget``.
        """
        _check_ns(db, coll)
        _check_ns(to_db, to_coll, "to_db", "to_coll")
        if (db, coll) == (to_db, to_coll):
            raise InvalidChangeError(f"to: {to_db}.{to_coll} is the collection being renamed")
        if not isinstance(drop_target, bool):
            raise InvalidChangeError(f"drop_target: expected True or False, got {drop_target!r}")
        description: dict[str, Any] = {"to": {"db": to_db, "coll": to_coll}}
        if drop_target:
            description["dropTarget"] = True
        return cls(
            OperationType.RENAME, db, coll, to=Namespace(to_db, to_coll), operation_description=description
        )

    @classmethod
    def drop_database(cls, db: str) -> Change:
        """A dropped database; invalidates streams on it."""
        _check_db(db, "db")
        return cls(OperationType.DROP_DATABASE, db, None)

    @classmethod
    def create_index(cls, db: str, coll: str, index_spec: Document) -> Change:
        """A created index; ``index_spec`` is its description (``key``, ``name``, ...)."""
        _check_ns(db, coll)
        spec = _check_document(index_spec, "index_spec")
        if "key" not in spec:
            raise InvalidChangeError("index_spec: has no 'key' field")
        if "name" not in spec:
            spec = {**spec, "name": _index_name(spec["key"])}
        _check_index_name(spec["name"], "index_spec.name")
        return cls(OperationType.CREATE_INDEXES, db, coll, operation_description={"indexes": [spec]})

    @classmethod
    def drop_index(cls, db: str, coll: str, index_name: str) -> Change:
        """A dropped index, named as it was created."""
        _check_ns(db, coll)
        _check_index_name(index_name, "index_name")
        return cls(
            OperationType.DROP_INDEXES, db, coll,
            operation_description={"indexes": [{"name": index_name}]},
        )


def check_namespace(db: object, coll: object) -> None:
    """Raise ``InvalidChangeError`` naming the problem unless ``db.coll`` is a namespace a change may name."""
    _check_ns(db, coll)


def _check_db(db: object, what: str) -> None:
    if not isinstance(db, str) or not db:
        raise InvalidChangeError(f"{what}: expected a non-empty string, got {db!r}")
    bad = _FORBIDDEN_IN_DB.intersection(db)
    if bad:
        raise InvalidChangeError(f"{what}: {db!r} contains {''.join(sorted(bad))!r}")


def _check_ns(db: object, coll: object, db_what: str = "db", coll_what: str = "coll") -> None:
    _check_db(db, db_what)
    if not isinstance(coll, str) or not coll:
        raise InvalidChangeError(f"{coll_what}: expected a non-empty string, got {coll!r}")
    if "\x00" in coll or coll.startswith("$"):
        raise InvalidChangeError(f"{coll_what}: {coll!r} is not a valid collection name")


def _check_document(document: object, path: str) -> dict[str, Any]:
    """Return ``document`` as a dict after checking every key is a string."""
    if type(document) is not dict and not isinstance(document, Mapping):
        raise InvalidChangeError(f"{path}: expected a document (mapping), got {type(document).__name__}")
    _check_keys(document, path)
    return document if type(document) is dict else dict(document)


# Values that hold no field names: most of a document. Checking their exact type first spares
# the ABC check of isinstance(value, Mapping), which is most of the cost of validating a change.
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, datetime, Decimal, uuid.UUID, date, time})


_CONTAINERS = (dict, list, tuple, Mapping)  # the exact types first: isinstance tries them in order


def _check_keys(value: object, path: str, level: int = 1) -> None:
    """Check that every field name in ``value`` (a container at nesting ``level``) is a string."""
    if level > MAX_NESTING:
        raise InvalidChangeError(f"{path}: nested more than {MAX_NESTING} levels deep")
    leaves = _LEAVES
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidChangeError(f"{path}: field name {key!r} is not a string")
            if type(item) not in leaves and isinstance(item, _CONTAINERS):
                _check_keys(item, f"{path}.{key}", level + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if type(item) not in leaves and isinstance(item, _CONTAINERS):
                _check_keys(item, f"{path}.{index}", level + 1)


def _check_updated_fields(fields: Document | None) -> dict[str, Any]:
    """Check ``updated_fields``: each value nests as deep in the document as its dotted path says."""
    if fields is None:
        return {}
    updated = _check_document(fields, "updated_fields")
    leaves = _LEAVES
    for key, item in updated.items():
        if type(item) not in leaves and isinstance(item, _CONTAINERS):
            _check_keys(item, f"updated_fields.{key}", key.count(".") + 2)
    return updated


def _check_image(document: Document | None, path: str) -> dict[str, Any] | None:
    return None if document is None else _check_document(document, path)


def _document_key(value: Any) -> dict[str, Any]:
    """A mapping is taken as the key (it must hold ``_id``); anything else is the ``_id``."""
    if isinstance(value, Mapping):
        key = _check_document(value, "document_key")
        if "_id" not in key:
            raise InvalidChangeError("document_key: has no '_id' field")
        return key
    if value is None:
        raise InvalidChangeError("document_key: must not be None")
    _check_keys(value, "document_key._id", 2)
    return {"_id": value}


def _check_paths(paths: Iterable[str] | None, what: str) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, str):
        raise InvalidChangeError(f"{what}: expected a list of field paths, got a string")
    result = list(paths)
    for index, path in enumerate(result):
        if not isinstance(path, str) or not path:
            raise InvalidChangeError(f"{what}.{index}: expected a field path, got {path!r}")
    return result


def _check_truncated(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or set(value) != {"field", "newSize"}:
        raise InvalidChangeError(f"{path}: expected {{'field': path, 'newSize': int}}, got {value!r}")
    field, size = value["field"], value["newSize"]
    if not isinstance(field, str) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidChangeError(f"{path}: expected {{'field': path, 'newSize': int}}, got {value!r}")
    return {"field": field, "newSize": size}


def _check_index_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidChangeError(f"{what}: expected a non-empty string without NUL, got {name!r}")


def _check_disambiguated(paths: object, description: Mapping[str, Any]) -> dict[str, list[str | int]]:
    """Check ``disambiguated_paths``: each names a path of the update, and its components join into it."""
    if not isinstance(paths, Mapping):
        raise InvalidChangeError(f"disambiguated_paths: expected a mapping of paths, got {type(paths).__name__}")
    known = {*description["updatedFields"], *description["removedFields"]}
    known.update(truncated["field"] for truncated in description["truncatedArrays"])
    checked: dict[str, list[str | int]] = {}
    for path, spelled in paths.items():
        if path not in known:
            raise InvalidChangeError(
                f"disambiguated_paths: {path!r} is not a path of updated_fields, removed_fields or truncated_arrays"
            )
        if isinstance(spelled, (str, bytes)) or not isinstance(spelled, Iterable):
            raise InvalidChangeError(f"disambiguated_paths.{path}: expected a list of components, got {spelled!r}")
        components = list(spelled)
        for component in components:
            if not (isinstance(component, str) or (type(component) is int and component >= 0)):
                raise InvalidChangeError(
                    f"disambiguated_paths.{path}: {component!r} is neither a field name nor an array index"
                )
        if ".".join(map(str, components)) != path:
            raise InvalidChangeError(f"disambiguated_paths.{path}: {components!r} does not spell {path!r}")
        checked[path] = components
    return checked


def _check_txn(txn: object) -> int | None:
    if txn is None:
        return None
    if isinstance(txn, bool) or not isinstance(txn, int) or txn < 0:
        raise InvalidChangeError(f"txn: expected a non-negative int, got {txn!r}")
    return txn


def _index_name(key: object) -> str:
    """MongoDB's default index name: ``field_direction`` pairs joined by ``_``."""
    if not isinstance(key, Mapping) or not key:
        raise InvalidChangeError(f"index_spec.key: expected a non-empty document, got {key!r}")
    return "_".join(f"{field}_{direction}" for field, direction in key.items())
