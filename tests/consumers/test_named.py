"""Named consumers: checkpoints kept by the oplog, committed as events are handled, checked when a stream starts."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from support import eventually

import rxcs


def insert(oplog: rxcs.Oplog, count: int, coll: str = "orders", start: int = 0) -> list[int]:
    return [oplog.insert("shop", coll, {"_id": start + i}) for i in range(count)]


def ids(events: list[Any]) -> list[Any]:
    return [event.document_key["_id"] for event in events]


def take(stream: rxcs.ChangeStream[Any], count: int) -> list[Any]:
    return [stream.next(timeout=5) for _ in range(count)]



def committed_op_id(oplog: rxcs.Oplog, name: str) -> int | None:
    found = [info.op_id for info in rxcs.list_consumers(oplog) if info.name == name]
    return found[0] if found else None


class TestResuming:
    def test_a_restart_resumes_after_the_last_handled_event(
        self, oplog: rxcs.Oplog, reopen: Callable[[], rxcs.Oplog]
    ) -> None:
        """A second run under the same name starts after what the first handled, on every backend."""
        insert(oplog, 10)
        first = rxcs.watch(oplog, "shop", "orders", consumer="billing", commit="each",
                           start_at_operation_time=rxcs.BEGINNING)
        with first.iterate() as stream:
            assert ids(take(stream, 4)) == [0, 1, 2, 3]
        again = reopen()
        with rxcs.watch(again, "shop", "orders", consumer="billing").iterate() as stream:
            assert ids(take(stream, 6)) == [4, 5, 6, 7, 8, 9]

    def test_the_start_is_recorded_before_any_commit(self, oplog: rxcs.Oplog) -> None:
        """A consumer that starts now and dies before committing resumes at that start: nothing after it is lost."""
        insert(oplog, 3)
        stream = rxcs.watch(oplog, "shop", "orders", consumer="audit", commit="manual").iterate()
        assert committed_op_id(oplog, "audit") == 3
        insert(oplog, 2, start=3)
        stream.next(timeout=5)  # handed over, never committed: the process "dies" here
        with rxcs.watch(oplog, "shop", "orders", consumer="audit", commit="manual").iterate() as again:
            assert ids(take(again, 2)) == [3, 4]
        stream.close()

    def test_start_options_apply_only_without_a_checkpoint(self, oplog: rxcs.Oplog) -> None:
        """start_at_operation_time is where a new consumer starts; an existing one ignores it."""
        insert(oplog, 5)
        with rxcs.watch(oplog, "shop", "orders", consumer="c", start_at_operation_time=rxcs.BEGINNING,
                        commit="each").iterate() as stream:
            assert ids(take(stream, 2)) == [0, 1]
        with rxcs.watch(oplog, "shop", "orders", consumer="c", start_at_operation_time=rxcs.BEGINNING).iterate() as s:
            assert ids(take(s, 1)) == [2]

    def test_a_collection_stream_resumes_past_entries_its_filter_hid(self, oplog: rxcs.Oplog) -> None:
        """A held stream commits its post-batch position: a restart does not read filtered-out entries again."""
        insert(oplog, 2)
        insert(oplog, 50, coll="other", start=100)
        with rxcs.watch(oplog, "shop", "orders", consumer="c", commit="each",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            assert ids(take(stream, 2)) == [0, 1]
            assert stream.try_next() is None
        assert committed_op_id(oplog, "c") == oplog.last_op_id


class TestCommitModes:
    def test_each_commits_an_event_once_the_next_is_asked_for(self, memory_oplog: rxcs.Oplog) -> None:
        """commit="each": an event handed over is committed when the iterator is advanced past it, not before."""
        insert(memory_oplog, 3)
        with rxcs.watch(memory_oplog, "shop", "orders", consumer="c", commit="each",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            stream.next(timeout=5)
            assert committed_op_id(memory_oplog, "c") == 0
            stream.next(timeout=5)
            assert committed_op_id(memory_oplog, "c") == 1

    def test_every_n_events(self, memory_oplog: rxcs.Oplog) -> None:
        """CommitEvery(events=5) commits after each fifth handled event (written on the committer's thread)."""
        insert(memory_oplog, 20)
        with rxcs.watch(memory_oplog, "shop", "orders", consumer="c", commit=rxcs.CommitEvery(events=5, seconds=None),
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            take(stream, 5)
            assert committed_op_id(memory_oplog, "c") == 0  # the fifth is handled when the sixth is asked for
            take(stream, 1)
            assert eventually(lambda: committed_op_id(memory_oplog, "c") == 5)
            take(stream, 4)
            assert committed_op_id(memory_oplog, "c") == 5
            take(stream, 1)
            assert eventually(lambda: committed_op_id(memory_oplog, "c") == 10)

    def test_every_t_seconds_while_idle(self, memory_oplog: rxcs.Oplog) -> None:
        """CommitEvery(seconds=) commits a held stream's handled events while it waits for more."""
        insert(memory_oplog, 3)
        watch = rxcs.watch(memory_oplog, "shop", "orders", consumer="c", max_await_time=0.05,
                           commit=rxcs.CommitEvery(events=None, seconds=0.1), start_at_operation_time=rxcs.BEGINNING)
        with watch.iterate() as stream:
            take(stream, 3)
            assert committed_op_id(memory_oplog, "c") == 0
            with pytest.raises(TimeoutError):
                stream.next(timeout=0.4)
            assert eventually(lambda: committed_op_id(memory_oplog, "c") == 3)

    def test_manual_commits_only_when_told(self, memory_oplog: rxcs.Oplog) -> None:
        """commit="manual": nothing is committed until stream.commit(), which commits what was handed over."""
        insert(memory_oplog, 4)
        with rxcs.watch(memory_oplog, "shop", "orders", consumer="c", commit="manual",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            take(stream, 3)
            assert committed_op_id(memory_oplog, "c") == 0
            assert stream.commit().op_id == 3
            assert committed_op_id(memory_oplog, "c") == 3
            stream.next(timeout=5)
        assert committed_op_id(memory_oplog, "c") == 3  # closing a manual consumer commits nothing

    def test_async_commit(self, memory_oplog: rxcs.Oplog) -> None:
        """AsyncChangeStream.commit() is awaited and commits what was handed over."""
        insert(memory_oplog, 3)

        async def run() -> int:
            async with rxcs.watch(memory_oplog, "shop", "orders", consumer="c", commit="manual",
                                  start_at_operation_time=rxcs.BEGINNING).aiterate() as stream:
                await stream.next(timeout=5)
                await stream.next(timeout=5)
                return (await stream.commit()).op_id

        assert asyncio.run(run()) == 2
        assert committed_op_id(memory_oplog, "c") == 2

    def test_async_each_commits_off_the_event_loop(self, memory_oplog: rxcs.Oplog) -> None:
        """aiterate() with commit="each": each handled event is committed, on the commit thread."""
        insert(memory_oplog, 3)
        on_loop: list[bool] = []

        async def run() -> None:
            async with rxcs.watch(memory_oplog, "shop", "orders", consumer="c", commit="each",
                                  start_at_operation_time=rxcs.BEGINNING).aiterate() as stream:
                for _ in range(3):
                    await stream.next(timeout=5)
                on_loop.append(eventually(lambda: committed_op_id(memory_oplog, "c") == 2))

        asyncio.run(run())
        assert on_loop == [True]
        assert committed_op_id(memory_oplog, "c") == 3  # leaving the block: the last one was handled too

    def test_leaving_with_an_error_does_not_commit_the_event_being_handled(self, memory_oplog: rxcs.Oplog) -> None:
        """An exception out of the with block leaves the last event uncommitted: it is handed over again."""
        insert(memory_oplog, 3)
        watch = rxcs.watch(memory_oplog, "shop", "orders", consumer="c", start_at_operation_time=rxcs.BEGINNING)
        def fail_on_the_second() -> None:
            with watch.iterate() as stream:
                take(stream, 2)
                raise RuntimeError("the handler failed on the second event")

        with pytest.raises(RuntimeError):
            fail_on_the_second()
        with rxcs.watch(memory_oplog, "shop", "orders", consumer="c").iterate() as again:
            assert ids(take(again, 1)) == [1]

    def test_a_subscriber_commits_events_its_on_next_returned_from(self, oplog: rxcs.Oplog) -> None:
        """subscribe(): an event is handled once on_next returns; one whose on_next raised is delivered again."""
        insert(oplog, 5)
        handled: list[int] = []
        failed = threading.Event()

        def on_next(event: rxcs.ChangeEvent) -> None:
            if event.document_key["_id"] == 3:
                raise RuntimeError("cannot handle 3 yet")
            handled.append(event.document_key["_id"])

        watch = rxcs.watch(oplog, "shop", "orders", consumer="c", commit="each", start_at_operation_time=rxcs.BEGINNING)
        first = watch.subscribe(on_next, on_error=lambda _error: failed.set())
        assert failed.wait(5)
        first.dispose()  # ended by its error; disposed all the same, so the oplog's tailer can stop
        assert handled == [0, 1, 2]
        assert committed_op_id(oplog, "c") == 3
        again: list[int] = []
        done = threading.Event()
        disposable = rxcs.watch(oplog, "shop", "orders", consumer="c").subscribe(
            lambda event: (again.append(event.document_key["_id"]), len(again) == 2 and done.set())
        )
        assert done.wait(5)
        disposable.dispose()
        assert again == [3, 4]
        assert committed_op_id(oplog, "c") == 5  # dispose commits what was handled

    def test_commit_needs_a_named_consumer(self, memory_oplog: rxcs.Oplog) -> None:
        """commit() on a stream without consumer= says what is missing; so do commit= and reset_consumer=."""
        with rxcs.watch(memory_oplog, "shop").iterate() as stream:
            with pytest.raises(rxcs.InvalidOptionError, match="consumer=NAME"):
                stream.commit()
        with pytest.raises(rxcs.InvalidOptionError, match="give consumer= too"):
            rxcs.watch(memory_oplog, "shop", commit="each")
        with pytest.raises(rxcs.InvalidOptionError, match="commit must be"):
            rxcs.watch(memory_oplog, "shop", consumer="c", commit="sometimes")  # type: ignore[arg-type]


class TestChecks:
    def test_another_scope_or_pipeline_is_refused_at_watch(self, oplog: rxcs.Oplog) -> None:
        """The checkpoint records scope and pipeline: another stream under the name raises, and writes nothing."""
        pipeline = [{"$match": {"operationType": "insert"}}]
        rxcs.watch(oplog, "shop", "orders", pipeline, consumer="c").iterate().close()
        before = oplog.checkpoints.load("c")
        with pytest.raises(rxcs.ConsumerMismatchError, match=r"shop\.orders"):
            rxcs.watch(oplog, "shop", "users", pipeline, consumer="c")
        with pytest.raises(rxcs.ConsumerMismatchError, match="pipeline"):
            rxcs.watch(oplog, "shop", "orders", consumer="c")
        assert oplog.checkpoints.load("c") == before

    def test_reset_consumer_starts_over_with_the_new_stream(self, oplog: rxcs.Oplog) -> None:
        """reset_consumer=True replaces the checkpoint by the new stream's start, once."""
        insert(oplog, 3)
        rxcs.watch(oplog, "shop", "orders", consumer="c").iterate().close()
        insert(oplog, 2, coll="users")
        watch = rxcs.watch(oplog, "shop", "users", consumer="c", reset_consumer=True,
                           start_at_operation_time=rxcs.BEGINNING)
        with watch.iterate() as stream:
            assert ids(take(stream, 2)) == [0, 1]
        info = rxcs.list_consumers(oplog)[0]
        assert (info.collection, info.op_id) == ("users", 5)

    @pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 101, "sp ace", 7])
    def test_bad_names(self, memory_oplog: rxcs.Oplog, name: Any) -> None:
        """A name that cannot be a file name is refused, naming it."""
        with pytest.raises(rxcs.InvalidOptionError, match="consumer name"):
            rxcs.watch(memory_oplog, "shop", consumer=name)

    def test_a_checkpoint_from_another_oplog_is_refused(self, tmp_path: Path) -> None:
        """A checkpoint file copied from another oplog is an InvalidResumeToken naming both; nothing is written."""
        with rxcs.open_oplog(tmp_path / "a") as a, rxcs.open_oplog(tmp_path / "b") as b:
            insert(a, 1)
            insert(b, 1)
            rxcs.watch(a, "shop", "orders", consumer="c").iterate().close()
            (tmp_path / "b" / "consumers").mkdir()
            data = (tmp_path / "a" / "consumers" / "c.json").read_bytes()
            (tmp_path / "b" / "consumers" / "c.json").write_bytes(data)
            with pytest.raises(rxcs.InvalidResumeToken, match=str(a.oplog_id)):
                rxcs.watch(b, "shop", "orders", consumer="c")
            with pytest.raises(rxcs.InvalidResumeToken, match="another oplog"):
                rxcs.list_consumers(b)
            assert (tmp_path / "b" / "consumers" / "c.json").read_bytes() == data

    def test_a_checkpoint_trimmed_past_is_history_lost(self, oplog: rxcs.Oplog) -> None:
        """A trim past a checkpoint makes the consumer's next start ChangeStreamHistoryLost, at watch and subscribe."""
        insert(oplog, 3)
        watch = rxcs.watch(oplog, "shop", "orders", consumer="c", start_at_operation_time=rxcs.BEGINNING)
        watch.iterate().close()
        if isinstance(oplog, rxcs.MemoryOplog) or type(oplog).__name__ == "RedisOplog":
            oplog.trim(3)
        else:
            pytest.skip("a FileOplog trims whole segments: TestStorage trims one past a checkpoint")
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="consumer 'c'"):
            rxcs.watch(oplog, "shop", "orders", consumer="c")
        errors: list[Exception] = []
        watch.subscribe(lambda _event: None, on_error=errors.append)
        assert len(errors) == 1
        assert isinstance(errors[0], rxcs.ChangeStreamHistoryLost)


