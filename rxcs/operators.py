"""Pipeable operators that turn oplog entries into change events, one job each.

``watch()`` runs the same steps (``rxcs.steps``); they are public so users can build their own chain::

    rxcs.oplog_entries(oplog, after=op_id).pipe(
        cso.scope("shop", "users"),
        cso.to_change_events(full_document="whenAvailable"),
        cso.match({"operationType": "insert"}),
        cso.pipeline([{"$project": {"fullDocument": 1}}]),
        cso.buffer(1000, overflow="block"),
    )

Each is a plain Rx operator: it subscribes to its source and passes on what
its step gives, whatever the source is. Filters and stages compile when the
operator is made, so a bad one raises ``QueryError``/``PipelineError``
there, not at the first event. Resume tokens name the oplog the entries
come from: the chain carries its identity from ``oplog_entries()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import reactivex
from reactivex import abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable

from rxcs.buffer import Drain, EventBuffer, Overflow, check_buffer_args
from rxcs.errors import InvalidOptionError, InvalidResumeToken
from rxcs.events import ChangeEvent
from rxcs.oplog.base import Oplog
from rxcs.oplog.entry import OplogEntry
from rxcs.pipeline import compile_pipeline
from rxcs.query import compile_filter, rewrite_event_aliases
from rxcs.steps import (
    END,
    FULL_DOCUMENT_BEFORE_CHANGE_MODES,
    FULL_DOCUMENT_MODES,
    PASS,
    FullDocument,
    FullDocumentBeforeChange,
    Lookup,
    check_image_modes,
    check_scope,
    endings,
    entry_converter,
    event_document,
    is_after,
    scope_rule,
    shaper,
    shared_entry_converter,
)
from rxcs.tokens import ResumeToken

__all__ = [
    "FULL_DOCUMENT_BEFORE_CHANGE_MODES",
    "FULL_DOCUMENT_MODES",
    "FullDocument",
    "FullDocumentBeforeChange",
    "Lookup",
    "buffer",
    "check_image_modes",
    "entry_converter",
    "match",
    "pipeline",
    "scope",
    "seek",
    "shared_entry_converter",
    "to_change_events",
]

T = TypeVar("T")
U = TypeVar("U")


class _KnownOplog(reactivex.Observable[T]):
    """An Observable that carries the identity of the oplog its items come from (and the oplog, when known)."""

    def __init__(self, subscribe: abc.Subscription[T], oplog_id: uuid.UUID | None, oplog: Oplog | None = None) -> None:
        super().__init__(subscribe)
        self.oplog_id = oplog_id
        self.oplog = oplog


def _oplog_id_of(source: reactivex.Observable[Any]) -> uuid.UUID | None:
    oplog_id = getattr(source, "oplog_id", None)
    return oplog_id if isinstance(oplog_id, uuid.UUID) else None


def _oplog_of(source: reactivex.Observable[Any]) -> Oplog | None:
    """The oplog a chain's entries come from (an ``oplog_entries()`` stream, through rxcs operators), if known."""
    oplog = getattr(source, "oplog", None)
    return oplog if isinstance(oplog, Oplog) else None


