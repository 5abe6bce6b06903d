"""Document images and expanded events end to end: producer helpers → oplog → watch() → consumer.

Every test runs on each backend (MemoryOplog, a FileOplog in tmp_path, and a
RedisOplog on the session's server) with the stream's real tailer thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rxcs
from rxcs.events import OperationType as Op

from .conftest import BACKENDS


def drain(stream: rxcs.ChangeStream, n: int) -> list[Any]:
    """The next n events, each waited for with a generous timeout."""
    return [stream.next(timeout=10) for _ in range(n)]


def produce(oplog: rxcs.Oplog) -> None:
    """One of each document change, with images recorded for some of them only."""
    oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
    oplog.update("shop", "users", 1, updated_fields={"name": "Ada L."},
                 full_document={"_id": 1, "name": "Ada L."},
                 full_document_before_change={"_id": 1, "name": "Ada"})
    oplog.update("shop", "users", 1, updated_fields={"age": 36})
    oplog.replace("shop", "users", 1, {"_id": 1, "name": "Ada Lovelace"},
                  full_document_before_change={"_id": 1, "name": "Ada L.", "age": 36})
    oplog.delete("shop", "users", 1)


def documents(oplog: rxcs.Oplog, **options: Any) -> list[dict[str, Any]]:
    """The documents of the five events of ``produce`` as a stream with ``options`` delivers them."""
    with rxcs.watch(oplog, "shop", "users", **options).iterate() as stream:
        produce(oplog)
        return [event.to_document() for event in drain(stream, 5)]


class TestFullDocument:
    def test_default_gives_inserts_and_replaces_their_document(self, oplog: rxcs.Oplog) -> None:
        """default: inserts and replaces carry fullDocument; updates and deletes have no such field."""
        docs = documents(oplog)
        assert docs[0]["fullDocument"] == {"_id": 1, "name": "Ada"}
        assert "fullDocument" not in docs[1]
        assert "fullDocument" not in docs[2]
        assert docs[3]["fullDocument"] == {"_id": 1, "name": "Ada Lovelace"}
        assert "fullDocument" not in docs[4]

    def test_when_available_gives_the_post_image_or_null(self, oplog: rxcs.Oplog) -> None:
        """whenAvailable: an update carries its recorded post-image, or null when none was recorded."""
        docs = documents(oplog, full_document="whenAvailable")
        assert docs[1]["fullDocument"] == {"_id": 1, "name": "Ada L."}
        assert "fullDocument" in docs[2]
        assert docs[2]["fullDocument"] is None
        assert docs[3]["fullDocument"] == {"_id": 1, "name": "Ada Lovelace"}
        assert "fullDocument" not in docs[4]

    def test_update_lookup_prefers_the_recorded_image_then_asks_lookup(self, oplog: rxcs.Oplog) -> None:
        """updateLookup: the recorded post-image if any, else lookup(ns, key); only updates are looked up."""
        asked: list[tuple[rxcs.Namespace, Any]] = []

        def lookup(ns: rxcs.Namespace, key: Any) -> Any:
            asked.append((ns, key))
            return {"_id": key["_id"], "name": "current"}

        docs = documents(oplog, full_document="updateLookup", lookup=lookup)
        assert docs[1]["fullDocument"] == {"_id": 1, "name": "Ada L."}
        assert docs[2]["fullDocument"] == {"_id": 1, "name": "current"}
        assert docs[3]["fullDocument"] == {"_id": 1, "name": "Ada Lovelace"}
        assert asked == [(rxcs.Namespace("shop", "users"), {"_id": 1})]

    def test_update_lookup_of_a_gone_document_is_null(self, oplog: rxcs.Oplog) -> None:
        """updateLookup: a lookup that finds nothing (or no lookup at all) gives fullDocument null."""
        for lookup in (lambda _ns, _key: None, None):
            docs = documents(oplog, full_document="updateLookup", lookup=lookup)
            assert "fullDocument" in docs[2]
            assert docs[2]["fullDocument"] is None

    def test_required_fails_the_stream_on_a_missing_post_image(self, oplog: rxcs.Oplog) -> None:
        """required: events with a post-image pass; the first update without one fails the stream."""
        with rxcs.watch(oplog, "shop", "users", full_document="required").iterate() as stream:
            produce(oplog)
            first, second = drain(stream, 2)
            with pytest.raises(rxcs.MissingImageError, match=r"op_id 3: update on shop\.users has no post-image"):
                stream.next(timeout=10)
            assert not stream.alive
        assert first.full_document == {"_id": 1, "name": "Ada"}
        assert second.full_document == {"_id": 1, "name": "Ada L."}

    def test_required_asks_only_of_events_the_leading_match_lets_through(self, oplog: rxcs.Oplog) -> None:
        """required: a leading $match runs on the entry first (MongoDB pushes it down), so an update it filters
        out needs no post-image; an update it lets through without one still fails the stream."""
        inserts = [{"$match": {"operationType": {"$in": ["insert", "replace"]}}}]
        with rxcs.watch(oplog, "shop", "users", inserts, full_document="required").iterate() as stream:
            oplog.update("shop", "users", 1, updated_fields={"name": "no image"})
            oplog.insert("shop", "users", {"_id": 2, "name": "Bo"})
            assert stream.next(timeout=10).document_key == {"_id": 2}
        updates = [{"$match": {"operationType": "update"}}]
        with rxcs.watch(oplog, "shop", "users", updates, full_document="required").iterate() as stream:
            oplog.update("shop", "users", 1, updated_fields={"name": "no image"})
            with pytest.raises(rxcs.MissingImageError):
                stream.next(timeout=10)

    def test_required_error_reaches_on_error(self, oplog: rxcs.Oplog) -> None:
        """required: a subscriber (no iteration) hears of the missing image through on_error."""
        import threading

        errors: list[Exception] = []
        failed = threading.Event()

        def on_error(error: Exception) -> None:
            errors.append(error)
            failed.set()

        subscription = rxcs.watch(oplog, full_document="required").subscribe(lambda _e: None, on_error)
        oplog.update("shop", "users", 1, updated_fields={"a": 1})
        assert failed.wait(10)
        subscription.dispose()
        assert isinstance(errors[0], rxcs.MissingImageError)


class TestFullDocumentBeforeChange:
    def test_off_leaves_pre_images_out(self, oplog: rxcs.Oplog) -> None:
        """off (the default): no event has fullDocumentBeforeChange, even where one was recorded."""
        assert all("fullDocumentBeforeChange" not in doc for doc in documents(oplog))

    def test_when_available_gives_the_pre_image_or_null(self, oplog: rxcs.Oplog) -> None:
        """whenAvailable: updates, replaces and deletes carry the recorded pre-image or null; inserts none."""
        docs = documents(oplog, full_document_before_change="whenAvailable")
        assert "fullDocumentBeforeChange" not in docs[0]
        assert docs[1]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada"}
        assert docs[2]["fullDocumentBeforeChange"] is None
        assert docs[3]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada L.", "age": 36}
        assert "fullDocumentBeforeChange" in docs[4]
        assert docs[4]["fullDocumentBeforeChange"] is None

    def test_required_fails_the_stream_on_a_missing_pre_image(self, oplog: rxcs.Oplog) -> None:
        """required: the first update without a recorded pre-image fails the stream, naming its op_id."""
        with rxcs.watch(oplog, "shop", "users", full_document_before_change="required").iterate() as stream:
            produce(oplog)
            insert, update = drain(stream, 2)
            with pytest.raises(rxcs.MissingImageError, match=r"op_id 3: update on shop\.users has no pre-image"):
                stream.next(timeout=10)
        assert insert.full_document_before_change is None
        assert update.full_document_before_change == {"_id": 1, "name": "Ada"}

    def test_both_images_together(self, oplog: rxcs.Oplog) -> None:
        """Both options at once give an update its pre- and post-image."""
        docs = documents(oplog, full_document="whenAvailable", full_document_before_change="whenAvailable")
        assert (docs[1]["fullDocumentBeforeChange"], docs[1]["fullDocument"]) == (
            {"_id": 1, "name": "Ada"}, {"_id": 1, "name": "Ada L."}
        )

    def test_images_reach_the_pipeline(self, oplog: rxcs.Oplog) -> None:
        """Stages see the images: a $project of both delivers them in a plain document."""
        pipeline = [{"$match": {"operationType": "update"}},
                    {"$project": {"fullDocument": 1, "fullDocumentBeforeChange": 1}}]
        with rxcs.watch(oplog, "shop", "users", pipeline, full_document="whenAvailable",
                        full_document_before_change="whenAvailable").iterate() as stream:
            produce(oplog)
            first = stream.next(timeout=10)
        assert first == {"_id": first["_id"], "fullDocument": {"_id": 1, "name": "Ada L."},
                         "fullDocumentBeforeChange": {"_id": 1, "name": "Ada"}}
        assert rxcs.ResumeToken.parse(first["_id"]).op_id == 2


class TestImagesOnDisk:
    def test_images_survive_a_file_oplog_reopen(self, tmp_path: Path) -> None:
        """Images recorded in a FileOplog are there for a stream opened after the oplog is reopened."""
        path = str(tmp_path / "oplog")
        with rxcs.open_oplog(path) as oplog:
            oplog.update("shop", "users", 1, updated_fields={"a": 2}, full_document={"_id": 1, "a": 2},
                         full_document_before_change={"_id": 1, "a": 1})
        with rxcs.open_oplog(path) as oplog, rxcs.watch(
            oplog, full_document="required", full_document_before_change="required",
            start_at_operation_time=rxcs.BEGINNING,
        ).iterate() as stream:
            event = stream.next(timeout=10)
        assert (event.full_document_before_change, event.full_document) == (
            {"_id": 1, "a": 1}, {"_id": 1, "a": 2}
        )


class TestExpandedEvents:
    def produce(self, oplog: rxcs.Oplog) -> None:
        oplog.create_collection("shop", "users", {"capped": False})
        oplog.create_index("shop", "users", {"key": {"email": 1}, "unique": True})
        oplog.append(rxcs.Change("modify", "shop", "users",
                                 operation_description={"index": {"name": "email_1", "hidden": True}}))
        oplog.drop_index("shop", "users", "email_1")
        oplog.insert("shop", "users", {"_id": 1})

    def test_expanded_events_carry_operation_description(self, oplog: rxcs.Oplog) -> None:
        """show_expanded_events: create, createIndexes, modify and dropIndexes arrive with operationDescription."""
        with rxcs.watch(oplog, "shop", "users", show_expanded_events=True).iterate() as stream:
            self.produce(oplog)
            events = drain(stream, 5)
        assert [e.operation_type for e in events] == [Op.CREATE, Op.CREATE_INDEXES, Op.MODIFY, Op.DROP_INDEXES,
                                                      Op.INSERT]
        docs = [e.to_document() for e in events]
        # As MongoDB describes them: a collection's default _id index, the dropped index's version and key.
        assert docs[0]["operationDescription"] == {"capped": False,
                                                   "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        assert docs[1]["operationDescription"] == {"indexes": [{"key": {"email": 1}, "unique": True,
                                                                "name": "email_1"}]}
        assert docs[2]["operationDescription"] == {"index": {"name": "email_1", "hidden": True}}
        assert docs[3]["operationDescription"] == {"indexes": [{"v": 2, "key": {"email": 1}, "name": "email_1"}]}
        assert all(doc["ns"] == {"db": "shop", "coll": "users"} for doc in docs)
        assert "operationDescription" not in docs[4]

    def test_without_the_option_only_data_changes_arrive(self, oplog: rxcs.Oplog) -> None:
        """Without show_expanded_events the same oplog gives only the insert."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            self.produce(oplog)
            event = stream.next(timeout=10)
        assert event.operation_type is Op.INSERT

    def test_expanded_events_go_through_the_pipeline(self, oplog: rxcs.Oplog) -> None:
        """A $match on operationDescription sees expanded events like any other."""
        pipeline = [{"$match": {"operationDescription.indexes.unique": True}}]
        with rxcs.watch(oplog, "shop", pipeline=pipeline, show_expanded_events=True).iterate() as stream:
            self.produce(oplog)
            event = stream.next(timeout=10)
        assert event.operation_type is Op.CREATE_INDEXES


