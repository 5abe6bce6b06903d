"""Fixtures for named consumers and groups: oplogs of every backend, by location so other processes can open them."""

from __future__ import annotations

import threading
import time
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


@pytest.fixture
def memory_oplog() -> Iterator[rxcs.Oplog]:
    """A fresh MemoryOplog, closed after the test."""
    with rxcs.MemoryOplog() as opened:
        yield opened


def _rxcs_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("rxcs-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test leaves no rxcs thread running (tailers, commit writers) once its streams and oplogs are closed."""
    yield
    deadline = time.monotonic() + 5
    while _rxcs_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _rxcs_threads(), f"threads left running: {_rxcs_threads()}"
