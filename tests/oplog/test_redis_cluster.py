"""RedisOplog on a Redis Cluster: oplogs spread over the primaries, a slot moved under live streams, bad input at open.

The shared contract runs on the cluster too (the ``redis-cluster`` backend of
``oplog_factory``); these tests are what only a cluster has.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_cluster import LocalCluster, free_cluster_port
from redis_server import RedisServer, free_port, redis_server_available

import rxcs

pytestmark = pytest.mark.skipif(not redis_server_available(), reason="needs a redis-server binary and redis-py")

if redis_server_available():
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.crc import key_slot

    from rxcs.oplog.redis import RedisOplog

OPLOGS = 30
ENTRIES = 40  # per oplog in the spread test


def fresh(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def node_client(port: int) -> Iterator[redis.Redis]:
    with redis.Redis(host="127.0.0.1", port=port) as client:
        yield client


class TestOpen:
    def test_the_url_opens_the_stream_on_the_primary_serving_its_slot(self, redis_cluster: LocalCluster) -> None:
        """redis+cluster://seeds/?stream=NAME: the keys land on the primary serving NAME's slot, and the oplog's
        address names the cluster's seeds."""
        name = fresh()
        with rxcs.open_oplog(f"{redis_cluster.url}?stream={name}") as oplog:
            assert isinstance(oplog, RedisOplog)
            assert oplog.insert("shop", "users", {"_id": 1}) == 1
            info = oplog.info()
            assert info.address.startswith("redis+cluster://127.0.0.1:")
            assert (info.stream, info.entries, info.last_op_id) == (name, 1, 1)
        owner = redis_cluster.owner(key_slot(name.encode()))
        with node_client(owner) as client:
            assert client.type(name) == b"stream"
            assert client.hget(f"{{{name}}}:meta", "last_op_id") == b"1"

    def test_a_cluster_client_may_be_passed_in(self, redis_cluster: LocalCluster) -> None:
        """RedisOplog takes a redis.cluster.RedisCluster as it takes a redis.Redis; the client stays the caller's."""
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster.ports[0])])
        try:
            with RedisOplog(client, fresh()) as oplog:
                changes = [rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(3)]
                assert oplog.append_many(changes) == [1, 2, 3]
                assert [entry.op_id for entry in oplog.read(1, 10)] == [2, 3]
            assert client.ping()  # not closed by the oplog
        finally:
            client.close()

    def test_unreachable_seeds_are_one_clear_error_without_the_password(self) -> None:
        """Seeds nobody answers on: OplogUnavailableError at open, naming every seed, never the password."""
        ports = [free_port(), free_port()]
        url = f"redis+cluster://:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}?stream=gone"  # DESIGN.md's form
        with pytest.raises(rxcs.OplogUnavailableError, match="cannot reach the Redis Cluster") as caught:
            rxcs.open_oplog(url)
        message = str(caught.value)
        assert f"127.0.0.1:{ports[0]}" in message
        assert f"127.0.0.1:{ports[1]}" in message
        assert "s3cret" not in message

    def test_a_slot_no_node_serves_is_one_clear_error_and_nothing_is_written(self, tmp_path: Path) -> None:
        """A cluster whose nodes serve every slot but the stream's: OplogUnavailableError at open naming the slot
        and the address, and no key written; a stream whose slot is served opens on the same cluster."""
        name = fresh()
        slot = key_slot(name.encode())
        node = RedisServer(tmp_path, port=free_cluster_port(), extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-require-full-coverage", "no",
        ))
        node.start()
        try:
            with node_client(node.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *(s for s in range(16384) if s != slot))
                deadline = time.monotonic() + 10  # a new primary waits a moment before it takes writes
                while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    assert time.monotonic() < deadline, "the one-node cluster did not come up"
                    time.sleep(0.05)
                url = f"redis+cluster://127.0.0.1:{node.port}/"
                with pytest.raises(rxcs.OplogUnavailableError) as caught:
                    rxcs.open_oplog(f"{url}?stream={name}")
                assert f"slot {slot}" in str(caught.value)
                assert f"redis+cluster://127.0.0.1:{node.port} stream {name!r}" in str(caught.value)
                assert client.dbsize() == 0
                other = next(f"other-{i}" for i in range(100) if key_slot(f"other-{i}".encode()) != slot)
                with rxcs.open_oplog(f"{url}?stream={other}") as oplog:
                    assert oplog.insert("shop", "users", {"_id": 1}) == 1
                assert client.keys(f"*{name}*") == []
        finally:
            node.stop()

    def test_a_server_not_in_cluster_mode_is_refused(self, redis_server: RedisServer) -> None:
        """redis+cluster:// pointed at a plain server: InvalidLocationError saying to open it as redis://."""
        url = f"redis+cluster://127.0.0.1:{redis_server.port}/?stream={fresh()}"
        with pytest.raises(rxcs.InvalidLocationError, match="not in cluster mode"):
            rxcs.open_oplog(url)

    def test_a_cluster_node_opened_as_a_single_server_names_the_way_out(self, redis_cluster: LocalCluster) -> None:
        """redis:// to a cluster primary that does not serve the stream's slot: InvalidLocationError pointing to
        redis+cluster://, not retries."""
        name = fresh()
        owner = redis_cluster.owner(key_slot(name.encode()))
        other = next(port for port in redis_cluster.primary_ports() if port != owner)
        with pytest.raises(rxcs.InvalidLocationError, match=r"redis\+cluster://"):
            rxcs.open_oplog(f"redis://127.0.0.1:{other}/0?stream={name}")

    @pytest.mark.parametrize(("tail", "message"), [
        ("/?stream=s&max_lenn=5", "unknown parameter 'max_lenn'"),
        ("/3?stream=s", "only database 0"),
        ("/?stream=s&socket_timeout=soon", "socket_timeout"),
        ("/?stream=a{b}", "without braces"),
    ])
    def test_bad_url_parameters_are_refused_at_open(self, redis_cluster: LocalCluster, tail: str, message: str) -> None:
        """A parameter neither rxcs nor redis-py takes, a database other than 0, a value that does not parse:
        InvalidLocationError naming it, before anything is sent."""
        url = redis_cluster.url.rstrip("/") + tail
        with pytest.raises(rxcs.InvalidLocationError, match=message):
            rxcs.open_oplog(url)


