"""Fixtures for the HTTP tests: an oplog, and real servers for it that are stopped and checked afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rxcs
from rxcs.http import create_app

from .helpers import Served, running


@pytest.fixture
def oplog() -> Iterator[rxcs.Oplog]:
    with rxcs.open_oplog(":memory:") as opened:
        yield opened


@pytest.fixture
def serve(oplog: rxcs.Oplog) -> Iterator[Callable[..., Served]]:
    """Start a server for ``oplog`` with ``create_app`` options; every server is stopped afterwards."""
    with_threads = set(threading.enumerate())
    stack: list[Any] = []

    def start(send_buffer: int | None = None, **options: Any) -> Served:
        options.setdefault("heartbeat", 5.0)
        manager = running(create_app(oplog, **options), send_buffer=send_buffer)
        served = manager.__enter__()
        stack.append(manager)
        return served

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t for t in threading.enumerate() if t not in with_threads and not t.daemon}
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"threads left behind: {left}"


