"""The shared tailer feeds each scoped stream only its namespace's entries, and loses nothing doing so."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import rxcs

from .conftest import eventually, take_slowly


def write_mixed(oplog: rxcs.Oplog, count: int, collections: int, seed: int = 3) -> list[tuple[str, str, int]]:
    """Inserts spread at random over shop.c0.. and other.c0..; returns (db, coll, _id) in order."""
    rng = random.Random(seed)
    written = []
    batch = []
    for i in range(count):
        db, coll = rng.choice(["shop", "other"]), f"c{rng.randrange(collections)}"
        batch.append(rxcs.Change.insert(db, coll, {"_id": i}))
        written.append((db, coll, i))
        if len(batch) == 97:
            oplog.append_many(batch)
            batch = []
    oplog.append_many(batch)
    return written


def slowly(stream: rxcs.ChangeStreamObservable[Any], count: int) -> list[Any]:
    """The documentKey _ids of ``count`` events, taken slowly enough that the stream's small buffer fills often."""
    got, statistics = take_slowly(stream, count)
    assert statistics.pauses > 5
    return [event.document_key["_id"] for event in got]


class TestScopedDispatch:
    def test_many_streams_each_get_exactly_their_namespace(self, oplog: rxcs.Oplog) -> None:
        """Collection, database and deployment streams on one tailer each see their events, in order."""
        scopes: list[tuple[str | None, str | None]] = [
            *[("shop", f"c{i}") for i in range(8)], ("shop", None), ("other", None), (None, None),
        ]
        got: dict[Any, list[int]] = {scope: [] for scope in scopes}
        subscriptions = [
            rxcs.watch(oplog, db, coll).subscribe(lambda e, scope=(db, coll): got[scope].append(e.document_key["_id"]))
            for db, coll in scopes
        ]
        written = write_mixed(oplog, 3000, 8)
        expected = {
            scope: [i for db, coll, i in written if scope[0] in (None, db) and scope[1] in (None, coll)]
            for scope in scopes
        }
        assert eventually(lambda: got == expected), {s: (len(got[s]), len(expected[s])) for s in scopes}
        for subscription in subscriptions:
            subscription.dispose()

    def test_a_dropped_database_ends_its_collection_streams(self, oplog: rxcs.Oplog) -> None:
        """dropDatabase, outside any collection, still reaches the collection streams of that database."""
        ends: list[list[str]] = [[], []]
        subscriptions = [
            rxcs.watch(oplog, "shop", coll).subscribe(
                lambda e, n=n: ends[n].append(str(e.operation_type)), on_completed=lambda n=n: ends[n].append("end")
            )
            for n, coll in enumerate(["users", "orders"])
        ]
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("other", "users", {"_id": 1})
        oplog.drop_database("shop")
        assert eventually(lambda: ends == [["insert", "drop", "invalidate", "end"], ["drop", "invalidate", "end"]])
        for subscription in subscriptions:
            subscription.dispose()

    def test_other_namespaces_count_as_filtered_out(self, oplog: rxcs.Oplog) -> None:
        """A scoped stream's statistics count the entries of other namespaces it read past."""
        with rxcs.watch(oplog, "shop", "c0").iterate() as stream:
            written = write_mixed(oplog, 500, 4)
            mine = [i for db, coll, i in written if (db, coll) == ("shop", "c0")]
            assert [stream.next(timeout=10).document_key["_id"] for _ in mine] == mine
            assert eventually(lambda: stream.statistics().filtered_out == 500 - len(mine))

    def test_a_scoped_stream_paused_again_and_again_loses_nothing(self, oplog: rxcs.Oplog) -> None:
        """A slow collection stream, its buffer full mid-batch over and over, gets all its events once."""
        written = write_mixed(oplog, 4000, 3)
        mine = [i for db, coll, i in written if (db, coll) == ("shop", "c1")]
        assert slowly(rxcs.watch(oplog, "shop", "c1", start_at_operation_time=rxcs.BEGINNING,
                                 buffer_size=7, batch_size=50), len(mine)) == mine


class TestSharedConversion:
    def test_streams_with_the_same_options_get_the_same_event_objects(self, oplog: rxcs.Oplog) -> None:
        """Two streams with equal options are given one event per entry, built once, equal to a lone stream's."""
        firsts: list[Any] = []
        seconds: list[Any] = []
        with_lookup: list[Any] = []
        subscriptions = [
            rxcs.watch(oplog, "shop").subscribe(firsts.append),
            rxcs.watch(oplog, "shop", pipeline=[{"$match": {"operationType": "insert"}}]).subscribe(seconds.append),
            rxcs.watch(oplog, "shop", lookup=lambda ns, key: None).subscribe(with_lookup.append),
        ]
        for i in range(300):
            oplog.insert("shop", "users", {"_id": i})
        oplog.update("shop", "users", 1, updated_fields={"a": 1})
        assert eventually(lambda: len(firsts) == 301 and len(seconds) == 300 and len(with_lookup) == 301)
        assert all(a is b for a, b in zip(firsts, seconds, strict=False))
        assert [e.id for e in with_lookup] == [e.id for e in firsts]
        assert not any(a is b for a, b in zip(firsts, with_lookup, strict=True))  # a lookup is never shared
        for subscription in subscriptions:
            subscription.dispose()

    def test_different_options_never_share(self, oplog: rxcs.Oplog) -> None:
        """A stream asking for post-images sees them; one with the default options, on the same tailer, does not."""
        plain: list[Any] = []
        images: list[Any] = []
        subscriptions = [
            rxcs.watch(oplog, "shop").subscribe(plain.append),
            rxcs.watch(oplog, "shop", full_document="whenAvailable").subscribe(images.append),
        ]
        oplog.update("shop", "users", 1, updated_fields={"a": 1}, full_document={"_id": 1, "a": 1})
        assert eventually(lambda: len(plain) == 1 and len(images) == 1)
        assert plain[0].full_document is None
        assert images[0].full_document == {"_id": 1, "a": 1}
        for subscription in subscriptions:
            subscription.dispose()


