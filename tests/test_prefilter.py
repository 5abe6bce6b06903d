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
from rxcs.oplog.codec import DATA_CHANGE_HEAD, encode_entry
from rxcs.oplog.entry import OplogEntry
from rxcs.prefilter import entry_filter, leading_match_filter, leading_match_sift
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
        update_description=draw(st.one_of(st.none(), st.sampled_from([
            {"updatedFields": {"status": "paid"}, "removedFields": ["x"], "truncatedArrays": []},
            {"updatedFields": {"a.b": 1, "c.0": 2}, "removedFields": [], "truncatedArrays": [],
             "disambiguatedPaths": {"a.b": ["a.b"]}},
        ]))),
        to=draw(st.one_of(st.none(), st.just(Namespace("shop", "archive")))),
        operation_description=draw(st.one_of(st.none(), st.sampled_from([
            {"indexes": [{"name": "a_1"}]}, {"dropTarget": True}, {"viewOn": "users", "pipeline": []}]))),
        txn_number=draw(st.one_of(st.none(), st.integers(0, 2))),
        collection_uuid=draw(st.one_of(st.none(), st.just(uuid.UUID(int=3)))),
        dropped=draw(st.one_of(st.none(), st.just(uuid.UUID(int=4)), st.just({"v": 2, "key": {"a": 1}}))),
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
    {"operationDescription.indexes.key.a": 1},
    {"operationDescription.to.coll": "archive"},
    {"operationDescription.dropTarget": {"$exists": True}},
    {"operationDescription.idIndex.name": "_id_"},
    {"updateDescription.disambiguatedPaths": {"$exists": True}},
    {"updateDescription.disambiguatedPaths": {"a.b": ["a.b"]}},
    {"txnNumber": {"$exists": True}},
    {"clusterTime": {"$gt": [2, 0]}},
    {"$or": [{"operationType": "delete"}, {"fullDocument.status": {"$in": ["new", None]}}]},
    {"$nor": [{"ns.coll": "users"}], "$comment": "not users"},
    # Every condition on a path inside one field: read on the document that field holds (when it holds one).
    {"fullDocument.status": "paid", "fullDocument.tags": {"$size": 2}},
    {"fullDocument.status": None},
    {"fullDocument.status": {"$not": {"$eq": "paid"}}, "fullDocument.missing.deeper": {"$exists": False}},
    {"fullDocument.tags.0": {"$in": ["a", "paid"]}},
    {"fullDocumentBeforeChange.status": {"$type": "string"}},
    {"documentKey._id": {"$in": [1, None]}},
    {"updateDescription.updatedFields.status": {"$exists": True}, "updateDescription.removedFields": []},
]


class TestEntryFilter:
    @settings(max_examples=300)
    @given(entry=entries())
    def test_agrees_with_the_event_document(self, entry: OplogEntry) -> None:
        """For every entry, filter, image mode and expanded or not, the entry filter keeps exactly the entries
        whose event matches."""
        for full_document in ("default", "whenAvailable"):
            for before in ("off", "whenAvailable"):
                for expanded in (False, True):
                    event = entry_converter(OPLOG_ID, full_document, before, expanded, None)(entry)
                    if event is None:  # an expanded-only kind, in a stream without them
                        assert not expanded
                        continue
                    document = event.to_document()
                    for spec in FILTERS:
                        check = entry_filter(spec, full_document=full_document, full_document_before_change=before,
                                             show_expanded_events=expanded)
                        assert check is not None
                        expected = compile_filter(rewrite_event_aliases(spec))(document)
                        assert check(entry) == expected, (spec, full_document, before, expanded)

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


# Strings that share bytes with one another and with the record's own names, accents included.
WORDS = ["paid", "pai", "paidé", "new", "users", "shop", "insert", "é", "日本", "update"]
values = st.recursive(
    st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(WORDS), st.binary(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(WORDS), inner, max_size=3)),
    max_leaves=6,
)
PATHS = ["fullDocument.status", "fullDocument.tags", "fullDocumentBeforeChange.status", "documentKey._id",
         "updateDescription.updatedFields.status", "operationType", "ns.coll", "db", "to.coll",
         "operationDescription.indexes.name"]


@st.composite
def string_conditions(draw: st.DrawFn) -> Any:
    """A condition on one field that a sift can use: a string, $eq, $in or $all of strings, maybe with more."""
    word = draw(st.sampled_from(WORDS))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
    return draw(st.sampled_from([
        word, {"$eq": word}, {"$in": words}, {"$all": words}, {"$in": words, "$ne": word},
        {"$gte": word, "$eq": word},
    ]))


