"""The pipeable operators, driven in virtual time with reactivex's TestScheduler."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.subscription import Subscription

import rxcs
from rxcs import operators as cso
from rxcs.events import ClusterTime, Namespace
from rxcs.oplog.entry import OplogEntry

from .conftest import eventually

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed
OPLOG_ID = uuid.UUID(int=42)


def entry(op_id: int, op: str, db: str, coll: str | None, **fields: Any) -> OplogEntry:
    return OplogEntry(op_id, ClusterTime(1_700_000_000, op_id), 1_700_000_000_000 + op_id, op, db, coll, **fields)


def insert(op_id: int, db: str = "shop", coll: str = "users", **doc: Any) -> OplogEntry:
    document = {"_id": op_id, **doc}
    return entry(op_id, "insert", db, coll, document_key={"_id": op_id}, full_document=document)


def run(scheduler: TestScheduler, items: list[OplogEntry], *operators: Any) -> Any:
    """Emit items at ticks 210, 220, ... through the operators; return the observer."""
    source = scheduler.create_cold_observable(
        *[on_next(10 * (i + 1), item) for i, item in enumerate(items)],
        on_completed(10 * (len(items) + 1)),
    )
    return scheduler.start(lambda: source.pipe(*operators))


def values(observer: Any) -> list[Any]:
    return [message.value.value for message in observer.messages if message.value.kind == "N"]


def ended_at(observer: Any) -> int | None:
    return next((m.time for m in observer.messages if m.value.kind == "C"), None)


class TestScope:
    def test_collection_scope_cuts_by_namespace(self) -> None:
        """scope(db, coll) passes entries of that collection only, in order."""
        scheduler = TestScheduler()
        items = [insert(1), insert(2, coll="orders"), insert(3, db="other"), insert(4)]
        observer = run(scheduler, items, cso.scope("shop", "users"))
        assert [e.op_id for e in values(observer)] == [1, 4]

    def test_scope_ends_with_invalidate_and_unsubscribes(self) -> None:
        """A dropped collection ends its scope: drop, invalidate, completion, upstream disposed."""
        scheduler = TestScheduler()
        items = [insert(1), entry(2, "drop", "shop", "users"), insert(3)]
        source = scheduler.create_cold_observable(
            *[on_next(10 * (i + 1), item) for i, item in enumerate(items)], on_completed(100)
        )
        observer = scheduler.start(lambda: source.pipe(cso.scope("shop", "users")))
        assert [(e.op_id, e.op) for e in values(observer)] == [(1, "insert"), (2, "drop"), (2, "invalidate")]
        assert ended_at(observer) == 220
        assert source.subscriptions == [Subscription(200, 220)]

    def test_drop_database_reaches_a_collection_scope_as_drop(self) -> None:
        """dropDatabase shows a collection scope a drop of that collection, then invalidate."""
        scheduler = TestScheduler()
        observer = run(scheduler, [entry(1, "dropDatabase", "shop", None)], cso.scope("shop", "users"))
        assert [(e.op, e.coll) for e in values(observer)] == [("drop", "users"), ("invalidate", None)]

    def test_no_scope_passes_everything(self) -> None:
        """scope() with no namespace is the identity."""
        scheduler = TestScheduler()
        items = [insert(1), entry(2, "dropDatabase", "shop", None), insert(3)]
        observer = run(scheduler, items, cso.scope())
        assert [e.op_id for e in values(observer)] == [1, 2, 3]
        assert ended_at(observer) == 240


class TestToChangeEvents:
    def test_events_carry_tokens_of_the_given_oplog(self) -> None:
        """Each event's id names the oplog and the entry's op_id."""
        scheduler = TestScheduler()
        observer = run(scheduler, [insert(5, name="Ada")], cso.to_change_events(oplog_id=OPLOG_ID))
        (event,) = values(observer)
        assert event.id == rxcs.ResumeToken(OPLOG_ID, 5)
        assert event.full_document == {"_id": 5, "name": "Ada"}
        assert event.ns == Namespace("shop", "users")
        assert event.wall_time.timestamp() == pytest.approx(1_700_000_000.005)

    def test_needs_an_oplog_identity(self) -> None:
        """Applied to a stream of unknown origin without oplog_id=, it says what it needs."""
        with pytest.raises(TypeError, match="oplog_id"):
            reactivex.empty().pipe(cso.to_change_events())

    def test_expanded_events_filtered_unless_asked(self) -> None:
        """createIndexes entries become events only with show_expanded_events."""
        scheduler = TestScheduler()
        index = entry(1, "createIndexes", "shop", "users", operation_description={"indexes": [{"name": "a_1"}]})
        assert values(run(scheduler, [index], cso.to_change_events(oplog_id=OPLOG_ID))) == []
        scheduler = TestScheduler()
        (event,) = values(run(scheduler, [index], cso.to_change_events(show_expanded_events=True, oplog_id=OPLOG_ID)))
        assert event.to_document()["operationDescription"] == {"indexes": [{"name": "a_1"}]}


class TestMatchAndPipeline:
    def test_match_filters_on_the_event_document(self) -> None:
        """match() evaluates a MongoDB filter on the MongoDB-shaped event."""
        scheduler = TestScheduler()
        items = [insert(1, status="paid"), insert(2, status="new"), insert(3, status="paid")]
        observer = run(
            scheduler, items, cso.to_change_events(oplog_id=OPLOG_ID), cso.match({"fullDocument.status": "paid"})
        )
        assert [e.op_id for e in values(observer)] == [1, 3]

    def test_match_understands_laura_aliases(self) -> None:
        """collection/coll and database/db name the namespace in match filters."""
        scheduler = TestScheduler()
        items = [insert(1), insert(2, coll="orders")]
        observer = run(scheduler, items, cso.to_change_events(oplog_id=OPLOG_ID), cso.match({"collection": "orders"}))
        assert [e.op_id for e in values(observer)] == [2]

    def test_bad_filter_fails_when_the_operator_is_made(self) -> None:
        """A malformed filter raises QueryError at match(), not at the first event."""
        with pytest.raises(rxcs.QueryError):
            cso.match({"a": {"$in": 5}})

    def test_pipeline_of_matches_keeps_events(self) -> None:
        """A $match-only pipeline passes ChangeEvent objects through unchanged."""
        scheduler = TestScheduler()
        items = [insert(1), entry(2, "delete", "shop", "users", document_key={"_id": 1})]
        observer = run(
            scheduler, items, cso.to_change_events(oplog_id=OPLOG_ID),
            cso.pipeline([{"$match": {"operationType": "delete"}}]),
        )
        (event,) = values(observer)
        assert isinstance(event, rxcs.ChangeEvent)
        assert event.op_id == 2

    def test_bad_stage_names_its_index(self) -> None:
        """An unsupported stage raises PipelineError naming its position."""
        with pytest.raises(rxcs.PipelineError, match=r"pipeline\.1"):
            cso.pipeline([{"$match": {}}, {"$lookup": {}}])


class TestSeek:
    def test_seek_skips_events_up_to_the_token(self) -> None:
        """On an event stream, seek(token) drops events up to and including the token."""
        scheduler = TestScheduler()
        items = [insert(1), insert(2), insert(3)]
        token = str(rxcs.ResumeToken(OPLOG_ID, 2))
        observer = run(scheduler, items, cso.to_change_events(oplog_id=OPLOG_ID), cso.seek(token))
        assert [e.op_id for e in values(observer)] == [3]

    def test_seek_between_the_events_of_one_entry(self) -> None:
        """A drop's token is followed by that entry's invalidate, as MongoDB resumes."""
        scheduler = TestScheduler()
        items = [insert(1), entry(2, "drop", "shop", "users")]
        token = rxcs.ResumeToken(OPLOG_ID, 2)
        observer = run(
            scheduler, items, cso.scope("shop", "users"), cso.to_change_events(oplog_id=OPLOG_ID), cso.seek(token)
        )
        assert [str(e.operation_type) for e in values(observer)] == ["invalidate"]

    def test_seek_refuses_a_token_of_another_oplog(self, memory_oplog: rxcs.Oplog) -> None:
        """seek() on a stream of a known oplog checks the token's identity."""
        with pytest.raises(rxcs.InvalidResumeToken, match="comes from oplog"):
            rxcs.oplog_entries(memory_oplog).pipe(cso.seek(rxcs.ResumeToken(OPLOG_ID, 1)))

    def test_a_token_given_to_the_source_moves_its_start(self, memory_oplog: rxcs.Oplog) -> None:
        """oplog_entries(after=token) starts after the token's entry: a seek, nothing read before it."""
        for i in range(5):
            memory_oplog.insert("shop", "users", {"_id": i})
        memory_oplog.trim(before_op_id=3)  # a read from the beginning would meet the trim
        got: list[int] = []
        token = rxcs.ResumeToken(memory_oplog.oplog_id, 3, high_water=True)
        subscription = rxcs.oplog_entries(memory_oplog, after=token).subscribe(lambda entry: got.append(entry.op_id))
        assert eventually(lambda: got == [4, 5])
        subscription.dispose()

    def test_seek_is_a_plain_operator(self, memory_oplog: rxcs.Oplog) -> None:
        """seek() passes over what lies up to its token whatever its source is: here a plain Observable of entries."""
        for i in range(5):
            memory_oplog.insert("shop", "users", {"_id": i})
        entries = memory_oplog.read(0, 10)
        got: list[int] = []
        reactivex.from_iterable(entries).pipe(cso.seek(rxcs.ResumeToken(memory_oplog.oplog_id, 3))).subscribe(
            lambda entry: got.append(entry.op_id)
        )
        assert got == [4, 5]
