"""A held stream behaves as MongoDB's and PyMongo's do: its resume position, its start time, its API.

- The resume token moves past the changes the stream read and filtered out
  (MongoDB's post-batch resume token), and is an event's own token right
  after that event is handed over.
- A stream that starts at a time later than the newest entry starts there.
- ``alive``, ``try_next()`` and ``watch(pipeline=...)`` as PyMongo has them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import rxcs
from rxcs.events import ClusterTime

INSERTS = [{"$match": {"operationType": "insert"}}]
DELETES = [{"$match": {"operationType": "delete"}}]


def updates(oplog: rxcs.Oplog, count: int, coll: str = "users") -> None:
    for start in range(0, count, 1000):
        batch = range(start, min(count, start + 1000))
        oplog.append_many([rxcs.Change.update("shop", coll, i, updated_fields={"n": i}) for i in batch])


def decoded(oplog: rxcs.Oplog) -> int:
    """Frames a FileOplog instance decoded so far (0 for the other backends, which do not count them)."""
    statistics = getattr(oplog, "statistics", None)
    return statistics().frames_decoded if callable(statistics) else 0


class TestResumePosition:
    def test_the_token_moves_past_filtered_changes_only_when_nothing_is_left(self, oplog: rxcs.Oplog) -> None:
        """Right after an event is handed over the token is that event's; once the stream finds nothing more to
        hand over it is the high-water position of what it read, past the filtered-out changes."""
        with rxcs.watch(oplog, "shop", "users", DELETES, max_await_time=0.05).iterate() as stream:
            oplog.delete("shop", "users", 1)
            updates(oplog, 100)
            event = stream.next(timeout=10)
            assert stream.resume_token == event.id
            assert stream.try_next() is None
            moved = stream.resume_token
            assert (moved.op_id, moved.high_water) == (oplog.last_op_id, True)
            assert moved.stamp is not None

    def test_resuming_after_filtered_changes_reads_none_of_them_again(self, oplog: rxcs.Oplog) -> None:
        """After 10,000 filtered-out entries, a stream resumed from the token reads none of them: its first read
        begins after them, and its next event is the next matching change."""
        with rxcs.watch(oplog, "shop", "users", DELETES, max_await_time=0.05).iterate() as stream:
            updates(oplog, 10_000)
            while stream.try_next() is None and stream.resume_token.op_id < oplog.last_op_id:
                pass
            token = stream.resume_token
        assert token.op_id == oplog.last_op_id == 10_000
        oplog.delete("shop", "users", 7)
        before = decoded(oplog)
        with rxcs.watch(oplog, "shop", "users", DELETES, resume_after=token).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": 7}
            assert resumed.statistics().filtered_out == 0
        # The token's own entry, read to check its stamp (when watch() plans the stream and when it opens), and
        # the delete: none of the 10,000.
        assert decoded(oplog) - before <= 3

    def test_a_stream_whose_match_hides_its_invalidate_can_start_after_it(self, oplog: rxcs.Oplog) -> None:
        """A collection stream that returns only inserts ends at the drop; start_after its last token reaches the
        collection created again, instead of reading the old drop again and ending at once."""
        with rxcs.watch(oplog, "shop", "users", INSERTS, max_await_time=0.05).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.drop_collection("shop", "users")
            assert stream.next(timeout=10).document_key == {"_id": 1}
            with pytest.raises(StopIteration):
                stream.next(timeout=10)
            assert not stream.alive
            token = stream.resume_token
        assert (token.op_id, token.high_water) == (2, True)
        oplog.insert("shop", "users", {"_id": "again"})
        with rxcs.watch(oplog, "shop", "users", INSERTS, start_after=token).iterate() as again:
            assert again.next(timeout=10).document_key == {"_id": "again"}

    def test_a_returned_invalidate_keeps_its_own_token(self, oplog: rxcs.Oplog) -> None:
        """When the invalidate itself was handed over, the token stays the invalidate's (start_after takes it)."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            oplog.drop_collection("shop", "users")
            assert [stream.next(timeout=10).operation_type for _ in range(2)] == ["drop", "invalidate"]
            with pytest.raises(StopIteration):
                stream.next(timeout=10)
            assert stream.resume_token.invalidate

    def test_an_async_stream_moves_its_token_the_same_way(self, oplog: rxcs.Oplog) -> None:
        """aiterate(): the token is the event's, then moves past the filtered changes when nothing is left."""

        async def run() -> None:
            async with rxcs.watch(oplog, "shop", "users", DELETES, max_await_time=0.05).aiterate() as stream:
                oplog.delete("shop", "users", 1)
                updates(oplog, 50)
                event = await stream.next(timeout=10)
                assert stream.resume_token == event.id
                for _ in range(100):
                    if await stream.try_next() is None and stream.resume_token.op_id == oplog.last_op_id:
                        break
                assert (stream.resume_token.op_id, stream.resume_token.high_water) == (51, True)

        asyncio.run(run())


