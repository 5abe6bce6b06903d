"""``watch()`` and ``ChangeStream``: the change stream as users hold it.

``watch()`` validates everything it is given (filters, stages, tokens,
modes) at once and returns a cold Observable of change events; its start
position is fixed when it is subscribed. ``iterate()`` and ``aiterate()``
subscribe it behind a bounded buffer and hand events over one at a time, the
way PyMongo's change streams do, blocking or with asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, final, overload

import reactivex
from reactivex import abc

from rxcs import operators as cso
from rxcs.buffer import EMPTY, EventBuffer, Overflow, check_buffer_args
from rxcs.errors import ChangeStreamHistoryLost, InvalidResumeToken, StreamClosedError
from rxcs.events import ChangeEvent, ClusterTime
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.pipeline import check_max_event_bytes, compile_pipeline
from rxcs.prefilter import leading_match_filter, leading_match_sift
from rxcs.source import Beginning, Lane, check_token_history, current_lane, high_water_token, oplog_entries
from rxcs.tokens import ResumeToken

__all__ = ["AsyncChangeStream", "ChangeStream", "ChangeStreamObservable", "StreamStatistics", "watch"]


TokenLike = ResumeToken | str | Mapping[str, Any]
EventT_co = TypeVar("EventT_co", covariant=True)
"""What a stream delivers: ``ChangeEvent``, or ``ChangeEvent | dict`` when a pipeline may reshape."""


@final
@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """A change stream's counters at one moment.

    ``delivered``: events handed to the caller. ``filtered_out``: entries the
    stream read that gave it no event (another namespace, a failed match).
    ``dropped``: events a drop policy discarded. ``buffered``: events read but
    not yet handed over. ``lag``: entries in the oplog the stream has not read
    yet. ``high_water``: the most events ever buffered at once. ``pauses``:
    times the stream stopped reading because its buffer was full.
    """

    delivered: int
    filtered_out: int
    dropped: int
    buffered: int
    lag: int
    high_water: int
    pauses: int


@final
@dataclass(frozen=True, slots=True)
class _Start:
    """Where a subscription starts: after ``after``, skipping events up to ``skip``."""

    after: int
    token: ResumeToken
    skip: ResumeToken | None


@final
class ChangeStreamObservable(reactivex.Observable[EventT_co]):
    """What ``watch()`` returns: an Observable of change events that can also be iterated.

    Subscribe to it, ``pipe()`` it, or hold it as a ``ChangeStream`` with
    ``iterate()`` / ``aiterate()``. Events are ``ChangeEvent`` values, or
    plain documents (dicts) when the pipeline reshapes them: ``watch()`` is
    typed ``ChangeStreamObservable[ChangeEvent]`` without a pipeline and
    ``ChangeStreamObservable[ChangeEvent | dict[str, Any]]`` with one.
    """

    def __init__(
        self,
        oplog: Oplog,
        *,
        description: str,
        resume: ResumeToken | None,
        start_after: bool,
        start_at: Beginning | datetime | ClusterTime | None,
        changes: Callable[[ResumeToken | None], Callable[[Any], Any]],
        batch_size: int,
        max_await_time: float,
        buffer_size: int,
        overflow: Overflow,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        super().__init__(self._subscribe)
        self.oplog = oplog
        self.description = description
        self._resume = resume
        self._start_after = start_after
        self._start_at = start_at
        self._changes = changes
        self._batch_size = batch_size
        self._max_await_time = max_await_time
        self._buffer_size = buffer_size
        self._overflow: Overflow = overflow
        self._scheduler = scheduler

    def _resolve_start(self) -> _Start:
        """Fix the start position now; raise if it cannot be had."""
        oplog = self.oplog
        token = self._resume
        if token is not None:
            try:
                check_token_history(oplog, token)
            except ChangeStreamHistoryLost as exc:
                raise ChangeStreamHistoryLost(f"{self.description}: {exc}") from None
            after_whole_entry = token.high_water or (self._start_after and token.invalidate)
            if token.fragment and token.op_id < oplog.first_op_id:
                raise ChangeStreamHistoryLost(
                    f"{self.description}: resume token {token} names fragment {token.fragment} of op_id "
                    f"{token.op_id}, but that entry is gone (the oldest retained is {oplog.first_op_id}): "
                    "its later fragments cannot be delivered"
                )
            if after_whole_entry or token.op_id < oplog.first_op_id:
                start = _Start(token.op_id, token, None)
            else:  # re-read the token's entry: its later events (an invalidate) may follow
                start = _Start(token.op_id - 1, token, token)
        else:
            if self._start_at is None:
                after = oplog.last_op_id
            elif isinstance(self._start_at, Beginning):
                after = oplog.first_op_id - 1
            else:
                after = oplog.op_id_at(self._start_at)
            start = _Start(after, high_water_token(oplog, after), None)
        if start.after < oplog.first_op_id - 1:
            raise ChangeStreamHistoryLost(
                f"{self.description}: the stream must start after op_id {start.after}, "
                f"but the oldest retained entry is {oplog.first_op_id}"
            )
        return start

    def _chain(self, start: _Start, *, hop: bool) -> reactivex.Observable[Any]:
        source: reactivex.Observable[Any] = oplog_entries(
            self.oplog, after=start.after, batch_size=self._batch_size, max_await_time=self._max_await_time
        )
        source = self._changes(start.skip)(source)
        if hop and self._scheduler is not None:
            source = cso.buffer(self._buffer_size, self._overflow, scheduler=self._scheduler)(source)
        return source

    def _subscribe(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        start = self._resolve_start()
        self._log_start(start)
        return self._chain(start, hop=True).subscribe(observer, scheduler=scheduler)

    def _log_start(self, start: _Start) -> None:
        if self._resume is not None:
            log.info("change stream resumed", stream=self.description, token=str(start.token))
        else:
            log.info("change stream started", stream=self.description, after_op_id=start.after)

    def iterate(self) -> ChangeStream[EventT_co]:
        """Subscribe now and return a blocking ``ChangeStream`` over the events."""
        return ChangeStream(self)

    def aiterate(self) -> AsyncChangeStream[EventT_co]:
        """Subscribe now and return an ``AsyncChangeStream`` for ``async for``."""
        return AsyncChangeStream(self)


class _Consumer(Generic[EventT_co]):
    """The subscription and buffer behind a ``ChangeStream`` or ``AsyncChangeStream``."""

    def __init__(self, observable: ChangeStreamObservable[EventT_co]) -> None:
        self._observable = observable
        self._max_await_time = observable._max_await_time
        start = observable._resolve_start()
        observable._log_start(start)
        self._resume_token = start.token
        self._buffer: EventBuffer[Any] = EventBuffer(observable._buffer_size, observable._overflow)
        self._lane: Lane | None = None
        self._delivered = 0
        self._entries_delivered = 0
        self._last_op_id = -1
        self._closed = False
        self._ended = False
        self._subscription = observable._chain(start, hop=False).subscribe(
            self._on_event, self._buffer.finish, self._buffer.finish
        )
        error = self._buffer.error
        if error is not None and not len(self._buffer):
            self._release()
            raise error

    def _on_event(self, event: Any) -> None:
        if self._lane is None:
            self._lane = current_lane()
        self._buffer.put(event)

    def _handed(self, event: Any) -> EventT_co:
        token = event.id if isinstance(event, ChangeEvent) else ResumeToken.parse(event["_id"])
        self._resume_token = token
        self._delivered += 1
        if token.op_id != self._last_op_id:
            self._last_op_id = token.op_id
            self._entries_delivered += 1
        handed: EventT_co = event  # the stream's own items: ChangeEvent, or a dict when reshaped
        return handed

    def _at_end(self) -> None:
        """The buffer ended: mark the stream dead and raise its error, if any."""
        self._ended = True
        self._release()
        error = self._buffer.error
        if error is not None:
            raise error

    @property
    def resume_token(self) -> ResumeToken:
        """The token of the last event handed over, or of the start before any."""
        return self._resume_token

    @property
    def alive(self) -> bool:
        """False once closed, or once the stream ended and every event was handed over."""
        return not self._closed and not self._ended

    def statistics(self) -> StreamStatistics:
        """A frozen record of the stream's counters."""
        buffered = self._buffer.statistics()
        lane = self._lane
        seen = lane.entries_seen if lane is not None else 0
        return StreamStatistics(
            delivered=self._delivered,
            filtered_out=max(0, seen - self._entries_delivered - len(self._buffer)),
            dropped=buffered.dropped,
            buffered=buffered.buffered,
            lag=lane.lag if lane is not None else 0,
            high_water=buffered.high_water,
            pauses=buffered.pauses,
        )

    def _release(self) -> None:
        self._subscription.dispose()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._subscription.dispose()
        self._buffer.close()
        log.info(
            "change stream closed", stream=self._observable.description,
            delivered=self._delivered, token=str(self._resume_token),
        )


