"""watch(): scopes, invalidation, resume options and the errors they raise."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import rxcs
from rxcs.events import OperationType as Op


def drain(stream: rxcs.ChangeStream, n: int) -> list[Any]:
    """The next n events, each waited for with a generous timeout."""
    return [stream.next(timeout=10) for _ in range(n)]


def kinds(events: list[Any]) -> list[str]:
    return [str(event.operation_type) for event in events]


class TestScopes:
    def test_collection_stream_sees_only_its_collection(self, oplog: rxcs.Oplog) -> None:
        """A collection stream skips other collections and databases."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            oplog.insert("shop", "orders", {"_id": 1})
            oplog.insert("other", "users", {"_id": 1})
            oplog.insert("shop", "users", {"_id": 2})
            event = stream.next(timeout=10)
        assert event.ns == rxcs.Namespace("shop", "users")
        assert event.document_key == {"_id": 2}

    def test_database_stream_sees_all_its_collections(self, oplog: rxcs.Oplog) -> None:
        """A database stream sees every collection of that database, nothing else."""
        with rxcs.watch(oplog, "shop").iterate() as stream:
            oplog.insert("other", "users", {"_id": 1})
            oplog.insert("shop", "orders", {"_id": 1})
            oplog.insert("shop", "users", {"_id": 2})
            events = drain(stream, 2)
        assert [str(e.ns) for e in events] == ["shop.orders", "shop.users"]

    def test_deployment_stream_sees_everything(self, oplog: rxcs.Oplog) -> None:
        """A stream with no db sees every database."""
        with rxcs.watch(oplog).iterate() as stream:
            oplog.insert("a", "x", {"_id": 1})
            oplog.insert("b", "y", {"_id": 1})
            events = drain(stream, 2)
        assert [str(e.ns) for e in events] == ["a.x", "b.y"]

    def test_collection_without_database_is_refused(self, oplog: rxcs.Oplog) -> None:
        """watch(collection=...) without db is an error naming the fix."""
        with pytest.raises(ValueError, match="needs its database"):
            rxcs.watch(oplog, collection="users")

    def test_expanded_events_only_when_asked(self, oplog: rxcs.Oplog) -> None:
        """create/createIndexes/dropIndexes reach a stream only with show_expanded_events."""
        plain = rxcs.watch(oplog, "shop").iterate()
        expanded = rxcs.watch(oplog, "shop", show_expanded_events=True).iterate()
        with plain, expanded:
            oplog.create_collection("shop", "users")
            oplog.create_index("shop", "users", {"key": {"email": 1}, "unique": True})
            oplog.drop_index("shop", "users", "email_1")
            oplog.insert("shop", "users", {"_id": 1})
            assert kinds(drain(plain, 1)) == ["insert"]
            got = drain(expanded, 4)
        assert kinds(got) == ["create", "createIndexes", "dropIndexes", "insert"]
        assert got[1].operation_description == {"indexes": [{"key": {"email": 1}, "unique": True, "name": "email_1"}]}


