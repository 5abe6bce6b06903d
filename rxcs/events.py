"""The change-event model: what a subscriber receives, shaped like MongoDB's events."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast, final

from rxcs.cluster_time import ClusterTime
from rxcs.documents import NsType
from rxcs.frozen import open_twin

if TYPE_CHECKING:
    from rxcs.documents import (
        ChangeStreamDocument,
        NamespaceDocument,
        OperationTypeName,
        ResumeTokenDocument,
        UpdateDescriptionDocument,
    )
    from rxcs.tokens import ResumeToken

__all__ = [
    "ChangeEvent",
    "ClusterTime",
    "Namespace",
    "NsType",
    "OperationType",
    "UpdateDescription",
    "ns_type_of",
]

Document = Mapping[str, Any]
_new = object.__new__


class OperationType(enum.StrEnum):
    """The ``operationType`` of a change event, spelled as MongoDB spells it."""

    INSERT = "insert"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    DROP = "drop"
    RENAME = "rename"
    DROP_DATABASE = "dropDatabase"
    INVALIDATE = "invalidate"
    # Expanded events, delivered only with show_expanded_events=True.
    CREATE = "create"
    CREATE_INDEXES = "createIndexes"
    DROP_INDEXES = "dropIndexes"
    MODIFY = "modify"


def ns_type_of(options: Mapping[str, Any] | None) -> NsType:
    """The ``nsType`` of a ``create`` with these options, as MongoDB tells them apart.

    A ``viewOn`` makes a view, unless it names a ``system.buckets.`` collection
    (how MongoDB makes time-series collections), and ``timeseries`` options
    make a time-series collection; anything else is a collection.

    Examples:
        >>> ns_type_of(None), ns_type_of({"viewOn": "users", "pipeline": []}), ns_type_of({"timeseries": {}})
        ('collection', 'view', 'timeseries')
    """
    if not options:
        return "collection"
    view_on = options.get("viewOn")
    if "timeseries" in options or (isinstance(view_on, str) and view_on.startswith("system.buckets.")):
        return "timeseries"
    return "view" if view_on is not None else "collection"


class Namespace(NamedTuple):
    """A database and, except for database-wide events, a collection."""

    db: str
    coll: str | None = None

    def to_document(self) -> NamespaceDocument:
        """Return the ``ns`` sub-document (``coll`` omitted when there is none)."""
        if self.coll is None:
            return {"db": self.db}
        return {"db": self.db, "coll": self.coll}

    def __str__(self) -> str:
        return self.db if self.coll is None else f"{self.db}.{self.coll}"


@final
@dataclass(frozen=True, slots=True)
class UpdateDescription:
    """What an update changed: set paths, removed paths and truncated arrays.

    ``disambiguated_paths`` (expanded events only, else None) spells out,
    component by component, the paths above whose dotted form is ambiguous:
    a field name that contains a dot or looks like a number, array indices
    as ints (``{"a.0.1": ["a", 0, "1"]}``).
    """

    updated_fields: Mapping[str, Any] = field(default_factory=dict)
    removed_fields: Sequence[str] = ()
    truncated_arrays: Sequence[Mapping[str, Any]] = ()
    disambiguated_paths: Mapping[str, Sequence[str | int]] | None = None

    def to_document(self) -> UpdateDescriptionDocument:
        """Return the ``updateDescription`` sub-document."""
        document: UpdateDescriptionDocument = {
            "updatedFields": dict(self.updated_fields),
            "removedFields": list(self.removed_fields),
            "truncatedArrays": [{"field": t["field"], "newSize": t["newSize"]} for t in self.truncated_arrays],
        }
        if self.disambiguated_paths is not None:
            document["disambiguatedPaths"] = {path: list(parts) for path, parts in self.disambiguated_paths.items()}
        return document


@final
@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change, as delivered to a subscriber.

    Attributes mirror the fields of a MongoDB change event; ``to_document()``
    returns that event as MongoDB shapes it (a ``rxcs.ChangeStreamDocument``),
    which is what pipelines see. ``null_fields`` names the document fields
    that are present with a null value (for example ``fullDocument`` under
    ``full_document="whenAvailable"`` when no post-image was recorded), as
    opposed to absent. ``collection_uuid`` is the collection's identity when
    its entry was recorded (``collectionUUID``), given by streams with
    ``show_expanded_events``, as MongoDB does; ``ns_type`` is what a
    ``create`` made.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> with rxcs.watch(oplog, "shop", "users").iterate() as stream:
        ...     _ = oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        ...     event = stream.next(timeout=5)
        >>> event.operation_type, event.document_key, event.full_document
        (<OperationType.INSERT: 'insert'>, {'_id': 1}, {'_id': 1, 'name': 'Ada'})
    """

    id: ResumeToken
    operation_type: OperationType
    cluster_time: ClusterTime
    wall_time: datetime
    ns: Namespace
    document_key: Document | None = None
    full_document: Document | None = None
    full_document_before_change: Document | None = None
    update_description: UpdateDescription | None = None
    to: Namespace | None = None
    operation_description: Document | None = None
    txn_number: int | None = None
    null_fields: frozenset[str] = frozenset()
    collection_uuid: uuid.UUID | None = None

    @classmethod
    def _trusted(
        cls,
        id: ResumeToken,
        operation_type: OperationType,
        cluster_time: ClusterTime,
        wall_time: datetime,
        ns: Namespace,
        document_key: Document | None,
        full_document: Document | None,
        full_document_before_change: Document | None,
        update_description: UpdateDescription | None,
        to: Namespace | None,
        operation_description: Document | None,
        txn_number: int | None,
        null_fields: frozenset[str],
        collection_uuid: uuid.UUID | None,
    ) -> ChangeEvent:
        """Build an event from values the stream itself produced: the hot path, no checks.

        Below the class this is replaced by the same construction through a
        twin class of the same slots (``rxcs.frozen``), the cheapest way into
        a frozen dataclass; this form is what it does.
        """
        return cls(
            id, operation_type, cluster_time, wall_time, ns, document_key, full_document,
            full_document_before_change, update_description, to, operation_description, txn_number, null_fields,
            collection_uuid,
        )

    @property
    def op_id(self) -> int:
        """The op_id of the oplog entry this event comes from."""
        return self.id.op_id

    @property
    def ns_type(self) -> NsType | None:
        """What a ``create`` made (``nsType``: ``"collection"``, ``"view"``, ``"timeseries"``); else None."""
        if self.operation_type is not OperationType.CREATE:
            return None
        return ns_type_of(self.operation_description)

    def to_document(self) -> ChangeStreamDocument:
        """Return the event as MongoDB shapes it (``_id``, ``operationType``, ...)."""
        token = cast("ResumeTokenDocument", self.id.to_document())
        operation_type: OperationTypeName = self.operation_type.value
        doc: ChangeStreamDocument
        if self.collection_uuid is None:
            doc = {
                "_id": token, "operationType": operation_type, "clusterTime": self.cluster_time,
                "wallTime": self.wall_time,
            }
        else:  # MongoDB places it between clusterTime and wallTime
            doc = {
                "_id": token, "operationType": operation_type, "clusterTime": self.cluster_time,
                "collectionUUID": self.collection_uuid, "wallTime": self.wall_time,
            }
        if self.operation_type is not OperationType.INVALIDATE:
            doc["ns"] = self.ns.to_document()
        if self.document_key is not None:
            doc["documentKey"] = cast("dict[str, Any]", self.document_key)
        if self.update_description is not None:
            doc["updateDescription"] = self.update_description.to_document()
        nulls = self.null_fields
        if self.full_document is not None or "fullDocument" in nulls:
            doc["fullDocument"] = cast("dict[str, Any] | None", self.full_document)
        if (
            self.full_document_before_change is not None
            or "fullDocumentBeforeChange" in nulls
        ):
            doc["fullDocumentBeforeChange"] = cast("dict[str, Any] | None", self.full_document_before_change)
        if self.to is not None:
            doc["to"] = self.to.to_document()
        if self.operation_description is not None:
            doc["operationDescription"] = cast("dict[str, Any]", self.operation_description)
        if self.txn_number is not None:
            doc["txnNumber"] = self.txn_number
        if self.operation_type is OperationType.CREATE:
            doc["nsType"] = ns_type_of(self.operation_description)
        return doc


