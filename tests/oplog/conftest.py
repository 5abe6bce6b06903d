"""The backend fixture: one contract, every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_cluster import redis_cluster  # noqa: F401 - the session's Redis Cluster, for the "redis-cluster" backend
from redis_sentinel import replicated_redis  # noqa: F401 - a primary, replicas and Sentinels, per test
from redis_server import redis_server  # noqa: F401 - the session's Redis server, for the "redis" backend

import rxcs

OplogFactory = Callable[..., rxcs.Oplog]


@pytest.fixture(params=["memory", "file", "redis", "redis-cluster"])
def oplog_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OplogFactory]:
    """Make oplogs of one backend; calling it again reopens the same oplog (where the backend can)."""
    opened: list[rxcs.Oplog] = []
    memory: dict[str, rxcs.Oplog] = {}

    def make(**options: Any) -> rxcs.Oplog:
        if request.param == "memory":
            if "memory" not in memory:
                memory["memory"] = rxcs.open_oplog(":memory:", **options)
            return memory["memory"]
        if request.param in ("redis", "redis-cluster"):  # a fresh stream per test on the shared server or cluster
            where = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster").url
            oplog = rxcs.open_oplog(f"{where}?stream={tmp_path.name}", **options)
            opened.append(oplog)
            return oplog
        oplog = rxcs.open_oplog(tmp_path / "oplog", **options)
        opened.append(oplog)
        return oplog

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for oplog in [*opened, *memory.values()]:
        oplog.close()
