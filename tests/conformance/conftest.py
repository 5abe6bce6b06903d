"""Fixtures for MongoDB's change-stream tests: a fresh oplog of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import redis_server, redis_server_available  # noqa: F401 - the session's Redis server

import rxcs

BACKENDS = ["memory", "file", *(["redis"] if redis_server_available() else [])]


@pytest.fixture(params=BACKENDS)
def oplog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rxcs.Oplog]:
    """A fresh oplog of each backend: a ported case holds every one of them to MongoDB's behaviour."""
    if request.param == "memory":
        location = ":memory:"
    elif request.param == "redis":  # a fresh stream per test on the session's server
        location = f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
    else:
        location = str(tmp_path / "oplog")
    with rxcs.open_oplog(location) as opened:
        yield opened


@pytest.fixture
def memory_oplog() -> Iterator[rxcs.Oplog]:
    """A fresh in-memory oplog, for tests of the runner rather than of storage."""
    with rxcs.open_oplog(":memory:") as opened:
        yield opened