class TestInvalidate:
    @pytest.mark.parametrize(
        ("end", "expected"),
        [
            (lambda o: o.drop_collection("shop", "users"), ["drop", "invalidate"]),
            (lambda o: o.rename_collection("shop", "users", "shop", "people"), ["rename", "invalidate"]),
            (lambda o: o.drop_database("shop"), ["drop", "invalidate"]),
        ],
        ids=["drop", "rename", "dropDatabase"],
    )
    def test_collection_stream_ends_with_invalidate(self, oplog: rxcs.Oplog, end: Any, expected: list[str]) -> None:
        """Dropping, renaming or dropping the database of a watched collection invalidates its stream."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            end(oplog)
            oplog.insert("shop", "users", {"_id": 2})  # after the end: never delivered
            events = list(stream)
            assert not stream.alive
        assert kinds(events) == ["insert", *expected]
        assert events[-1].id.invalidate
        assert events[-1].id.op_id == events[-2].id.op_id

    def test_database_stream_ends_on_drop_database(self, oplog: rxcs.Oplog) -> None:
        """A database stream survives collection drops and ends after dropDatabase."""
        with rxcs.watch(oplog, "shop").iterate() as stream:
            oplog.drop_collection("shop", "users")
            oplog.drop_database("shop")
            events = list(stream)
        assert kinds(events) == ["drop", "dropDatabase", "invalidate"]
        assert events[1].ns == rxcs.Namespace("shop", None)
        assert "coll" not in events[1].to_document()["ns"]

    def test_deployment_stream_is_never_invalidated(self, oplog: rxcs.Oplog) -> None:
        """A stream of everything sees drops and keeps going."""
        with rxcs.watch(oplog).iterate() as stream:
            oplog.drop_database("shop")
            oplog.insert("shop", "users", {"_id": 1})
            assert kinds(drain(stream, 2)) == ["dropDatabase", "insert"]

    def test_resume_after_invalidate_fails_start_after_continues(self, oplog: rxcs.Oplog) -> None:
        """MongoDB's rule: resume_after an invalidate token is refused; start_after starts anew."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            oplog.drop_collection("shop", "users")
            drop, invalidate = list(stream)
        oplog.insert("shop", "users", {"_id": "again"})
        with pytest.raises(rxcs.InvalidResumeToken, match="start_after"):
            rxcs.watch(oplog, "shop", "users", resume_after=invalidate.id)
        with rxcs.watch(oplog, "shop", "users", start_after=invalidate.id).iterate() as stream:
            assert stream.next(timeout=10).document_key == {"_id": "again"}
        # Resuming after the drop event itself yields its invalidate again.
        with rxcs.watch(oplog, "shop", "users", resume_after=drop.id).iterate() as stream:
            assert kinds(list(stream)) == ["invalidate"]


class TestResume:
    def test_resume_after_gives_every_later_event_once(self, oplog: rxcs.Oplog) -> None:
        """Resuming from a token (as a string) delivers exactly the events after it."""
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            for i in range(5):
                oplog.insert("shop", "users", {"_id": i})
            events = drain(stream, 2)
            token = str(stream.resume_token)
        assert token == str(events[-1].id)
        oplog.insert("shop", "orders", {"_id": "other"})
        with rxcs.watch(oplog, "shop", "users", resume_after=token).iterate() as resumed:
            oplog.insert("shop", "users", {"_id": 5})
            assert [e.document_key["_id"] for e in drain(resumed, 4)] == [2, 3, 4, 5]

    def test_resume_accepts_the_event_id_document(self, oplog: rxcs.Oplog) -> None:
        """resume_after takes the event's _id document, as PyMongo users pass it."""
        with rxcs.watch(oplog).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.insert("shop", "users", {"_id": 2})
            first = stream.next(timeout=10)
        with rxcs.watch(oplog, resume_after=first.to_document()["_id"]).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": 2}

    def test_start_position_token_resumes_exactly(self, oplog: rxcs.Oplog) -> None:
        """Before any event, resume_token names the start; resuming from it misses nothing."""
        oplog.insert("shop", "users", {"_id": "before"})
        with rxcs.watch(oplog, "shop", "users").iterate() as stream:
            start = stream.resume_token
        assert start.high_water
        oplog.insert("shop", "users", {"_id": "after"})
        with rxcs.watch(oplog, "shop", "users", resume_after=start).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": "after"}

    def test_token_of_another_oplog_is_refused(self, oplog: rxcs.Oplog) -> None:
        """A token naming another oplog raises InvalidResumeToken at watch()."""
        foreign = rxcs.ResumeToken(uuid.uuid4(), 1)
        with pytest.raises(rxcs.InvalidResumeToken, match="comes from oplog"):
            rxcs.watch(oplog, resume_after=foreign)

    def test_garbage_token_is_refused(self, oplog: rxcs.Oplog) -> None:
        """A mistyped token raises InvalidResumeToken naming it."""
        with pytest.raises(rxcs.InvalidResumeToken, match="not-a-token"):
            rxcs.watch(oplog, resume_after="not-a-token")

    def test_trimmed_token_is_history_lost_at_watch(self, memory_oplog: rxcs.Oplog) -> None:
        """A token older than the oldest retained entry raises ChangeStreamHistoryLost at watch()."""
        with rxcs.watch(memory_oplog).iterate() as stream:
            for i in range(5):
                memory_oplog.insert("shop", "users", {"_id": i})
            first = stream.next(timeout=10)
        memory_oplog.trim(before_op_id=4)
        with pytest.raises(rxcs.ChangeStreamHistoryLost):
            rxcs.watch(memory_oplog, resume_after=first.id)

    def test_token_ahead_of_the_oplog_is_history_lost(self, oplog: rxcs.Oplog) -> None:
        """A token of this oplog past its end names history the oplog no longer has: ChangeStreamHistoryLost."""
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="names op_id 99, but this oplog ends at op_id 0"):
            rxcs.watch(oplog, resume_after=rxcs.ResumeToken(oplog.oplog_id, 99))

    def test_only_one_resume_option(self, oplog: rxcs.Oplog) -> None:
        """resume_after, start_after and start_at_operation_time exclude each other."""
        token = rxcs.ResumeToken(oplog.oplog_id, 0, high_water=True)
        with pytest.raises(ValueError, match="at most one"):
            rxcs.watch(oplog, resume_after=token, start_at_operation_time=rxcs.BEGINNING)

    def test_start_at_operation_time(self, oplog: rxcs.Oplog) -> None:
        """start_at_operation_time replays from a cluster time, a datetime, or BEGINNING."""
        oplog.insert("shop", "users", {"_id": 1})
        second = oplog.insert("shop", "users", {"_id": 2})
        entry = oplog.read(second - 1, 1)[0]
        with rxcs.watch(oplog, start_at_operation_time=entry.cluster_time).iterate() as stream:
            assert stream.next(timeout=10).document_key == {"_id": 2}
        with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            assert [e.document_key["_id"] for e in drain(stream, 2)] == [1, 2]
        past = datetime.now(UTC) - timedelta(days=1)
        with rxcs.watch(oplog, start_at_operation_time=past).iterate() as stream:
            assert [e.document_key["_id"] for e in drain(stream, 2)] == [1, 2]
        future = datetime.now(UTC) + timedelta(days=1)
        with rxcs.watch(oplog, start_at_operation_time=future, max_await_time=0.05).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 3})
            assert stream.try_next() is None  # recorded before the time the stream starts at


