"""Fixtures for the reactive core: oplogs of every backend, thread accounting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import support
from redis_server import redis_server  # noqa: F401 - the session's Redis server
from support import BACKENDS, assert_no_rxcs_threads, eventually, memory_oplog, oplog  # noqa: F401 - shared

import rxcs


def stream_threads() -> list[threading.Thread]:
    """Threads that change streams started (tailers, buffer drains) and that are still alive."""
    return support.rxcs_threads(("rxcs-tailer", "rxcs-buffer"))


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test of the core must leave no rxcs thread running once its oplog is closed."""
    yield
    assert_no_rxcs_threads()


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
