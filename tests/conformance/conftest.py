"""Fixtures for MongoDB's change-stream tests: a fresh oplog of each backend, no thread left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import redis_server  # noqa: F401 - the session's Redis server
from support import assert_no_rxcs_threads, memory_oplog, oplog  # noqa: F401 - shared fixtures


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A ported case leaves no rxcs thread running once its streams and oplog are closed."""
    yield
    assert_no_rxcs_threads()
