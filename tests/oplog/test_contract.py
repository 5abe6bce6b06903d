"""The Oplog contract, held against every backend."""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

import rxcs
from rxcs.events import ClusterTime
from rxcs.limits import MAX_ENTRY_BYTES

from .conftest import OplogFactory


def inserts(n: int, start: int = 0) -> list[rxcs.Change]:
    return [rxcs.Change.insert("shop", "users", {"_id": i, "name": f"user{i}"}) for i in range(start, start + n)]


def nested(levels: int) -> dict[str, object]:
    """A document ``levels`` deep counting itself: ``nested(1)`` is ``{"s": 1}``, ``nested(2)`` ``{"s": {"s": 1}}``."""
    document: dict[str, object] = {"s": 1}
    for _ in range(levels - 1):
        document = {"s": document}
    return document


class TestAppend:
    def test_op_ids_start_at_one_and_are_contiguous(self, oplog_factory: OplogFactory) -> None:
        """op_ids are 1, 2, 3, ... across single appends and batches."""
        oplog = oplog_factory()
        assert oplog.first_op_id == 1
        assert oplog.last_op_id == 0
        assert oplog.insert("shop", "users", {"_id": 1}) == 1
        assert oplog.append_many(inserts(3)) == [2, 3, 4]
        assert oplog.append_many([]) == []
        assert [e.op_id for e in oplog.read(0, 100)] == [1, 2, 3, 4]
        assert (oplog.first_op_id, oplog.last_op_id) == (1, 4)

    def test_a_batch_with_a_bad_change_appends_nothing(self, oplog_factory: OplogFactory) -> None:
        """append_many is all or nothing: a value that cannot be stored rejects the whole batch."""
        oplog = oplog_factory()
        oplog.insert("shop", "users", {"_id": 0})
        bad = rxcs.Change.insert("shop", "users", {"_id": 9, "tags": {"a", "b"}})
        with pytest.raises(rxcs.InvalidChangeError, match="cannot be stored"):
            oplog.append_many([*inserts(2, start=1), bad])
        assert oplog.last_op_id == 1
        assert oplog.insert("shop", "users", {"_id": 1}) == 2

    def test_an_entry_over_the_size_limit_is_refused_and_appends_nothing(self, oplog_factory: OplogFactory) -> None:
        """A change whose entry would be over 64 MiB encoded is refused at append: no poison entry is acknowledged."""
        oplog = oplog_factory()
        oplog.insert("shop", "users", {"_id": 0})
        huge = rxcs.Change.insert("shop", "files", {"_id": 1, "blob": b"x" * MAX_ENTRY_BYTES})
        with pytest.raises(rxcs.InvalidChangeError, match=r"insert on shop\.files: the entry is \d+ bytes.*64 MiB"):
            oplog.append_many([*inserts(2, start=1), huge])
        assert oplog.last_op_id == 1
        assert oplog.insert("shop", "users", {"_id": 1}) == 2
        assert [e.op_id for e in oplog.read(0, 10)] == [1, 2]
        assert oplog.verify() == 2

    def test_an_entry_just_under_the_size_limit_is_recorded_and_read_back(self, oplog_factory: OplogFactory) -> None:
        """The limit refuses only what is over it: an entry of almost 64 MiB goes in and comes out whole."""
        oplog = oplog_factory()
        blob = b"y" * (MAX_ENTRY_BYTES - 1024)
        assert oplog.insert("shop", "files", {"_id": 1, "blob": blob}) == 1
        (entry,) = oplog.read(0, 10)
        assert entry.full_document == {"_id": 1, "blob": blob}
        assert oplog.verify() == 1

    def test_documents_nest_at_most_100_levels(self, oplog_factory: OplogFactory) -> None:
        """As in MongoDB, a document nests at most 100 levels: deeper is InvalidChangeError naming the path."""
        oplog = oplog_factory()
        deepest = nested(100)
        assert oplog.insert("shop", "users", {"_id": 1, **deepest}) == 1
        assert oplog.read(0, 1)[0].full_document == {"_id": 1, **deepest}
        for change in (
            lambda: rxcs.Change.insert("shop", "users", {"_id": 2, **nested(101)}),
            lambda: rxcs.Change.insert("shop", "users", {"_id": 2, **nested(5000)}),
            lambda: rxcs.Change.update("shop", "users", 1, updated_fields={"s" + ".s" * 99: {"s": 1}}),
            lambda: rxcs.Change.delete("shop", "users", 1, full_document_before_change=nested(101)),
        ):
            message = r"(document|updated_fields|before_change)\.s.*\.s: nested more than 100 levels deep"
            with pytest.raises(rxcs.InvalidChangeError, match=message):
                oplog.append(change())
        assert oplog.last_op_id == 1

    def test_every_entry_has_increasing_cluster_time_and_a_wall_time(self, oplog_factory: OplogFactory) -> None:
        """Cluster times strictly increase; wall times are aware UTC datetimes near now."""
        oplog = oplog_factory()
        oplog.append_many(inserts(50))
        entries = oplog.read(0, 100)
        times = [e.cluster_time for e in entries]
        assert all(a < b for a, b in itertools.pairwise(times))
        assert all(abs((e.wall_time - datetime.now(UTC)).total_seconds()) < 60 for e in entries)

    def test_documents_are_copied(self, oplog_factory: OplogFactory) -> None:
        """Mutating a document after appending it does not change what was recorded."""
        oplog = oplog_factory()
        document = {"_id": 1, "tags": ["a"]}
        oplog.insert("shop", "users", document)
        document["tags"].append("b")
        first = oplog.read(0, 1)[0]
        assert first.full_document == {"_id": 1, "tags": ["a"]}
        first.full_document["tags"].append("c")  # type: ignore[index]
        assert oplog.read(0, 1)[0].full_document == {"_id": 1, "tags": ["a"]}

    def test_producer_helpers_record_the_contract(self, oplog_factory: OplogFactory) -> None:
        """Each producer helper records its operation, namespace, key and images."""
        oplog = oplog_factory()
        oplog.create_collection("shop", "users")
        oplog.insert("shop", "users", {"_id": 1, "a": 1})
        oplog.update("shop", "users", {"_id": 1}, updated_fields={"a": 2}, removed_fields=["b"],
                     full_document={"_id": 1, "a": 2}, full_document_before_change={"_id": 1, "a": 1})
        oplog.replace("shop", "users", 1, {"_id": 1, "z": 1})
        oplog.delete("shop", "users", 1, full_document_before_change={"_id": 1, "z": 1})
        oplog.create_index("shop", "users", {"key": {"a": 1, "b": -1}})
        oplog.drop_index("shop", "users", "a_1_b_-1")
        oplog.rename_collection("shop", "users", "shop", "people")
        oplog.drop_collection("shop", "people")
        oplog.drop_database("shop")
        entries = oplog.read(0, 100)
        assert [e.op for e in entries] == [
            "create", "insert", "update", "replace", "delete", "createIndexes", "dropIndexes", "rename", "drop",
            "dropDatabase",
        ]
        update = entries[2]
        assert update.document_key == {"_id": 1}
        assert update.update_description == {"updatedFields": {"a": 2}, "removedFields": ["b"], "truncatedArrays": []}
        assert update.full_document == {"_id": 1, "a": 2}
        assert update.full_document_before_change == {"_id": 1, "a": 1}
        assert entries[5].operation_description == {"indexes": [{"key": {"a": 1, "b": -1}, "name": "a_1_b_-1"}]}
        assert entries[7].to == rxcs.Namespace("shop", "people")
        assert entries[9].coll is None

    def test_aware_datetimes_round_trip(self, oplog_factory: OplogFactory) -> None:
        """Dates inside documents come back as the same aware datetimes."""
        oplog = oplog_factory()
        when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        oplog.insert("shop", "users", {"_id": 1, "created": when, "raw": b"\x00\x01"})
        document = oplog.read(0, 1)[0].full_document
        assert document == {"_id": 1, "created": when, "raw": b"\x00\x01"}

    def test_decimals_uuids_dates_and_times_round_trip_as_themselves(self, oplog_factory: OplogFactory) -> None:
        """Decimal, UUID, date and time (aware or not) values come back as equal values of the same types."""
        oplog = oplog_factory()
        key = uuid.UUID("12345678-1234-5678-1234-567812345678")
        document = {
            "_id": key, "price": Decimal("19.990"), "nan": Decimal("NaN"), "big": Decimal("-1E+400"),
            "born": date(1815, 12, 10), "opens": time(9, 30), "closes": time(17, 0, 0, 5, tzinfo=timezone(
                timedelta(hours=-3, minutes=-30))),
            "nested": [{"when": date(1, 1, 1)}, Decimal("0.000")],
        }
        oplog.insert("shop", "items", document)
        oplog.update("shop", "items", key, updated_fields={"price": Decimal("1.5")},
                     full_document_before_change={"_id": key, "price": Decimal("19.990")})
        insert, update = oplog.read(0, 2)
        assert insert.document_key == {"_id": key}
        recorded = insert.full_document
        assert recorded is not None
        assert recorded["nan"].is_nan()
        assert {k: v for k, v in recorded.items() if k != "nan"} == {k: v for k, v in document.items() if k != "nan"}
        assert [type(recorded[k]) for k in ("_id", "price", "born", "opens", "closes")] == [
            uuid.UUID, Decimal, date, time, time]
        assert str(recorded["price"]) == "19.990"
        assert recorded["closes"].utcoffset() == timedelta(hours=-3, minutes=-30)
        assert update.update_description is not None
        assert update.update_description["updatedFields"] == {"price": Decimal("1.5")}
        assert oplog.verify() == 2

    def test_a_naive_datetime_is_still_refused(self, oplog_factory: OplogFactory) -> None:
        """Naive datetimes stay refused (rxcs records instants): InvalidChangeError, nothing appended."""
        oplog = oplog_factory()
        with pytest.raises(rxcs.InvalidChangeError, match="naive datetime"):
            oplog.insert("shop", "items", {"_id": 1, "at": datetime(2026, 1, 1)})
        assert oplog.last_op_id == 0

    def test_a_source_is_recorded_with_the_entry(self, oplog_factory: OplogFactory) -> None:
        """A change's source document is kept with its entry, beside records without one."""
        oplog = oplog_factory()
        change = rxcs.Change.insert("shop", "users", {"_id": 1}, txn=7).with_source({"capture": "pg", "lsn": 2**40})
        oplog.append_many([change, rxcs.Change.insert("shop", "users", {"_id": 2})])
        first, second = oplog.read(0, 2)
        assert first.source == {"capture": "pg", "lsn": 2**40}
        assert first.txn_number == 7
        assert first.change == change._replace(collection_uuid=first.collection_uuid)
        assert second.source is None


