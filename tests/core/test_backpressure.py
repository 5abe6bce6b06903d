"""Backpressure: a slow consumer loses nothing under "block"; the other policies do what they say."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from reactivex.testing import TestScheduler

import rxcs
from rxcs import operators as cso
from rxcs.buffer import EventBuffer

from .conftest import eventually, take_slowly


def write_in_background(oplog: rxcs.Oplog, total: int, batch: int = 500) -> threading.Thread:
    def produce() -> None:
        for start in range(0, total, batch):
            oplog.append_many(
                [rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, min(total, start + batch))]
            )

    writer = threading.Thread(target=produce)
    writer.start()
    return writer


class TestBlock:
    def test_slow_consumer_gets_all_100k_with_bounded_memory(self, oplog: rxcs.Oplog) -> None:
        """100,000 entries reach a consumer that sleeps now and then; what is read ahead never exceeds the buffer.

        iterate() reads on the consumer's thread: it never reads more than its buffer ahead, and never pauses.
        """
        total, size = 100_000, 64
        with rxcs.watch(oplog, buffer_size=size, batch_size=500).iterate() as stream:
            writer = write_in_background(oplog, total)
            seen = 0
            for event in stream:
                assert event.document_key["_id"] == seen
                seen += 1
                if seen % 2000 == 0:
                    time.sleep(0.002)  # slower than the producer
                if seen == total:
                    break
            writer.join()
            stats = stream.statistics()
        assert seen == total
        assert (stats.dropped, stats.pauses) == (0, 0)
        assert stats.high_water <= size

    def test_slow_consumer_fed_by_the_tailer_pauses_its_stream(self, oplog: rxcs.Oplog) -> None:
        """100,000 entries reach a slow consumer fed by the tailer (aiterate): the stream pauses when its buffer
        is full, and the buffer never holds more than its size and the events of the entry that filled it."""
        total, size = 100_000, 64
        writer = write_in_background(oplog, total)
        stream = rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING, buffer_size=size, batch_size=50)
        got, stats = take_slowly(stream, total, every=2000)
        writer.join()
        assert [event.document_key["_id"] for event in got] == list(range(total))
        assert stats.dropped == 0
        assert stats.pauses > 0, "the producer outran the consumer, so the stream must have paused"
        assert stats.high_water <= size + 1

    def test_paused_stream_does_not_hold_up_other_streams(self, memory_oplog: rxcs.Oplog) -> None:
        """A stream whose consumer stopped reading is paused; another stream on the oplog keeps up."""
        stalled = rxcs.watch(memory_oplog, buffer_size=10).iterate()
        lively = rxcs.watch(memory_oplog, buffer_size=10).iterate()
        with stalled, lively:
            writer = write_in_background(memory_oplog, 1000, batch=10)
            got = [lively.next(timeout=10).document_key["_id"] for _ in range(1000)]
            writer.join()
            assert got == list(range(1000))
            assert stalled.statistics().buffered <= 11
            # The stalled one still gets everything, later.
            assert [stalled.next(timeout=10).document_key["_id"] for _ in range(1000)] == list(range(1000))

    def test_blocking_put_without_a_lane_waits_for_room(self) -> None:
        """A producer thread that is not an oplog lane blocks on a full buffer until the consumer takes."""
        events: EventBuffer[int] = EventBuffer(2, "block")
        events.put(1)
        events.put(2)
        done = threading.Event()
        producer = threading.Thread(target=lambda: (events.put(3), done.set()))
        producer.start()
        assert not done.wait(0.1)
        assert events.take(1) == [1]
        assert done.wait(5)
        producer.join()
        assert events.take(10) == [2, 3]


class TestDropAndError:
    @pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [3, 4]), ("drop_newest", [1, 2])])
    def test_drop_policies_count_what_they_drop(self, policy: Any, kept: list[int]) -> None:
        """drop_oldest keeps the newest, drop_newest keeps the oldest; both count the drops."""
        events: EventBuffer[int] = EventBuffer(2, policy)
        for i in (1, 2, 3, 4):
            events.put(i)
        assert events.take(10) == kept
        assert events.statistics().dropped == 2

    def test_error_policy_delivers_buffered_then_fails(self, memory_oplog: rxcs.Oplog) -> None:
        """overflow="error": the consumer gets what was buffered, then BufferOverflowError."""
        with rxcs.watch(memory_oplog, buffer_size=5, overflow="error").iterate() as stream:
            memory_oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(20)])
            assert eventually(lambda: stream.statistics().buffered == 5)
            got = [stream.next(timeout=10).document_key["_id"] for _ in range(5)]
            with pytest.raises(rxcs.BufferOverflowError):
                stream.next(timeout=10)
        assert got == [0, 1, 2, 3, 4]

    def test_drop_newest_through_watch(self, memory_oplog: rxcs.Oplog) -> None:
        """A stream with drop_newest keeps the first events and reports the rest dropped."""
        with rxcs.watch(memory_oplog, buffer_size=5, overflow="drop_newest").iterate() as stream:
            memory_oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(20)])
            assert eventually(lambda: stream.statistics().dropped == 15)
            assert [stream.next(timeout=10).document_key["_id"] for _ in range(5)] == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize(("size", "overflow"), [(0, "block"), (True, "block"), (10, "later")])
    def test_bad_buffer_arguments(self, memory_oplog: rxcs.Oplog, size: Any, overflow: Any) -> None:
        """Bad sizes and unknown policies raise ValueError at watch() and at buffer()."""
        with pytest.raises(ValueError, match=r"buffer size|overflow"):
            rxcs.watch(memory_oplog, buffer_size=size, overflow=overflow)
        with pytest.raises(ValueError, match=r"buffer size|overflow"):
            cso.buffer(size, overflow)


class TestBufferOperator:
    def test_buffer_hops_per_batch_onto_a_scheduler(self, memory_oplog: rxcs.Oplog) -> None:
        """buffer(scheduler=) delivers on that scheduler, one action per batch, in order."""
        scheduler = TestScheduler()
        got: list[int] = []
        memory_oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(30)])
        source = rxcs.oplog_entries(memory_oplog, after=0, batch_size=10, scheduler=scheduler)
        source.pipe(cso.buffer(100, scheduler=scheduler)).subscribe(lambda e: got.append(e.op_id))
        scheduler.advance_to(1)
        assert got == list(range(1, 31))

    def test_buffer_thread_stops_on_dispose(self, memory_oplog: rxcs.Oplog) -> None:
        """The buffer's own drain thread ends when the subscription is disposed."""
        got: list[int] = []
        sub = rxcs.oplog_entries(memory_oplog).pipe(cso.buffer(10)).subscribe(lambda e: got.append(e.op_id))
        memory_oplog.insert("shop", "users", {"_id": 1})
        assert eventually(lambda: got == [1])
        sub.dispose()
        assert not [t for t in threading.enumerate() if t.name == "rxcs-buffer"]

    def test_a_scheduled_source_paused_mid_batch_loses_nothing(self, oplog: rxcs.Oplog) -> None:
        """A buffer smaller than the source's batch pauses it mid-batch; resumed, it goes on from there."""
        scheduler = TestScheduler()
        got: list[int] = []
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(100)])
        source = rxcs.oplog_entries(oplog, after=0, batch_size=40, scheduler=scheduler)
        source.pipe(cso.buffer(8, scheduler=scheduler)).subscribe(lambda e: got.append(e.op_id))
        for tick in range(1, 200):
            scheduler.advance_to(tick)
        assert got == list(range(1, 101))


class TestPausedMidBatch:
    def test_a_stream_whose_buffer_fills_mid_batch_gets_every_entry_once(self, oplog: rxcs.Oplog) -> None:
        """A consumer slower than one batch pauses the stream mid-batch again and again: no gap, no repeat."""
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(3000)])
        stream = rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING, buffer_size=10, batch_size=64)
        got, stats = take_slowly(stream, 3000, every=100)
        assert stats.pauses > 10
        assert [event.document_key["_id"] for event in got] == list(range(3000))
