"""Fixtures for named consumers and groups: oplogs of every backend, by location so other processes can open them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_server import redis_server  # noqa: F401 - the session's Redis server
from support import BACKENDS, assert_no_rxcs_threads, backend_location, memory_oplog  # noqa: F401 - shared

import rxcs


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh oplog of each backend is: ``:memory:``, a directory, a Redis URL with a stream of its own."""
    return backend_location(request, tmp_path)


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


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test leaves no rxcs thread running (tailers, commit writers) once its streams and oplogs are closed."""
    yield
    assert_no_rxcs_threads()