class TestRead:
    def test_cursor_reads_in_batches(self, oplog_factory: OplogFactory) -> None:
        """A cursor hands out entries batch by batch and then nothing, until more arrive."""
        oplog = oplog_factory()
        oplog.append_many(inserts(25))
        with oplog.cursor(after=3) as cursor:
            assert [e.op_id for e in cursor.read(10)] == list(range(4, 14))
            assert [e.op_id for e in cursor.read(100)] == list(range(14, 26))
            assert cursor.read(10) == []
            oplog.insert("shop", "users", {"_id": "late"})
            assert [e.op_id for e in cursor.read(10)] == [26]
            assert cursor.position == 26

    def test_op_id_at_finds_a_cluster_time(self, oplog_factory: OplogFactory) -> None:
        """op_id_at(t) is the op_id after which entries are at or after t."""
        oplog = oplog_factory()
        oplog.append_many(inserts(20))
        entries = oplog.read(0, 100)
        assert oplog.op_id_at(entries[7].cluster_time) == 7
        assert oplog.op_id_at(ClusterTime(0, 0)) == 0
        assert oplog.op_id_at(ClusterTime(2**40, 0)) == 20


class TestTrim:
    def test_trim_and_history_lost(self, oplog_factory: OplogFactory) -> None:
        """After a trim the oldest entries are gone; reading them is ChangeStreamHistoryLost."""
        oplog = oplog_factory(**({"segment_bytes": 4096} if oplog_factory.backend == "file" else {}))  # type: ignore[attr-defined]
        for start in range(0, 300, 30):
            oplog.append_many(inserts(30, start))
        dropped = oplog.trim(before_op_id=200)
        first = oplog.first_op_id
        assert dropped == first - 1
        assert 1 < first <= 200  # memory trims exactly, files whole segments
        if oplog_factory.backend == "memory":  # type: ignore[attr-defined]
            assert first == 200
        with pytest.raises(rxcs.ChangeStreamHistoryLost):
            oplog.cursor(after=0)
        assert oplog.read(first - 1, 1)[0].op_id == first
        assert oplog.last_op_id == 300
        assert oplog.insert("shop", "users", {"_id": "next"}) == 301

    def test_verify_checks_every_retained_entry(self, oplog_factory: OplogFactory) -> None:
        """verify() reads every retained entry, reporting progress, and returns how many it checked."""
        oplog = oplog_factory(**({"segment_bytes": 4096} if oplog_factory.backend == "file" else {}))  # type: ignore[attr-defined]
        assert oplog.verify() == 0
        for start in range(0, 300, 30):
            oplog.append_many(inserts(30, start))
        assert oplog.verify() == 300
        oplog.trim(before_op_id=200)
        seen: list[tuple[int, int]] = []
        assert oplog.verify(progress=lambda done, total: seen.append((done, total))) == 300 - oplog.first_op_id + 1
        assert seen
        assert seen[-1][0] == seen[-1][1]

    def test_trim_everything_keeps_op_ids_going(self, oplog_factory: OplogFactory) -> None:
        """Trimming past the end never reuses an op_id."""
        oplog = oplog_factory()
        oplog.append_many(inserts(5))
        oplog.trim(before_op_id=1000)
        assert oplog.insert("shop", "users", {"_id": "x"}) == 6


