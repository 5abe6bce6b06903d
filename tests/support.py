"""What the test folders share: the backends, a fresh oplog of each, waiting for a condition, rxcs's threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_server import redis_server_available

import rxcs

BACKENDS = ["memory", "file", *(["redis"] if redis_server_available() else [])]


def backend_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh oplog of the backend ``request.param`` is: ``:memory:``, a directory, a Redis stream of its own
    on the session's server (the ``redis_server`` fixture)."""
    if request.param == "memory":
        return ":memory:"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
    return str(tmp_path / "oplog")


@pytest.fixture(params=BACKENDS)
def oplog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rxcs.Oplog]:
    """A fresh oplog of each backend, closed after the test: every test using it holds all of them to one behaviour."""
    with rxcs.open_oplog(backend_location(request, tmp_path)) as opened:
        yield opened


@pytest.fixture
def memory_oplog() -> Iterator[rxcs.Oplog]:
    """A fresh in-memory oplog, for tests about streams rather than storage."""
    with rxcs.open_oplog(":memory:") as opened:
        yield opened


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def rxcs_threads(prefixes: tuple[str, ...] = ("rxcs-",)) -> list[threading.Thread]:
    """Threads rxcs started (tailers, buffer drains, group-commit flushers, commit writers) still alive."""
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefixes)]


def assert_no_rxcs_threads(timeout: float = 5.0) -> None:
    """No rxcs thread is left running, waiting ``timeout`` for those stopping (a conftest calls it after each test)."""
    assert eventually(lambda: not rxcs_threads(), timeout), f"threads left running: {rxcs_threads()}"
