"""RedisOplog through Sentinel: following failovers, replicated durability, and lost ranges reported.

Every test runs a real primary, two replicas and three Sentinels
(``tests/redis_sentinel.py``) and kills the primary with SIGKILL. To lose
entries on purpose, a test cuts replication first: the primary is given a
password its replicas do not know and their links are closed, so what it
acknowledges next reaches no replica; the oplog's connections, already
authenticated, go on working until the primary dies.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis_sentinel import ReplicatedRedis
from redis_server import RedisServer, redis_server_available
from support import eventually

import rxcs

pytestmark = pytest.mark.skipif(not redis_server_available(), reason="needs a redis-server binary and redis-py")

if redis_server_available():
    import redis

    from rxcs.oplog.redis import RedisOplog


def insert(oplog: rxcs.Oplog, key: object) -> int:
    return oplog.insert("shop", "orders", {"_id": key})


def cut_replication(primary: RedisServer) -> None:
    """From now on, what ``primary`` acknowledges reaches no replica (until it dies)."""
    with redis.Redis(port=primary.port) as client:
        client.config_set("requirepass", "cut-off")
        client.client_kill_filter(_type="replica")
        assert eventually(lambda: client.info("replication")["connected_slaves"] == 0, 5)


def replicated_to_all(oplog: RedisOplog) -> None:
    """Wait until both replicas hold everything the primary has (a write now, then WAIT for it)."""
    pipe = oplog._client.pipeline(transaction=False)
    pipe.set("rxcs-test-sync", 1)
    pipe.execute_command("WAIT", 2, 5000)
    assert pipe.execute()[1] == 2


class Recorder:
    """A watcher on its own thread: the ids it got, and the error that ended it."""

    def __init__(self, oplog: rxcs.Oplog, **options: Any) -> None:
        self.ids: list[object] = []
        self.error: BaseException | None = None
        self.tokens: list[rxcs.ResumeToken] = []
        self._stream = rxcs.watch(oplog, "shop", "orders", **options).iterate()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self.ids.append(event.document_key["_id"])
                self.tokens.append(event.id)
        except rxcs.RxcsError as exc:
            self.error = exc

    def close(self) -> None:
        self._stream.close()
        self._thread.join(10)


@pytest.fixture
def stream() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def opened() -> Iterator[list[rxcs.Oplog]]:
    oplogs: list[rxcs.Oplog] = []
    yield oplogs
    for oplog in oplogs:
        oplog.close()


class TestSentinel:
    def test_the_primary_is_found_and_followed_through_a_failover(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        """Writers and watchers go on on the new primary, in the same process, losing and repeating nothing."""
        oplog = rxcs.open_oplog(replicated_redis.url(stream))
        opened.append(oplog)
        assert isinstance(oplog, RedisOplog)
        assert oplog.info().address.startswith("redis+sentinel://127.0.0.1:")
        watcher = Recorder(oplog)
        for key in range(20):
            insert(oplog, key)
        replicated_to_all(oplog)
        _, new = replicated_redis.fail_over()
        for key in range(20, 40):
            insert(oplog, key)
        assert eventually(lambda: len(watcher.ids) == 40, 20)
        watcher.close()
        assert watcher.ids == list(range(40))
        assert watcher.error is None
        assert oplog.epoch == 1
        assert oplog.history_losses() == []
        with redis.Redis(port=new.port) as client:  # the entries are on the new primary
            assert client.xlen(stream) == 40

    def test_reads_from_a_replica(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        writer = rxcs.open_oplog(replicated_redis.url(stream))
        reader = rxcs.open_oplog(replicated_redis.url(stream, read_from="replica"))
        opened += [writer, reader]
        assert isinstance(reader, RedisOplog)
        watcher = Recorder(reader)
        for key in range(30):
            insert(writer, key)
        assert eventually(lambda: len(watcher.ids) == 30, 10)
        watcher.close()
        assert watcher.ids == list(range(30))
        replica_ports = {s.port for s in replicated_redis.servers} - {replicated_redis.primary().port}
        connection = reader._reader.connection_pool.get_connection()
        try:
            connection.connect()
            assert connection.port in replica_ports
        finally:
            reader._reader.connection_pool.release(connection)

    def test_a_sentinel_that_answers_nothing_is_one_clear_error(self, replicated_redis: ReplicatedRedis) -> None:
        with pytest.raises(rxcs.OplogUnavailableError, match=r"no Sentinel answered: 127\.0\.0\.1:1: .*refused"):
            rxcs.open_oplog("redis+sentinel://127.0.0.1:1/rxcs?stream=x")

    def test_a_service_the_sentinels_do_not_know_is_refused_and_nothing_is_written(
        self, replicated_redis: ReplicatedRedis, stream: str
    ) -> None:
        with pytest.raises(rxcs.InvalidLocationError, match=r"know no service 'orders' \(they monitor: rxcs\)"):
            rxcs.open_oplog(f"redis+sentinel://{replicated_redis.sentinel_hosts}/orders?stream={stream}")
        with redis.Redis(port=replicated_redis.primary().port) as client:
            assert client.keys(f"*{stream}*") == []

    @pytest.mark.parametrize(("query", "message"), [
        ("durability=majority", "durability='majority' is not a valid durability"),
        ("read_from=anywhere", "read_from='anywhere' is not a valid read_from"),
        ("replicas=two", "replicas='two' is not a valid replicas"),
    ])
    def test_bad_options_are_named(self, query: str, message: str) -> None:
        """Refused before any Sentinel is asked."""
        with pytest.raises(rxcs.InvalidLocationError, match=message):
            rxcs.open_oplog(f"redis+sentinel://127.0.0.1:1,127.0.0.1:2/rxcs?stream=x&{query}")

    def test_read_from_replica_needs_sentinel(self, replicated_redis: ReplicatedRedis) -> None:
        primary = replicated_redis.primary()
        with pytest.raises(rxcs.InvalidLocationError, match="read_from=replica needs a redis\\+sentinel:// URL"):
            rxcs.open_oplog(f"redis://127.0.0.1:{primary.port}/0?stream=x&read_from=replica")


class TestReplicatedDurability:
    def test_every_acknowledged_entry_survives_the_primary_killed_mid_run(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        """A producer appends without pause while the primary is killed: every entry it was told is
        durable is delivered exactly once, in order, to watchers on the primary and on a replica."""
        url = replicated_redis.url(stream, durability="replicated", replication_timeout=2)
        writer = rxcs.open_oplog(url)
        on_primary = rxcs.open_oplog(url)
        on_replica = rxcs.open_oplog(replicated_redis.url(stream, durability="replicated", read_from="replica"))
        opened += [writer, on_primary, on_replica]
        watchers = [Recorder(on_primary), Recorder(on_replica)]
        acknowledged: list[int] = []
        unconfirmed: list[int] = []
        stop = threading.Event()

        def produce() -> None:
            key = 0
            while not stop.is_set():
                try:
                    insert(writer, key)
                    acknowledged.append(key)
                except rxcs.OplogUnavailableError:
                    unconfirmed.append(key)  # appended, not confirmed in time: may or may not survive
                key += 1

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            assert eventually(lambda: len(acknowledged) > 200, 20)
            replicated_redis.fail_over()
            count = len(acknowledged)
            assert eventually(lambda: len(acknowledged) > count + 200, 30), "appends did not go on after failover"
        finally:
            stop.set()
            producer.join(30)
        last = acknowledged[-1]
        for watcher in watchers:
            assert eventually(lambda watcher=watcher: last in watcher.ids, 30)
            watcher.close()
            assert watcher.error is None
            assert len(watcher.ids) == len(set(watcher.ids)), "an entry was delivered twice"
            assert watcher.ids == sorted(watcher.ids)
            assert set(acknowledged) <= set(watcher.ids), "an acknowledged entry was lost"
            assert set(watcher.ids) <= set(acknowledged) | set(unconfirmed)

    def test_unconfirmed_entries_are_refused_and_never_seen_by_replicated_readers(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        url = replicated_redis.url(stream, durability="replicated", replication_timeout=0.3)
        writer = rxcs.open_oplog(url)
        reader = rxcs.open_oplog(url)
        opened += [writer, reader]
        watcher = Recorder(reader)
        for key in range(10):
            insert(writer, key)
        cut_replication(replicated_redis.primary())
        with pytest.raises(rxcs.OplogUnavailableError, match=r"op_ids 11-11 are appended, but 0 of the 1 replicas"):
            insert(writer, "never durable")
        time.sleep(0.3)
        assert watcher.ids == list(range(10))
        replicated_redis.fail_over()
        key = 10
        while True:  # until the new primary's remaining replica confirms an append
            try:
                insert(writer, key)
                break
            except rxcs.OplogUnavailableError:
                key += 1
        assert eventually(lambda: key in watcher.ids, 20)
        watcher.close()
        assert watcher.ids == list(range(key + 1))
        assert watcher.error is None
        assert writer.history_losses() == []  # type: ignore[attr-defined] - nothing acknowledged was lost


class TestEpochs:
    def test_a_replica_that_synced_in_full_begins_an_epoch_when_promoted(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        """A full resynchronisation copies the primary's whole dataset to the replica; promoted, it is still
        another server, and its first append begins an epoch (else a loss there could not be told)."""
        writer = rxcs.open_oplog(replicated_redis.url(stream))
        opened.append(writer)
        for key in range(10):
            insert(writer, key)
        primary = replicated_redis.primary()
        first, second = (server for server in replicated_redis.servers if server is not primary)
        second.kill()  # one replica left: the one the Sentinels must promote
        first.kill()
        (first.directory / "dump.rdb").unlink(missing_ok=True)  # the copy its first synchronisation left
        first.restart()  # with nothing on disk: it synchronises in full from the primary
        with redis.Redis(port=primary.port) as client:
            assert eventually(lambda: client.execute_command("WAIT", 1, 1000) == 1, 20)
            assert client.info("stats")["sync_full"] == 3  # two at the start, one now
        insert(writer, 10)
        _, new = replicated_redis.fail_over()
        assert new is first
        insert(writer, 11)
        assert writer.epoch == 1  # type: ignore[attr-defined]
        assert writer.history_losses() == []  # type: ignore[attr-defined]


class TestLostRanges:
    def test_a_lost_range_is_reported_to_live_watchers_and_resuming_consumers(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        """With the default durability, entries the old primary acknowledged and no replica received are
        lost: the writer's next append records the range, and every stream that would skip it is told."""
        url = replicated_redis.url(stream)
        writer = rxcs.open_oplog(url)
        reader = rxcs.open_oplog(url)
        other_process = rxcs.open_oplog(url)  # opened before, reading nothing until after the loss
        opened += [writer, reader, other_process]
        caught_up = Recorder(reader)
        for key in range(50):
            insert(writer, key)
        replicated_to_all(writer)
        assert eventually(lambda: len(caught_up.ids) == 50)
        token_before = caught_up.tokens[-1]
        billing = rxcs.watch(other_process, "shop", "orders", consumer="billing", commit="each",
                             start_at_operation_time=rxcs.BEGINNING)
        with billing.iterate() as stream:  # a named consumer that handled all 50, its checkpoint in Redis
            assert [stream.next(timeout=10).document_key["_id"] for _ in range(50)] == list(range(50))
        replicated_to_all(writer)  # the checkpoint too
        cut_replication(replicated_redis.primary())
        for key in range(50, 60):
            insert(writer, key)  # acknowledged by the primary alone: op_ids 51-60
        assert eventually(lambda: len(caught_up.ids) == 60)
        token_lost = caught_up.tokens[-1]
        replicated_redis.fail_over()
        insert(writer, "new")  # the new primary goes on from op_id 51: the writer reports 51-60
        losses = writer.history_losses()  # type: ignore[attr-defined]
        assert [(loss.epoch, loss.first_op_id, loss.last_op_id) for loss in losses] == [(1, 51, 60)]
        described = other_process.describe()
        assert (described["epoch"], described["history_losses"]) == (1, ["op_ids 51-60 (lost when epoch 1 began)"])
        assert eventually(lambda: caught_up.error is not None, 20)
        assert isinstance(caught_up.error, rxcs.ChangeStreamHistoryLost)
        assert "op_ids 51-60" in str(caught_up.error)
        assert "new" not in caught_up.ids
        for token in (token_before, token_lost):
            with pytest.raises(rxcs.ChangeStreamHistoryLost):
                next(iter(rxcs.watch(other_process, "shop", "orders", resume_after=token)))
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="op_ids 51-60"):
            next(iter(rxcs.watch(other_process, "shop", "orders", start_at_operation_time=rxcs.ClusterTime(1, 0))))
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="op_ids 51-60"):  # its checkpoint is before them
            next(iter(rxcs.watch(other_process, "shop", "orders", consumer="billing")))
        # A stream begun now, on the new history, is not cut off.
        fresh = Recorder(other_process)
        insert(writer, "later")
        assert eventually(lambda: fresh.ids == ["later"])
        fresh.close()
        caught_up.close()

    def test_a_reader_that_read_lost_entries_reports_them_itself(
        self, replicated_redis: ReplicatedRedis, stream: str, opened: list[rxcs.Oplog]
    ) -> None:
        """The writer that was acknowledged is gone with the primary; the watcher that read the lost
        entries is the witness: it reports the range and ends with it."""
        url = replicated_redis.url(stream)
        writer = rxcs.open_oplog(url)
        reader = rxcs.open_oplog(url)
        opened += [reader]
        watcher = Recorder(reader)
        for key in range(20):
            insert(writer, key)
        replicated_to_all(writer)
        cut_replication(replicated_redis.primary())
        for key in range(20, 25):
            insert(writer, key)
        assert eventually(lambda: len(watcher.ids) == 25)
        writer.close()  # its knowledge goes with it
        replicated_redis.fail_over()
        survivor = rxcs.open_oplog(url)
        opened.append(survivor)
        insert(survivor, "new")  # begins epoch 1 at op_id 21
        assert eventually(lambda: watcher.error is not None, 20)
        assert "op_ids 21-25" in str(watcher.error)
        assert [(loss.first_op_id, loss.last_op_id) for loss in survivor.history_losses()] == [(21, 25)]  # type: ignore[attr-defined]
        watcher.close()
