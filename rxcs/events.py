"""The change-event model: what a subscriber receives, shaped like MongoDB's events."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, final

if TYPE_CHECKING:
    from rxcs.tokens import ResumeToken

__all__ = [
    "ChangeEvent",
    "ClusterTime",
    "Namespace",
    "OperationType",
    "UpdateDescription",
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


class ClusterTime(NamedTuple):
    """A position in time that orders every entry of one oplog.

    Like MongoDB's BSON Timestamp: ``time`` is seconds since the epoch and
    ``inc`` orders entries within that second. Comparisons are tuple order.
    """

    time: int
    inc: int


class Namespace(NamedTuple):
    """A database and, except for database-wide events, a collection."""

    db: str
    coll: str | None = None

    def to_document(self) -> dict[str, Any]:
        """Return the ``ns`` sub-document (``coll`` omitted when there is none)."""
        if self.coll is None:
            return {"db": self.db}
        return {"db": self.db, "coll": self.coll}

    def __str__(self) -> str:
        return self.db if self.coll is None else f"{self.db}.{self.coll}"


@final
@dataclass(frozen=True, slots=True)
class UpdateDescription:
    """What an update changed: set paths, removed paths and truncated arrays."""

    updated_fields: Mapping[str, Any] = field(default_factory=dict)
    removed_fields: Sequence[str] = ()
    truncated_arrays: Sequence[Mapping[str, Any]] = ()

    def to_document(self) -> dict[str, Any]:
        """Return the ``updateDescription`` sub-document."""
        return {
            "updatedFields": dict(self.updated_fields),
            "removedFields": list(self.removed_fields),
            "truncatedArrays": [dict(t) for t in self.truncated_arrays],
        }


@final
@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change, as delivered to a subscriber.

    Attributes mirror the fields of a MongoDB change event; ``to_document()``
    returns that event as MongoDB shapes it, which is what pipelines see.
    ``null_fields`` names the document fields that are present with a null
    value (for example ``fullDocument`` under ``full_document="whenAvailable"``
    when no post-image was recorded), as opposed to absent.

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
    ) -> ChangeEvent:
        """Build an event from values the stream itself produced: the hot path, no checks.

        Below the class this is replaced by the same construction written
        with each slot's setter bound once, the cheapest way into a frozen
        dataclass; this form is what it does.
        """
        return cls(
            id, operation_type, cluster_time, wall_time, ns, document_key, full_document,
            full_document_before_change, update_description, to, operation_description, txn_number, null_fields,
        )

    @property
    def op_id(self) -> int:
        """The op_id of the oplog entry this event comes from."""
        return self.id.op_id

    def to_document(self) -> dict[str, Any]:
        """Return the event as MongoDB shapes it (``_id``, ``operationType``, ...)."""
        doc: dict[str, Any] = {
            "_id": self.id.to_document(),
            "operationType": str(self.operation_type),
            "clusterTime": self.cluster_time,
            "wallTime": self.wall_time,
        }
        if self.operation_type is not OperationType.INVALIDATE:
            doc["ns"] = self.ns.to_document()
        if self.document_key is not None:
            doc["documentKey"] = self.document_key
        if self.update_description is not None:
            doc["updateDescription"] = self.update_description.to_document()
        nulls = self.null_fields
        if self.full_document is not None or "fullDocument" in nulls:
            doc["fullDocument"] = self.full_document
        if (
            self.full_document_before_change is not None
            or "fullDocumentBeforeChange" in nulls
        ):
            doc["fullDocumentBeforeChange"] = self.full_document_before_change
        if self.to is not None:
            doc["to"] = self.to.to_document()
        if self.operation_description is not None:
            doc["operationDescription"] = self.operation_description
        if self.txn_number is not None:
            doc["txnNumber"] = self.txn_number
        return doc


def _trusted_event_builder() -> Any:
    """``ChangeEvent._trusted`` written out with each slot's setter bound once."""
    (set_id, set_op, set_time, set_wall, set_ns, set_key, set_doc, set_before, set_update, set_to, set_desc,
     set_txn, set_nulls) = (getattr(ChangeEvent, f.name).__set__ for f in fields(ChangeEvent))
    new = _new

    def trusted(
        id: ResumeToken, operation_type: OperationType, cluster_time: ClusterTime, wall_time: datetime,
        ns: Namespace, document_key: Document | None, full_document: Document | None,
        full_document_before_change: Document | None, update_description: UpdateDescription | None,
        to: Namespace | None, operation_description: Document | None, txn_number: int | None,
        null_fields: frozenset[str],
    ) -> ChangeEvent:
        event = new(ChangeEvent)
        set_id(event, id)
        set_op(event, operation_type)
        set_time(event, cluster_time)
        set_wall(event, wall_time)
        set_ns(event, ns)
        set_key(event, document_key)
        set_doc(event, full_document)
        set_before(event, full_document_before_change)
        set_update(event, update_description)
        set_to(event, to)
        set_desc(event, operation_description)
        set_txn(event, txn_number)
        set_nulls(event, null_fields)
        return event

    trusted.__doc__ = ChangeEvent._trusted.__doc__
    return trusted


ChangeEvent._trusted = _trusted_event_builder()  # type: ignore[method-assign]