class TestWait:
    def test_wait_returns_at_once_when_there_is_more(self, oplog_factory: OplogFactory) -> None:
        """wait(after) is immediate when an entry after it exists."""
        oplog = oplog_factory()
        oplog.insert("shop", "users", {"_id": 1})
        assert oplog.wait(0, timeout=60) is True

    def test_wait_times_out(self, oplog_factory: OplogFactory) -> None:
        """wait() returns False when nothing is appended within the timeout."""
        oplog = oplog_factory()
        assert oplog.wait(0, timeout=0.05) is False

    def test_wait_wakes_on_append_from_another_thread(self, oplog_factory: OplogFactory) -> None:
        """A thread blocked in wait() with a long timeout returns True soon after an append."""
        oplog = oplog_factory()
        returned = threading.Event()
        result: list[bool] = []

        def waiter() -> None:
            result.append(oplog.wait(0, timeout=60))
            returned.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        assert not returned.wait(0.1)
        oplog.insert("shop", "users", {"_id": 1})
        assert returned.wait(10), "the append did not wake the waiter"
        thread.join()
        assert result == [True]

    @pytest.mark.parametrize("how", ["wake_waiters", "close"])
    def test_wait_returns_on_wake_and_close(self, oplog_factory: OplogFactory, how: str) -> None:
        """wake_waiters() and close() make a blocked wait() return promptly."""
        oplog = oplog_factory()
        returned = threading.Event()
        thread = threading.Thread(target=lambda: (oplog.wait(0, timeout=60), returned.set()))
        thread.start()
        assert not returned.wait(0.1)
        if how == "close":
            oplog.close()
            assert returned.wait(10)
        else:
            # A wake-up sent before the waiter is inside its wait may be missed: send until it returns.
            for _ in range(100):
                oplog.wake_waiters()
                if returned.wait(0.1):
                    break
            assert returned.is_set(), "wake_waiters() alone did not make wait() return"
        thread.join()