def write_orders(oplog: rxcs.Oplog, count: int) -> list[int]:
    """Inserts into shop.orders, a third of them paid, with updates and deletes among them; the paid _ids."""
    paid = []
    for first in range(0, count, 100):
        batch = []
        for i in range(first, min(count, first + 100)):
            status = ("new", "paid", "shipped")[i % 3]
            note = {"note": "unpaid"} if i % 4 == 0 else {}  # holds "paid"'s bytes: passes the sift, fails the filter
            batch.append(rxcs.Change.insert("shop", "orders", {"_id": i, "status": status, **note}))
            if status == "paid":
                paid.append(i)
            if i % 10 == 0:
                batch.append(rxcs.Change.update("shop", "orders", i, updated_fields={"status": "paid"}))
            if i % 25 == 0:
                batch.append(rxcs.Change.delete("shop", "orders", i))
        oplog.append_many(batch)
    return paid


PAID = [{"$match": {"fullDocument.status": "paid"}}]
# The same filter behind a stage that reads _id: no sift, no entry filter, whole event documents.
PAID_ON_EVENTS = [{"$match": {"_id": {"$exists": True}}}, *PAID]


class TestSiftedStreams:
    def test_a_sifted_stream_gives_what_a_full_evaluation_gives(self, oplog: rxcs.Oplog) -> None:
        """Entries left out undecoded are exactly ones the filter drops; the drop still ends the stream."""
        paid = write_orders(oplog, 2000)
        oplog.insert("shop", "orders", {"_id": "last", "status": "paid"})
        oplog.drop_collection("shop", "orders")
        results = []
        for pipeline in (PAID, PAID_ON_EVENTS, [{"$match": {"operationType": {"$in": ["drop", "invalidate"]}}}]):
            with rxcs.watch(oplog, "shop", "orders", pipeline, batch_size=64,
                            start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                results.append([(str(e.operation_type), e.document_key) for e in stream])
        assert results[0] == results[1]
        assert [key["_id"] for _, key in results[0]] == [*paid, "last"]
        assert results[2] == [("drop", None), ("invalidate", None)]

    def test_sifted_entries_count_as_filtered_out(self, oplog: rxcs.Oplog) -> None:
        """A stream's statistics count the entries its cursor passed over; its lag reaches zero."""
        total = oplog.last_op_id
        paid = write_orders(oplog, 600)
        total = oplog.last_op_id - total
        with rxcs.watch(oplog, "shop", "orders", PAID, batch_size=50,
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            assert [stream.next(timeout=10).document_key["_id"] for _ in paid] == paid
            assert eventually(lambda: stream.statistics().filtered_out == total - len(paid))
            assert stream.statistics().lag == 0
            oplog.insert("shop", "orders", {"_id": "late", "status": "paid"})
            assert stream.next(timeout=10).document_key == {"_id": "late"}

    def test_a_sifted_stream_paused_again_and_again_loses_nothing(self, oplog: rxcs.Oplog) -> None:
        """A slow sifted stream, its buffer full mid-batch over and over, gets all its events once, in order."""
        paid = write_orders(oplog, 3000)
        assert slowly(rxcs.watch(oplog, "shop", "orders", PAID, start_at_operation_time=rxcs.BEGINNING,
                                 buffer_size=7, batch_size=50), len(paid)) == paid

    def test_streams_that_do_not_sift_alike_share_a_cursor_and_lose_nothing(self, oplog: rxcs.Oplog) -> None:
        """Streams with and without a sift, on one tailer, each get their own events in full."""
        pipelines: list[list[dict[str, Any]] | None] = [
            PAID, PAID, None, [{"$match": {"fullDocument.status": "shipped"}}],
        ]
        got: list[list[Any]] = [[] for _ in pipelines]
        subscriptions = [
            rxcs.watch(oplog, "shop", "orders", pipeline).subscribe(lambda e, n=n: got[n].append(e.id))
            for n, pipeline in enumerate(pipelines)
        ]
        paid = write_orders(oplog, 1500)
        shipped = sum(1 for i in range(1500) if i % 3 == 2)
        assert eventually(lambda: [len(g) for g in got[:2]] == [len(paid)] * 2 and len(got[3]) == shipped)
        everything = oplog.last_op_id
        assert eventually(lambda: len(got[2]) == everything)
        assert got[0] == got[1]
        for subscription in subscriptions:
            subscription.dispose()

    def test_a_file_cursor_leaves_sifted_out_entries_undecoded(self, tmp_path: Path) -> None:
        """Catching up with a selective filter, a FileOplog reader decodes few more frames than it delivers."""
        with rxcs.open_oplog(tmp_path / "oplog") as writer:
            for first in range(0, 3000, 500):
                writer.append_many([
                    rxcs.Change.insert("shop", "orders", {"_id": i, "status": ("new", "paid")[i % 10 == 0]})
                    for i in range(first, first + 500)
                ])
        with rxcs.open_oplog(tmp_path / "oplog", readonly=True) as reader:
            with rxcs.watch(reader, "shop", "orders", PAID, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                assert [stream.next(timeout=10).document_key["_id"] for _ in range(300)] == list(range(0, 3000, 10))
            assert reader.statistics().frames_decoded < 400
            with rxcs.watch(reader, "shop", "orders", start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                assert len([stream.next(timeout=10) for _ in range(3000)]) == 3000
            assert reader.statistics().frames_decoded >= 3300
