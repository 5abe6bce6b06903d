"""Fixtures for named consumers and groups: oplogs of every backend, by location so other processes can open them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_server import redis_server, redis_server_available  # noqa: F401 - the session's Redis server

import rxcs

BACKENDS = ["memory", "file", *(["redis"] if redis_server_available() else [])]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh oplog of each backend is: ``:memory:``, a directory, a Redis URL with a stream of its own."""
    if request.param == "memory":
        return ":memory:"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
    return str(tmp_path / "oplog")


@pytest.fixture
def oplog(location: str) -> Iterator[rxcs.Oplog]:
    """A fresh oplog of each backend."""
    with rxcs.open_oplog(location) as opened:
        yield opened


@pytest.fixture
def reopen(location: str, oplog: rxcs.Oplog) -> Callable[[], rxcs.Oplog]:
    """Open the same oplog again, as a restarted process would (a MemoryOplog is only itself)."""
    if location == ":memory:":
        return lambda: oplog
    return lambda: rxcs.open_oplog(location)