class TestStartAtATime:
    def test_a_start_time_after_the_newest_entry_starts_there(self, oplog: rxcs.Oplog) -> None:
        """Changes recorded before a future start time are not delivered; those from that time on are."""
        target = ClusterTime(int(time.time()) + 1, 0)
        with rxcs.watch(oplog, start_at_operation_time=target, max_await_time=0.05).iterate() as stream:
            oplog.insert("shop", "users", {"_id": "before"})
            assert stream.try_next() is None
            while time.time() < target.time:
                time.sleep(0.01)
            oplog.insert("shop", "users", {"_id": "after"})
            assert stream.next(timeout=10).document_key == {"_id": "after"}
            assert stream.statistics().filtered_out == 1

    def test_a_chain_by_hand_starts_at_a_future_time_too(self, memory_oplog: rxcs.Oplog) -> None:
        """oplog_entries(start=time) passes over the entries recorded before that time."""
        target = ClusterTime(int(time.time()) + 1, 0)
        got: list[Any] = []
        subscription = rxcs.oplog_entries(memory_oplog, start=target).subscribe(lambda e: got.append(e.full_document))
        memory_oplog.insert("shop", "users", {"_id": "before"})
        while time.time() < target.time:
            time.sleep(0.01)
        memory_oplog.insert("shop", "users", {"_id": "after"})
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        subscription.dispose()
        assert got == [{"_id": "after"}]


class TestPyMongoShapes:
    def test_the_alive_loop_ends_after_the_last_event(self, oplog: rxcs.Oplog) -> None:
        """``while stream.alive: stream.try_next()`` ends once the invalidate is returned, raising nothing."""
        got = []
        with rxcs.watch(oplog, "shop", "users", max_await_time=0.05).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.drop_collection("shop", "users")
            while stream.alive:
                event = stream.try_next()
                if event is not None:
                    got.append(event.operation_type)
        assert got == ["insert", "drop", "invalidate"]

    def test_try_next_on_a_closed_or_ended_stream_is_none(self, memory_oplog: rxcs.Oplog) -> None:
        """try_next() returns None once the stream is closed or has ended; next() raises StopIteration."""
        stream = rxcs.watch(memory_oplog, "shop", "users").iterate()
        stream.close()
        assert stream.try_next() is None
        assert not stream.alive
        with pytest.raises(StopIteration):
            stream.next()

    def test_the_async_alive_loop_ends_after_the_last_event(self, oplog: rxcs.Oplog) -> None:
        """The same loop over an AsyncChangeStream ends without StopAsyncIteration."""

        async def run() -> list[str]:
            got = []
            async with rxcs.watch(oplog, "shop", "users", max_await_time=0.05).aiterate() as stream:
                oplog.insert("shop", "users", {"_id": 1})
                oplog.drop_collection("shop", "users")
                while stream.alive:
                    event = await stream.try_next()
                    if event is not None:
                        got.append(event.operation_type)
            return got

        assert asyncio.run(run()) == ["insert", "drop", "invalidate"]

    @pytest.mark.parametrize("pipeline", [{}, {"$match": {}}, "[]", 3])
    def test_a_pipeline_that_is_not_a_list_is_a_type_error(self, memory_oplog: rxcs.Oplog, pipeline: Any) -> None:
        """As PyMongo, watch(pipeline=...) with anything but a list of stages raises TypeError."""
        with pytest.raises(TypeError, match="pipeline must be a list of stages"):
            rxcs.watch(memory_oplog, pipeline=pipeline)