@st.composite
def sifting_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A filter with one or two string conditions, maybe inside $and, maybe beside conditions that require nothing."""
    spec: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=2, unique=True)):
        spec[path] = draw(string_conditions())
    if draw(st.booleans()):
        spec = {"$and": [spec, {"fullDocument": {"$exists": draw(st.booleans())}}]}
    if draw(st.booleans()):
        spec["$or"] = [{"operationType": "delete"}, {"fullDocument.status": {"$in": ["new", None]}}]
    return spec


@st.composite
def stored_entries(draw: st.DrawFn) -> OplogEntry:
    """An entry of any operation, known or not, at any op_id and time, holding values of every kind."""
    op = draw(st.one_of(st.sampled_from(OPERATIONS), st.sampled_from(["teleport", "inserts", "updated", "Insert"])))
    return OplogEntry(
        op_id=draw(st.integers(1, 2**63)),
        cluster_time=ClusterTime(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))),
        wall_time_ms=draw(st.integers(0, 2**63)),
        op=op,
        db=draw(st.sampled_from(["shop", "other"])),
        coll=draw(st.sampled_from(["users", "orders", "paid", None])),
        document_key=draw(st.one_of(st.none(), st.fixed_dictionaries({"_id": values}))),
        full_document=draw(st.one_of(st.none(), st.fixed_dictionaries({"_id": values}, optional={
            "status": values, "tags": st.lists(st.sampled_from(WORDS), max_size=3)}))),
        full_document_before_change=draw(st.one_of(st.none(), st.fixed_dictionaries({"status": values}))),
        update_description=draw(st.one_of(st.none(), st.builds(
            lambda status: {"updatedFields": {"status": status}, "removedFields": [], "truncatedArrays": []}, values))),
        to=draw(st.one_of(st.none(), st.sampled_from([Namespace("shop", "paid"), Namespace("shop", "archive")]))),
        operation_description=draw(st.one_of(st.none(), st.just({"indexes": [{"name": "paid_1"}]}))),
        txn_number=draw(st.one_of(st.none(), st.integers(0, 2))),
    )


def record_of(entry: OplogEntry) -> bytes:
    return encode_entry(entry.op_id, entry.cluster_time, entry.wall_time_ms, entry.change)


class TestSift:
    @settings(max_examples=400)
    @given(entry=stored_entries(), spec=sifting_specs(), padding=st.binary(max_size=3))
    def test_sifts_out_only_data_changes_no_filter_could_keep(self, entry: OplogEntry, spec: dict[str, Any],
                                                               padding: bytes) -> None:
        """A record the sift fails is an insert, update, replace or delete that the exact entry filter drops."""
        data = padding + record_of(entry) + padding
        for full_document in ("default", "whenAvailable"):
            for before in ("off", "whenAvailable"):
                modes = {"full_document": full_document, "full_document_before_change": before}
                sift = leading_match_sift([{"$match": spec}], **modes)
                assert sift is not None, spec
                if not sift(data, len(padding), len(data) - len(padding)):
                    check, covered = leading_match_filter([{"$match": spec}], **modes)
                    assert covered == 1
                    assert check is not None
                    assert entry.op in ("insert", "update", "replace", "delete")
                    assert check(entry) is False, (spec, modes)

    @settings(max_examples=300)
    @given(entry=stored_entries())
    def test_the_data_change_head_names_exactly_the_four_data_operations(self, entry: OplogEntry) -> None:
        """The record head pattern matches inserts, updates, replaces and deletes, at any op_id and time, only."""
        data = record_of(entry)
        matched = DATA_CHANGE_HEAD.match(data, 0, len(data)) is not None
        assert matched == (entry.op in ("insert", "update", "replace", "delete"))

    def test_it_leaves_out_the_records_without_the_string(self) -> None:
        """A record without the required bytes fails; one with them, or a drop, passes."""
        sift = leading_match_sift([{"$match": {"fullDocument.status": {"$in": ["paid", "shipped"]}}}])
        assert sift is not None
        insert = OplogEntry(9, ClusterTime(1_700_000_000, 1), 1_700_000_000_000, "insert", "shop", "users",
                            {"_id": 1}, {"_id": 1, "status": "new"})
        drop = OplogEntry(10, ClusterTime(1_700_000_000, 2), 1_700_000_000_000, "drop", "shop", "users")
        for entry, kept in [(insert, False), (insert._replace(full_document={"_id": 1, "status": "shipped"}), True),
                            (drop, True)]:
            data = record_of(entry)
            assert sift(data, 0, len(data)) is kept

    @pytest.mark.parametrize(
        "stages",
        [
            [{"$match": {"fullDocument.age": {"$gt": 3}}}],
            [{"$match": {"$or": [{"fullDocument.status": "paid"}, {"operationType": "delete"}]}}],
            [{"$match": {"fullDocument": {"status": "paid"}}}],
            [{"$match": {"fullDocument.status": {"$regex": "^pa"}}}],
            [{"$match": {"fullDocument.status": {"$in": ["paid", None]}}}],
            [{"$match": {"_id": {"$exists": True}}}, {"$match": {"fullDocument.status": "paid"}}],
            [{"$match": {"fullDocument.status": ""}}],
        ],
    )
    def test_no_sift_where_no_string_is_required(self, stages: list[dict[str, Any]]) -> None:
        """Numbers, $or, whole documents, regexes, null, filters the entries cannot answer: nothing to sift by."""
        assert leading_match_sift(stages) is None

    def test_alike_filters_share_one_sift(self) -> None:
        """Two streams with the same filter get the same sift object, so one cursor can sift for both."""
        stages = [{"$match": {"fullDocument.status": "paid", "ns.coll": "users"}}]
        assert leading_match_sift(stages) is leading_match_sift([dict(stage) for stage in stages])
