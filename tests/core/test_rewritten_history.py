"""Resuming where the oplog's history was rewritten under a token: ChangeStreamHistoryLost, never a silent skip.

A Redis restored from an older snapshot (or an AOF that lost its last
second, or a failover to a lagging replica) and a FileOplog copied back from
a backup hold fewer entries than their consumers have read; once producers
append again, the op_ids the consumers' tokens name hold other entries. The
tests rewrite history for real: a copied directory put back, a Redis server
killed and restarted from the snapshot it saved.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer, redis_server_available

import rxcs


class Rewindable:
    """An oplog that can save its state and later be put back to it, as an operator restoring a backup would."""

    def __init__(self, opener: Callable[[], rxcs.Oplog], save: Callable[[], None], restore: Callable[[], None]) -> None:
        self._opener = opener
        self._save = save
        self._restore = restore
        self.oplog = opener()

    def snapshot(self) -> None:
        self._save()

    def rewind(self) -> None:
        """Put the saved state back; ``oplog`` is opened again on it."""
        self.oplog.close()
        self._restore()
        self.oplog = self._opener()


@pytest.fixture(params=["file", *(["redis"] if redis_server_available() else [])])
def rewindable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rewindable]:
    if request.param == "file":
        directory, backup = tmp_path / "oplog", tmp_path / "backup"

        def save_copy() -> None:
            shutil.copytree(directory, backup)

        def restore_copy() -> None:
            shutil.rmtree(directory)
            shutil.copytree(backup, directory)

        store = Rewindable(lambda: rxcs.open_oplog(directory), save_copy, restore_copy)
        yield store
        store.oplog.close()
        return
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()

    def save_snapshot() -> None:
        with redis.Redis.from_url(server.url) as client:
            client.save()

    def restart_from_snapshot() -> None:
        server.kill()
        server.restart()

    store = Rewindable(lambda: rxcs.open_oplog(f"{server.url}?stream=rewound"), save_snapshot, restart_from_snapshot)
    try:
        yield store
        store.oplog.close()
    finally:
        server.stop()


def insert(oplog: rxcs.Oplog, first: int, count: int) -> list[int]:
    return oplog.append_many(rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(first, first + count))


def events_from_beginning(oplog: rxcs.Oplog, count: int) -> list[rxcs.ChangeEvent]:
    with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
        return [stream.next(timeout=10) for _ in range(count)]


def after_the_clock_passes(oplog: rxcs.Oplog) -> None:
    """Wait (on the clock, not a fixed time) until the wall clock is past the newest entry's millisecond."""
    newest = oplog.read(oplog.last_op_id - 1, 1)[0].wall_time_ms
    while time.time_ns() // 1_000_000 <= newest:
        time.sleep(0.001)


class TestResumeAfterARewrite:
    def test_a_token_past_the_restored_end_is_history_lost(self, rewindable: Rewindable) -> None:
        """Restored to 5 entries, a token of entry 8 names history the oplog no longer has."""
        insert(rewindable.oplog, 0, 5)
        rewindable.snapshot()
        insert(rewindable.oplog, 5, 5)
        token = events_from_beginning(rewindable.oplog, 8)[-1].id
        rewindable.rewind()
        assert rewindable.oplog.last_op_id == 5
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="names op_id 8, but this oplog ends at op_id 5"):
            rxcs.watch(rewindable.oplog, resume_after=token)

    def test_entries_written_again_over_a_token_are_history_lost(self, rewindable: Rewindable) -> None:
        """After the restore, producers append past op_id 8 again: resuming after the old 8 would skip the new
        6, 7 and 8 in silence, so it raises, naming the op_id whose entry changed."""
        insert(rewindable.oplog, 0, 5)
        rewindable.snapshot()
        insert(rewindable.oplog, 5, 5)
        token = events_from_beginning(rewindable.oplog, 8)[-1].id
        after_the_clock_passes(rewindable.oplog)
        rewindable.rewind()
        assert insert(rewindable.oplog, 100, 10) == list(range(6, 16))
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match=r"taken at op_id 8 .* op_id 8 is now an entry"):
            rxcs.watch(rewindable.oplog, resume_after=token)
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="op_id 8 is now an entry"):
            rxcs.watch(rewindable.oplog, "shop", "users", start_after=token)

    def test_a_stream_that_saw_no_event_keeps_a_stamped_position(self, rewindable: Rewindable) -> None:
        """A stream started at the present, with nothing delivered, reports a position that also detects a rewrite."""
        insert(rewindable.oplog, 0, 5)
        rewindable.snapshot()
        insert(rewindable.oplog, 5, 3)
        with rxcs.watch(rewindable.oplog, "shop", "orders").iterate() as stream:
            position = stream.resume_token
        assert (position.op_id, position.high_water, position.stamp is not None) == (8, True, True)
        after_the_clock_passes(rewindable.oplog)
        rewindable.rewind()
        insert(rewindable.oplog, 100, 10)
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="op_id 8 is now an entry"):
            rxcs.watch(rewindable.oplog, "shop", "orders", resume_after=position)

    def test_a_token_from_before_the_rewrite_resumes_into_the_new_history(self, rewindable: Rewindable) -> None:
        """A token the restore kept is no false alarm: the stream gives every entry after it, old and new, once."""
        insert(rewindable.oplog, 0, 5)
        token = events_from_beginning(rewindable.oplog, 3)[-1].id
        rewindable.snapshot()
        insert(rewindable.oplog, 5, 5)
        after_the_clock_passes(rewindable.oplog)
        rewindable.rewind()
        insert(rewindable.oplog, 100, 4)
        with rxcs.watch(rewindable.oplog, resume_after=token).iterate() as stream:
            keys = [stream.next(timeout=10).document_key["_id"] for _ in range(6)]
            assert stream.try_next() is None
        assert keys == [3, 4, 100, 101, 102, 103]

    def test_a_source_started_at_a_token_checks_it_too(self, rewindable: Rewindable) -> None:
        """oplog_entries(after=token) on a hand-built chain refuses a rewritten position when subscribed."""
        insert(rewindable.oplog, 0, 5)
        rewindable.snapshot()
        insert(rewindable.oplog, 5, 3)
        token = events_from_beginning(rewindable.oplog, 8)[-1].id
        after_the_clock_passes(rewindable.oplog)
        rewindable.rewind()
        insert(rewindable.oplog, 100, 10)
        got: list[int] = []
        errors: list[Exception] = []
        rxcs.oplog_entries(rewindable.oplog, after=token).subscribe(
            lambda entry: got.append(entry.op_id), errors.append
        ).dispose()
        assert got == []
        assert len(errors) == 1
        assert isinstance(errors[0], rxcs.ChangeStreamHistoryLost)
        assert "op_id 8 is now an entry" in str(errors[0])
