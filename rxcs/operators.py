"""Pipeable operators that turn oplog entries into change events, one job each.

``watch()`` composes them; they are public so users can build their own chain::

    rxcs.oplog_entries(oplog, after=op_id).pipe(
        cso.scope("shop", "users"),
        cso.to_change_events(full_document="whenAvailable"),
        cso.match({"operationType": "insert"}),
        cso.pipeline([{"$project": {"fullDocument": 1}}]),
        cso.buffer(1000, overflow="block"),
    )

Filters and stages compile when the operator is made, so a bad one raises
``QueryError``/``PipelineError`` there, not at the first event.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, get_args

import reactivex
from reactivex import abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable

from rxcs.buffer import EventBuffer, Overflow, check_buffer_args
from rxcs.errors import InvalidResumeToken, MissingImageError, PipelineError, StreamClosedError
from rxcs.events import ChangeEvent, Namespace, OperationType, UpdateDescription
from rxcs.log import log
from rxcs.oplog.base import Sift
from rxcs.oplog.entry import OplogEntry
from rxcs.pipeline import CompiledPipeline, compile_pipeline, event_limit
from rxcs.prefilter import EntryFilter
from rxcs.query import compile_filter, rewrite_event_aliases
from rxcs.source import EntrySource
from rxcs.tokens import ResumeToken

__all__ = [
    "FULL_DOCUMENT_BEFORE_CHANGE_MODES",
    "FULL_DOCUMENT_MODES",
    "FullDocument",
    "FullDocumentBeforeChange",
    "Lookup",
    "buffer",
    "match",
    "pipeline",
    "scope",
    "seek",
    "to_change_events",
]

T = TypeVar("T")
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
_OPERATION_TYPES: Final = {str(op): op for op in OperationType}
_WITH_PRE_IMAGE: Final = frozenset({"update", "replace", "delete"})


class _KnownOplog(reactivex.Observable[T]):
    """An Observable that remembers which oplog its items come from."""

    def __init__(self, subscribe: abc.Subscription[T], oplog_id: uuid.UUID | None) -> None:
        super().__init__(subscribe)
        self.oplog_id = oplog_id


def _oplog_id_of(source: reactivex.Observable[Any]) -> uuid.UUID | None:
    oplog_id = getattr(source, "oplog_id", None)
    return oplog_id if isinstance(oplog_id, uuid.UUID) else None


def _invalidate_entry(entry: OplogEntry) -> OplogEntry:
    return OplogEntry(entry.op_id, entry.cluster_time, entry.wall_time_ms, _INVALIDATE, entry.db, entry.coll)


def scope(
    db: str | None = None, collection: str | None = None
) -> Callable[[reactivex.Observable[OplogEntry]], reactivex.Observable[OplogEntry]]:
    """Keep the entries of one database or one collection (none: everything).

    The cut is made on the entry's namespace, before any decoding into events.
    A collection scope ends after the collection is dropped or renamed (or its
    database dropped), and a database scope after the database is dropped:
    the scope passes the ending entry, then a synthetic ``invalidate`` entry
    (same op_id), then completes. A dropped database shows a collection scope
    a ``drop`` of its collection first, as MongoDB does.

    Examples:
        >>> import rxcs
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> _ = oplog.insert("shop", "orders", {"_id": 1})
        >>> _ = oplog.drop_collection("shop", "users")
        >>> got = []
        >>> rxcs.oplog_entries(oplog, after=0).pipe(cso.scope("shop", "users")).subscribe(
        ...     lambda entry: got.append(entry.op), on_completed=lambda: got.append("completed"))
        <...>
        >>> import time; time.sleep(0.2); got
        ['insert', 'drop', 'invalidate', 'completed']
    """
    if collection is not None and db is None:
        raise ValueError("a collection scope needs its database: scope(db, collection)")
    for name, value in (("db", db), ("collection", collection)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string or None, not {value!r}")

    rule = _scope_rule(db, collection)

    def operator(source: reactivex.Observable[OplogEntry]) -> reactivex.Observable[OplogEntry]:
        if db is None:
            return source
        if isinstance(source, EntrySource):  # the shared tailer then feeds it only this namespace
            source = source.within(db, collection)

        def subscribe(
            observer: abc.ObserverBase[OplogEntry], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            on_next = observer.on_next

            def on_entry(entry: OplogEntry) -> None:
                verdict = rule(entry)
                if verdict is _PASS:
                    on_next(entry)
                elif verdict is _END:
                    on_next(_as_seen_by(entry, collection))
                    on_next(_invalidate_entry(entry))
                    observer.on_completed()

            return source.subscribe(on_entry, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, _oplog_id_of(source))

    return operator


_SKIP, _PASS, _END = "skip", "pass", "end"


def _scope_rule(db: str | None, collection: str | None) -> Callable[[OplogEntry], str]:
    """What a scope does with an entry: skip it, pass it, or pass it and end (invalidate)."""
    if db is None:
        return lambda _entry: _PASS
    if collection is None:

        def database_rule(entry: OplogEntry) -> str:
            if entry.db != db:
                return _SKIP
            return _END if entry.op == "dropDatabase" else _PASS

        return database_rule

    def collection_rule(entry: OplogEntry) -> str:
        if entry.db != db:
            return _SKIP
        if entry.coll == collection:
            return _END if entry.op in _ENDS_COLLECTION else _PASS
        return _END if entry.op == "dropDatabase" else _SKIP

    return collection_rule


def _as_seen_by(entry: OplogEntry, collection: str | None) -> OplogEntry:
    """A dropped database shows a collection scope a drop of its collection, as MongoDB does."""
    if collection is not None and entry.op == "dropDatabase":
        return entry._replace(op="drop", coll=collection)
    return entry


def to_change_events(
    full_document: FullDocument = "default",
    full_document_before_change: FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    *,
    lookup: Lookup | None = None,
    oplog_id: uuid.UUID | None = None,
) -> Callable[[reactivex.Observable[OplogEntry]], reactivex.Observable[ChangeEvent]]:
    """Turn entries into ``ChangeEvent`` values, with the document images asked for.

    ``full_document``: ``"default"`` (inserts and replaces carry the document),
    ``"updateLookup"`` (updates too: the recorded post-image, else
    ``lookup(ns, document_key)``, else null), ``"whenAvailable"`` (the recorded
    post-image or null), ``"required"`` (the post-image, or the stream fails
    with ``MissingImageError``). ``full_document_before_change``: ``"off"``,
    ``"whenAvailable"``, ``"required"``, from recorded pre-images. Expanded
    events (create, createIndexes, dropIndexes) pass only with
    ``show_expanded_events``.

    Resume tokens name the oplog: its identity comes from the source (an
    ``oplog_entries()`` stream, directly or through rxcs operators), or from
    ``oplog_id``.

    Examples:
        >>> import rxcs
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.update("shop", "users", 1, updated_fields={"a": 1}, full_document={"_id": 1, "a": 1})
        >>> got = []
        >>> _ = rxcs.oplog_entries(oplog, after=0).pipe(
        ...     cso.to_change_events(full_document="whenAvailable")).subscribe(got.append)
        >>> import time; time.sleep(0.2); got[0].full_document
        {'_id': 1, 'a': 1}
    """
    check_image_modes(full_document, full_document_before_change, lookup)

    def operator(source: reactivex.Observable[OplogEntry]) -> reactivex.Observable[ChangeEvent]:
        identity = oplog_id or _oplog_id_of(source)
        if identity is None:
            raise TypeError(
                "to_change_events() needs the oplog's identity for resume tokens: apply it to an "
                "oplog_entries() stream (directly or through rxcs operators) or pass oplog_id="
            )
        convert = entry_converter(
            identity, full_document, full_document_before_change, show_expanded_events, lookup
        )

        def subscribe(
            observer: abc.ObserverBase[ChangeEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            on_next = observer.on_next

            def on_entry(entry: OplogEntry) -> None:
                event = convert(entry)
                if event is not None:
                    on_next(event)

            return source.subscribe(on_entry, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, identity)

    return operator


def check_image_modes(full_document: str, full_document_before_change: str, lookup: object) -> None:
    """Validate the document-image options; ``ValueError`` names the bad one and the choices."""
    if full_document not in FULL_DOCUMENT_MODES:
        raise ValueError(
            f"full_document must be one of {', '.join(sorted(FULL_DOCUMENT_MODES))}, not {full_document!r}"
        )
    if full_document_before_change not in FULL_DOCUMENT_BEFORE_CHANGE_MODES:
        raise ValueError(
            "full_document_before_change must be one of "
            f"{', '.join(sorted(FULL_DOCUMENT_BEFORE_CHANGE_MODES))}, not {full_document_before_change!r}"
        )
    if lookup is not None and not callable(lookup):
        raise TypeError(f"lookup must be callable, not {lookup!r}")



def entry_converter(
    oplog_id: uuid.UUID,
    full_document: str,
    full_document_before_change: str,
    show_expanded_events: bool,
    lookup: Lookup | None,
) -> Callable[[OplogEntry], ChangeEvent | None]:
    """Compile the entry → event conversion for one set of options."""
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
    # The last wall time converted and its datetime, as one tuple: read and replaced whole, so a
    # converter shared by streams on several threads never pairs one entry's time with another's.
    last_wall: list[tuple[int, datetime]] = [(-1, datetime.fromtimestamp(0, UTC))]

    def convert(entry: OplogEntry) -> ChangeEvent | None:
        op = op_types.get(entry.op)
        if op is None:
            raise ValueError(f"op_id {entry.op_id}: unknown operation {entry.op!r}")
        if op in expanded and not show_expanded_events:
            return None
        nulls = no_nulls
        document = entry.full_document
        if op is update_op:
            document = _post_image(entry, full_document, lookup) if want_post_image else None
            if document is None and want_post_image:
                nulls = frozenset({"fullDocument"})
        before = None
        if pre_mode != "off" and op in _WITH_PRE_IMAGE:
            before = entry.full_document_before_change
            if before is None:
                if pre_mode == "required":
                    raise MissingImageError(
                        f"op_id {entry.op_id}: {entry.op} on {entry.db}.{entry.coll} has no pre-image "
                        "recorded (full_document_before_change='required')"
                    )
                nulls = nulls | {"fullDocumentBeforeChange"}
        update = entry.update_description
        key = (entry.db, entry.coll)
        ns = namespaces.get(key)
        if ns is None:
            ns = namespaces[key] = Namespace(*key)
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
                update["updatedFields"], update["removedFields"], update["truncatedArrays"]
            ),
            entry.to,
            entry.operation_description,
            entry.txn_number,
            nulls,
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
        return entry_converter(oplog_id, full_document, full_document_before_change, show_expanded_events, lookup)
    key = (oplog_id, full_document, full_document_before_change, show_expanded_events)
    with _SHARED_CONVERTERS_LOCK:
        convert = _SHARED_CONVERTERS.get(key)
        if convert is None:
            convert = _remembering(
                entry_converter(oplog_id, full_document, full_document_before_change, show_expanded_events, None)
            )
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


def _post_image(entry: OplogEntry, mode: str, lookup: Lookup | None) -> Mapping[str, Any] | None:
    if entry.full_document is not None:
        return entry.full_document
    if mode == "updateLookup" and lookup is not None and entry.document_key is not None:
        return lookup(Namespace(entry.db, entry.coll), entry.document_key)
    if mode == "required":
        raise MissingImageError(
            f"op_id {entry.op_id}: update on {entry.db}.{entry.coll} has no post-image recorded "
            "(full_document='required')"
        )
    return None


def changes(
    db: str | None,
    collection: str | None,
    convert: Callable[[OplogEntry], ChangeEvent | None],
    *,
    skip_through: ResumeToken | None = None,
    stages: CompiledPipeline | None = None,
    oplog_id: uuid.UUID | None = None,
    max_event_bytes: int | None = None,
    prefilter: EntryFilter | None = None,
    sift: Sift | None = None,
) -> Callable[[reactivex.Observable[OplogEntry]], reactivex.Observable[Any]]:
    """``scope`` + ``to_change_events`` + ``seek`` + ``pipeline`` in one step: what ``watch()`` runs.

    The same rules as the separate operators, applied in one subscription so
    each entry costs one call instead of one per operator. ``max_event_bytes``
    caps event size (``rxcs.pipeline.event_limit``); a ``skip_through`` token
    naming a fragment of a split event resumes at the next fragment.
    ``prefilter`` (``rxcs.prefilter``) drops entries before they become
    events; it must give the answer the pipeline's leading ``$match`` stages would.
    ``sift`` (``rxcs.prefilter.leading_match_sift``, for that same filter) lets
    an ``oplog_entries`` source leave out undecoded the entries it fails.
    """
    rule = _scope_rule(db, collection)
    run = stages.run if stages is not None else None
    reshapes = stages is not None and stages.reshapes
    fit = event_limit(max_event_bytes, stages is not None and stages.split)

    def operator(source: reactivex.Observable[OplogEntry]) -> reactivex.Observable[Any]:
        if db is not None and isinstance(source, EntrySource):  # fed only this namespace's entries
            source = source.within(db, collection)
        if sift is not None and isinstance(source, EntrySource):
            source = source.sifted(sift)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            on_next = observer.on_next
            skip = skip_through

            def emit(event: ChangeEvent | None) -> None:
                nonlocal skip
                if event is None:
                    return
                after_fragment = 0
                if skip is not None:
                    if event.id <= skip:
                        if not _within_split(event, skip):
                            return
                        after_fragment = skip.fragment
                    skip = None
                    if after_fragment and fit is None:
                        raise _not_split_any_more(event, after_fragment)
                if run is None and fit is None:
                    on_next(event)
                    return
                document = event.to_document()
                result = document if run is None else run(document)
                if result is None:
                    return
                if fit is None:
                    on_next(result if reshapes else event)
                    return
                pieces = fit(result)
                if pieces[0] is result:
                    if after_fragment:
                        raise _not_split_any_more(event, after_fragment)
                    on_next(result if reshapes else event)
                    return
                for piece in pieces[after_fragment:]:
                    on_next(piece)

            def on_entry(entry: OplogEntry) -> None:
                verdict = rule(entry)
                if verdict is _PASS:
                    if prefilter is None or prefilter(entry):
                        emit(convert(entry))
                elif verdict is _END:
                    for ending in (_as_seen_by(entry, collection), _invalidate_entry(entry)):
                        if prefilter is None or prefilter(ending):
                            emit(convert(ending))
                    log.info("change stream invalidated", db=db, collection=collection, op=entry.op,
                             op_id=entry.op_id)
                    observer.on_completed()

            return source.subscribe(on_entry, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, oplog_id or _oplog_id_of(source))

    return operator


def _within_split(event: ChangeEvent, token: ResumeToken) -> bool:
    """True when ``token`` names a fragment of this event: its later fragments are still to come."""
    return token.fragment > 0 and event.id.op_id == token.op_id and event.id.invalidate == token.invalidate


def _not_split_any_more(event: ChangeEvent, fragment: int) -> PipelineError:
    return PipelineError(
        f"resume token names fragment {fragment} of the event of op_id {event.op_id}, but this stream "
        "does not split that event: resume with the pipeline and max_event_bytes the token came from"
    )


def _event_document(item: object) -> Mapping[str, Any]:
    if isinstance(item, ChangeEvent):
        return item.to_document()
    if isinstance(item, Mapping):
        return item
    raise TypeError(f"expected a ChangeEvent or a document, got {type(item).__name__}")


def match(
    filter: Mapping[str, Any],
) -> Callable[[reactivex.Observable[T]], reactivex.Observable[T]]:
    """Keep the events whose MongoDB-shaped document matches a query filter.

    The filter is MongoDB's query language (``rxcs.query``), evaluated on
    ``event.to_document()``; ``database``/``db`` and ``collection``/``coll``
    also name ``ns.db`` and ``ns.coll``, as LauraDB's filters did.

    Examples:
        >>> import rxcs
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1, "age": 30})
        >>> _ = oplog.insert("shop", "users", {"_id": 2, "age": 12})
        >>> got = []
        >>> _ = rxcs.oplog_entries(oplog, after=0).pipe(
        ...     cso.to_change_events(), cso.match({"fullDocument.age": {"$gte": 18}})
        ... ).subscribe(lambda e: got.append(e.document_key))
        >>> import time; time.sleep(0.2); got
        [{'_id': 1}]
    """
    predicate = compile_filter(rewrite_event_aliases(filter))

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        def subscribe(observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            on_next = observer.on_next

            def on_event(item: T) -> None:
                if predicate(_event_document(item)):
                    on_next(item)

            return source.subscribe(on_event, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, _oplog_id_of(source))

    return operator


def pipeline(
    stages: Sequence[Mapping[str, Any]],
    *,
    max_event_bytes: int | None = None,
) -> Callable[[reactivex.Observable[ChangeEvent]], reactivex.Observable[ChangeEvent | dict[str, Any]]]:
    """Run MongoDB aggregation stages over each event's document.

    A pipeline of ``$match`` stages only passes ``ChangeEvent`` values
    through; one with reshaping stages delivers the reshaped documents
    (dicts), which keep the event's ``_id`` (a stage that removes or changes
    it fails the stream with ``PipelineError``). ``max_event_bytes`` caps
    event size: over it, the stream fails with ``EventTooLargeError``, or,
    when the pipeline ends with ``$changeStreamSplitLargeEvent`` (cap 16 MiB
    by default), delivers the event as fragment documents. See
    ``rxcs.pipeline`` and docs/pipeline.md for the stages supported.

    Examples:
        >>> import rxcs
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> got = []
        >>> _ = rxcs.oplog_entries(oplog, after=0).pipe(
        ...     cso.to_change_events(), cso.pipeline([{"$match": {"operationType": "insert"}}])
        ... ).subscribe(got.append)
        >>> import time; time.sleep(0.2); [e.operation_type for e in got]
        [<OperationType.INSERT: 'insert'>]
    """
    compiled = compile_pipeline(stages)
    fit = event_limit(max_event_bytes, compiled.split)

    def operator(source: reactivex.Observable[ChangeEvent]) -> reactivex.Observable[Any]:
        run = compiled.run
        reshapes = compiled.reshapes

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            on_next = observer.on_next

            def on_event(item: Any) -> None:
                result = run(_event_document(item))
                if result is None:
                    return
                if fit is not None:
                    pieces = fit(result)
                    if pieces[0] is not result:
                        for piece in pieces:
                            on_next(piece)
                        return
                on_next(result if reshapes else item)

            return source.subscribe(on_event, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, _oplog_id_of(source))

    return operator


def seek(token: ResumeToken | str | Mapping[str, Any]) -> Callable[[reactivex.Observable[T]], reactivex.Observable[T]]:
    """Start after a resume token.

    Applied directly to an ``oplog_entries()`` source, it moves the source's
    start (an O(log n) seek, nothing read before it); there a token names a
    whole entry. Anywhere else it skips events (or entries) up to and
    including the token's position. A token of another oplog raises
    ``InvalidResumeToken``.

    Examples:
        >>> import rxcs
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = [oplog.insert("shop", "users", {"_id": i}) for i in range(3)]
        >>> token = rxcs.ResumeToken(oplog.oplog_id, 2)
        >>> got = []
        >>> _ = rxcs.oplog_entries(oplog, after=0).pipe(cso.seek(token)).subscribe(got.append)
        >>> import time; time.sleep(0.2); [entry.op_id for entry in got]
        [3]
    """
    position = ResumeToken.parse(token)

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        identity = _oplog_id_of(source)
        if identity is not None and identity != position.oplog_id:
            raise InvalidResumeToken(
                f"resume token {position} comes from oplog {position.oplog_id}, not from this one ({identity})"
            )
        if isinstance(source, EntrySource):
            moved: reactivex.Observable[Any] = source.starting_after(position.op_id, position)
            return moved

        def subscribe(observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            passed = False
            on_next = observer.on_next

            def on_item(item: T) -> None:
                nonlocal passed
                if passed or _after(item, position):
                    passed = True
                    on_next(item)

            return source.subscribe(on_item, observer.on_error, observer.on_completed, scheduler=scheduler)

        return _KnownOplog(subscribe, identity)

    return operator


def _after(item: object, position: ResumeToken) -> bool:
    if isinstance(item, ChangeEvent):
        return item.id > position
    if isinstance(item, OplogEntry):
        return item.op_id > position.op_id
    if isinstance(item, Mapping) and "_id" in item:
        return ResumeToken.parse(item["_id"]) > position
    raise TypeError(f"seek() cannot place a {type(item).__name__} in the oplog")


def buffer(
    size: int, overflow: Overflow = "block", *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[reactivex.Observable[T]], reactivex.Observable[T]]:
    """Hand events to another thread through a bounded buffer, a batch per hop.

    Downstream runs on ``scheduler`` (one action per batch) or, without one,
    on a thread of the buffer's own, stopped when the subscription is disposed.
    ``overflow`` says what a full buffer does (``rxcs.buffer``): ``"block"``
    (default) pauses reading the durable oplog and loses nothing;
    ``"drop_oldest"``/``"drop_newest"`` count and log drops; ``"error"``
    delivers what was buffered, then ``BufferOverflowError``.

    Examples:
        >>> import rxcs, threading
        >>> from rxcs import operators as cso
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> threads = []
        >>> sub = rxcs.oplog_entries(oplog, after=0).pipe(cso.buffer(100)).subscribe(
        ...     lambda entry: threads.append(threading.current_thread().name))
        >>> import time; time.sleep(0.2); sub.dispose(); threads
        ['rxcs-buffer']
    """
    check_buffer_args(size, overflow)

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], subscribe_scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            events: EventBuffer[T] = EventBuffer(size, overflow)
            upstream = SingleAssignmentDisposable()
            events.on_overflow_error = upstream.dispose
            drain = _Drain(events, observer, scheduler, size)
            upstream.disposable = source.subscribe(
                events.put, events.finish, events.finish, scheduler=subscribe_scheduler
            )
            return CompositeDisposable(upstream, Disposable(drain.stop))

        return _KnownOplog(subscribe, _oplog_id_of(source))

    return operator


class _Drain:
    """Moves batches out of an EventBuffer to the observer, on a thread or a scheduler."""

    def __init__(
        self,
        events: EventBuffer[Any],
        observer: abc.ObserverBase[Any],
        scheduler: abc.SchedulerBase | None,
        batch: int,
    ) -> None:
        self._events = events
        self._observer = observer
        self._scheduler = scheduler
        self._batch = batch
        self._lock = threading.Lock()
        self._scheduled = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        if scheduler is None:
            self._thread = threading.Thread(target=self._run_thread, name="rxcs-buffer", daemon=True)
            self._thread.start()
        else:
            events.on_ready = self._schedule

    def _run_thread(self) -> None:
        while not self._stopped:
            try:
                batch = self._events.take(self._batch, timeout=None)
            except StreamClosedError:
                return
            if not self._deliver(batch):
                return

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled or self._stopped:
                return
            self._scheduled = True
        assert self._scheduler is not None
        self._scheduler.schedule(self._run_scheduled)

    def _run_scheduled(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        while not self._stopped:
            with self._lock:
                try:
                    batch = self._events.take(self._batch)
                except StreamClosedError:
                    return
                if not batch and not self._events.ended:
                    self._scheduled = False
                    return
            if not self._deliver(batch):
                return

    def _deliver(self, batch: list[Any]) -> bool:
        """Emit a batch; at the end of the buffer, emit the end. False when finished."""
        observer = self._observer
        try:
            for item in batch:
                if self._stopped:
                    return False
                observer.on_next(item)
        except Exception as exc:  # noqa: BLE001 - a subscriber's error ends the stream, logged
            log.error("subscriber raised in on_next", error=repr(exc))
            self._finish(exc)
            return False
        if self._events.ended:
            self._finish(self._events.error)
            return False
        return True

    def _finish(self, error: Exception | None) -> None:
        self._stopped = True
        try:
            if error is None:
                self._observer.on_completed()
            else:
                self._observer.on_error(error)
        except Exception as again:  # noqa: BLE001 - the drain thread must not die silently
            log.error("subscriber raised at the end of the stream", error=repr(again))

    def stop(self) -> None:
        """Stop draining and wait for the drain thread; idempotent."""
        self._stopped = True
        self._events.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