def _trusted_event_builder() -> Any:
    """``ChangeEvent._trusted`` written out: built through a twin class of the same slots (``rxcs.frozen``)."""
    twin, new, event_class = open_twin(ChangeEvent), _new, ChangeEvent

    def trusted(
        id: ResumeToken, operation_type: OperationType, cluster_time: ClusterTime, wall_time: datetime,
        ns: Namespace, document_key: Document | None, full_document: Document | None,
        full_document_before_change: Document | None, update_description: UpdateDescription | None,
        to: Namespace | None, operation_description: Document | None, txn_number: int | None,
        null_fields: frozenset[str], collection_uuid: uuid.UUID | None,
    ) -> ChangeEvent:
        event: Any = new(twin)
        event.id = id
        event.operation_type = operation_type
        event.cluster_time = cluster_time
        event.wall_time = wall_time
        event.ns = ns
        event.document_key = document_key
        event.full_document = full_document
        event.full_document_before_change = full_document_before_change
        event.update_description = update_description
        event.to = to
        event.operation_description = operation_description
        event.txn_number = txn_number
        event.null_fields = null_fields
        event.collection_uuid = collection_uuid
        event.__class__ = event_class
        built: ChangeEvent = event
        return built

    trusted.__doc__ = ChangeEvent._trusted.__doc__
    return trusted


ChangeEvent._trusted = _trusted_event_builder()  # type: ignore[method-assign]