class TestDocumentImages:
    def test_full_document_modes(self, oplog: rxcs.Oplog) -> None:
        """default leaves updates bare; whenAvailable gives the post-image or null."""
        default = rxcs.watch(oplog).iterate()
        available = rxcs.watch(oplog, full_document="whenAvailable").iterate()
        with default, available:
            oplog.update("shop", "users", 1, updated_fields={"a": 1}, full_document={"_id": 1, "a": 1})
            oplog.update("shop", "users", 2, updated_fields={"a": 2})
            plain = drain(default, 2)
            rich = drain(available, 2)
        assert [e.full_document for e in plain] == [None, None]
        assert "fullDocument" not in plain[0].to_document()
        assert rich[0].full_document == {"_id": 1, "a": 1}
        assert rich[1].to_document()["fullDocument"] is None

    def test_required_image_missing_fails_the_stream(self, oplog: rxcs.Oplog) -> None:
        """full_document='required' ends the stream with MissingImageError when none was recorded."""
        with rxcs.watch(oplog, full_document="required").iterate() as stream:
            oplog.update("shop", "users", 1, updated_fields={"a": 1}, full_document={"_id": 1, "a": 1})
            oplog.update("shop", "users", 2, updated_fields={"a": 2})
            assert stream.next(timeout=10).full_document == {"_id": 1, "a": 1}
            with pytest.raises(rxcs.MissingImageError, match="op_id 2"):
                stream.next(timeout=10)

    def test_pre_images(self, oplog: rxcs.Oplog) -> None:
        """full_document_before_change delivers recorded pre-images of updates, replaces, deletes."""
        with rxcs.watch(oplog, full_document_before_change="whenAvailable").iterate() as stream:
            oplog.delete("shop", "users", 1, full_document_before_change={"_id": 1, "name": "Ada"})
            oplog.delete("shop", "users", 2)
            events = drain(stream, 2)
        assert events[0].full_document_before_change == {"_id": 1, "name": "Ada"}
        assert events[1].to_document()["fullDocumentBeforeChange"] is None

    def test_update_lookup_uses_the_lookup_callable(self, oplog: rxcs.Oplog) -> None:
        """updateLookup asks lookup(ns, key) for the current document when no post-image was recorded."""
        store = {1: {"_id": 1, "name": "current"}}
        asked: list[tuple[rxcs.Namespace, Any]] = []

        def lookup(ns: rxcs.Namespace, key: Any) -> Any:
            asked.append((ns, key))
            return store.get(key["_id"])

        with rxcs.watch(oplog, full_document="updateLookup", lookup=lookup).iterate() as stream:
            oplog.update("shop", "users", 1, updated_fields={"name": "current"})
            event = stream.next(timeout=10)
        assert event.full_document == {"_id": 1, "name": "current"}
        assert asked == [(rxcs.Namespace("shop", "users"), {"_id": 1})]

    def test_bad_mode_is_refused(self, oplog: rxcs.Oplog) -> None:
        """An unknown full_document mode raises at watch() naming the choices."""
        with pytest.raises(ValueError, match="updateLookup"):
            rxcs.watch(oplog, full_document="sometimes")  # type: ignore[arg-type]


