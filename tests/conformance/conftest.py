"""Fixtures for MongoDB's change-stream tests: a fresh oplog of each backend."""

from __future__ import annotations

import threading
import time
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


def rxcs_threads() -> list[threading.Thread]:
    """Threads rxcs started (tailers, buffer drains, a group-commit flusher) that are still alive."""
    return [thread for thread in threading.enumerate() if thread.name.startswith("rxcs-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A ported case leaves no rxcs thread running once its streams and oplog are closed."""
    yield
    deadline = time.monotonic() + 5
    while rxcs_threads() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not rxcs_threads(), f"threads left running: {rxcs_threads()}"