class TestSpread:
    def test_oplogs_spread_and_a_moved_slot_loses_and_repeats_nothing(self, redis_cluster: LocalCluster) -> None:
        """30 oplogs land on all 3 primaries; producers append to all of them while a live watcher tails each,
        and one oplog's slot moves to another primary meanwhile: every watcher gets every entry of its oplog
        exactly once, in order, and the slot ends on the new primary (a new epoch with no lost range)."""
        run = uuid.uuid4().hex[:8]
        names = [f"tenant-{run}-{i}" for i in range(OPLOGS)]
        owners = {name: redis_cluster.owner(key_slot(name.encode())) for name in names}
        assert set(owners.values()) == set(redis_cluster.primary_ports())
        oplogs = {name: rxcs.open_oplog(f"{redis_cluster.url}?stream={name}&retry_for=60") for name in names}
        streams = {name: rxcs.watch(oplog, "shop", "orders").iterate() for name, oplog in oplogs.items()}
        moving = names[0]
        slot = key_slot(moving.encode())
        target = next(port for port in redis_cluster.primary_ports() if port != owners[moving])
        failures: list[BaseException] = []

        def produce(share: list[str]) -> None:
            try:
                for i in range(ENTRIES):
                    for name in share:
                        oplogs[name].insert("shop", "orders", {"_id": i})
                    time.sleep(0.01)
            except BaseException as exc:  # handed to the test thread
                failures.append(exc)

        producers = [threading.Thread(target=produce, args=(names[k::3],)) for k in range(3)]
        try:
            for producer in producers:
                producer.start()
            time.sleep(0.15)
            moved = redis_cluster.migrate_slot(slot, target, batch=1, pause=0.05)
            for producer in producers:
                producer.join(60)
            assert not failures, failures
            for oplog in oplogs.values():  # a marker after the last entry: nothing may come between
                oplog.insert("shop", "orders", {"_id": "end"})
            for name, stream in streams.items():
                got = [stream.next(timeout=20).full_document["_id"] for _ in range(ENTRIES + 1)]
                assert got == [*range(ENTRIES), "end"], name
            assert moved >= 2  # the stream and its meta hash at least
            assert redis_cluster.owner(slot) == target
            with node_client(target) as client:
                assert client.xlen(moving) == ENTRIES + 1
            assert all(oplog.last_op_id == ENTRIES + 1 for oplog in oplogs.values())
            assert oplogs[moving].info().epoch == 1  # another server runs its script now (an epoch)...
            assert oplogs[moving].history_losses() == []  # ...but nothing was lost
        finally:
            for stream in streams.values():
                stream.close()
            for oplog in oplogs.values():
                oplog.close()

    def test_a_manual_failover_loses_and_repeats_nothing(self, redis_cluster: LocalCluster) -> None:
        """The replica of an oplog's primary takes over (CLUSTER FAILOVER, as in a planned maintenance) while a
        producer appends and a watcher tails: the watcher gets every entry once, in order, from the new primary."""
        name = fresh("failover")
        slot = key_slot(name.encode())
        old = redis_cluster.owner(slot)
        with rxcs.open_oplog(f"{redis_cluster.url}?stream={name}") as oplog, \
                rxcs.watch(oplog, "shop", "orders").iterate() as stream:
            done = threading.Event()

            def produce() -> None:
                for i in range(60):
                    oplog.insert("shop", "orders", {"_id": i})
                    time.sleep(0.01)
                done.set()

            producer = threading.Thread(target=produce)
            producer.start()
            time.sleep(0.1)
            replica = redis_cluster.replica_of(old)
            with node_client(replica) as client:
                client.execute_command("CLUSTER", "FAILOVER")
            producer.join(60)
            assert done.is_set()
            oplog.insert("shop", "orders", {"_id": "end"})
            got = [stream.next(timeout=20).full_document["_id"] for _ in range(61)]
            assert got == [*range(60), "end"]
            assert oplog.history_losses() == []
            redis_cluster.wait_until_agreed()
            assert redis_cluster.owner(slot) == replica


