"""The steps a change stream takes, each implemented once: the public operators and ``watch()`` share them.

- the *scope* of a stream: which entries it takes, and the ones that end it
  (a dropped or renamed collection, a collection renamed onto it, a dropped
  database) with an ``invalidate``;
- the *conversion* of an entry into a ``ChangeEvent``, with the document
  images asked for;
- the *shaping* of an event by the pipeline's stages, and its split into
  fragments when it is too large;
- the *skip* of a resumed stream: the events up to its token.

``rxcs.operators`` wraps each in a plain Rx operator; ``rxcs.plan`` runs them
in one loop over the entries of a batch. A property test holds the two to the
same events.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from rxcs.errors import InvalidOptionError, MissingImageError, PipelineError
from rxcs.events import ChangeEvent, Namespace, OperationType, UpdateDescription
from rxcs.expanded import disambiguated_paths, operation_description
from rxcs.oplog.entry import OplogEntry
from rxcs.oplog.images import DocumentImages
from rxcs.pipeline import CompiledPipeline, event_limit
from rxcs.tokens import ResumeToken

__all__ = [
    "END",
    "INTERNAL_DATABASES",
    "FULL_DOCUMENT_BEFORE_CHANGE_MODES",
    "FULL_DOCUMENT_MODES",
    "PASS",
    "SKIP",
    "FullDocument",
    "FullDocumentBeforeChange",
    "Lookup",
    "Shaper",
    "check_image_modes",
    "check_scope",
    "endings",
    "entry_converter",
    "event_document",
    "is_after",
    "not_split_any_more",
    "scope_rule",
    "shaper",
    "shared_entry_converter",
    "within_split",
]

FullDocument = Literal["default", "updateLookup", "whenAvailable", "required"]
FullDocumentBeforeChange = Literal["off", "whenAvailable", "required"]
FULL_DOCUMENT_MODES: Final = frozenset(get_args(FullDocument))
FULL_DOCUMENT_BEFORE_CHANGE_MODES: Final = frozenset(get_args(FullDocumentBeforeChange))
Lookup = Callable[[Namespace, Mapping[str, Any]], Mapping[str, Any] | None]
"""``lookup(ns, document_key)``: the current document for ``updateLookup``, or None."""

_INVALIDATE = "invalidate"
_ENDS_COLLECTION: Final = frozenset({"drop", "rename"})
_EXPANDED: Final = frozenset(
    {OperationType.CREATE, OperationType.CREATE_INDEXES, OperationType.DROP_INDEXES, OperationType.MODIFY}
)
_DESCRIBED: Final = frozenset({OperationType.CREATE, OperationType.RENAME, OperationType.DROP_INDEXES})
_OPERATION_TYPES: Final = {str(op): op for op in OperationType}
_WITH_PRE_IMAGE: Final = frozenset({"update", "replace", "delete"})


# -- scope -------------------------------------------------------------------------------

SKIP: Final = "skip"
PASS: Final = "pass"  # noqa: S105 - a verdict, not a password
END: Final = "end"


def check_scope(db: object, collection: object) -> None:
    """Validate a namespace: ``db`` and ``collection`` are non-empty strings or None, a collection needs its db."""
    if collection is not None and db is None:
        raise InvalidOptionError(f"collection {collection!r} needs its database: give db too")
    for name, value in (("db", db), ("collection", collection)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidOptionError(f"{name} must be a non-empty string or None, not {value!r}")


INTERNAL_DATABASES: Final = frozenset({"admin", "config", "local"})
"""Databases a deployment-wide stream does not show, as MongoDB's do not (their collections are the server's)."""
_SYSTEM: Final = "system."


def scope_rule(db: str | None, collection: str | None) -> Callable[[OplogEntry], str]:
    """What a scope does with an entry: ``SKIP`` it, ``PASS`` it, or pass it and ``END`` (invalidate).

    As MongoDB's change streams do: a deployment-wide stream skips the
    ``admin``, ``config`` and ``local`` databases and ``system.*``
    collections, a database stream its ``system.*`` collections; a rename
    reaches the streams of its target too (which it ends, on a collection).
    A stream opened on one of those namespaces by name sees it.
    """
    if db is None:
        internal = INTERNAL_DATABASES

        def deployment_rule(entry: OplogEntry) -> str:
            coll = entry.coll
            if entry.db in internal or (coll is not None and coll.startswith(_SYSTEM)):
                to = entry.to
                if entry.op != "rename" or to is None or to.db in internal or (to.coll or "").startswith(_SYSTEM):
                    return SKIP
            return PASS

        return deployment_rule
    if collection is None:

        def database_rule(entry: OplogEntry) -> str:
            if entry.db == db:
                if entry.op == "dropDatabase":
                    return END
                coll = entry.coll
                if coll is None or not coll.startswith(_SYSTEM):
                    return PASS
            to = entry.to
            if entry.op == "rename" and to is not None and to.db == db and not (to.coll or "").startswith(_SYSTEM):
                return PASS
            return SKIP

        return database_rule

    def collection_rule(entry: OplogEntry) -> str:
        if entry.db == db:
            if entry.coll == collection:
                return END if entry.op in _ENDS_COLLECTION else PASS
            if entry.op == "dropDatabase":
                return END
        to = entry.to
        if to is not None and to.coll == collection and to.db == db and entry.op == "rename":
            return END  # a collection renamed onto this one replaces it
        return SKIP

    return collection_rule


def endings(entry: OplogEntry, collection: str | None) -> tuple[OplogEntry, OplogEntry]:
    """The entries a scope passes for an entry that ends it: the entry as the scope sees it, then an invalidate.

    A dropped database shows a collection scope a drop of its collection, as
    MongoDB does (with the collection's identity, which the dropDatabase
    recorded); the invalidate has the same op_id (its event sorts after).
    """
    seen = entry
    if collection is not None and entry.op == "dropDatabase":
        dropped = entry.dropped.get(collection) if isinstance(entry.dropped, dict) else None
        seen = entry._replace(op="drop", coll=collection, collection_uuid=dropped, dropped=None)
    invalidate = OplogEntry(entry.op_id, entry.cluster_time, entry.wall_time_ms, _INVALIDATE, entry.db, entry.coll)
    return seen, invalidate


# -- conversion --------------------------------------------------------------------------

def check_image_modes(full_document: str, full_document_before_change: str, lookup: object) -> None:
    """Validate the document-image options; ``InvalidOptionError`` names the bad one and the choices."""
    if full_document not in FULL_DOCUMENT_MODES:
        raise InvalidOptionError(
            f"full_document must be one of {', '.join(sorted(FULL_DOCUMENT_MODES))}, not {full_document!r}"
        )
    if full_document_before_change not in FULL_DOCUMENT_BEFORE_CHANGE_MODES:
        raise InvalidOptionError(
            "full_document_before_change must be one of "
            f"{', '.join(sorted(FULL_DOCUMENT_BEFORE_CHANGE_MODES))}, not {full_document_before_change!r}"
        )
    if lookup is not None and not callable(lookup):
        raise InvalidOptionError(f"lookup must be callable, not {lookup!r}")



def entry_converter(
    oplog_id: uuid.UUID,
    full_document: str,
    full_document_before_change: str,
    show_expanded_events: bool,
    lookup: Lookup | None,
    images: DocumentImages | None = None,
) -> Callable[[OplogEntry], ChangeEvent | None]:
    """Compile the entry → event conversion for one set of options.

    An image the producer recorded is used first; for ``updateLookup`` then
    ``lookup``, then the document now as ``images`` (the oplog's document
    images) has it; for the other modes the image ``images`` kept for the
    change. Without ``images`` (or when the options ask for no image) nothing
    is looked up.
    """
    if full_document == "default" and full_document_before_change == "off":
        images = None
    op_types = _OPERATION_TYPES
    expanded = _EXPANDED
    want_post_image = full_document != "default"
    pre_mode = full_document_before_change
    from_timestamp = datetime.fromtimestamp
    utc = UTC
    make_token = ResumeToken._trusted
    make_event = ChangeEvent._trusted
    namespaces: dict[tuple[str, str | None], Namespace] = {}
    no_nulls: frozenset[str] = frozenset()
    update_op = OperationType.UPDATE
    invalidate_op = OperationType.INVALIDATE
    rename_op = OperationType.RENAME
    described = _DESCRIBED
    # The last wall time converted and its datetime, as one tuple: read and replaced whole, so a
    # converter shared by streams on several threads never pairs one entry's time with another's.
    last_wall: list[tuple[int, datetime]] = [(-1, datetime.fromtimestamp(0, UTC))]
    last_ns: list[Namespace] = [Namespace("", "")]  # the namespace last converted: one read, one write

    def convert(entry: OplogEntry) -> ChangeEvent | None:
        op = op_types.get(entry.op)
        if op is None:
            raise ValueError(f"op_id {entry.op_id}: unknown operation {entry.op!r}")
        if op in expanded and not show_expanded_events:
            return None
        nulls = no_nulls
        document = entry.full_document
        kept = None  # the images kept for the entry's change, (pre, post), read once when needed
        if op is update_op:
            if want_post_image and document is None:
                if images is not None and full_document != "updateLookup":
                    kept = images.images(entry)
                    document = kept[1]
                document = _post_image(entry, document, full_document, lookup, images)
            elif not want_post_image:
                document = None
            if document is None and want_post_image:
                nulls = frozenset({"fullDocument"})
        before = None
        if pre_mode != "off" and op in _WITH_PRE_IMAGE:
            before = entry.full_document_before_change
            if before is None and images is not None:
                if kept is None:
                    kept = images.images(entry)
                before = kept[0]
            if before is None:
                if pre_mode == "required":
                    raise MissingImageError(
                        f"op_id {entry.op_id}: {entry.op} on {entry.db}.{entry.coll} has no pre-image "
                        "recorded (full_document_before_change='required')"
                        + ("" if images is None else " nor kept by the oplog's document images")
                    )
                nulls = nulls | {"fullDocumentBeforeChange"}
        update = entry.update_description
        description = entry.operation_description
        identity = None
        spelled = None
        if show_expanded_events:
            identity = entry.collection_uuid
            if op in described:
                description = operation_description(entry, True)
            if update is not None:
                spelled = disambiguated_paths(entry)
        elif op is rename_op:
            description = None  # MongoDB describes a rename only in expanded events
        ns = last_ns[0]
        if entry.coll != ns.coll or entry.db != ns.db:  # most entries are of the namespace before them
            key = (entry.db, entry.coll)
            known = namespaces.get(key)
            if known is None:
                known = namespaces[key] = Namespace(*key)
            ns = last_ns[0] = known
        wall_ms = entry.wall_time_ms
        wall = last_wall[0]
        if wall[0] != wall_ms:  # entries of one commit share their millisecond: one datetime
            wall = last_wall[0] = (wall_ms, from_timestamp(wall_ms / 1000, utc))
        return make_event(
            make_token(oplog_id, entry.op_id, op is invalidate_op, entry.cluster_time, entry.wall_time_ms),
            op,
            entry.cluster_time,
            wall[1],
            ns,
            entry.document_key,
            document,
            before,
            None if update is None else UpdateDescription(
                update["updatedFields"], update["removedFields"], update["truncatedArrays"], spelled
            ),
            entry.to,
            description,
            entry.txn_number,
            nulls,
            identity,
        )

    return convert


_SHARED_CONVERTERS: weakref.WeakValueDictionary[tuple[Any, ...], Callable[[OplogEntry], ChangeEvent | None]] = (
    weakref.WeakValueDictionary()
)
_SHARED_CONVERTERS_LOCK = threading.Lock()
_REMEMBERED: Final = 1024  # conversions a shared converter keeps: a batch's worth, for the next stream


def shared_entry_converter(
    oplog_id: uuid.UUID,
    full_document: str,
    full_document_before_change: str,
    show_expanded_events: bool,
    lookup: Lookup | None,
    images: DocumentImages | None = None,
) -> Callable[[OplogEntry], ChangeEvent | None]:
    """``entry_converter`` shared by the streams of an oplog with the same options.

    The shared tailer feeds one batch of entries to each stream in turn, so
    the converter remembers the events of the latest entries it converted:
    the next stream fed the same entry gets the same (immutable) event instead
    of building its own, and a thousand streams hold one converter, not a
    thousand. A stream with a ``lookup`` gets its own converter: the lookup
    may answer differently each time it is asked.
    """
    if lookup is not None:
        return entry_converter(
            oplog_id, full_document, full_document_before_change, show_expanded_events, lookup, images
        )
    if full_document == "default" and full_document_before_change == "off":
        images = None  # nothing to look up: streams of every oplog instance share one converter
    key = (oplog_id, full_document, full_document_before_change, show_expanded_events, images)
    with _SHARED_CONVERTERS_LOCK:
        convert = _SHARED_CONVERTERS.get(key)
        if convert is None:
            convert = _remembering(entry_converter(
                oplog_id, full_document, full_document_before_change, show_expanded_events, None, images
            ))
            _SHARED_CONVERTERS[key] = convert
    return convert


def _remembering(convert: Callable[[OplogEntry], ChangeEvent | None]) -> Callable[[OplogEntry], ChangeEvent | None]:
    remembered: dict[int, tuple[OplogEntry, ChangeEvent | None]] = {}

    def convert_once(entry: OplogEntry) -> ChangeEvent | None:
        seen = remembered.get(entry.op_id)
        if seen is not None and seen[0] is entry:  # the very entry another stream was fed
            return seen[1]
        event = convert(entry)
        if len(remembered) >= _REMEMBERED:
            remembered.clear()
        remembered[entry.op_id] = (entry, event)
        return event

    return convert_once


def _post_image(
    entry: OplogEntry, found: Mapping[str, Any] | None, mode: str, lookup: Lookup | None, images: DocumentImages | None
) -> Mapping[str, Any] | None:
    """An update's ``fullDocument``: ``found`` (recorded or kept), else looked up, else None or an error."""
    if found is not None:
        return found
    if mode == "updateLookup" and entry.document_key is not None:
        if lookup is not None:
            return lookup(Namespace(entry.db, entry.coll), entry.document_key)
        if images is not None:
            return images.current_of(entry)
    if mode == "required":
        raise MissingImageError(
            f"op_id {entry.op_id}: update on {entry.db}.{entry.coll} has no post-image recorded "
            "(full_document='required')" + ("" if images is None else " nor kept by the oplog's document images")
        )
    return None