class TestLifecycle:
    def test_closed_oplog_refuses_work(self, oplog_factory: OplogFactory) -> None:
        """After close(), appends and cursors raise OplogClosedError; close() again is fine."""
        oplog = oplog_factory()
        oplog.close()
        oplog.close()
        assert oplog.closed
        with pytest.raises(rxcs.OplogClosedError):
            oplog.insert("shop", "users", {"_id": 1})
        with pytest.raises(rxcs.OplogClosedError):
            oplog.cursor(after=0)


def identity(oplog: rxcs.Oplog, op_id: int) -> uuid.UUID | None:
    """The collection UUID the entry at ``op_id`` recorded."""
    return oplog.read(op_id - 1, 1)[0].collection_uuid


class TestCollectionCatalog:
    def test_a_collection_gets_its_identity_at_create_and_keeps_it(self, oplog_factory: OplogFactory) -> None:
        """create gives a namespace a UUID; later changes to it record the same, other namespaces their own."""
        oplog = oplog_factory()
        created = oplog.create_collection("shop", "users")
        later = [oplog.insert("shop", "users", {"_id": 1}), oplog.update("shop", "users", 1, updated_fields={"a": 1}),
                 oplog.create_index("shop", "users", {"key": {"a": 1}}), oplog.delete("shop", "users", 1)]
        users = identity(oplog, created)
        assert isinstance(users, uuid.UUID)
        assert [identity(oplog, op_id) for op_id in later] == [users] * 4
        other = identity(oplog, oplog.insert("shop", "orders", {"_id": 1}))
        assert other is not None
        assert other != users
        assert identity(oplog, oplog.insert("other", "users", {"_id": 1})) not in (None, users, other)
        assert oplog.collections()[rxcs.Namespace("shop", "users")].uuid == users

    def test_the_first_write_to_an_unknown_namespace_gives_it_an_identity(self, oplog_factory: OplogFactory) -> None:
        """Without a create, the first change of a namespace gives it a UUID (a collection), kept by the next."""
        oplog = oplog_factory()
        first, second = oplog.append_many([
            rxcs.Change.insert("shop", "users", {"_id": 1}), rxcs.Change.insert("shop", "users", {"_id": 2}),
        ])
        assert identity(oplog, first) is not None
        assert identity(oplog, first) == identity(oplog, second)
        assert oplog.collections()[rxcs.Namespace("shop", "users")].kind == "collection"

    def test_a_collection_dropped_and_made_again_is_another_collection(self, oplog_factory: OplogFactory) -> None:
        """The drop records the old identity; a create or a write after it gets a new one."""
        oplog = oplog_factory()
        old = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        assert identity(oplog, oplog.drop_collection("shop", "users")) == old
        assert rxcs.Namespace("shop", "users") not in oplog.collections()
        again = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        assert again not in (None, old)
        created = identity(oplog, oplog.create_collection("shop", "users"))
        assert created not in (None, old, again)

    def test_a_rename_moves_the_identity_and_records_the_dropped_target(self, oplog_factory: OplogFactory) -> None:
        """A rename records the source's UUID, which the target then has; a target it replaces is recorded dropped."""
        oplog = oplog_factory()
        users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        people = identity(oplog, oplog.insert("shop", "people", {"_id": 1}))
        renamed = oplog.rename_collection("shop", "users", "shop", "people", drop_target=True)
        (entry,) = oplog.read(renamed - 1, 1)
        assert (entry.collection_uuid, entry.dropped) == (users, people)
        assert identity(oplog, oplog.insert("shop", "people", {"_id": 2})) == users
        assert rxcs.Namespace("shop", "users") not in oplog.collections()
        plain = oplog.read(oplog.rename_collection("shop", "people", "archive", "people") - 1, 1)[0]
        assert (plain.collection_uuid, plain.dropped) == (users, None)

    def test_a_rename_dropping_a_target_it_never_saw_records_an_identity_for_it(
        self, oplog_factory: OplogFactory
    ) -> None:
        """drop_target=True onto a namespace the catalog does not hold: the dropped collection gets its own UUID."""
        oplog = oplog_factory()
        users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        entry = oplog.read(oplog.rename_collection("shop", "users", "shop", "people", drop_target=True) - 1, 1)[0]
        assert isinstance(entry.dropped, uuid.UUID)
        assert entry.dropped != users

    def test_a_dropped_database_records_its_collections_and_forgets_them(self, oplog_factory: OplogFactory) -> None:
        """dropDatabase records the UUID of each of its collections by name; other databases keep theirs."""
        oplog = oplog_factory()
        users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        orders = identity(oplog, oplog.create_collection("shop", "orders"))
        kept = identity(oplog, oplog.insert("other", "users", {"_id": 1}))
        entry = oplog.read(oplog.drop_database("shop") - 1, 1)[0]
        assert (entry.collection_uuid, entry.dropped) == (None, {"users": users, "orders": orders})
        assert list(oplog.collections()) == [rxcs.Namespace("other", "users")]
        assert identity(oplog, oplog.insert("other", "users", {"_id": 2})) == kept
        assert identity(oplog, oplog.insert("shop", "users", {"_id": 2})) not in (None, users)
        assert oplog.read(oplog.drop_database("empty") - 1, 1)[0].dropped is None

    def test_a_dropped_index_records_the_key_it_was_created_with(self, oplog_factory: OplogFactory) -> None:
        """dropIndexes records the {v, key} of the index of that name, kept through a rename; an unknown one, None."""
        oplog = oplog_factory()
        oplog.create_index("shop", "users", {"key": {"email": 1, "at": -1}, "unique": True})
        oplog.create_index("shop", "users", {"key": {"a": "text"}, "name": "search", "v": 1})
        oplog.rename_collection("shop", "users", "shop", "people")
        assert oplog.collections()[rxcs.Namespace("shop", "people")].indexes == {
            "email_1_at_-1": {"v": 2, "key": {"email": 1, "at": -1}}, "search": {"v": 1, "key": {"a": "text"}},
        }
        dropped = oplog.read(oplog.drop_index("shop", "people", "search") - 1, 1)[0].dropped
        assert dropped == {"v": 1, "key": {"a": "text"}}
        assert list(dropped["key"]) == ["a"]
        assert oplog.read(oplog.drop_index("shop", "people", "search") - 1, 1)[0].dropped is None
        oplog.drop_collection("shop", "people")
        assert oplog.read(oplog.drop_index("shop", "people", "email_1_at_-1") - 1, 1)[0].dropped is None

    def test_kinds_follow_the_create_options(self, oplog_factory: OplogFactory) -> None:
        """A create with viewOn makes a view, with timeseries a time series; otherwise a collection."""
        oplog = oplog_factory()
        oplog.create_collection("shop", "users")
        oplog.create_collection("shop", "active", {"viewOn": "users", "pipeline": [{"$match": {"active": True}}]})
        oplog.create_collection("shop", "weather", {"timeseries": {"timeField": "at"}})
        kinds = {str(ns): info.kind for ns, info in oplog.collections().items()}
        assert kinds == {"shop.active": "view", "shop.users": "collection", "shop.weather": "timeseries"}

    def test_a_failed_batch_leaves_the_catalog_as_it_was(self, oplog_factory: OplogFactory) -> None:
        """A batch refused for a bad change appends nothing and changes no identity, even a drop before the bad one."""
        oplog = oplog_factory()
        users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        bad = rxcs.Change.insert("shop", "users", {"_id": 2, "tags": {"a"}})
        with pytest.raises(rxcs.InvalidChangeError):
            oplog.append_many([rxcs.Change.drop_collection("shop", "users"), rxcs.Change.create_collection("shop", "x"),
                               bad])
        assert list(oplog.collections()) == [rxcs.Namespace("shop", "users")]
        assert identity(oplog, oplog.insert("shop", "users", {"_id": 3})) == users

    def test_identities_survive_reopening_and_trimming(self, oplog_factory: OplogFactory) -> None:
        """A collection last changed before a trim, then the oplog reopened, keeps its identity at its next change."""
        small = {"segment_bytes": 4096} if oplog_factory.backend == "file" else {}  # type: ignore[attr-defined]
        oplog = oplog_factory(**small)
        users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        oplog.create_index("shop", "users", {"key": {"a": 1}})
        for start in range(0, 300, 30):
            oplog.append_many([rxcs.Change.insert("shop", "orders", {"_id": i, "pad": "x" * 50})
                               for i in range(start, start + 30)])
        oplog.trim(before_op_id=250)
        assert oplog.first_op_id > 2
        if oplog_factory.backend != "memory":  # type: ignore[attr-defined]
            oplog.close()
            oplog = oplog_factory(**small)
        assert identity(oplog, oplog.insert("shop", "users", {"_id": 2})) == users
        assert oplog.read(oplog.drop_index("shop", "users", "a_1") - 1, 1)[0].dropped == {"v": 2, "key": {"a": 1}}