class TestWait:
    def test_a_wait_follows_a_stream_that_moved_to_the_importing_node(self, redis_cluster: LocalCluster) -> None:
        """With the slot half moved (the stream on the importing node, its metadata not yet), a wait blocks on
        the importing node (ASK, then ASKING), wake_waiters reaches it there, and once the move ends an append
        ends the next wait."""
        name = fresh("asked")
        with rxcs.open_oplog(f"{redis_cluster.url}?stream={name}") as oplog:
            oplog.insert("shop", "orders", {"_id": 1})
            slot = key_slot(name.encode())
            target = next(port for port in redis_cluster.primary_ports() if port != redis_cluster.owner(slot))
            source = redis_cluster.begin_migration(slot, target)
            redis_cluster.move_keys(source, target, [name])
            blocked: list[int] = []

            def look_and_wake() -> None:
                for port in (target, source):
                    with node_client(port) as client:
                        blocked.append(client.execute_command("CLIENT", "LIST").decode().count("cmd=xread"))
                oplog.wake_waiters()

            threading.Timer(0.3, look_and_wake).start()
            began = time.monotonic()
            assert oplog.wait(1, 5) is False
            assert time.monotonic() - began < 2  # woken, not timed out
            assert blocked == [1, 0]
            redis_cluster.end_migration(slot, source, target)
            threading.Timer(0.2, lambda: oplog.insert("shop", "orders", {"_id": 2})).start()
            assert oplog.wait(1, 5) is True
            assert [entry.op_id for entry in oplog.read(0, 10)] == [1, 2]