@pytest.fixture(params=BACKENDS)
def images_oplog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rxcs.Oplog]:
    """A fresh oplog of each backend that keeps document images for every collection."""
    if request.param == "memory":
        location = ":memory:"
    elif request.param == "redis":
        location = f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
    else:
        location = str(tmp_path / "oplog")
    with rxcs.open_oplog(location, document_images=True) as opened:
        yield opened


def replayed(oplog: rxcs.Oplog, n: int, **options: Any) -> list[dict[str, Any]]:
    """The documents of the first n events of the shop.users stream, replayed from the beginning."""
    with rxcs.watch(oplog, "shop", "users", start_at_operation_time=rxcs.BEGINNING, **options).iterate() as stream:
        return [event.to_document() for event in drain(stream, n)]


class TestKeptImages:
    """An oplog that keeps document images serves the images its producers did not record."""

    def test_update_lookup_without_a_lookup_gives_the_document_now(self, images_oplog: rxcs.Oplog) -> None:
        """updateLookup with no lookup= gives the document as it is now (MongoDB's rule): an update read after a
        later one gets the later document, not the one its own change left."""
        images_oplog.insert("shop", "users", {"_id": 1, "name": "Ada", "visits": 0})
        images_oplog.update("shop", "users", 1, updated_fields={"visits": 1})
        images_oplog.update("shop", "users", 1, updated_fields={"visits": 2, "last": "today"})
        docs = replayed(images_oplog, 3, full_document="updateLookup")
        now = {"_id": 1, "name": "Ada", "visits": 2, "last": "today"}
        assert [doc["fullDocument"] for doc in docs[1:]] == [now, now]

    def test_update_lookup_of_a_document_deleted_since_is_null(self, images_oplog: rxcs.Oplog) -> None:
        """updateLookup gives null for an update of a document that was deleted since, as MongoDB does."""
        images_oplog.insert("shop", "users", {"_id": 1, "v": 0})
        images_oplog.update("shop", "users", 1, updated_fields={"v": 1})
        images_oplog.delete("shop", "users", 1)
        docs = replayed(images_oplog, 2, full_document="updateLookup")
        assert "fullDocument" in docs[1]
        assert docs[1]["fullDocument"] is None

    def test_update_lookup_live_is_never_older_than_the_event(self, images_oplog: rxcs.Oplog) -> None:
        """A live stream's updateLookup is at least as new as its event, even when the store has not applied it
        yet (a FileOplog's images follow its group commit): never the document before the change."""
        images_oplog.insert("shop", "users", {"_id": 1, "v": 0})
        with rxcs.watch(images_oplog, "shop", "users", full_document="updateLookup").iterate() as stream:
            for v in range(1, 21):
                images_oplog.update("shop", "users", 1, updated_fields={"v": v})
            seen = [event.full_document["v"] for event in drain(stream, 20)]
        assert all(got >= v for got, v in zip(seen, range(1, 21), strict=True))

    def test_when_available_and_required_give_the_images_each_change_left(self, images_oplog: rxcs.Oplog) -> None:
        """whenAvailable/required: each update, replace and delete gets the document right before it and (but a
        delete) right after it: the recorded image where the producer gave one, else the kept one."""
        for mode in ("whenAvailable", "required"):
            with rxcs.watch(images_oplog, "shop", "users", full_document=mode,
                            full_document_before_change=mode).iterate() as stream:
                produce(images_oplog)
                docs = [event.to_document() for event in drain(stream, 5)]
            assert docs[1]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada"}
            assert docs[1]["fullDocument"] == {"_id": 1, "name": "Ada L."}
            assert docs[2]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada L."}
            assert docs[2]["fullDocument"] == {"_id": 1, "name": "Ada L.", "age": 36}
            assert docs[3]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada L.", "age": 36}
            assert docs[4]["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada Lovelace"}
            assert "fullDocument" not in docs[4]

    def test_recorded_images_win_over_kept_ones(self, images_oplog: rxcs.Oplog) -> None:
        """An image the producer recorded is the event's, even where the kept one differs."""
        images_oplog.insert("shop", "users", {"_id": 1, "v": 0})
        images_oplog.update("shop", "users", 1, updated_fields={"v": 1},
                            full_document_before_change={"_id": 1, "v": "as the producer saw it"})
        docs = replayed(images_oplog, 2, full_document_before_change="whenAvailable")
        assert docs[1]["fullDocumentBeforeChange"] == {"_id": 1, "v": "as the producer saw it"}

    def test_an_explicit_lookup_wins_over_kept_images(self, images_oplog: rxcs.Oplog) -> None:
        """updateLookup with lookup= asks the lookup, not the kept documents."""
        images_oplog.insert("shop", "users", {"_id": 1, "v": 0})
        images_oplog.update("shop", "users", 1, updated_fields={"v": 1})
        docs = replayed(
            images_oplog, 2, full_document="updateLookup", lookup=lambda _ns, key: {**key, "from": "lookup"}
        )
        assert docs[1]["fullDocument"] == {"_id": 1, "from": "lookup"}

    def test_required_fails_for_a_document_written_before_images_were_on(self, oplog: rxcs.Oplog) -> None:
        """A document written before its collection's images were turned on has none until it is next inserted or
        replaced: required fails on its update, naming the op_id and saying none was kept."""
        oplog.insert("shop", "users", {"_id": 1, "v": 0})
        oplog.modify_collection("shop", "users", {"changeStreamPreAndPostImages": {"enabled": True}})
        with rxcs.watch(oplog, "shop", "users", full_document="required").iterate() as stream:
            oplog.insert("shop", "users", {"_id": 2, "v": 0})
            oplog.update("shop", "users", 2, updated_fields={"v": 1})
            oplog.update("shop", "users", 1, updated_fields={"v": 1})
            _inserted, updated = drain(stream, 2)
            with pytest.raises(rxcs.MissingImageError, match=r"op_id 5: update on shop\.users has no post-image "
                                                             r"recorded \(full_document='required'\) nor kept"):
                stream.next(timeout=10)
        assert updated.full_document == {"_id": 2, "v": 1}
        with rxcs.watch(oplog, "shop", "users", full_document_before_change="required",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            with pytest.raises(rxcs.MissingImageError, match=r"op_id 5: update on shop\.users has no pre-image "
                                                             r"recorded .* nor kept"):
                drain(stream, 4)

    def test_images_reach_a_chain_built_by_hand(self, images_oplog: rxcs.Oplog) -> None:
        """to_change_events() after oplog_entries() uses the oplog's kept images as watch() does."""
        from rxcs import operators as cso

        images_oplog.insert("shop", "users", {"_id": 1, "v": 0})
        images_oplog.update("shop", "users", 1, updated_fields={"v": 1})
        got: list[rxcs.ChangeEvent] = []
        subscription = rxcs.oplog_entries(images_oplog, after=0).pipe(
            cso.scope("shop", "users"),
            cso.to_change_events(full_document="whenAvailable", full_document_before_change="whenAvailable"),
        ).subscribe(got.append)
        try:
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            subscription.dispose()
        assert (got[1].full_document_before_change, got[1].full_document) == ({"_id": 1, "v": 0}, {"_id": 1, "v": 1})

    def test_a_match_on_kept_images_sees_them(self, images_oplog: rxcs.Oplog) -> None:
        """A $match on fullDocument or fullDocumentBeforeChange tests the kept images, not only what the entries
        recorded: updates recorded without images still pass when their kept ones match."""
        images_oplog.insert("shop", "users", {"_id": 1, "status": "new"})
        images_oplog.update("shop", "users", 1, updated_fields={"status": "paid"})
        images_oplog.update("shop", "users", 1, updated_fields={"status": "shipped"})
        after = replayed(images_oplog, 1, full_document="whenAvailable",
                         pipeline=[{"$match": {"operationType": "update", "fullDocument.status": "paid"}}])
        before = replayed(images_oplog, 1, full_document_before_change="whenAvailable",
                          pipeline=[{"$match": {"fullDocumentBeforeChange.status": "paid"}}])
        assert [doc["updateDescription"]["updatedFields"] for doc in after] == [{"status": "paid"}]
        assert [doc["updateDescription"]["updatedFields"] for doc in before] == [{"status": "shipped"}]
