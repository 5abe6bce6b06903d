"""A real PostgreSQL server for the capture tests (one per session), a fresh database per test.

Without PostgreSQL's server binaries or psycopg2 the PostgreSQL tests are
skipped, saying why, except under CI=true, where they fail: CI installs the
server (.ci/run), so its absence there is a broken setup.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pg_server import PostgresServer, unavailable_reason

import rxcs


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15+ server with wal_level=logical, run as an unprivileged user when we are root."""
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    server = PostgresServer(settings={"fsync": "off", "full_page_writes": "off"})
    server.start()
    yield server
    server.stop()


@dataclass
class Database:
    """A database of its own on the shared server, and a slot name no other test uses."""

    server: PostgresServer
    name: str
    slot: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        return self.server.execute(sql, self.name)

    def connect(self) -> Any:
        import psycopg2

        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        return connection

    def capture(self, oplog: rxcs.Oplog, **options: Any) -> Any:
        """A capture of this database into ``oplog`` on this test's slot (not started)."""
        options.setdefault("slot", self.slot)
        options.setdefault("start_timeout", 10.0)
        return rxcs.capture.postgres(self.dsn, oplog, **options)

    @contextlib.contextmanager
    def streaming(self, oplog: rxcs.Oplog, **options: Any) -> Iterator[Any]:
        """A capture started and past its snapshot (what is written now is streamed); stopped on exit."""
        capture = self.capture(oplog, **options).start()
        try:
            wait_for(lambda: capture.failed or capture.statistics().phase == "streaming", 60, "the capture to stream")
            yield capture
        finally:
            capture.stop()


@pytest.fixture
def database(pg_server: PostgresServer) -> Iterator[Database]:
    """A fresh database; its slots are dropped afterwards (a slot left behind would hold WAL)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.execute(f"CREATE DATABASE {name}")
    database = Database(pg_server, name, f"s_{name}")
    yield database
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            for (slot,) in pg_server.execute(f"SELECT slot_name FROM pg_replication_slots WHERE database = '{name}'"):
                pg_server.execute(f"SELECT pg_drop_replication_slot('{slot}')")
            pg_server.execute(f"DROP DATABASE {name} WITH (FORCE)")
            break
        except Exception:
            time.sleep(0.2)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def entries(oplog: rxcs.Oplog) -> list[rxcs.OplogEntry]:
    """Every retained entry of ``oplog``."""
    return oplog.read(oplog.first_op_id - 1, 10**9)


def wait_for_entries(oplog: rxcs.Oplog, count: int, timeout: float = 30.0) -> list[rxcs.OplogEntry]:
    """Wait until the oplog holds at least ``count`` entries, and return them all."""
    wait_for(lambda: oplog.last_op_id >= count, timeout, f"{count} entries (have {oplog.last_op_id})")
    return entries(oplog)


def replay(recorded: list[rxcs.OplogEntry]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """The state the entries replay to: (db, coll, key) -> document, as a mirror applying them would hold."""
    from rxcs.capture._mapping import hashable

    state: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for entry in recorded:
        if entry.op == "drop":
            for where in [w for w in state if w[:2] == (entry.db, entry.coll)]:
                del state[where]
            continue
        assert entry.document_key is not None
        where = (entry.db, entry.coll or "", hashable(entry.document_key["_id"]))
        if entry.op in ("insert", "replace"):
            assert entry.full_document is not None
            state[where] = dict(entry.full_document)
        elif entry.op == "update":
            assert entry.update_description is not None
            state[where] = {**state[where], **entry.update_description["updatedFields"]}
            for field in entry.update_description["removedFields"]:
                state[where].pop(field, None)
        elif entry.op == "delete":
            del state[where]
    return state


@pytest.fixture
def file_oplog(tmp_path: Path) -> Iterator[rxcs.Oplog]:
    """A FileOplog in the test's directory."""
    oplog = rxcs.open_oplog(tmp_path / "oplog")
    yield oplog
    oplog.close()
