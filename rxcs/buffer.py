"""``EventBuffer``: the bounded hand-off where events cross from one thread to another.

The producer side runs on a tailer thread; the consumer side is a drain
thread, a scheduler, a blocking iterator or an asyncio task. What happens
when it is full is the ``overflow`` policy:

- ``"block"`` (default): nothing is lost. A stream's delivery asks for the
  ``room()`` left and puts no more than that (``put_many``); when it fills
  the buffer it pauses its lane and ``hold``s the lane's ``resume``, which the
  buffer calls once the consumer has drained half of it, so the shared tailer
  never waits. Any other producer (``put``) blocks until there is room, unless
  the buffer is drained on a scheduler that runs on its producer's own
  thread (virtual time, a trampoline): blocking there could never end, so
  the buffer takes the producer's batch beyond its bound and the scheduler
  drains it before the producer's next action.
- ``"drop_oldest"`` / ``"drop_newest"``: drop, count, and log once per burst.
- ``"error"``: the consumer gets what was buffered, then ``BufferOverflowError``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar, final, get_args

from reactivex import abc
from reactivex.scheduler import CurrentThreadScheduler, ImmediateScheduler, TrampolineScheduler, VirtualTimeScheduler

from rxcs.errors import BufferOverflowError, InvalidOptionError, StreamClosedError
from rxcs.log import log

__all__ = ["EMPTY", "OVERFLOW_POLICIES", "BufferStatistics", "Drain", "Empty", "EventBuffer", "Overflow"]

T = TypeVar("T")
Overflow = Literal["block", "drop_oldest", "drop_newest", "error"]
OVERFLOW_POLICIES: Final = frozenset(get_args(Overflow))



@final
class Empty:
    """The type of ``EMPTY``: what ``take_one`` returns when there is nothing."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Final = Empty()


@final
@dataclass(frozen=True, slots=True)
class BufferStatistics:
    """A buffer's state at one moment."""

    size: int
    overflow: str
    buffered: int
    high_water: int
    dropped: int
    pauses: int