# -- shaping -----------------------------------------------------------------------------

Shaper = Callable[[ChangeEvent], list[Any]]
"""What a stream delivers for an event: nothing (filtered out), the event or its reshaped document, or fragments."""


def event_document(item: object) -> Mapping[str, Any]:
    """The MongoDB-shaped document of an event, or of an already reshaped one."""
    if isinstance(item, ChangeEvent):
        return item.to_document()
    if isinstance(item, Mapping):
        return item
    raise TypeError(f"expected a ChangeEvent or a document, got {type(item).__name__}")


def shaper(stages: CompiledPipeline | None, max_event_bytes: int | None) -> Shaper | None:
    """The shaping of events by compiled stages and a size cap; None when events pass as they are.

    Filtering stages deliver the event itself; reshaping ones the output
    document. Over ``max_event_bytes``, a pipeline ending with
    ``$changeStreamSplitLargeEvent`` delivers fragments, any other fails with
    ``EventTooLargeError`` (``rxcs.pipeline.event_limit``).
    """
    fit = event_limit(max_event_bytes, stages is not None and stages.split)
    if stages is None and fit is None:
        return None
    run = stages.run if stages is not None else None
    reshapes = stages is not None and stages.reshapes

    def shape(event: Any) -> list[Any]:
        document = event_document(event) if run is not None or fit is not None else event
        result = document if run is None else run(document)
        if result is None:
            return []
        if fit is not None:
            pieces = fit(result)
            if pieces[0] is not result:
                return pieces
        return [result if reshapes else event]

    return shape


# -- skipping to a token -----------------------------------------------------------------


def is_after(item: object, position: ResumeToken) -> bool:
    """True when an item (an entry, an event, a reshaped document or a fragment) lies after ``position``."""
    if isinstance(item, ChangeEvent):
        return item.id > position
    if isinstance(item, OplogEntry):
        return item.op_id > position.op_id
    if isinstance(item, Mapping) and "_id" in item:
        return ResumeToken.parse(item["_id"]) > position
    raise TypeError(f"cannot place a {type(item).__name__} in the oplog")


def within_split(event: ChangeEvent, token: ResumeToken) -> bool:
    """True when ``token`` names a fragment of this event: its later fragments are still to come."""
    return token.fragment > 0 and event.id.op_id == token.op_id and event.id.invalidate == token.invalidate


def not_split_any_more(event: ChangeEvent, fragment: int) -> PipelineError:
    """The error of a stream resumed at a fragment of an event it no longer splits."""
    return PipelineError(
        f"resume token names fragment {fragment} of the event of op_id {event.op_id}, but this stream "
        "does not split that event: resume with the pipeline and max_event_bytes the token came from"
    )
