"""ChangeStream and AsyncChangeStream: the PyMongo-shaped ways to hold a stream."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import rxcs

from .conftest import eventually, stream_threads


class TestChangeStream:
    def test_next_with_timeout_raises_timeout_error(self, memory_oplog: rxcs.Oplog) -> None:
        """next(timeout=) gives up with TimeoutError when nothing comes."""
        with rxcs.watch(memory_oplog).iterate() as stream, pytest.raises(TimeoutError):
            stream.next(timeout=0.05)

    def test_try_next_returns_none_when_idle(self, memory_oplog: rxcs.Oplog) -> None:
        """try_next() waits at most max_await_time, then returns None; the stream stays alive."""
        with rxcs.watch(memory_oplog, max_await_time=0.05).iterate() as stream:
            assert stream.try_next() is None
            assert stream.alive
            memory_oplog.insert("shop", "users", {"_id": 1})
            event = None
            for _ in range(100):
                event = stream.try_next()
                if event is not None:
                    break
            assert event is not None
            assert event.document_key == {"_id": 1}

    def test_next_blocks_until_an_event_from_another_thread(self, oplog: rxcs.Oplog) -> None:
        """A blocked next() returns the event a producer thread appends later."""
        with rxcs.watch(oplog).iterate() as stream:
            writer = threading.Timer(0.05, lambda: oplog.insert("shop", "users", {"_id": "late"}))
            writer.start()
            event = stream.next()
            writer.join()
        assert event.document_key == {"_id": "late"}

    def test_resume_token_tracks_what_was_handed_over(self, memory_oplog: rxcs.Oplog) -> None:
        """resume_token is the last event handed to the caller, not the last one read."""
        with rxcs.watch(memory_oplog).iterate() as stream:
            start = stream.resume_token
            for i in range(3):
                memory_oplog.insert("shop", "users", {"_id": i})
            time.sleep(0.1)  # let the tailer read all three into the buffer
            assert stream.resume_token == start
            first = stream.next(timeout=10)
            assert stream.resume_token == first.id
            assert stream.statistics().buffered == 2

    def test_close_is_idempotent_and_ends_iteration(self, memory_oplog: rxcs.Oplog) -> None:
        """close() twice is fine; afterwards the stream is dead and next() stops."""
        stream = rxcs.watch(memory_oplog).iterate()
        assert stream.alive
        stream.close()
        stream.close()
        assert not stream.alive
        with pytest.raises(StopIteration):
            stream.next(timeout=1)
        assert list(stream) == []
        assert not stream_threads()

    def test_close_from_another_thread_wakes_a_blocked_next(self, memory_oplog: rxcs.Oplog) -> None:
        """A thread blocked in next() returns (StopIteration) when another thread closes the stream."""
        stream = rxcs.watch(memory_oplog).iterate()
        outcome: list[str] = []

        def consume() -> None:
            try:
                stream.next()
            except StopIteration:
                outcome.append("stopped")

        consumer = threading.Thread(target=consume)
        consumer.start()
        time.sleep(0.05)
        stream.close()
        consumer.join(10)
        assert outcome == ["stopped"]

    def test_errors_come_after_the_events_before_them(self, memory_oplog: rxcs.Oplog) -> None:
        """A stream error is raised by next() only after the events delivered before it."""
        with rxcs.watch(memory_oplog, full_document="required").iterate() as stream:
            memory_oplog.insert("shop", "users", {"_id": 1})
            memory_oplog.update("shop", "users", 1, updated_fields={"a": 1})
            time.sleep(0.1)
            assert stream.next(timeout=10).document_key == {"_id": 1}
            with pytest.raises(rxcs.MissingImageError):
                stream.next(timeout=10)
            assert not stream.alive

    def test_statistics(self, memory_oplog: rxcs.Oplog) -> None:
        """statistics() counts delivered and filtered-out entries and reports lag."""
        with rxcs.watch(memory_oplog, "shop", "users").iterate() as stream:
            memory_oplog.insert("shop", "orders", {"_id": 1})
            memory_oplog.insert("shop", "users", {"_id": 1})
            stream.next(timeout=10)
            stats = stream.statistics()
        assert stats.delivered == 1
        assert stats.filtered_out == 1
        assert stats.lag == 0
        assert stats.dropped == 0
        with pytest.raises(AttributeError):
            stats.delivered = 5  # type: ignore[misc]

    def test_close_stops_every_thread(self, oplog: rxcs.Oplog) -> None:
        """Many streams, closed, leave no rxcs thread behind."""
        streams = [rxcs.watch(oplog, "shop", f"c{i}").iterate() for i in range(20)]
        oplog.insert("shop", "c3", {"_id": 1})
        assert streams[3].next(timeout=10).document_key == {"_id": 1}
        for stream in streams:
            stream.close()
        assert not stream_threads()


class TestAsyncChangeStream:
    def test_async_for_receives_events_without_blocking_the_loop(self, oplog: rxcs.Oplog) -> None:
        """async for yields events while the event loop keeps running other tasks."""

        async def scenario() -> tuple[list[Any], int]:
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.001)

            tick_task = asyncio.create_task(ticker())
            got = []
            async with rxcs.watch(oplog, "shop").aiterate() as stream:
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, lambda: oplog.insert("shop", "users", {"_id": 1}))
                loop.call_later(0.1, lambda: oplog.insert("shop", "users", {"_id": 2}))
                async for event in stream:
                    got.append(event)
                    if len(got) == 2:
                        break
            stop.set()
            await tick_task
            return got, ticks

        got, ticks = asyncio.run(scenario())
        assert [e.document_key["_id"] for e in got] == [1, 2]
        assert ticks > 10, "the event loop was blocked while waiting for events"
        assert not stream_threads()

    def test_async_next_timeout_and_end(self, memory_oplog: rxcs.Oplog) -> None:
        """await next(timeout=) raises TimeoutError; an invalidated stream ends async iteration."""

        async def scenario() -> list[str]:
            async with rxcs.watch(memory_oplog, "shop", "users").aiterate() as stream:
                with pytest.raises(TimeoutError):
                    await stream.next(timeout=0.05)
                memory_oplog.drop_collection("shop", "users")
                kinds = [str(event.operation_type) async for event in stream]
                assert not stream.alive
                return kinds

        assert asyncio.run(scenario()) == ["drop", "invalidate"]

    def test_close_from_another_task_ends_a_waiting_iteration(self, oplog: rxcs.Oplog) -> None:
        """A task parked in async for ends (StopAsyncIteration) when another task closes the stream."""

        async def scenario() -> list[Any]:
            stream = rxcs.watch(oplog, "shop").aiterate()
            got: list[Any] = []

            async def consume() -> None:
                got.extend([event async for event in stream])

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0.1)  # the consumer is waiting: nothing was written
            await stream.close()
            await asyncio.wait_for(consumer, 10)
            return got

        assert asyncio.run(scenario()) == []
        assert not stream_threads()

    def test_many_events_arrive_in_order_through_the_loop(self, oplog: rxcs.Oplog) -> None:
        """Events written while the consumer is busy or parked all arrive, in order, none twice."""

        async def scenario() -> list[int]:
            seen: list[int] = []
            async with rxcs.watch(oplog, "shop", buffer_size=16).aiterate() as stream:
                writer = threading.Thread(
                    target=lambda: [oplog.insert("shop", "users", {"_id": i}) for i in range(2000)]
                )
                writer.start()
                async for event in stream:
                    seen.append(event.document_key["_id"])
                    if len(seen) % 97 == 0:
                        await asyncio.sleep(0.001)  # busy now and then, parked other times
                    if len(seen) == 2000:
                        break
                writer.join()
            return seen

        assert asyncio.run(scenario()) == list(range(2000))


class TestForLoopOverWatch:
    def test_for_over_watch_gives_events_and_closes_at_break(self, memory_oplog: rxcs.Oplog) -> None:
        """`for event in rxcs.watch(...)` yields ChangeEvents (not Observables) in order; a break closes the stream."""
        for i in range(3):
            memory_oplog.insert("shop", "users", {"_id": i})
        # drop_newest: events come through the oplog's tailer thread, which stops once no stream is left
        stream = rxcs.watch(memory_oplog, "shop", start_at_operation_time=rxcs.BEGINNING, overflow="drop_newest")
        seen = []
        for event in stream:
            assert isinstance(event, rxcs.ChangeEvent)
            seen.append(event.document_key["_id"])
            if len(seen) == 2:
                assert stream_threads()
                break
        assert seen == [0, 1]
        assert eventually(lambda: not stream_threads())

    def test_iteration_starts_at_iter_like_subscribe(self, memory_oplog: rxcs.Oplog) -> None:
        """A stream without a start option starts when iteration starts: what was appended before is not seen."""
        memory_oplog.insert("shop", "users", {"_id": "before"})
        events = iter(rxcs.watch(memory_oplog, "shop"))
        memory_oplog.insert("shop", "users", {"_id": "after"})
        assert next(events).document_key == {"_id": "after"}
        events.close()

    def test_async_for_over_watch_gives_events(self, memory_oplog: rxcs.Oplog) -> None:
        """`async for event in rxcs.watch(...)` yields ChangeEvents too."""

        async def first_two() -> list[Any]:
            memory_oplog.insert("shop", "users", {"_id": 1})
            memory_oplog.insert("shop", "users", {"_id": 2})
            found = []
            async for event in rxcs.watch(memory_oplog, start_at_operation_time=rxcs.BEGINNING):
                found.append(event.document_key)
                if len(found) == 2:
                    break
            return found

        assert asyncio.run(first_two()) == [{"_id": 1}, {"_id": 2}]
