"""SQLite capture on real database files: the trigger outbox, values, operations, snapshot, exactly once."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import rxcs
from rxcs.capture._sqlite import OUTBOX

from .conftest import entries, wait_for, wait_for_entries


@pytest.fixture
def app(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The application's connection to shop.db, in WAL mode, with two tables."""
    connection = sqlite3.connect(tmp_path / "shop.db", isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, n)")
    connection.execute("CREATE TABLE pairs (a INT, b TEXT, v, PRIMARY KEY (b, a)) WITHOUT ROWID")
    yield connection
    connection.close()


def capture_of(tmp_path: Path, oplog: rxcs.Oplog, **options: Any) -> Any:
    options.setdefault("poll_interval", 0.005)
    return rxcs.capture.sqlite(tmp_path / "shop.db", oplog, **options)


@contextlib.contextmanager
def running(tmp_path: Path, oplog: rxcs.Oplog, **options: Any) -> Iterator[Any]:
    """A capture started, its triggers installed (what is written now is captured); stopped on exit."""
    capture = capture_of(tmp_path, oplog, **options).start()
    try:
        wait_for(lambda: capture.failed or capture.statistics().running, 10, "the capture to run")
        yield capture
    finally:
        capture.stop()


def outbox_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        count: int = connection.execute(f"SELECT count(*) FROM {OUTBOX}").fetchone()[0]
        return count


class TestValues:
    def test_storage_classes_round_trip_exactly(self, app: sqlite3.Connection, tmp_path: Path) -> None:
        """Property: any int64, any double (infinities too), text, blob or NULL comes back equal, type for type
        (a negative zero as zero)."""
        oplog = rxcs.MemoryOplog()
        counter = itertools.count(1)
        values = st.one_of(
            st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
            st.text(st.characters(blacklist_categories=("Cs",))), st.binary(max_size=30),
        )

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(values, st.floats(allow_nan=False), st.binary(max_size=10), st.text())
        def check(anything: Any, price: float, data: bytes, name: str) -> None:
            key = next(counter)
            app.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)", (key, name, price, data, anything))
            document = wait_for_entries(oplog, key, 10)[-1].full_document
            assert document == {"_id": key, "id": key, "name": name, "price": price, "data": data, "n": anything}
            assert type(document["n"]) is type(anything)
            if price != 0:  # SQLite's printf writes -0.0 as 0.0: the sign of zero is the one thing not kept
                assert math.copysign(1, document["price"]) == math.copysign(1, price)

        with running(tmp_path, oplog):
            check()


class TestOperations:
    def test_insert_update_delete_with_images_and_composite_keys(self, app: sqlite3.Connection, tmp_path: Path) -> None:
        """Updates carry updatedFields and both images (the trigger sees OLD and NEW); deletes their pre-image;
        a composite key is a document of its columns in key order."""
        oplog = rxcs.MemoryOplog()
        with running(tmp_path, oplog):
            app.execute("INSERT INTO items (id, name, price) VALUES (1, 'pen', 1.5)")
            app.execute("UPDATE items SET price = 2.5, n = 'x' WHERE id = 1")
            app.execute("DELETE FROM items WHERE id = 1")
            app.execute("INSERT INTO pairs VALUES (7, 'k', NULL)")
            insert, update, delete, pair = wait_for_entries(oplog, 4)
        before = {"_id": 1, "id": 1, "name": "pen", "price": 1.5, "data": None, "n": None}
        after = {**before, "price": 2.5, "n": "x"}
        assert insert.full_document == before
        assert update.update_description == {
            "updatedFields": {"price": 2.5, "n": "x"}, "removedFields": [], "truncatedArrays": []}
        assert (update.full_document, update.full_document_before_change) == (after, before)
        assert (delete.op, delete.document_key, delete.full_document_before_change) == ("delete", {"_id": 1}, after)
        assert pair.document_key == {"_id": {"b": "k", "a": 7}}
        assert (pair.db, pair.coll) == ("shop", "pairs")

    def test_a_changed_key_is_a_delete_and_an_insert(self, app: sqlite3.Connection, tmp_path: Path) -> None:
        """UPDATE of the primary key: the old document's delete, then the new one's insert."""
        oplog = rxcs.MemoryOplog()
        with running(tmp_path, oplog):
            app.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
            app.execute("UPDATE items SET id = 2 WHERE id = 1")
            _, delete, insert = wait_for_entries(oplog, 3)
        assert (delete.op, delete.document_key) == ("delete", {"_id": 1})
        assert (insert.op, insert.document_key) == ("insert", {"_id": 2})

    def test_transactions_arrive_whole_in_commit_order_and_rollbacks_never(
        self, app: sqlite3.Connection, tmp_path: Path
    ) -> None:
        """Two connections commit multi-row transactions and roll some back: the committed rows arrive in commit
        order, each transaction's rows together, and nothing rolled back appears; the outbox is emptied."""
        other = sqlite3.connect(tmp_path / "shop.db", isolation_level=None, check_same_thread=False)
        other.execute("PRAGMA busy_timeout = 5000")
        oplog = rxcs.MemoryOplog()
        order: list[list[int]] = []
        guard = threading.Lock()

        def write(connection: sqlite3.Connection, start: int) -> None:
            for txn in range(30):
                keys = [start + txn * 10 + row for row in range(1 + txn % 4)]
                connection.execute("BEGIN IMMEDIATE")
                for key in keys:
                    connection.execute("INSERT INTO items (id, name) VALUES (?, 'x')", (key,))
                if txn % 6 == 5:
                    connection.execute("ROLLBACK")
                    continue
                with guard:  # the commit and its place in the order, under one lock
                    connection.execute("COMMIT")
                    order.append(keys)

        with running(tmp_path, oplog):
            writers = [threading.Thread(target=write, args=(c, s)) for c, s in ((app, 0), (other, 100_000))]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
            expected = [key for keys in order for key in keys]
            recorded = wait_for_entries(oplog, len(expected))
        other.close()
        assert [entry.document_key for entry in recorded] == [{"_id": key} for key in expected]
        assert outbox_rows(tmp_path) == 0
        assert all(entry.txn_number is None for entry in recorded)  # SQLite tells triggers no transaction id


