"""The tailing source: start positions, wake-ups, the shared tailer, errors, threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import abc
from reactivex import operators as ops
from reactivex.testing import TestScheduler

import rxcs
from rxcs.oplog.entry import OplogEntry
from rxcs.source import ALL, Lane, open_lane

from .conftest import eventually, stream_threads


class Collector:
    """An observer that records what it gets and signals when it has enough."""

    def __init__(self, want: int = 0) -> None:
        self.items: list[Any] = []
        self.errors: list[Exception] = []
        self.completed = False
        self.want = want
        self.enough = threading.Event()

    def on_next(self, item: Any) -> None:
        self.items.append(item)
        if self.want and len(self.items) >= self.want:
            self.enough.set()

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self.enough.set()

    def on_completed(self) -> None:
        self.completed = True
        self.enough.set()


def insert(oplog: rxcs.Oplog, n: int, coll: str = "users") -> list[int]:
    return [oplog.insert("shop", coll, {"_id": i}) for i in range(n)]


def paced_lane(
    oplog: rxcs.Oplog,
    after: int,
    take: Callable[[Lane, OplogEntry], bool],
    *,
    batch_size: int = 100,
    ended: Callable[[Exception | None], None] = lambda _error: None,
) -> tuple[Lane, abc.DisposableBase]:
    """A lane on the shared tailer whose delivery gives each entry to ``take(lane, entry)``.

    ``take`` returns False to stop there, having paused the lane (a delivery pauses its lane before anyone
    can resume it).
    """
    lane = Lane(oplog, after, ALL, ended)

    def deliver(entries: list[OplogEntry]) -> int:
        for taken, entry in enumerate(entries, 1):
            if not take(lane, entry):
                return taken
        return len(entries)

    lane.deliver = deliver
    return lane, open_lane(lane, batch_size, 1.0, None)


class TestStartPosition:
    def test_default_start_is_the_present_at_subscribe(self, oplog: rxcs.Oplog) -> None:
        """Entries appended before subscribing are not delivered; those after are, in order."""
        insert(oplog, 3)
        source = rxcs.oplog_entries(oplog)
        insert(oplog, 2)  # still before subscribe: the start is fixed at subscribe time
        got = Collector(want=3)
        sub = source.subscribe(got)
        insert(oplog, 3)
        assert got.enough.wait(10)
        sub.dispose()
        assert [e.op_id for e in got.items] == [6, 7, 8]

    def test_after_replays_from_that_op_id(self, oplog: rxcs.Oplog) -> None:
        """after=N delivers every entry with op_id > N, then tails."""
        insert(oplog, 5)
        got = Collector(want=4)
        sub = rxcs.oplog_entries(oplog, after=2).subscribe(got)
        oplog.insert("shop", "users", {"_id": "late"})
        assert got.enough.wait(10)
        sub.dispose()
        assert [e.op_id for e in got.items] == [3, 4, 5, 6]

    def test_beginning_replays_everything_retained(self, memory_oplog: rxcs.Oplog) -> None:
        """start=BEGINNING starts at the oldest retained entry, after a trim too."""
        insert(memory_oplog, 6)
        memory_oplog.trim(before_op_id=4)
        got = Collector(want=3)
        sub = rxcs.oplog_entries(memory_oplog, start=rxcs.BEGINNING).subscribe(got)
        assert got.enough.wait(10)
        sub.dispose()
        assert [e.op_id for e in got.items] == [4, 5, 6]

    def test_trimmed_start_fails_at_subscribe(self, memory_oplog: rxcs.Oplog) -> None:
        """Subscribing after a trimmed op_id raises ChangeStreamHistoryLost at once."""
        insert(memory_oplog, 6)
        memory_oplog.trim(before_op_id=4)
        with pytest.raises(rxcs.ChangeStreamHistoryLost):
            rxcs.oplog_entries(memory_oplog, after=1).subscribe(lambda _: None)

    def test_position_ahead_of_the_oplog_is_refused(self, oplog: rxcs.Oplog) -> None:
        """A start after an op_id the oplog never had is InvalidResumeToken, not a silent wait."""
        insert(oplog, 2)
        with pytest.raises(rxcs.InvalidResumeToken, match="ahead of the oplog"):
            rxcs.oplog_entries(oplog, after=9).subscribe(lambda _: None)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"after": -1}, "after must be"),
            ({"after": 1, "start": rxcs.BEGINNING}, "at most one"),
            ({"batch_size": 0}, "batch_size"),
            ({"max_await_time": 0}, "max_await_time"),
        ],
    )
    def test_bad_arguments_raise_at_once(self, memory_oplog: rxcs.Oplog, kwargs: dict[str, Any], message: str) -> None:
        """Arguments are validated when the source is made, with a message naming them."""
        with pytest.raises(ValueError, match=message):
            rxcs.oplog_entries(memory_oplog, **kwargs)


class TestTailing:
    def test_a_waiting_subscriber_is_woken_by_an_append(self, oplog: rxcs.Oplog) -> None:
        """A tailer waiting with a long max_await_time still delivers an append promptly."""
        got = Collector(want=1)
        sub = rxcs.oplog_entries(oplog, max_await_time=30).subscribe(got)
        oplog.insert("shop", "users", {"_id": 1})
        assert got.enough.wait(5), "the append did not wake the tailer"
        sub.dispose()

    def test_batches_larger_than_batch_size_arrive_whole(self, oplog: rxcs.Oplog) -> None:
        """Entries are read batch_size at a time, and every one arrives once, in order."""
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(1000)])
        got = Collector(want=1000)
        sub = rxcs.oplog_entries(oplog, after=0, batch_size=7).subscribe(got)
        assert got.enough.wait(20)
        sub.dispose()
        assert [e.op_id for e in got.items] == list(range(1, 1001))


class TestSharedTailer:
    def test_many_subscriptions_share_one_thread(self, memory_oplog: rxcs.Oplog) -> None:
        """A thousand idle watchers of one oplog cost one tailer thread, not a thousand."""
        subs = [rxcs.oplog_entries(memory_oplog).subscribe(lambda _: None) for _ in range(1000)]
        try:
            assert len(stream_threads()) == 1
        finally:
            for sub in subs:
                sub.dispose()
        assert not stream_threads()

    def test_every_subscriber_gets_every_entry_once(self, memory_oplog: rxcs.Oplog) -> None:
        """Subscribers at different positions catch up, merge, and each see every entry once."""
        insert(memory_oplog, 50)
        collectors = [Collector(want=100 - start) for start in (0, 10, 50)]
        subs = [
            rxcs.oplog_entries(memory_oplog, after=start).subscribe(c)
            for start, c in zip((0, 10, 50), collectors, strict=True)
        ]
        insert(memory_oplog, 50)
        for collector in collectors:
            assert collector.enough.wait(10)
        for sub in subs:
            sub.dispose()
        for start, collector in zip((0, 10, 50), collectors, strict=True):
            assert [e.op_id for e in collector.items] == list(range(start + 1, 101))

    def test_disposing_one_subscriber_leaves_the_others(self, memory_oplog: rxcs.Oplog) -> None:
        """Disposing a subscription stops it alone; the others keep receiving."""
        first, second = Collector(), Collector(want=2)
        sub1 = rxcs.oplog_entries(memory_oplog).subscribe(first)
        sub2 = rxcs.oplog_entries(memory_oplog).subscribe(second)
        memory_oplog.insert("shop", "users", {"_id": 1})
        assert eventually(lambda: len(first.items) == 1)
        sub1.dispose()
        memory_oplog.insert("shop", "users", {"_id": 2})
        assert second.enough.wait(10)
        sub2.dispose()
        assert [e.op_id for e in first.items] == [1]
        assert [e.op_id for e in second.items] == [1, 2]

    def test_dispose_stops_the_thread(self, oplog: rxcs.Oplog) -> None:
        """Once the last subscription is disposed, no rxcs thread is left."""
        sub = rxcs.oplog_entries(oplog).subscribe(lambda _: None)
        assert stream_threads()
        sub.dispose()
        assert not stream_threads()

    def test_take_ends_the_subscription_from_the_tailer_thread(self, memory_oplog: rxcs.Oplog) -> None:
        """An operator that completes inside on_next (take) disposes cleanly on the tailer thread."""
        insert(memory_oplog, 10)
        got = Collector()
        rxcs.oplog_entries(memory_oplog, after=0).pipe(ops.take(3)).subscribe(got)
        assert got.enough.wait(10)
        assert got.completed
        assert [e.op_id for e in got.items] == [1, 2, 3]
        assert eventually(lambda: not stream_threads())


    def test_a_stream_that_fails_lets_the_thread_go_undisposed(self, oplog: rxcs.Oplog) -> None:
        """An ended subscription is no member of the tailer: the thread stops without a dispose(), and
        closing the oplog afterwards leaves no thread behind (it idled, deaf to the close, before)."""
        errors: list[Exception] = []
        rxcs.watch(oplog, "shop", "users", [{"$project": {"_id": 0}}]).subscribe(lambda _: None, errors.append)
        oplog.insert("shop", "users", {"_id": 1})
        assert eventually(lambda: bool(errors))
        assert isinstance(errors[0], rxcs.PipelineError)
        assert eventually(lambda: not stream_threads())

    def test_an_ended_stream_lets_the_thread_go_and_others_keep_it(self, oplog: rxcs.Oplog) -> None:
        """A stream that completes (its collection dropped) leaves; another stream keeps the thread fed."""
        ended: list[bool] = []
        other = Collector(want=2)
        rxcs.watch(oplog, "shop", "users").subscribe(lambda _: None, on_completed=lambda: ended.append(True))
        sub = rxcs.watch(oplog, "shop", "orders").subscribe(other)
        oplog.drop_collection("shop", "users")
        assert eventually(lambda: ended == [True])
        assert stream_threads(), "the orders stream still needs the tailer"
        oplog.insert("shop", "orders", {"_id": 1})
        oplog.insert("shop", "orders", {"_id": 2})
        assert other.enough.wait(10)
        sub.dispose()
        assert eventually(lambda: not stream_threads())


class TestErrors:
    def test_a_raising_subscriber_gets_on_error(self, memory_oplog: rxcs.Oplog) -> None:
        """An exception in on_next goes to that subscriber's on_error; others carry on."""
        errors: list[Exception] = []

        def explode(_: OplogEntry) -> None:
            raise RuntimeError("boom")

        healthy = Collector(want=2)
        bad = rxcs.oplog_entries(memory_oplog).subscribe(explode, errors.append)
        good = rxcs.oplog_entries(memory_oplog).subscribe(healthy)
        insert(memory_oplog, 2)
        assert healthy.enough.wait(10)
        assert eventually(lambda: bool(errors))
        assert isinstance(errors[0], RuntimeError)
        bad.dispose()
        good.dispose()
        assert [e.op_id for e in healthy.items] == [1, 2]

    def test_entries_read_before_a_pause_survive_a_trim(self, memory_oplog: rxcs.Oplog) -> None:
        """A lane paused mid-batch keeps the entries it had read: a trim meanwhile loses none of them."""
        insert(memory_oplog, 5)
        got: list[int] = []

        def first_pauses(lane: Lane, entry: OplogEntry) -> bool:
            got.append(entry.op_id)
            if entry.op_id == 1:
                lane.pause()
                return False
            return True

        lane, reading = paced_lane(memory_oplog, 0, first_pauses)
        assert eventually(lambda: lane.paused)
        memory_oplog.trim(before_op_id=5)  # 2 to 4 go, but the lane read them already
        memory_oplog.insert("shop", "users", {"_id": "sixth"})
        lane.resume()
        assert eventually(lambda: got == [1, 2, 3, 4, 5, 6])
        reading.dispose()

    def test_trim_under_a_paused_lane_is_history_lost(self, memory_oplog: rxcs.Oplog) -> None:
        """A lane whose next entry is trimmed while it waits, not read yet, fails with ChangeStreamHistoryLost."""
        insert(memory_oplog, 5)
        got: list[int] = []
        errors: list[Exception | None] = []

        def each_pauses(lane: Lane, entry: OplogEntry) -> bool:
            got.append(entry.op_id)
            lane.pause()
            return False

        # One entry a batch: the lane holds nothing beyond what it was fed when it pauses.
        lane, reading = paced_lane(memory_oplog, 0, each_pauses, batch_size=1, ended=errors.append)
        assert eventually(lambda: lane.paused)
        memory_oplog.trim(before_op_id=4)
        lane.resume()
        assert eventually(lambda: bool(errors))
        reading.dispose()
        assert isinstance(errors[0], rxcs.ChangeStreamHistoryLost)
        assert got == [1]

    def test_resume_during_delivery_never_feeds_a_lane_twice(self, memory_oplog: rxcs.Oplog) -> None:
        """A lane paused and resumed (from another thread) while being fed gets each entry once."""
        memory_oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(300)])
        got: list[int] = []

        def flaky_consumer(lane: Lane, entry: OplogEntry) -> bool:
            got.append(entry.op_id)
            if entry.op_id % 7:
                return True
            lane.pause()
            resumer = threading.Thread(target=lane.resume)  # resumed before the tailer hears of the pause
            resumer.start()
            resumer.join()
            return False

        _, reading = paced_lane(memory_oplog, 0, flaky_consumer, batch_size=50)
        assert eventually(lambda: len(got) >= 300)
        memory_oplog.insert("shop", "users", {"_id": "last"})
        assert eventually(lambda: len(got) >= 301)
        reading.dispose()
        assert got == list(range(1, 302))

    def test_closed_oplog_errors_the_stream(self, memory_oplog: rxcs.Oplog) -> None:
        """Closing the oplog under a stream ends it with OplogClosedError, not a hang."""
        got = Collector()
        sub = rxcs.oplog_entries(memory_oplog, max_await_time=0.05).subscribe(got)
        memory_oplog.close()
        assert got.enough.wait(10)
        sub.dispose()
        assert got.errors
        assert isinstance(got.errors[0], rxcs.OplogClosedError)