class TestReplicatedDurability:
    def test_appends_wait_for_the_replica_of_the_slots_primary(self, redis_cluster: LocalCluster) -> None:
        """durability=replicated on a cluster: WAIT runs on the connection of the primary serving the slot, so an
        append returns with its entries on that primary's replica, and streams see them."""
        name = fresh("durable")
        url = f"{redis_cluster.url}?stream={name}&durability=replicated&replicas=1"
        with rxcs.open_oplog(url) as oplog, rxcs.watch(oplog, "shop", "orders").iterate() as stream:
            changes = [rxcs.Change.insert("shop", "orders", {"_id": i}) for i in range(3)]
            assert oplog.append_many(changes) == [1, 2, 3]
            with node_client(redis_cluster.replica_of(redis_cluster.owner(key_slot(name.encode())))) as replica:
                assert replica.execute_command("READONLY")
                assert replica.xlen(name) == 3
            assert [stream.next(timeout=5).full_document["_id"] for _ in range(3)] == [0, 1, 2]

    def test_an_append_its_slots_replica_did_not_confirm_is_not_durable(self, redis_cluster: LocalCluster) -> None:
        """With the replica of the slot's primary asleep (DEBUG SLEEP), WAIT times out: the append raises
        OplogUnavailableError saying 0 of 1 replicas confirmed it (WAIT on another node would have said 1)."""
        name = fresh("durable")
        url = f"{redis_cluster.url}?stream={name}&durability=replicated&replicas=1&replication_timeout=0.3"
        with rxcs.open_oplog(url) as oplog:
            assert oplog.insert("shop", "orders", {"_id": 0}) == 1
            replica = redis_cluster.replica_of(redis_cluster.owner(key_slot(name.encode())))

            def sleep() -> None:
                with node_client(replica) as client:
                    client.execute_command("DEBUG", "SLEEP", "1")

            sleeper = threading.Thread(target=sleep)
            sleeper.start()
            time.sleep(0.1)
            try:
                with pytest.raises(rxcs.OplogUnavailableError, match="0 of the 1 replicas"):
                    oplog.insert("shop", "orders", {"_id": 1})
            finally:
                sleeper.join()

    def test_a_separate_reader_is_refused(self, redis_cluster: LocalCluster) -> None:
        """A cluster client reads from the slot's primary: reader= is a ValueError naming it."""
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster.ports[0])])
        try:
            with pytest.raises(ValueError, match="reader="):
                RedisOplog(client, fresh(), reader=redis.Redis(port=redis_cluster.ports[0]))
        finally:
            client.close()


class TestConsumers:
    def test_named_consumers_and_groups_keep_their_checkpoints_in_the_slot(self, redis_cluster: LocalCluster) -> None:
        """A named consumer resumes from its commit; a group's members share the work: their records live in
        {NAME}:consumers on the primary serving the oplog's slot."""
        name = fresh("consumers")
        url = f"{redis_cluster.url}?stream={name}"
        with rxcs.open_oplog(url) as oplog:
            for i in range(4):
                oplog.insert("shop", "orders", {"_id": i})
            with rxcs.watch(oplog, "shop", "orders", consumer="billing",
                            start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                assert [stream.next(timeout=5).full_document["_id"] for _ in range(2)] == [0, 1]
                stream.commit()
        with rxcs.open_oplog(url) as oplog:
            with rxcs.watch(oplog, "shop", "orders", consumer="billing").iterate() as stream:
                assert stream.next(timeout=5).full_document["_id"] == 2
            with rxcs.watch(oplog, "shop", "orders", group="ship", member="w1",
                            start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                assert sorted(stream.next(timeout=5).full_document["_id"] for _ in range(4)) == [0, 1, 2, 3]
            assert sorted(info.name for info in rxcs.list_consumers(oplog)) == ["billing", "ship"]
        with node_client(redis_cluster.owner(key_slot(name.encode()))) as client:
            assert client.hexists(f"{{{name}}}:consumers", "billing")


class TestCommandLine:
    def test_oplog_info_names_the_cluster(self, redis_cluster: LocalCluster) -> None:
        """rxcs oplog info on a redis+cluster:// URL: the range, and the address as redis+cluster://seeds."""
        name = fresh("cli")
        url = f"{redis_cluster.url}?stream={name}"
        with rxcs.open_oplog(url) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
        result = subprocess.run([sys.executable, "-m", "rxcs", "oplog", "info", url],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert (document["stream"], document["last_op_id"]) == (name, 1)
        assert document["address"].startswith("redis+cluster://127.0.0.1:")