class TestSnapshotAndSchema:
    def test_existing_rows_are_recorded_once_when_the_triggers_are_installed(
        self, app: sqlite3.Connection, tmp_path: Path
    ) -> None:
        """The first run records existing rows as inserts (in one transaction with its triggers); no later run again."""
        app.executemany("INSERT INTO items (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 101)])
        oplog = rxcs.MemoryOplog()
        with running(tmp_path, oplog):
            wait_for_entries(oplog, 100)
        with running(tmp_path, oplog):
            app.execute("INSERT INTO items (id, name) VALUES (101, 'new')")
            recorded = wait_for_entries(oplog, 101)
            time.sleep(0.1)
        assert [entry.document_key for entry in entries(oplog)] == [{"_id": i} for i in range(1, 102)]
        assert len(recorded) == 101

    def test_a_column_added_later_is_in_the_events_after_it(self, app: sqlite3.Connection, tmp_path: Path) -> None:
        """ALTER TABLE ADD COLUMN while the capture runs: it rewrites its triggers, and later rows carry the column."""
        oplog = rxcs.MemoryOplog()
        with running(tmp_path, oplog):
            app.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
            wait_for_entries(oplog, 1)
            app.execute("ALTER TABLE items ADD COLUMN colour TEXT")
            wait_for(lambda: "colour" in (app.execute(
                "SELECT sql FROM sqlite_master WHERE name = '_rxcs_items_insert'").fetchone() or ("",))[0], 10,
                "the triggers to be rewritten")
            app.execute("INSERT INTO items (id, name, colour) VALUES (2, 'b', 'red')")
            recorded = wait_for_entries(oplog, 2)
        assert recorded[1].full_document is not None
        assert recorded[1].full_document["colour"] == "red"

    def test_tables_without_a_key_are_left_out_by_default_and_refused_by_name(
        self, app: sqlite3.Connection, tmp_path: Path
    ) -> None:
        """A keyless table is skipped (with a warning) when all tables are captured, an error when named."""
        app.execute("CREATE TABLE log (line TEXT)")
        oplog = rxcs.MemoryOplog()
        with running(tmp_path, oplog):
            app.execute("INSERT INTO log VALUES ('x')")
            app.execute("INSERT INTO items (id) VALUES (1)")
            assert [e.coll for e in wait_for_entries(oplog, 1)] == ["items"]
        with pytest.raises(rxcs.CaptureError, match="table log has no primary key"):
            capture_of(tmp_path, oplog, tables=["log"]).run()

    def test_a_second_capture_of_the_file_is_refused_naming_the_first(
        self, app: sqlite3.Connection, tmp_path: Path
    ) -> None:
        """One capture per database file: a second one fails at once, naming the first one's pid."""
        with running(tmp_path, rxcs.MemoryOplog()):
            with pytest.raises(rxcs.CaptureError, match=r"another capture is running on it \(pid \d+\)"):
                capture_of(tmp_path, rxcs.MemoryOplog()).run()


def sqlite_capture_process(tmp_path: Path) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "capture.log", "ab")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen(
        [sys.executable, "-m", "rxcs", "--log-level", "info", "capture", "sqlite", str(tmp_path / "shop.db"),
         "--oplog", str(tmp_path / "oplog")],
        stdout=log, stderr=log,
    )
    log.close()
    return process


class TestKilledCapture:
    def test_killed_10_times_while_rows_are_written_each_row_is_recorded_once_in_order(
        self, app: sqlite3.Connection, tmp_path: Path
    ) -> None:
        """SIGKILL at random moments (seeded) while 3,000 rows are written: every committed row exactly once, in
        commit order, nothing rolled back; the outbox ends empty."""
        rng = random.Random(7)
        committed: list[int] = []
        stop = threading.Event()

        def write() -> None:
            key = 0
            while not stop.is_set() and key < 3000:
                size = rng.randint(1, 20)
                app.execute("BEGIN IMMEDIATE")
                rows = list(range(key, min(3000, key + size)))
                app.executemany("INSERT INTO items (id, name, price) VALUES (?, 'x', ?)", [(k, k / 3) for k in rows])
                if rng.random() < 0.1:
                    app.execute("ROLLBACK")
                    continue
                app.execute("COMMIT")
                committed.extend(rows)
                key += len(rows)
                time.sleep(rng.uniform(0, 0.04))  # the writes go on through the kills

        writer = threading.Thread(target=write)
        process = sqlite_capture_process(tmp_path)
        time.sleep(0.5)
        writer.start()
        for _ in range(10):
            time.sleep(rng.uniform(0.05, 0.6))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            offset = (tmp_path / "capture.log").stat().st_size
            process = sqlite_capture_process(tmp_path)
        writer.join()
        wait_for(lambda: "capture started" in (tmp_path / "capture.log").read_text()[offset:], 60, "the last run")
        wait_for(lambda: outbox_rows(tmp_path) == 0, 60, "the outbox to empty")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        with rxcs.open_oplog(tmp_path / "oplog", readonly=True) as oplog:
            recorded = entries(oplog)
        assert [entry.document_key["_id"] for entry in recorded if entry.document_key] == committed
        assert len(recorded) == len(committed)
        outbox_ids = [entry.source["outbox"] for entry in recorded if entry.source]
        assert outbox_ids == sorted(outbox_ids)