class TestVirtualTime:
    def test_scheduler_drives_the_source_in_virtual_time(self, memory_oplog: rxcs.Oplog) -> None:
        """With a TestScheduler, reads and idle waits happen in virtual time, with no thread."""
        insert(memory_oplog, 3)
        scheduler = TestScheduler()
        source = rxcs.oplog_entries(memory_oplog, after=0, max_await_time=5.0, scheduler=scheduler)
        got: list[tuple[float, int]] = []
        source.subscribe(lambda e: got.append((scheduler.clock, e.op_id)))
        scheduler.advance_to(1)
        assert [op_id for _, op_id in got] == [1, 2, 3]
        memory_oplog.insert("shop", "users", {"_id": "x"})
        scheduler.advance_to(4)
        assert [op_id for _, op_id in got] == [1, 2, 3]  # still idling until the 5 s wait ends
        scheduler.advance_to(7)
        assert [op_id for _, op_id in got] == [1, 2, 3, 4]
        assert not stream_threads()

    def test_observable_contract(self, memory_oplog: rxcs.Oplog) -> None:
        """The source composes with reactivex operators like any Observable."""
        insert(memory_oplog, 4)
        scheduler = TestScheduler()
        result: list[int] = []
        reactivex.from_iterable([0]).pipe(
            ops.flat_map(lambda _: rxcs.oplog_entries(memory_oplog, after=0, scheduler=scheduler)),
            ops.map(lambda e: e.op_id * 10),
            ops.take(4),
        ).subscribe(result.append, scheduler=scheduler)
        scheduler.advance_to(1)
        assert result == [10, 20, 30, 40]