class TestSubscribe:
    def test_subscribers_run_on_the_tailer_thread(self, oplog: rxcs.Oplog) -> None:
        """Without a scheduler, subscribers are called on the shared tailer thread."""
        names: list[str] = []
        done = threading.Event()

        def on_event(_: Any) -> None:
            names.append(threading.current_thread().name)
            done.set()

        sub = rxcs.watch(oplog).subscribe(on_event)
        oplog.insert("shop", "users", {"_id": 1})
        assert done.wait(10)
        sub.dispose()
        assert names[0].startswith("rxcs-tailer")

    def test_scheduler_hops_through_a_buffer(self, oplog: rxcs.Oplog) -> None:
        """With a scheduler, events reach subscribers on it, in order."""
        from reactivex.scheduler import ThreadPoolScheduler

        pool = ThreadPoolScheduler(1)
        got: list[int] = []
        done = threading.Event()

        def on_event(event: Any) -> None:
            got.append(event.document_key["_id"])
            if len(got) == 50:
                done.set()

        sub = rxcs.watch(oplog, scheduler=pool).subscribe(on_event)
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(50)])
        assert done.wait(10)
        sub.dispose()
        pool.executor.shutdown()
        assert got == list(range(50))

    def test_subscribe_time_errors_reach_on_error(self, memory_oplog: rxcs.Oplog) -> None:
        """History trimmed between watch() and subscribe() is reported to on_error at subscribe."""
        with rxcs.watch(memory_oplog).iterate() as stream:
            for i in range(4):
                memory_oplog.insert("shop", "users", {"_id": i})
            first = stream.next(timeout=10)
        observable = rxcs.watch(memory_oplog, resume_after=first.id)
        memory_oplog.trim(before_op_id=4)
        errors: list[Exception] = []
        observable.subscribe(lambda _: None, errors.append)
        assert isinstance(errors[0], rxcs.ChangeStreamHistoryLost)


def test_operation_types_cover_producer_helpers(oplog: rxcs.Oplog) -> None:
    """Every producer helper yields the event type MongoDB gives it."""
    with rxcs.watch(oplog, "shop", show_expanded_events=True).iterate() as stream:
        oplog.insert("shop", "users", {"_id": 1})
        oplog.update("shop", "users", 1, updated_fields={"a": 1}, removed_fields=["b"])
        oplog.replace("shop", "users", 1, {"_id": 1, "c": 3})
        oplog.delete("shop", "users", 1)
        events = drain(stream, 4)
    assert [e.operation_type for e in events] == [Op.INSERT, Op.UPDATE, Op.REPLACE, Op.DELETE]
    update = events[1].to_document()["updateDescription"]
    assert update == {  # expanded events always list the ambiguous paths, as MongoDB's do: none here
        "updatedFields": {"a": 1}, "removedFields": ["b"], "truncatedArrays": [], "disambiguatedPaths": {}}
    assert events[2].full_document == {"_id": 1, "c": 3}