def check_buffer_args(size: object, overflow: object) -> None:
    """Validate a buffer size and overflow policy; raise ``InvalidOptionError`` naming the bad one."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidOptionError(f"buffer size must be a positive int, not {size!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise InvalidOptionError(
            f"overflow must be one of {', '.join(sorted(OVERFLOW_POLICIES))}, not {overflow!r}"
        )


@final
class EventBuffer(Generic[T]):
    """A bounded, thread-safe FIFO of events with an end (completion or error)."""

    def __init__(self, size: int, overflow: Overflow = "block") -> None:
        check_buffer_args(size, overflow)
        self._size = size
        self._low_water = size // 2
        self._overflow = overflow
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._done = False
        self._error: Exception | None = None
        self._closed = False
        self._resume: Callable[[], None] | None = None  # a paused producer's, called once there is room
        self._high_water = 0
        self._dropped = 0
        self._burst = 0
        self._pauses = 0
        self._consumer_waiting = 0
        self._producers_waiting = 0
        self.on_ready: Callable[[], None] | None = None
        self.on_overflow_error: Callable[[], None] | None = None
        self.producers_may_wait = True  # False when its consumer runs on the producer's own thread

    # The deque's append and popleft are atomic, so the common cases (room to
    # put, something to take) take no lock; the lock and conditions are only for
    # the edges: a full buffer, an empty one with a waiting consumer, the end.

    # -- producer side ---------------------------------------------------------

    def put(self, item: T) -> None:
        """Add an item, applying the overflow policy when full (``"block"``: wait for room)."""
        items = self._items
        if self._done or self._closed:
            return
        if len(items) >= self._size and not self._make_room(block=True):
            return
        items.append(item)
        count = len(items)
        self._high_water = max(self._high_water, count)
        if self._consumer_waiting or (count == 1 and self.on_ready is not None):
            self._signal()

    def room(self) -> int:
        """How many items ``put_many`` can take before the buffer is full; unbounded unless ``"block"``."""
        if self._overflow != "block":
            return 1 << 62
        return max(0, self._size - len(self._items))

    def hold(self, resume: Callable[[], None]) -> None:
        """A producer that filled the buffer and paused: call ``resume()`` once the consumer made room.

        Call it before putting what filled the buffer, so the consumer cannot
        drain it before the producer is registered.
        """
        with self._lock:
            self._resume = resume
            self._pauses += 1
        if self._pauses == 1:
            log.info("stream paused by backpressure", buffer_size=self._size)

    def put_many(self, batch: list[T]) -> None:
        """Add a batch (a stream's events of a batch of entries), applying the overflow policy; wake the consumer once.

        Under ``"block"`` the items are taken beyond the bound: the producer
        asked for the ``room()`` first and pauses when it fills the buffer.
        """
        if self._done or self._closed or not batch:
            return
        items = self._items
        if self._overflow == "block":
            items.extend(batch)
        else:
            for item in batch:
                if len(items) >= self._size and not self._make_room(block=False):
                    if self._error is not None:  # overflow="error": the buffer ended
                        break
                    continue
                items.append(item)
        count = len(items)
        self._high_water = max(self._high_water, count)
        if count and (self._consumer_waiting or self.on_ready is not None):
            self._signal()

    def _signal(self) -> None:
        """Wake the consumer: a thread blocked in ``take``, or the ``on_ready`` callback."""
        if self._consumer_waiting:
            with self._lock:
                self._not_empty.notify()
        if self.on_ready is not None and self._items:
            self.on_ready()

    def _make_room(self, *, block: bool) -> bool:
        """Apply the overflow policy to a full buffer; False when the item must not be added."""
        overflow = self._overflow
        if overflow == "block":
            if not block or not self.producers_may_wait:
                return True
            with self._lock:
                self._producers_waiting += 1
                try:
                    while len(self._items) >= self._size and not self._closed:
                        self._not_full.wait()
                finally:
                    self._producers_waiting -= 1
                return not self._closed
        if overflow == "drop_newest":
            self._count_drop()
            return False
        if overflow == "drop_oldest":
            with contextlib.suppress(IndexError):  # the consumer may have taken it meanwhile
                self._items.popleft()
            self._count_drop()
            return True
        with self._lock:
            self._done = True
            self._error = BufferOverflowError(
                f"the buffer of {self._size} events overflowed (overflow='error')"
            )
            self._not_empty.notify_all()
        log.error("buffer overflowed", buffer_size=self._size)
        if self.on_overflow_error is not None:
            self.on_overflow_error()
        if self.on_ready is not None:
            self.on_ready()
        return False

    def _count_drop(self) -> None:
        self._dropped += 1
        self._burst += 1
        if self._burst == 1:
            log.warning("buffer full, dropping events", policy=self._overflow, buffer_size=self._size)

    def finish(self, error: Exception | None = None) -> None:
        """End the buffer: the consumer gets the items left, then the end."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._error = error
            self._not_empty.notify_all()
        if self.on_ready is not None:
            self.on_ready()

    # -- consumer side -----------------------------------------------------------

    def take(self, max_items: int, timeout: float | None = 0.0) -> list[T]:
        """Remove up to ``max_items``, waiting up to ``timeout`` (None: forever) for one.

        Returns an empty list on timeout or at the end (see ``ended``). Raises
        ``StreamClosedError`` once closed.
        """
        items = self._items
        if not items and timeout != 0.0:
            self._wait_for_items(timeout)
        if self._closed:
            raise StreamClosedError("the change stream is closed")
        batch: list[T] = []
        with contextlib.suppress(IndexError):
            batch.extend(items.popleft() for _ in range(max_items))
        if batch:
            self._taken()
        return batch

    def take_one(self, timeout: float | None = 0.0) -> T | Empty:
        """Remove one item, waiting up to ``timeout`` (None: forever); ``EMPTY`` when none."""
        try:
            item = self._items.popleft()
        except IndexError:
            if timeout == 0.0:
                if self._closed:
                    raise StreamClosedError("the change stream is closed") from None
                return EMPTY
            self._wait_for_items(timeout)
            if self._closed:
                raise StreamClosedError("the change stream is closed") from None
            try:
                item = self._items.popleft()
            except IndexError:
                return EMPTY
        if self._closed:
            raise StreamClosedError("the change stream is closed")
        if self._resume is not None or self._producers_waiting or self._burst:
            self._taken()
        return item

    def _wait_for_items(self, timeout: float | None) -> None:
        items = self._items
        with self._lock:
            self._consumer_waiting += 1
            try:
                self._not_empty.wait_for(lambda: items or self._done or self._closed, timeout)
            finally:
                self._consumer_waiting -= 1

    def _taken(self) -> None:
        """After a take: wake blocked producers, end a drop burst, resume a paused producer."""
        resume: Callable[[], None] | None = None
        with self._lock:
            remaining = len(self._items)
            if self._producers_waiting:
                self._not_full.notify_all()
            if self._burst and remaining < self._size:
                log.warning("events dropped in burst", dropped=self._burst, policy=self._overflow)
                self._burst = 0
            if self._resume is not None and remaining <= self._low_water:
                resume, self._resume = self._resume, None
        if resume is not None:
            resume()

    @property
    def ended(self) -> bool:
        """True when the producer finished and every item was taken."""
        return self._done and not self._items

    @property
    def error(self) -> Exception | None:
        """The error the producer finished with, if any."""
        return self._error

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Discard what is buffered and wake every waiter; idempotent."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._resume = None
            self._not_empty.notify_all()
            self._not_full.notify_all()
        if self.on_ready is not None:
            self.on_ready()

    def statistics(self) -> BufferStatistics:
        """A frozen record of the buffer's state."""
        with self._lock:
            return BufferStatistics(
                self._size, self._overflow, len(self._items), self._high_water, self._dropped, self._pauses
            )


# Schedulers that run actions on the thread that schedules them: a producer there must not wait for its drain.
_ON_THE_CALLERS_THREAD: Final = (VirtualTimeScheduler, CurrentThreadScheduler, ImmediateScheduler, TrampolineScheduler)


@final
class Drain:
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
            events.producers_may_wait = not isinstance(scheduler, _ON_THE_CALLERS_THREAD)

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