class TestRetention:
    def test_retain_for_consumers_keeps_what_a_checkpoint_needs(self) -> None:
        """With retain_for_consumers=True a trim stops at the oldest checkpoint; the consumer resumes."""
        oplog = rxcs.MemoryOplog(retain_for_consumers=True)
        insert(oplog, 5)
        with rxcs.watch(oplog, "shop", "orders", consumer="c", commit="each",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            take(stream, 2)
        assert oplog.trim(5) == 1  # the checkpoint is event 2's: op_id 2 is read again
        assert oplog.first_op_id == 2
        with rxcs.watch(oplog, "shop", "orders", consumer="c").iterate() as stream:
            assert ids(take(stream, 3)) == [2, 3, 4]

    def test_retention_of_a_file_oplog_waits_for_consumers(self, tmp_path: Path) -> None:
        """FileOplog retention (whole segments) keeps the segment a checkpoint needs."""
        options: dict[str, Any] = {"segment_bytes": 4096, "retain_entries": 10, "retain_for_consumers": True}
        with rxcs.open_oplog(tmp_path / "o", **options) as oplog:
            oplog.insert("shop", "orders", {"_id": 0})
            start = rxcs.BEGINNING
            rxcs.watch(oplog, "shop", "orders", consumer="slow", start_at_operation_time=start).iterate().close()
            for i in range(1, 400):
                oplog.insert("shop", "orders", {"_id": i, "pad": "x" * 100})
            assert oplog.first_op_id == 1
            with rxcs.watch(oplog, "shop", "orders", consumer="slow").iterate() as stream:
                assert ids(take(stream, 2)) == [0, 1]

    def test_a_trim_past_a_checkpoint_is_a_warning(self) -> None:
        """Without retain_for_consumers, a trim past a checkpoint warns once, naming the consumer."""
        oplog = rxcs.MemoryOplog()
        insert(oplog, 5)
        rxcs.watch(oplog, "shop", "orders", consumer="late", start_at_operation_time=rxcs.BEGINNING).iterate().close()
        with structlog.testing.capture_logs() as logs:
            oplog.trim(3)
            oplog.trim(4)
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1
        assert warnings[0]["consumers"] == ["late"]


class TestStorage:
    def test_a_commit_that_fails_fails_the_stream(self, tmp_path: Path) -> None:
        """A periodic commit that cannot be written (here: consumers/ replaced by a file) is raised by the stream."""
        with rxcs.open_oplog(tmp_path / "o") as oplog:
            insert(oplog, 10)
            stream = rxcs.watch(oplog, "shop", "orders", consumer="c", commit=rxcs.CommitEvery(events=1, seconds=None),
                                start_at_operation_time=rxcs.BEGINNING).iterate()
            (tmp_path / "o" / "consumers" / "c.json").unlink()
            (tmp_path / "o" / "consumers").rmdir()
            (tmp_path / "o" / "consumers").write_text("not a folder")

            def take_slowly() -> None:
                for _ in range(10):
                    stream.next(timeout=5)
                    time.sleep(0.05)  # the commit is written on its own thread: its failure comes at a later event

            with pytest.raises(FileExistsError):
                take_slowly()
            with pytest.raises(FileExistsError):
                stream.close()  # its last commit fails too: said, not swallowed

    def test_a_file_oplog_trimmed_past_a_checkpoint(self, tmp_path: Path) -> None:
        """A FileOplog that dropped the segment a checkpoint needs: ChangeStreamHistoryLost at watch()."""
        with rxcs.open_oplog(tmp_path / "o", segment_bytes=4096) as oplog:
            oplog.insert("shop", "orders", {"_id": 0})
            rxcs.watch(oplog, "shop", "orders", consumer="c", start_at_operation_time=rxcs.BEGINNING).iterate().close()
            for i in range(1, 200):
                oplog.insert("shop", "orders", {"_id": i, "pad": "x" * 100})
            assert oplog.trim(oplog.last_op_id) > 0
            with pytest.raises(rxcs.ChangeStreamHistoryLost, match="consumer 'c'"):
                rxcs.watch(oplog, "shop", "orders", consumer="c")

    def test_file_checkpoints_are_replaced_whole(self, tmp_path: Path) -> None:
        """A FileOplog keeps each checkpoint as one JSON file in consumers/, with no temporary left behind."""
        with rxcs.open_oplog(tmp_path / "o") as oplog:
            insert(oplog, 3)
            with rxcs.watch(oplog, "shop", "orders", consumer="c", commit="each",
                            start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                take(stream, 3)
        assert os.listdir(tmp_path / "o" / "consumers") == ["c.json"]
        record = json.loads((tmp_path / "o" / "consumers" / "c.json").read_text())
        assert (record["db"], record["collection"], record["op_id"], record["needs_op_id"]) == ("shop", "orders", 3, 3)
        with rxcs.open_oplog(tmp_path / "o") as oplog:
            assert oplog.verify() == 3  # the folder is no part of the log

    def test_redis_checkpoints_live_in_a_hash_beside_the_stream(self, redis_server: Any, tmp_path: Path) -> None:
        """A RedisOplog keeps checkpoints in the hash {STREAM}:consumers, one field per name."""
        import redis

        stream_name = tmp_path.name
        with rxcs.open_oplog(f"{redis_server.url}?stream={stream_name}") as oplog:
            insert(oplog, 1)
            rxcs.watch(oplog, "shop", "orders", consumer="c").iterate().close()
        client = redis.Redis.from_url(redis_server.url)
        try:
            record = json.loads(client.hget(f"{{{stream_name}}}:consumers", "c"))
        finally:
            client.close()
        assert record["op_id"] == 1

