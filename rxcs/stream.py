"""``watch()`` and ``ChangeStream``: the change stream as users hold it.

``watch()`` checks everything it is given (options, filters, stages,
tokens) and plans the stream once (``rxcs.plan``), then returns a cold
Observable of change events whose start is fixed when it is subscribed.

- ``subscribe()`` opens one lane on the oplog's shared tailer: its delivery
  runs the plan's steps over the lane's entries of each batch and hands the
  events to the subscriber, on the tailer thread; with ``scheduler=`` it
  hands them to a bounded buffer drained on that scheduler instead, and
  pauses the lane when the buffer is full.
- ``iterate()`` reads on the consumer's own thread, as PyMongo's change
  streams do: ``next()`` reads a batch from the stream's cursor when it has
  nothing left, so nothing is buffered ahead and no thread is handed events.
  (With a drop or error ``overflow`` policy it is fed by the tailer through a
  buffer, since that is what such a policy is about.)
- ``aiterate()`` is fed by the tailer through a bounded buffer that wakes the
  event loop once per batch.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar, final, overload

import reactivex
from reactivex import abc
from reactivex.disposable import CompositeDisposable, Disposable

from rxcs.buffer import EMPTY, Drain, EventBuffer, Overflow
from rxcs.consumers import Checkpointer, CommitPolicy
from rxcs.errors import ConsumerFencedError, InvalidOptionError, OplogClosedError, RxcsError, StreamClosedError
from rxcs.events import ChangeEvent, ClusterTime
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.oplog.entry import OplogEntry
from rxcs.plan import ENDED, YIELDED, Skip, Steps, StreamPlan, TokenLike, WatchOptions
from rxcs.source import Beginning, Lane, SelectionError, Start, high_water_token, open_lane
from rxcs.steps import FullDocument, FullDocumentBeforeChange, Lookup
from rxcs.tokens import ResumeToken

__all__ = ["AsyncChangeStream", "ChangeStream", "ChangeStreamObservable", "StreamStatistics", "watch"]

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


# -- deliveries: a lane's entries into the stream's steps, and on to a sink ------------------------


@final
class _Delivery:
    """A lane's delivery: the stream's steps over the lane's entries, their events to the subscriber or a buffer.

    Straight to the subscriber (``emit``, its ``on_next``), each entry's
    events go out at once and every entry is taken. Into a bounded
    ``buffer``, it takes entries until their events fill it, puts the batch's
    events in at once (the consumer is woken once per batch) and pauses the
    lane before the consumer can see them, so the consumer's resume is never
    lost.
    """

    __slots__ = ("_buffer", "_emit", "_events", "_lane", "_skip", "_steps")

    def __init__(
        self,
        lane: Lane,
        steps: Steps,
        skip: Skip | None,
        *,
        emit: Callable[[Any], None] | None = None,
        buffer: EventBuffer[Any] | None = None,
    ) -> None:
        self._lane = lane
        self._steps = steps  # held here: alike streams share it for as long as one of them lives
        self._skip = skip
        self._buffer = buffer
        self._events: list[Any] | None = None if buffer is None else []
        self._emit = emit if self._events is None else self._events.append

    def __call__(self, entries: list[OplogEntry]) -> int:
        lane, emit, skip, buffer, events = self._lane, self._emit, self._skip, self._buffer, self._events
        # Entries no other lane is fed are converted without being remembered for one (rxcs.plan.Steps).
        step = self._steps.own_step if lane.alone else self._steps.step
        assert emit is not None
        room = _UNBOUNDED if buffer is None else buffer.room()
        if room <= 0 and buffer is not None:
            lane.pause()
            buffer.hold(lane.resume)
            return 0
        taken = 0
        yielded = 0
        ended = False
        try:
            for entry in entries:
                taken += 1
                result = step(entry, emit, skip)
                if result:
                    yielded += result & YIELDED
                    if result & ENDED:
                        ended = True
                        break
                if lane.disposed:  # the subscriber disposed it while being fed
                    break
                if events is not None and len(events) >= room and buffer is not None:
                    lane.pause()  # before the consumer can see the events
                    buffer.hold(lane.resume)
                    break
        finally:  # an entry that fails the stream comes after the events of the entries before it
            lane.yielded += yielded
            if events:
                batch = events.copy()
                events.clear()
                assert buffer is not None
                buffer.put_many(batch)
        if ended:
            lane.end()
        if skip is not None and skip.passed:
            self._skip = None  # passed: the rest go straight through
        return taken


_UNBOUNDED: Final = 1 << 62


@final
class _Finish:
    """How a subscriber hears of the end: ``on_completed``, ``on_error``; an error nobody handles is logged once."""

    __slots__ = ("_description", "_on_completed", "_on_error")

    def __init__(self, description: str, on_error: abc.OnError | None, on_completed: abc.OnCompleted | None) -> None:
        self._description = description
        self._on_error = on_error
        self._on_completed = on_completed

    def __call__(self, error: Exception | None) -> None:
        try:
            if error is None:
                if self._on_completed is not None:
                    self._on_completed()
            elif self._on_error is not None:
                self._on_error(error)
            elif isinstance(error, OplogClosedError):
                log.debug("change stream ended: its oplog closed", stream=self._description)
            else:
                log.error("change stream failed; its subscriber has no on_error", stream=self._description,
                          error=repr(error))
        except Exception as again:  # noqa: BLE001 - the tailer must not die: said once, here
            log.error("subscriber raised at the end of its stream", stream=self._description, error=repr(again))


def _skip(start: Start) -> Skip | None:
    return None if start.skip is None and start.not_before is None else Skip(start.skip, start.not_before)


# -- the Observable ------------------------------------------------------------------------------


@final
class ChangeStreamObservable(reactivex.Observable[EventT_co]):
    """What ``watch()`` returns: an Observable of change events that can also be iterated.

    Subscribe to it, ``pipe()`` it, or hold it as a ``ChangeStream`` with
    ``iterate()`` / ``aiterate()``. Events are ``ChangeEvent`` values, or
    plain documents (dicts) when the pipeline reshapes them: ``watch()`` is
    typed ``ChangeStreamObservable[ChangeEvent]`` without a pipeline and
    ``ChangeStreamObservable[ChangeEvent | dict[str, Any]]`` with one.
    """

    def __init__(self, plan: StreamPlan) -> None:
        super().__init__()
        self.plan = plan
        self.oplog: Oplog = plan.oplog
        self.description = plan.options.description
        self._checkpointers: set[Checkpointer] = set()  # of the live subscriptions of a named consumer
        self._checkpointers_lock = threading.Lock()

    def commit(self) -> list[ResumeToken]:
        """Commit, for each live subscription of this named consumer, the position of the events it handled.

        Returns the committed positions. Raises ``InvalidOptionError`` when
        the stream is not a named consumer (``watch(..., consumer=NAME)``).
        """
        _need_consumer(self.plan)
        with self._checkpointers_lock:
            live = list(self._checkpointers)
        return [checkpointer.commit() for checkpointer in live]

    def subscribe(
        self,
        on_next: abc.ObserverBase[EventT_co] | abc.OnNext[EventT_co] | None = None,
        on_error: abc.OnError | None = None,
        on_completed: abc.OnCompleted | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Start the stream now: events go to ``on_next`` (or an observer), on the tailer thread or the scheduler.

        A start that cannot be had (history lost, a rewritten history under the
        token) goes to ``on_error``, or is raised when there is none. An
        exception raised by ``on_next`` ends the stream with that error.
        """
        if isinstance(on_next, abc.ObserverBase) or callable(getattr(on_next, "on_next", None)):
            observer: Any = on_next
            on_next, on_error, on_completed = observer.on_next, observer.on_error, observer.on_completed
        return self._open(on_next, on_error, on_completed)  # type: ignore[arg-type]

    def _subscribe_core(
        self, observer: abc.ObserverBase[EventT_co], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        return self._open(observer.on_next, observer.on_error, observer.on_completed)

    def _open(
        self,
        on_next: Callable[[Any], None] | None,
        on_error: abc.OnError | None,
        on_completed: abc.OnCompleted | None,
    ) -> abc.DisposableBase:
        plan, options = self.plan, self.plan.options
        if options.group is not None:
            raise InvalidOptionError("a group member is held with iterate(): subscribe() cannot share a group's work")
        try:
            start, checkpointer = plan.begin()
        except RxcsError as exc:
            if on_error is None:
                raise
            on_error(exc)
            return Disposable()
        _log_start(plan, start)
        finish: Callable[[Exception | None], None] = _Finish(self.description, on_error, on_completed)
        stop_committing = _nothing_to_do
        if checkpointer is not None:
            on_next = _committing(on_next or _ignore, checkpointer)
            finish = self._closing(finish, checkpointer)
            with self._checkpointers_lock:
                self._checkpointers.add(checkpointer)
            stop_committing = partial(self._closing(_ignore, checkpointer), None)
        if options.scheduler is None:
            lane = Lane(self.oplog, start.after, plan.reads, finish)
            lane.deliver = _Delivery(lane, plan.steps, _skip(start), emit=on_next or _ignore)
            reading = open_lane(lane, options.batch_size, options.max_await_time, None)
            if checkpointer is None:
                return reading
            return CompositeDisposable(reading, Disposable(stop_committing))
        buffer: EventBuffer[Any] = EventBuffer(options.buffer_size, options.overflow)
        lane = Lane(self.oplog, start.after, plan.reads, buffer.finish)
        lane.deliver = _Delivery(lane, plan.steps, _skip(start), buffer=buffer)
        subscriber = _Subscriber(on_next, finish)
        drain = Drain(buffer, subscriber, options.scheduler, options.buffer_size)
        reading = open_lane(lane, options.batch_size, options.max_await_time, None)
        return CompositeDisposable(reading, Disposable(drain.stop), Disposable(stop_committing))

    def _closing(
        self, finish: Callable[[Exception | None], None], checkpointer: Checkpointer
    ) -> Callable[[Exception | None], None]:
        """``finish``, after the subscription's handled position is committed (once)."""
        done = threading.Event()

        def finished(error: Exception | None) -> None:
            if not done.is_set():
                done.set()
                with self._checkpointers_lock:
                    self._checkpointers.discard(checkpointer)
                try:
                    checkpointer.close()
                except Exception as exc:  # noqa: BLE001 - a commit that fails is the stream's error
                    log.error("named consumer failed to commit at its end", stream=self.description,
                              consumer=checkpointer.name, error=repr(exc))
                    error = error or exc
            finish(error)

        return finished

    def iterate(self) -> ChangeStream[EventT_co]:
        """Start the stream now and return a blocking ``ChangeStream`` over its events."""
        return ChangeStream(self)

    def aiterate(self) -> AsyncChangeStream[EventT_co]:
        """Start the stream now and return an ``AsyncChangeStream`` for ``async for``."""
        return AsyncChangeStream(self)

    def __iter__(self) -> Iterator[EventT_co]:
        """``for event in rxcs.watch(...)``: the events, one at a time, as PyMongo's ``for change in coll.watch()``.

        The stream starts at ``iter()`` (the start of the loop) and is closed
        when the loop ends: at a ``break``, an exception, or the stream's end.
        Hold it with ``iterate()`` for ``next(timeout=)``, ``try_next()`` and
        ``resume_token``. (A reactivex Observable is otherwise not iterable.)

        Examples:
            >>> import rxcs
            >>> oplog = rxcs.open_oplog(":memory:")
            >>> _ = oplog.insert("shop", "users", {"_id": 1})
            >>> for event in rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING):
            ...     print(event.operation_type, event.document_key)
            ...     break
            insert {'_id': 1}
        """
        return _events_of(self.iterate())

    def __aiter__(self) -> AsyncIterator[EventT_co]:
        """``async for event in rxcs.watch(...)``: as ``__iter__``, with ``aiterate()``."""
        return _async_events_of(self.aiterate())


def _events_of(stream: ChangeStream[EventT_co]) -> Iterator[EventT_co]:
    with stream:
        yield from stream


async def _async_events_of(stream: AsyncChangeStream[EventT_co]) -> AsyncIterator[EventT_co]:
    async with stream:
        async for event in stream:
            yield event


def _ignore(_item: Any) -> None:
    pass


def _nothing_to_do() -> None:
    pass


def _committing(on_next: Callable[[Any], None], checkpointer: Checkpointer) -> Callable[[Any], None]:
    """``on_next``, then the event counted as handled by the named consumer."""
    handled = checkpointer.handled

    def on_next_then_commit(event: Any) -> None:
        on_next(event)
        handled(event.id if isinstance(event, ChangeEvent) else ResumeToken.parse(event["_id"]))

    return on_next_then_commit


def _need_consumer(plan: StreamPlan) -> None:
    if plan.consumer is None:
        raise InvalidOptionError("commit() is for a named consumer: watch(..., consumer=NAME)")


@final
class _Subscriber(abc.ObserverBase[Any]):
    """The callbacks of a subscription, as the observer a ``Drain`` delivers to."""

    __slots__ = ("_finish", "_on_next")

    def __init__(self, on_next: Callable[[Any], None] | None, finish: Callable[[Exception | None], None]) -> None:
        self._on_next = on_next or _ignore
        self._finish = finish

    def on_next(self, value: Any) -> None:
        self._on_next(value)

    def on_error(self, error: Exception) -> None:
        self._finish(error)

    def on_completed(self) -> None:
        self._finish(None)


def _log_start(plan: StreamPlan, start: Start) -> None:
    if start.skip is not None or start.token.op_id != start.after or plan.options.resume_after is not None:
        log.info("change stream resumed", stream=plan.options.description, token=str(start.token))
    else:
        log.info("change stream started", stream=plan.options.description, after_op_id=start.after)


# -- holding a stream: ChangeStream and AsyncChangeStream -------------------------------------------


class _Source:
    """Where a held stream's events come from: taken one at a time, then its end."""

    @property
    def ended(self) -> bool:
        """True when no event will come any more (what was read was taken)."""
        raise NotImplementedError

    @property
    def error(self) -> Exception | None:
        """The error the stream ended with, if any."""
        raise NotImplementedError

    def take(self, wait: float) -> Any:
        """The next event within ``wait`` seconds, else ``EMPTY``."""
        raise NotImplementedError

    def counts(self) -> tuple[int, int, int, int, int]:
        """(entries gone past, entries that gave events, buffered, high water, pauses), with drops."""
        raise NotImplementedError

    def dropped(self) -> int:
        return 0

    def lag(self) -> int:
        raise NotImplementedError

    def read_to(self) -> int:
        """The op_id the stream has gone past: every entry up to it was handed over or filtered out."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@final
class _Pulled(_Source):
    """Events read on the consumer's thread, from the stream's own cursor, a batch when it runs out."""

    def __init__(self, plan: StreamPlan, start: Start, keep: Callable[[OplogEntry], bool] | None = None) -> None:
        options = plan.options
        self._oplog = plan.oplog
        self._reads = plan.reads
        self._keep = keep  # a group member's: entries of other members' partitions are passed over unconverted
        self._batch_size = min(options.batch_size, options.buffer_size)  # what is read ahead stays in bounds
        self._pending: collections.deque[Any] = collections.deque()
        self._steps = plan.steps
        self._skip = _skip(start)
        self._cursor = plan.oplog.cursor(start.after)
        self._first = start.after
        self._read_to = start.after
        self._yielded = 0
        self._high_water = 0
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False
        self._ended = False
        self._error: Exception | None = None

    @property
    def ended(self) -> bool:
        return self._ended and not self._pending

    @property
    def error(self) -> Exception | None:
        return self._error

    def take(self, wait: float) -> Any:
        pending = self._pending
        if not pending and not self._ended and not self._closed:
            self._fill(wait)
        if pending:
            return pending.popleft()
        if self._closed:
            raise StreamClosedError("the change stream is closed")
        return EMPTY

    def _fill(self, wait: float) -> None:
        """Read until events are pending, the stream ends, or ``wait`` seconds pass without one."""
        with self._lock:
            if self._closed:
                return
            self._reading = True
        deadline = time.monotonic() + wait
        # Its own cursor's entries are fed to no other stream: its own converter, remembering nothing.
        cursor, oplog, reads, step, pending = (
            self._cursor, self._oplog, self._reads, self._steps.own_step, self._pending
        )
        emit, skip, keep = pending.append, self._skip, self._keep
        try:
            while not pending and not self._ended and not self._closed:
                position = cursor.position
                sift = reads.sift_now()
                entries = cursor.read(reads.read_size(self._batch_size, sift is not None), sift)
                if cursor.position == position:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    oplog.wait(position, remaining)
                    continue
                reads.read_past(cursor.position - position, len(entries), sift is not None)
                try:
                    mine = reads.of(entries) if entries else entries
                except SelectionError as failed:  # the events before the entry that failed, then the error
                    mine, self._error = failed.kept, failed.error
                yielded = 0
                try:
                    for entry in mine:
                        if keep is not None and not keep(entry):
                            continue
                        result = step(entry, emit, skip)
                        if result:
                            yielded += result & YIELDED
                            if result & ENDED:
                                self._ended = True
                                self._read_to = entry.op_id
                                break
                    else:
                        if mine:
                            self._read_to = mine[-1].op_id
                except Exception:
                    self._read_to = entry.op_id - 1  # the events of the entries before the one that failed
                    raise
                finally:
                    self._yielded += yielded
                self._high_water = max(self._high_water, len(pending))
                if self._error is not None:
                    self._ended = True
                elif not self._ended:
                    self._read_to = cursor.position  # the entries it left out lie behind it too
        except Exception as exc:  # noqa: BLE001 - the consumer gets it after the events before it
            self._error = exc
            self._ended = True
        finally:
            self._done_reading()

    def _done_reading(self) -> None:
        with self._lock:
            self._reading = False
            if self._closed:  # closed by another thread meanwhile
                self._cursor.close()

    def counts(self) -> tuple[int, int, int, int, int]:
        return self._cursor.position - self._first, self._yielded, len(self._pending), self._high_water, 0

    def lag(self) -> int:
        return max(0, self._oplog.last_op_id - self._cursor.position)

    def read_to(self) -> int:
        return self._read_to if not self._pending else -1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
            if not self._reading:
                self._cursor.close()
                return
        self._oplog.wake_waiters()  # a read waiting on another thread returns, and closes the cursor


@final
class _Pushed(_Source):
    """Events fed by the oplog's tailer into a bounded buffer, with the stream's overflow policy."""

    def __init__(self, plan: StreamPlan, start: Start) -> None:
        options = plan.options
        self._buffer: EventBuffer[Any] = EventBuffer(options.buffer_size, options.overflow)
        self._lane = Lane(plan.oplog, start.after, plan.reads, self._buffer.finish)
        self._lane.deliver = _Delivery(self._lane, plan.steps, _skip(start), buffer=self._buffer)
        self._reading = open_lane(self._lane, options.batch_size, options.max_await_time, None)
        error = self._buffer.error
        if error is not None and not len(self._buffer):
            self._reading.dispose()
            raise error

    @property
    def buffer(self) -> EventBuffer[Any]:
        return self._buffer

    @property
    def ended(self) -> bool:
        return self._buffer.ended

    @property
    def error(self) -> Exception | None:
        return self._buffer.error

    def take(self, wait: float) -> Any:
        return self._buffer.take_one(max(0.0, wait))

    def counts(self) -> tuple[int, int, int, int, int]:
        stats = self._buffer.statistics()
        return self._lane.entries_seen, self._lane.yielded, stats.buffered, stats.high_water, stats.pauses

    def dropped(self) -> int:
        return self._buffer.statistics().dropped

    def lag(self) -> int:
        return self._lane.lag

    def read_to(self) -> int:
        return self._lane.position if not len(self._buffer) else -1

    def close(self) -> None:
        self._reading.dispose()
        self._buffer.close()

    def release(self) -> None:
        """Stop reading (the stream ended): what is buffered is still taken."""
        self._reading.dispose()


class _Held(Generic[EventT_co]):
    """What ``ChangeStream`` and ``AsyncChangeStream`` share: the start, the token, the counters, the end."""

    def __init__(self, observable: ChangeStreamObservable[EventT_co], *, pulled: bool) -> None:
        plan = observable.plan
        self._description = observable.description
        self._max_await_time = plan.options.max_await_time
        self._group = plan.group_member()
        if self._group is not None:
            if not pulled:
                raise InvalidOptionError("a group member is held with iterate(), not aiterate()")
            start, self._checkpointer = self._group.join(plan.start()), None
        else:
            start, self._checkpointer = plan.begin()
        _log_start(plan, start)
        self._plan = plan
        self._oplog = plan.oplog
        self._resume_token = start.token
        keep = self._group.keeps if self._group is not None else None
        self._source: _Source = _Pulled(plan, start, keep) if pulled else _Pushed(plan, start)
        self._delivered = 0
        self._closed = False
        self._finished = False

    def _handed(self, event: Any) -> EventT_co:
        if self._checkpointer is not None and self._delivered:
            self._checkpointer.handled(self._resume_token)  # asked for the next one: the last one was handled
        self._resume_token = event.id if isinstance(event, ChangeEvent) else ResumeToken.parse(event["_id"])
        self._delivered += 1
        handed: EventT_co = event  # the stream's own items: ChangeEvent, or a dict when reshaped
        return handed

    def _caught_up(self) -> None:
        """Nothing to hand over: the token moves past what the stream read and filtered out (the post-batch token).

        It becomes the high-water token of the last entry the stream went
        past, when that lies beyond the last event handed over, so resuming
        never reads those entries again and a stream whose filter hid its own
        invalidate can ``start_after`` it.
        """
        read_to = self._source.read_to()
        token = self._resume_token
        if read_to > token.op_id or (read_to == token.op_id and not (token.high_water or token.invalidate)):
            self._resume_token = high_water_token(self._oplog, read_to)
        if self._checkpointer is not None and not self._closed:
            self._checkpointer.moved(self._resume_token)  # everything handed over was handled
        elif self._group is not None and not self._closed:
            self._group.handled(self._resume_token, event=False)

    def _rebalance(self) -> None:
        """Sync the group member (it asked for more: what was handed over was handled); restart where it must."""
        group = self._group
        assert group is not None
        start = group.rebalance()
        if start is not None:
            self._source.close()
            self._source = _Pulled(self._plan, start, group.keeps)
            self._resume_token = start.token

    def _at_end(self) -> None:
        """The stream ended: mark it dead and raise its error, if any."""
        self._caught_up()
        self._finished = True
        if isinstance(self._source, _Pushed):
            self._source.release()
        else:
            self._source.close()
        error = self._source.error
        if error is not None:
            raise error

    @property
    def resume_token(self) -> ResumeToken:
        """Where a new stream would resume: the token of the last event handed over, or of the start.

        Right after an event is handed over, it is that event's token. When
        the stream then looks for more and finds nothing to hand over (a
        ``try_next()`` that returns None, each wait of ``next()``, the end of
        the stream), it moves past the entries the stream read and filtered
        out, as MongoDB's post-batch resume token does.
        """
        return self._resume_token

    @property
    def alive(self) -> bool:
        """False once closed, or once the stream ended and every event was handed over (as PyMongo's)."""
        return not self._closed and not self._finished and not self._source.ended

    def statistics(self) -> StreamStatistics:
        """A frozen record of the stream's counters, right from the start."""
        source = self._source
        seen, yielded, buffered, high_water, pauses = source.counts()
        return StreamStatistics(
            delivered=self._delivered,
            filtered_out=max(0, seen - yielded),
            dropped=source.dropped(),
            buffered=buffered,
            lag=source.lag(),
            high_water=high_water,
            pauses=pauses,
        )

    def _commit(self) -> ResumeToken:
        group = self._group
        if group is not None:
            group.handled(self._resume_token, event=False)
            fenced = group.commit()
            if fenced:
                raise ConsumerFencedError(
                    f"group {group.group!r}: member {group.member!r} no longer owns partitions {sorted(fenced)} "
                    "(its lease ran out, or they moved): their changes since the last commit go to their new owner",
                    fenced,
                )
            return group.handled_to or self._resume_token
        _need_consumer(self._plan)
        assert self._checkpointer is not None
        return self._checkpointer.commit(self._resume_token)

    def _close(self, *, last_handled: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._source.close()
        if self._checkpointer is not None:
            self._checkpointer.close(handled=self._resume_token if last_handled else None)
        if self._group is not None:
            if last_handled:
                self._group.handled(self._resume_token, event=False)
            self._group.leave()
        log.info("change stream closed", stream=self._description, delivered=self._delivered,
                 token=str(self._resume_token))


@final
class ChangeStream(_Held[EventT_co]):
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

    def __init__(self, observable: ChangeStreamObservable[EventT_co]) -> None:
        super().__init__(observable, pulled=observable.plan.options.overflow == "block")

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
        """The next event if one comes within ``max_await_time``, else None (also once the stream is not alive).

        As in PyMongo, ``while stream.alive: event = stream.try_next()`` ends
        after the stream's last event; an error the stream ended with is
        raised after the events before it.
        """
        try:
            event = self._take(self._max_await_time)
        except StopIteration:
            return None
        return None if event is _NOTHING else event

    def _take(self, wait: float) -> Any:
        if self._closed or self._finished:
            raise StopIteration
        group = self._group
        if group is not None:
            # Asked for the next one: the last one was handled. A commit here may lose partitions, so it comes
            # before the next event is judged the member's, never between.
            if self._delivered:
                group.handled(self._resume_token)
            if group.changed or group.due():
                self._rebalance()
        try:
            event = self._source.take(max(0.0, wait))
            while event is not EMPTY and group is not None and not group.mine(event):
                event = self._source.take(0.0)  # another member's, or handled before: passed over
        except StreamClosedError:
            raise StopIteration from None
        if event is not EMPTY:
            return self._handed(event)
        if self._source.ended:
            self._at_end()
            raise StopIteration
        self._caught_up()
        return _NOTHING

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> EventT_co:
        return self.next()

    def commit(self) -> ResumeToken:
        """Commit this named consumer's (or group member's) position now: every event handed over counts as handled.

        Returns the committed position. Raises ``InvalidOptionError`` when the
        stream is neither (``watch(..., consumer=NAME)``), and for a group
        member that lost partitions meanwhile, ``ConsumerFencedError``.
        """
        return self._commit()

    def close(self) -> None:
        """Stop the stream and release what it holds; idempotent.

        A named consumer commits the events it advanced past (not the last
        one handed over, which may not have been handled), unless its policy
        is manual.
        """
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(last_handled=exc_type is None)  # left without an error: the last event was handled too


_NOTHING: Any = object()


@final
class AsyncChangeStream(_Held[EventT_co]):
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
        super().__init__(observable, pulled=False)
        if self._checkpointer is not None:
            self._checkpointer.write_off_thread()  # never a file write or a Redis round trip on the event loop
        assert isinstance(self._source, _Pushed)
        self._buffer = self._source.buffer

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
        """The next event if one comes within ``max_await_time``, else None (also once the stream is not alive)."""
        try:
            return await asyncio.wait_for(self._next(), self._max_await_time)
        except (TimeoutError, StopAsyncIteration):
            self._caught_up()
            return None

    async def _next(self) -> EventT_co:
        if self._ready is None:
            self._loop = asyncio.get_running_loop()
            self._ready = asyncio.Event()
            self._buffer.on_ready = self._wake
        ready = self._ready
        while True:
            if self._closed or self._finished:
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
            self._caught_up()  # nothing to hand over: the token moves past what was filtered out
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

    async def commit(self) -> ResumeToken:
        """Commit this named consumer's position now; see ``ChangeStream.commit``."""
        return await asyncio.to_thread(self._commit)

    async def close(self) -> None:
        """Stop the stream and the threads it started; idempotent. See ``ChangeStream.close`` for commits."""
        await asyncio.to_thread(self._close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(partial(self._close, last_handled=exc_type is None))


# -- watch() -----------------------------------------------------------------------------------


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
    full_document: FullDocument = "default",
    full_document_before_change: FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: Lookup | None = None,
    max_event_bytes: int | None = None,
    consumer: str | None = None,
    commit: CommitPolicy | None = None,
    reset_consumer: bool = False,
    group: str | None = None,
    member: str | None = None,
    lease_ttl: float | None = None,
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
    full_document: FullDocument = "default",
    full_document_before_change: FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: Lookup | None = None,
    max_event_bytes: int | None = None,
    consumer: str | None = None,
    commit: CommitPolicy | None = None,
    reset_consumer: bool = False,
    group: str | None = None,
    member: str | None = None,
    lease_ttl: float | None = None,
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
    full_document: FullDocument = "default",
    full_document_before_change: FullDocumentBeforeChange = "off",
    show_expanded_events: bool = False,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    buffer_size: int = 1000,
    overflow: Overflow = "block",
    scheduler: abc.SchedulerBase | None = None,
    lookup: Lookup | None = None,
    max_event_bytes: int | None = None,
    consumer: str | None = None,
    commit: CommitPolicy | None = None,
    reset_consumer: bool = False,
    group: str | None = None,
    member: str | None = None,
    lease_ttl: float | None = None,
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

    ``consumer=NAME`` makes it a named consumer: it starts from the
    checkpoint the oplog keeps for NAME (its other start options apply only
    when there is none) and commits the position of the events it handled,
    by ``commit``: ``"each"`` event, ``"manual"`` (``stream.commit()``), or
    ``rxcs.CommitEvery(events=, seconds=)`` (default: 1,000 events or 1 s).
    The checkpoint records the stream's scope and pipeline: another stream
    under that name is a ``ConsumerMismatchError`` unless
    ``reset_consumer=True`` starts it over. ``group=NAME, member=ID`` makes
    it a member of a consumer group, held with ``iterate()``: members share
    the stream's changes, all changes to one document going to one member in
    order; ``lease_ttl`` (seconds, default 10) is how long a member that
    stops asking for events keeps its share. See docs/consumers.md.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> stream = rxcs.watch(oplog, "shop", "users", [{"$match": {"operationType": "insert"}}])
        >>> with stream.iterate() as events:
        ...     _ = oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        ...     events.next(timeout=5).full_document
        {'_id': 1, 'name': 'Ada'}
    """
    options = WatchOptions(
        db, collection, pipeline, resume_after, start_after, start_at_operation_time,  # type: ignore[arg-type]
        full_document, full_document_before_change, show_expanded_events, batch_size, max_await_time,
        buffer_size, overflow, scheduler, lookup, max_event_bytes, consumer, commit, reset_consumer,
        group, member, lease_ttl,
    )
    return watch_with(oplog, options)


def watch_with(oplog: Oplog, options: WatchOptions) -> ChangeStreamObservable[Any]:
    """``watch()`` with its options already made (``rxcs watch`` and ``rxcs serve`` check theirs first).

    A resume token is checked against the oplog here, so a lost or rewritten
    history raises now rather than at subscribe.
    """
    if not isinstance(oplog, Oplog):
        raise TypeError(f"watch() needs an Oplog (rxcs.open_oplog), not {type(oplog).__name__}")
    plan = StreamPlan(oplog, options)
    if options.consumer is not None:
        plan.check_consumer()  # another scope or pipeline, another oplog's checkpoint, a lost history: say so now
    elif options.resume_after is not None or options.start_after is not None:
        plan.start()  # history lost, or rewritten under the token: say so now
    return ChangeStreamObservable(plan)
