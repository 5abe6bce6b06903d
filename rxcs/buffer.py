"""``EventBuffer``: the bounded hand-off where events cross from one thread to another.

The producer side runs on a tailer thread; the consumer side is a drain
thread, a scheduler, a blocking iterator or an asyncio task. What happens
when it is full is the ``overflow`` policy:

- ``"block"`` (default): nothing is lost. When the producer is an oplog lane
  (``rxcs.source.current_lane()``), the lane is paused and resumes reading
  from the durable log once the consumer has drained half the buffer, so the
  shared tailer never waits; any other producer thread blocks until there is
  room.
- ``"drop_oldest"`` / ``"drop_newest"``: drop, count, and log once per burst.
- ``"error"``: the consumer gets what was buffered, then ``BufferOverflowError``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, final, get_args

from rxcs.errors import BufferOverflowError, StreamClosedError
from rxcs.log import log
from rxcs.source import Lane, current_lane

__all__ = ["EMPTY", "OVERFLOW_POLICIES", "BufferStatistics", "Empty", "EventBuffer", "Overflow"]

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
    """Validate a buffer size and overflow policy; raise ``ValueError`` naming the bad one."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"buffer size must be a positive int, not {size!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(
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
        self._paused_lane: Lane | None = None
        self._high_water = 0
        self._dropped = 0
        self._burst = 0
        self._pauses = 0
        self._consumer_waiting = 0
        self._producers_waiting = 0
        self.on_ready: Callable[[], None] | None = None
        self.on_overflow_error: Callable[[], None] | None = None

    # The deque's append and popleft are atomic, so the common cases (room to
    # put, something to take) take no lock; the lock and conditions are only for
    # the edges: a full buffer, an empty one with a waiting consumer, the end.

    # -- producer side ---------------------------------------------------------

    def put(self, item: T) -> None:
        """Add an item, applying the overflow policy when full."""
        items = self._items
        if self._done or self._closed:
            return
        if len(items) >= self._size and not self._make_room():
            return
        items.append(item)
        count = len(items)
        self._high_water = max(self._high_water, count)
        if self._consumer_waiting or (count == 1 and self.on_ready is not None):
            lane = current_lane()
            if lane is None:
                self._signal()
            else:  # a tailer is feeding a batch: wake the consumer once, when the batch is in
                lane.after_feed(self._signal)

    def _signal(self) -> None:
        """Wake the consumer: a thread blocked in ``take``, or the ``on_ready`` callback."""
        if self._consumer_waiting:
            with self._lock:
                self._not_empty.notify()
        if self.on_ready is not None and self._items:
            self.on_ready()

    def _make_room(self) -> bool:
        """Apply the overflow policy to a full buffer; False when the item must not be added."""
        overflow = self._overflow
        if overflow == "block":
            lane = current_lane()
            if lane is not None:
                if not lane.paused:
                    lane.pause()
                    self._paused_lane = lane
                    self._pauses += 1
                    if self._pauses == 1:
                        log.info("stream paused by backpressure", buffer_size=self._size)
                return True  # accepted beyond the bound: the rest of the entry being delivered
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
        if self._paused_lane is not None or self._producers_waiting or self._burst:
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
        """After a take: wake blocked producers, end a drop burst, resume a paused lane."""
        resume: Lane | None = None
        with self._lock:
            remaining = len(self._items)
            if self._producers_waiting:
                self._not_full.notify_all()
            if self._burst and remaining < self._size:
                log.warning("events dropped in burst", dropped=self._burst, policy=self._overflow)
                self._burst = 0
            if self._paused_lane is not None and remaining <= self._low_water:
                resume, self._paused_lane = self._paused_lane, None
        if resume is not None:
            resume.resume()

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
            self._paused_lane = None
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