@final
class ChangeStream(_Consumer[EventT_co]):
    """A blocking iterator over a change stream, shaped like PyMongo's.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> with rxcs.watch(oplog, "shop", "users").iterate() as stream:
        ...     _ = oplog.insert("shop", "users", {"_id": 1})
        ...     event = stream.next(timeout=5)
        ...     print(event.operation_type, event.document_key, stream.resume_token == event.id)
        insert {'_id': 1} True
    """

    def next(self, timeout: float | None = None) -> EventT_co:
        """The next event, waiting up to ``timeout`` seconds (None: for as long as it takes).

        Raises ``TimeoutError`` when the time runs out, ``StopIteration`` when
        the stream ended (after an invalidate) or was closed, and the stream's
        error (``ChangeStreamHistoryLost``, ``BufferOverflowError``...) after
        the events delivered before it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._take(self._max_await_time if deadline is None else deadline - time.monotonic())
            if event is not _NOTHING:
                return event  # type: ignore[no-any-return]  # _take hands over an EventT_co here
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no change event within {timeout} s")

    def try_next(self) -> EventT_co | None:
        """The next event if one comes within ``max_await_time``, else None.

        Raises ``StopIteration`` once the stream is no longer alive.
        """
        event = self._take(self._max_await_time)
        return None if event is _NOTHING else event

    def _take(self, wait: float) -> Any:
        if self._closed or self._ended:
            raise StopIteration
        try:
            event = self._buffer.take_one(max(0.0, wait))
        except StreamClosedError:
            raise StopIteration from None
        if event is not EMPTY:
            return self._handed(event)
        if self._buffer.ended:
            self._at_end()
            raise StopIteration
        return _NOTHING

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> EventT_co:
        return self.next()

    def close(self) -> None:
        """Stop the stream and the threads it started; idempotent."""
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_NOTHING: Any = object()


@final
class AsyncChangeStream(_Consumer[EventT_co]):
    """The asyncio form of ``ChangeStream``: ``async for`` never blocks the event loop.

    Examples:
        >>> import asyncio, rxcs
        >>> async def first_insert(oplog):
        ...     async with rxcs.watch(oplog, "shop").aiterate() as stream:
        ...         _ = oplog.insert("shop", "users", {"_id": 1})
        ...         async for event in stream:
        ...             return event.operation_type
        >>> asyncio.run(first_insert(rxcs.open_oplog(":memory:")))
        <OperationType.INSERT: 'insert'>
    """

    def __init__(self, observable: ChangeStreamObservable[EventT_co]) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._waiting = False
        super().__init__(observable)

    def _wake(self) -> None:
        # Only a consumer parked in wait() needs the loop woken: a wake-up is a write to the loop's
        # self-pipe, and a consumer that is busy finds the events when it next looks.
        loop, ready = self._loop, self._ready
        if self._waiting and loop is not None and ready is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ready.set)

    async def next(self, timeout: float | None = None) -> EventT_co:
        """The next event; see ``ChangeStream.next``. Raises ``StopAsyncIteration`` at the end."""
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no change event within {timeout} s") from None

    async def try_next(self) -> EventT_co | None:
        """The next event if one comes within ``max_await_time``, else None."""
        try:
            return await asyncio.wait_for(self._next(), self._max_await_time)
        except TimeoutError:
            return None

    async def _next(self) -> EventT_co:
        if self._ready is None:
            self._loop = asyncio.get_running_loop()
            self._ready = asyncio.Event()
            self._buffer.on_ready = self._wake
        ready = self._ready
        while True:
            if self._closed or self._ended:
                raise StopAsyncIteration
            ready.clear()
            try:
                event = self._buffer.take_one()
            except StreamClosedError:
                raise StopAsyncIteration from None
            if event is not EMPTY:
                return self._handed(event)
            if self._buffer.ended:
                self._at_end()
                raise StopAsyncIteration
            self._waiting = True
            try:
                # Announce the wait, then look once more: an event put before the announcement is
                # found here, one put after it wakes the wait.
                if not len(self._buffer) and not self._buffer.ended and not self._closed:
                    await ready.wait()
            finally:
                self._waiting = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> EventT_co:
        return await self._next()

    async def close(self) -> None:
        """Stop the stream and the threads it started; idempotent."""
        await asyncio.to_thread(self._close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


@overload
def watch(
    oplog: Oplog,
    db: str | None = None,
    collection: str | None = None,
    pipeline: None = None,
    *,
    resume_after: TokenLike | None = None,
    start_after: TokenLike | None = None,
    start_at_operation_time: Beginning | datetime | ClusterTime | None = None,
    full_document: cso.FullDocument = "default",
    full_document_before_change: cso.FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: cso.Lookup | None = None,
    max_event_bytes: int | None = None,
) -> ChangeStreamObservable[ChangeEvent]: ...


@overload
def watch(
    oplog: Oplog,
    db: str | None = None,
    collection: str | None = None,
    pipeline: Sequence[Mapping[str, Any]] | None = None,
    *,
    resume_after: TokenLike | None = None,
    start_after: TokenLike | None = None,
    start_at_operation_time: Beginning | datetime | ClusterTime | None = None,
    full_document: cso.FullDocument = "default",
    full_document_before_change: cso.FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: cso.Lookup | None = None,
    max_event_bytes: int | None = None,
) -> ChangeStreamObservable[ChangeEvent | dict[str, Any]]: ...


def watch(
    oplog: Oplog,
    db: str | None = None,
    collection: str | None = None,
    pipeline: Sequence[Mapping[str, Any]] | None = None,
    *,
    resume_after: TokenLike | None = None,
    start_after: TokenLike | None = None,
    start_at_operation_time: Beginning | datetime | ClusterTime | None = None,
    full_document: cso.FullDocument = "default",
    full_document_before_change: cso.FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: cso.Lookup | None = None,
    max_event_bytes: int | None = None,
) -> ChangeStreamObservable[Any]:
    """Watch the changes of a collection, a database, or the whole oplog.

    Returns a cold Observable of ``ChangeEvent`` (or reshaped documents when
    ``pipeline`` reshapes); ``iterate()``/``aiterate()`` hold it as a
    PyMongo-shaped change stream. Without resume options a stream starts at
    the present, fixed when it is subscribed. ``resume_after``/``start_after``
    take a token (``ResumeToken``, its string, or an event's ``_id``);
    ``start_at_operation_time`` a ``datetime``, a ``ClusterTime`` or
    ``rxcs.BEGINNING``. Everything is validated here: a bad filter, stage,
    mode or token raises before any subscription.

    Subscribers run on the oplog's shared tailer thread unless ``scheduler``
    is given, in which case events reach them through a buffer of
    ``buffer_size`` with the ``overflow`` policy, a batch per hop.
    ``iterate()``/``aiterate()`` always buffer.

    A pipeline of ``$match`` stages delivers ``ChangeEvent`` values; one with
    a reshaping stage (``$project``, ``$set``, ...) delivers plain dicts,
    which must keep the event's ``_id`` (docs/pipeline.md). Events over
    ``max_event_bytes`` (msgpack-encoded; no cap by default) fail the stream
    with ``EventTooLargeError`` naming the op_id and size; a pipeline ending
    with ``$changeStreamSplitLargeEvent`` instead delivers them in fragments
    (cap 16 MiB unless given), each with its own resume token.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> stream = rxcs.watch(oplog, "shop", "users", [{"$match": {"operationType": "insert"}}])
        >>> with stream.iterate() as events:
        ...     _ = oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        ...     events.next(timeout=5).full_document
        {'_id': 1, 'name': 'Ada'}
    """
    if not isinstance(oplog, Oplog):
        raise TypeError(f"watch() needs an Oplog (rxcs.open_oplog), not {type(oplog).__name__}")
    check_buffer_args(buffer_size, overflow)
    given = [
        name for name, value in (
            ("resume_after", resume_after), ("start_after", start_after),
            ("start_at_operation_time", start_at_operation_time),
        ) if value is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"give at most one of resume_after, start_after, start_at_operation_time, not {given}"
        )
    if start_at_operation_time is not None and not isinstance(
        start_at_operation_time, (Beginning, datetime, ClusterTime)
    ):
        raise TypeError(
            "start_at_operation_time must be a datetime, a ClusterTime or rxcs.BEGINNING, "
            f"not {start_at_operation_time!r}"
        )
    resume = _check_token(oplog, resume_after, start_after)
    cso.scope(db, collection)  # validates the namespace
    cso.check_image_modes(full_document, full_document_before_change, lookup)
    convert = cso.shared_entry_converter(
        oplog.oplog_id, full_document, full_document_before_change, show_expanded_events, lookup
    )
    stages = compile_pipeline(pipeline) if pipeline is not None else None
    if max_event_bytes is not None:
        check_max_event_bytes(max_event_bytes)
    prefilter, covered = (None, 0) if pipeline is None else leading_match_filter(
        pipeline, full_document=full_document, full_document_before_change=full_document_before_change
    )
    sift = None if pipeline is None else leading_match_sift(
        pipeline, full_document=full_document, full_document_before_change=full_document_before_change
    )
    if pipeline is not None and covered == len(pipeline):
        stages = None  # the entry filter is the whole pipeline

    def changes(skip_through: ResumeToken | None) -> Callable[[Any], Any]:
        return cso.changes(
            db, collection, convert, skip_through=skip_through, stages=stages, oplog_id=oplog.oplog_id,
            max_event_bytes=max_event_bytes, prefilter=prefilter, sift=sift,
        )
    # Checks the buffer and timing arguments now rather than at subscribe.
    oplog_entries(oplog, after=0, batch_size=batch_size, max_await_time=max_await_time)
    description = "*" if db is None else db if collection is None else f"{db}.{collection}"
    observable: ChangeStreamObservable[Any] = ChangeStreamObservable(
        oplog,
        description=description,
        resume=resume,
        start_after=start_after is not None,
        start_at=start_at_operation_time,
        changes=changes,
        batch_size=batch_size,
        max_await_time=max_await_time,
        buffer_size=buffer_size,
        overflow=overflow,
        scheduler=scheduler,
    )
    if resume is not None:
        observable._resolve_start()  # history lost, or a token ahead of the oplog: say so now
    return observable


def _check_token(
    oplog: Oplog, resume_after: TokenLike | None, start_after: TokenLike | None
) -> ResumeToken | None:
    raw = resume_after if resume_after is not None else start_after
    if raw is None:
        return None
    token = ResumeToken.parse(raw)
    if token.oplog_id != oplog.oplog_id:
        raise InvalidResumeToken(
            f"resume token {token} comes from oplog {token.oplog_id}, not from this one ({oplog.oplog_id})"
        )
    if resume_after is not None and token.invalidate:
        raise InvalidResumeToken(
            f"resume token {token} is an invalidate event's: a stream cannot resume after it; "
            "use start_after= to start a new stream there"
        )
    return token
