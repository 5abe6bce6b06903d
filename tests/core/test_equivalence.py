"""watch() and the same chain composed by hand from the public operators give the same events.

``watch()`` runs its steps in one loop over each batch (and tests its
leading ``$match`` on entries, sifts, shares selections); a chain of
``oplog_entries()``, ``scope``, ``to_change_events``, ``pipeline`` and
``seek`` runs them one Rx operator at a time. Both are built from the same
steps (``rxcs.steps``): over random logs, options, pipelines and resume
points they must deliver the same items, then end the same way.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings
from reactivex.testing import TestScheduler

import rxcs
from rxcs import operators as cso

NAMESPACES = [("shop", "users"), ("shop", "orders"), ("web", "pages")]

documents = st.fixed_dictionaries(
    {"status": st.sampled_from(["paid", "new", "shipped"]), "n": st.integers(-5, 5)},
    optional={"tags": st.lists(st.sampled_from(["a", "b"]), max_size=2), "note": st.text(max_size=5)},
)


@st.composite
def changes(draw: st.DrawFn) -> rxcs.Change:
    db, coll = draw(st.sampled_from(NAMESPACES))
    key = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["insert"] * 4 + ["update"] * 3 + ["replace", "delete", "ddl"]))
    if kind == "insert":
        return rxcs.Change.insert(db, coll, {"_id": key, **draw(documents)})
    if kind == "update":
        image = draw(st.none() | documents.map(lambda document: {"_id": key, **document}))
        before = draw(st.none() | documents.map(lambda document: {"_id": key, **document}))
        return rxcs.Change.update(
            db, coll, key, updated_fields={"status": draw(st.sampled_from(["paid", "new"]))}, full_document=image,
            full_document_before_change=before,
        )
    if kind == "replace":
        return rxcs.Change.replace(db, coll, key, {"_id": key, **draw(documents)})
    if kind == "delete":
        return rxcs.Change.delete(db, coll, key)
    return draw(st.sampled_from([
        rxcs.Change.create_collection(db, coll),
        rxcs.Change.create_index(db, coll, {"key": {"n": 1}}),
        rxcs.Change.drop_collection(db, coll),
        rxcs.Change.rename_collection(db, coll, db, f"{coll}_old"),
        rxcs.Change.drop_database(db),
    ]))


PIPELINES: list[list[dict[str, Any]] | None] = [
    None,
    [{"$match": {"operationType": "insert"}}],
    [{"$match": {"fullDocument.status": "paid"}}],
    [{"$match": {"fullDocument.status": {"$in": ["paid", "shipped"]}}}, {"$match": {"ns.coll": "users"}}],
    [{"$match": {"operationType": {"$in": ["insert", "update"]}}}, {"$project": {"fullDocument": 1}}],
    [{"$match": {"fullDocument.n": {"$gte": 0}}}, {"$set": {"seen": True}}, {"$match": {"seen": True}}],
    [{"$match": {"$expr": {"$eq": ["$operationType", "delete"]}}}],
    [{"$addFields": {"coll": "$ns.coll"}}, {"$match": {"coll": "orders"}}],
    [{"$match": {"db": "shop"}}, {"$unset": "wallTime"}],
]
SCOPES = [(None, None), ("shop", None), ("shop", "users"), ("shop", "orders"), ("web", "pages")]


def by_hand(
    oplog: rxcs.Oplog, after: int, options: dict[str, Any], skip: rxcs.ResumeToken | None
) -> tuple[list[Any], type[Exception] | None]:
    """The chain of public operators, driven in virtual time to the end of the log."""
    scheduler = TestScheduler()
    chain: Any = rxcs.oplog_entries(oplog, after=after, scheduler=scheduler, batch_size=7).pipe(
        cso.scope(options["db"], options["collection"]),
        cso.to_change_events(
            options["full_document"], options["full_document_before_change"], options["show_expanded_events"]
        ),
    )
    if options["pipeline"] is not None:
        chain = chain.pipe(cso.pipeline(options["pipeline"]))
    if skip is not None:
        chain = chain.pipe(cso.seek(skip))
    got: list[Any] = []
    errors: list[Exception] = []
    chain.subscribe(got.append, errors.append)
    scheduler.advance_to(1000)
    return got, type(errors[0]) if errors else None


def by_watch(oplog: rxcs.Oplog, options: dict[str, Any], **start: Any) -> tuple[list[Any], type[Exception] | None]:
    """watch() held as a ChangeStream, read until it ends or has nothing more."""
    got: list[Any] = []
    try:
        with rxcs.watch(oplog, **options, **start, max_await_time=0.01, batch_size=5).iterate() as stream:
            while (event := stream.try_next()) is not None:
                got.append(event)
    except StopIteration:
        pass
    except rxcs.RxcsError as exc:
        return got, type(exc)
    return got, None


class TestWatchEqualsTheChainByHand:
    @settings(max_examples=150)
    @given(
        log=st.lists(changes(), min_size=1, max_size=40),
        scope=st.sampled_from(SCOPES),
        pipeline=st.sampled_from(PIPELINES),
        # Not "required": watch() tests its leading $match on entries first, as MongoDB pushes $match down,
        # so an entry that fails it never needs its image; a hand-built chain converts every entry first.
        full_document=st.sampled_from(["default", "whenAvailable", "updateLookup"]),
        before=st.sampled_from(["off", "whenAvailable"]),
        expanded=st.booleans(),
        resume_at=st.none() | st.integers(0, 60),
        images=st.booleans(),
    )
    def test_same_items_then_the_same_end(
        self,
        log: list[rxcs.Change],
        scope: tuple[str | None, str | None],
        pipeline: list[dict[str, Any]] | None,
        full_document: str,
        before: str,
        expanded: bool,
        resume_at: int | None,
        images: bool,
    ) -> None:
        """From the beginning, or resumed after any event of a first run: the same items, the same ending; with
        the oplog's document images or without."""
        options: dict[str, Any] = {
            "db": scope[0], "collection": scope[1], "pipeline": pipeline, "full_document": full_document,
            "full_document_before_change": before, "show_expanded_events": expanded,
        }
        with rxcs.open_oplog(":memory:", document_images=images) as oplog:
            oplog.append_many(log)
            watched = by_watch(oplog, options, start_at_operation_time=rxcs.BEGINNING)
            assert watched == by_hand(oplog, 0, options, None)
            events, _ = watched
            if resume_at is None or not events:
                return
            last = events[min(resume_at, len(events) - 1)]
            token = last.id if isinstance(last, rxcs.ChangeEvent) else rxcs.ResumeToken.parse(last["_id"])
            if token.invalidate:  # start_after an invalidate: a new stream after the entry that ended the old
                resumed = by_watch(oplog, options, start_after=token)
                assert resumed == by_hand(oplog, token.op_id, options, None)
                return
            resumed = by_watch(oplog, options, resume_after=token)
            assert resumed == by_hand(oplog, token.op_id - 1, options, token)  # the token's entry again, skipped
            assert resumed[0] == events[events.index(last) + 1 :]
