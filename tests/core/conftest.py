"""Fixtures for the reactive core: oplogs of every backend, thread accounting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import redis_server, redis_server_available  # noqa: F401 - the session's Redis server

import rxcs


def _file_oplog_available() -> bool:
    try:
        import rxcs.oplog.file  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = [
    "memory",
    *(["file"] if _file_oplog_available() else []),
    *(["redis"] if redis_server_available() else []),
]


@pytest.fixture(params=BACKENDS)
def oplog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rxcs.Oplog]:
    """A fresh oplog of each backend: every stream test holds all of them to one behaviour."""
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
    """A fresh in-memory oplog, for tests about the stream rather than storage."""
    with rxcs.open_oplog(":memory:") as opened:
        yield opened


def rxcs_threads() -> list[threading.Thread]:
    """Threads that change streams started (tailers, buffer drains) and that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith(("rxcs-tailer", "rxcs-buffer"))]


def all_rxcs_threads() -> list[threading.Thread]:
    """Every thread rxcs started, the oplog's own (a group-commit flusher) included."""
    return [t for t in threading.enumerate() if t.name.startswith("rxcs-")]


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test of the core must leave no rxcs thread running once its oplog is closed."""
    yield
    assert eventually(lambda: not all_rxcs_threads(), 5.0), f"threads left running: {all_rxcs_threads()}"


def take_slowly(
    observable: rxcs.ChangeStreamObservable[Any], count: int, *, every: int = 50, pause: float = 0.002
) -> tuple[list[Any], rxcs.StreamStatistics]:
    """``count`` events of a stream fed by the tailer into its buffer (``aiterate()``), taken slowly enough
    (a pause every ``every`` events) that the buffer fills again and again; with the stream's statistics."""

    async def run() -> tuple[list[Any], rxcs.StreamStatistics]:
        got: list[Any] = []
        async with observable.aiterate() as events:
            async for event in events:
                got.append(event)
                if len(got) % every == 0:
                    await asyncio.sleep(pause)
                if len(got) == count:
                    break
            return got, events.statistics()

    return asyncio.run(run())
