"""Filters evaluated on oplog entries agree with the same filters on the events' documents."""

from __future__ import annotations

import uuid
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import rxcs
from rxcs.events import ClusterTime, Namespace
from rxcs.operators import entry_converter
from rxcs.oplog.entry import OplogEntry
from rxcs.prefilter import entry_filter, leading_match_filter
from rxcs.query import compile_filter, rewrite_event_aliases

OPLOG_ID = uuid.UUID(int=7)
OPERATIONS = ["insert", "update", "replace", "delete", "drop", "rename", "dropDatabase", "invalidate",
              "create", "createIndexes", "dropIndexes"]
small = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["paid", "new"]))
documents = st.one_of(st.none(), st.fixed_dictionaries({"_id": st.integers(0, 3)}, optional={"status": small}))


@st.composite
def entries(draw: st.DrawFn) -> OplogEntry:
    """An entry of any operation, with or without each optional part."""
    op = draw(st.sampled_from(OPERATIONS))
    return OplogEntry(
        op_id=draw(st.integers(1, 100)),
        cluster_time=ClusterTime(draw(st.integers(1, 5)), draw(st.integers(0, 3))),
        wall_time_ms=1_700_000_000_000,
        op=op,
        db=draw(st.sampled_from(["shop", "other"])),
        coll=draw(st.sampled_from(["users", "orders", None])),
        document_key=draw(st.one_of(st.none(), st.fixed_dictionaries({"_id": st.integers(0, 3)}))),
        full_document=draw(documents),
        full_document_before_change=draw(documents),
        update_description=draw(st.one_of(st.none(), st.just(
            {"updatedFields": {"status": "paid"}, "removedFields": ["x"], "truncatedArrays": []}))),
        to=draw(st.one_of(st.none(), st.just(Namespace("shop", "archive")))),
        operation_description=draw(st.one_of(st.none(), st.just({"indexes": [{"name": "a_1"}]}))),
        txn_number=draw(st.one_of(st.none(), st.integers(0, 2))),
    )


FILTERS: list[dict[str, Any]] = [
    {"operationType": "insert"},
    {"operationType": {"$in": ["update", "replace"]}},
    {"fullDocument.status": "paid"},
    {"fullDocument": None},
    {"fullDocument": {"$exists": True}},
    {"fullDocumentBeforeChange.status": {"$ne": "paid"}},
    {"fullDocumentBeforeChange": {"$exists": False}},
    {"ns": {"db": "shop", "coll": "users"}},
    {"ns.db": "shop", "ns.coll": {"$exists": False}},
    {"db": "shop", "coll": "users"},
    {"documentKey._id": {"$gte": 2}},
    {"updateDescription.updatedFields.status": "paid"},
    {"to.coll": "archive"},
    {"operationDescription.indexes.name": "a_1"},
    {"txnNumber": {"$exists": True}},
    {"clusterTime": {"$gt": [2, 0]}},
    {"$or": [{"operationType": "delete"}, {"fullDocument.status": {"$in": ["new", None]}}]},
    {"$nor": [{"ns.coll": "users"}], "$comment": "not users"},
]


class TestEntryFilter:
    @settings(max_examples=300)
    @given(entry=entries())
    def test_agrees_with_the_event_document(self, entry: OplogEntry) -> None:
        """For every entry, filter and image mode, the entry filter keeps exactly the entries whose event matches."""
        for full_document in ("default", "whenAvailable"):
            for before in ("off", "whenAvailable"):
                event = entry_converter(OPLOG_ID, full_document, before, True, None)(entry)
                assert event is not None
                document = event.to_document()
                for spec in FILTERS:
                    check = entry_filter(spec, full_document=full_document, full_document_before_change=before)
                    assert check is not None
                    expected = compile_filter(rewrite_event_aliases(spec))(document)
                    assert check(entry) == expected, (spec, full_document, before)

    @pytest.mark.parametrize(
        ("spec", "full_document", "before"),
        [
            ({"_id": {"$exists": True}}, "default", "off"),
            ({"wallTime": {"$exists": True}}, "default", "off"),
            ({"$expr": {"$eq": ["$operationType", "insert"]}}, "default", "off"),
            ({"fullDocument.status": "paid"}, "updateLookup", "off"),
            ({"fullDocument.status": "paid"}, "required", "off"),
            ({"fullDocumentBeforeChange.status": "paid"}, "default", "required"),
            ({"$or": [{"operationType": "insert"}, {"wallTime": None}]}, "default", "off"),
        ],
    )
    def test_fields_only_the_event_knows_are_not_prefiltered(
        self, spec: dict[str, Any], full_document: str, before: str
    ) -> None:
        """A filter reading the token, the wall time, $expr or a looked-up image gets no entry filter."""
        assert entry_filter(spec, full_document=full_document, full_document_before_change=before) is None

    def test_an_unknown_operation_passes_to_the_conversion(self) -> None:
        """An entry whose operation rxcs does not know is let through, so converting it reports it."""
        entry = OplogEntry(1, ClusterTime(1, 0), 0, "teleport", "shop", "users")
        check = entry_filter({"operationType": "insert"})
        assert check is not None
        assert check(entry) is True


class TestLeadingMatches:
    def test_covers_the_leading_matches_it_can(self) -> None:
        """Leading $match stages on entry fields are covered; the first other stage stops the cover."""
        stages = [{"$match": {"operationType": "insert"}}, {"$match": {"ns.coll": "users"}},
                  {"$match": {"_id": {"$exists": True}}}, {"$match": {"operationType": "insert"}}]
        check, covered = leading_match_filter(stages)
        assert covered == 2
        assert check is not None
        insert = OplogEntry(1, ClusterTime(1, 0), 0, "insert", "shop", "users", {"_id": 1}, {"_id": 1})
        assert check(insert)
        assert not check(insert._replace(coll="orders"))

    def test_a_first_stage_on_other_fields_covers_nothing(self) -> None:
        """A pipeline starting with a stage that reads the token has no entry filter."""
        assert leading_match_filter([{"$match": {"_id": {"$exists": True}}}]) == (None, 0)


class TestThroughWatch:
    def test_prefiltered_stream_gives_the_events_a_full_evaluation_gives(self, tmp_path: Any) -> None:
        """A stream whose $match runs on entries delivers what one evaluating event documents delivers."""
        with rxcs.open_oplog(tmp_path / "oplog") as oplog:
            for i in range(60):
                oplog.insert("shop", "users", {"_id": i, "status": ("paid", "new")[i % 2]})
                if i % 7 == 0:
                    oplog.update("shop", "users", i, updated_fields={"status": "paid"})
            oplog.drop_collection("shop", "users")
            on_entries = [{"$match": {"fullDocument.status": "paid"}}]
            # The same filter behind a stage that reads _id: evaluated on whole event documents.
            on_events = [{"$match": {"_id": {"$exists": True}}}, *on_entries]
            results = []
            for pipeline in (on_entries, on_events):
                with rxcs.watch(oplog, "shop", "users", pipeline,
                                start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                    results.append([event.id for event in stream])
            assert results[0] == results[1]
            assert len(results[0]) == 30