def _each(
    source: reactivex.Observable[T],
    make_step: Callable[[Callable[[U], None], Callable[[], None]], Callable[[T], None]],
    oplog_id: uuid.UUID | None,
) -> reactivex.Observable[U]:
    """A plain operator: each subscription gets a step from ``make_step(emit, complete)`` and feeds it every item."""

    def subscribe(observer: abc.ObserverBase[U], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        step = make_step(observer.on_next, observer.on_completed)
        return source.subscribe(step, observer.on_error, observer.on_completed, scheduler=scheduler)

    return _KnownOplog(subscribe, oplog_id, _oplog_of(source))


def scope(
    db: str | None = None, collection: str | None = None
) -> Callable[[reactivex.Observable[OplogEntry]], reactivex.Observable[OplogEntry]]:
    """Keep the entries of one database or one collection (none: the whole deployment).

    The cut is made on the entry's namespace, before any decoding into events.
    As in MongoDB, the deployment leaves out the ``admin``, ``config`` and
    ``local`` databases and ``system.*`` collections, a database its
    ``system.*`` collections, and a rename reaches the scopes of its target
    too. A collection scope ends after the collection is dropped or renamed,
    another is renamed onto it, or its database is dropped, and a database
    scope after the database is dropped: the scope passes the ending entry,
    then a synthetic ``invalidate`` entry (same op_id), then completes. A
    dropped database shows a collection scope a ``drop`` of its collection
    first, as MongoDB does.

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
    check_scope(db, collection)
    rule = scope_rule(db, collection)

    def make_step(emit: Callable[[OplogEntry], None], complete: Callable[[], None]) -> Callable[[OplogEntry], None]:
        def step(entry: OplogEntry) -> None:
            verdict = rule(entry)
            if verdict is PASS:
                emit(entry)
            elif verdict is END:
                for ending in endings(entry, collection):
                    emit(ending)
                complete()

        return step

    def operator(source: reactivex.Observable[OplogEntry]) -> reactivex.Observable[OplogEntry]:
        return _each(source, make_step, _oplog_id_of(source))

    return operator


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
    ``"whenAvailable"``, ``"required"``, from recorded pre-images. When the
    entries come from an ``oplog_entries()`` stream (directly or through
    rxcs operators) of an oplog that keeps document images, those serve where
    the producer recorded none, as in ``watch()``: ``updateLookup`` gives the
    document now, the other modes the images the change left (docs/images.md).
    Expanded events (create, createIndexes, dropIndexes) pass only with
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
            raise InvalidOptionError(
                "to_change_events() needs the oplog's identity for resume tokens: apply it to an "
                "oplog_entries() stream (directly or through rxcs operators) or pass oplog_id="
            )
        oplog = _oplog_of(source)
        wants_images = full_document != "default" or full_document_before_change != "off"
        images = oplog.document_images if oplog is not None and wants_images else None
        convert = entry_converter(
            identity, full_document, full_document_before_change, show_expanded_events, lookup, images
        )

        def make_step(
            emit: Callable[[ChangeEvent], None], _complete: Callable[[], None]
        ) -> Callable[[OplogEntry], None]:
            def step(entry: OplogEntry) -> None:
                event = convert(entry)
                if event is not None:
                    emit(event)

            return step

        return _each(source, make_step, identity)

    return operator


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

    def make_step(emit: Callable[[T], None], _complete: Callable[[], None]) -> Callable[[T], None]:
        def step(item: T) -> None:
            if predicate(event_document(item)):
                emit(item)

        return step

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        return _each(source, make_step, _oplog_id_of(source))

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
    shape = shaper(compile_pipeline(stages), max_event_bytes)
    assert shape is not None  # a compiled pipeline always shapes

    def make_step(emit: Callable[[Any], None], _complete: Callable[[], None]) -> Callable[[ChangeEvent], None]:
        def step(event: ChangeEvent) -> None:
            for output in shape(event):
                emit(output)

        return step

    def operator(source: reactivex.Observable[ChangeEvent]) -> reactivex.Observable[ChangeEvent | dict[str, Any]]:
        return _each(source, make_step, _oplog_id_of(source))

    return operator


def seek(token: ResumeToken | str | Mapping[str, Any]) -> Callable[[reactivex.Observable[T]], reactivex.Observable[T]]:
    """Pass over the items up to and including a resume token's position, then pass everything.

    It applies anywhere in a chain: to entries, events, reshaped documents or
    fragments. To start reading the oplog at a token (an O(log n) seek,
    nothing before it read), give the token to ``oplog_entries(after=token)``
    instead. A token of another oplog raises ``InvalidResumeToken``.

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

    def make_step(emit: Callable[[T], None], _complete: Callable[[], None]) -> Callable[[T], None]:
        passed = False

        def step(item: T) -> None:
            nonlocal passed
            if passed or is_after(item, position):
                passed = True
                emit(item)

        return step

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        identity = _oplog_id_of(source)
        if identity is not None and identity != position.oplog_id:
            raise InvalidResumeToken(
                f"resume token {position} comes from oplog {position.oplog_id}, not from this one ({identity})"
            )
        return _each(source, make_step, identity)

    return operator


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
            drain = Drain(events, observer, scheduler, size)
            upstream.disposable = source.subscribe(
                events.put, events.finish, events.finish, scheduler=subscribe_scheduler
            )
            return CompositeDisposable(upstream, Disposable(drain.stop))

        return _KnownOplog(subscribe, _oplog_id_of(source), _oplog_of(source))

    return operator
