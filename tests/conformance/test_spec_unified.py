"""MongoDB's unified change-stream tests, ported to rxcs and run on every oplog backend.

Each case below restates one case of ``source/change-streams/tests/unified/``
in ``mongodb/specifications`` at commit 92b3c0b9287bfba1b0ec4084300858d05c654f8c
(``spec_catalog.SPEC_COMMIT``): its file and description, its operations and
its expected results, run by ``unified.run_case`` on a memory, a file and a
Redis oplog. What MongoDB asserts about the commands a driver sends
(``expectEvents`` of ``commandStartedEvent``) has no counterpart in rxcs and
is not ported; the cases left out entirely are listed, with reasons, in
``spec_catalog.LEFT_OUT`` and docs/conformance.md.

Where the spec expects a server error, the port names the rxcs error that
stands for it: ``PipelineError`` for an unknown stage (40324) and for an
event whose ``_id`` the pipeline removed (280, ChangeStreamFatalError, not
resumable); ``MissingImageError`` for a required image that is not there.
"""

from __future__ import annotations

from typing import Any

import pytest

import rxcs

from .unified import Case, Entity, Op, run_case

# -- entities, as the spec files name them ------------------------------------------------------------------------

CHANGE_STREAMS = {
    "client0": Entity(),
    "database0": Entity("database0"),
    "collection0": Entity("database0", "collection0"),
    "database1": Entity("database1"),
    "collection1": Entity("database1", "collection1"),
    "globalCollection0": Entity("database0", "collection0"),
    "globalDb1Collection0": Entity("database1", "collection0"),
    "globalDb0Collection1": Entity("database0", "collection1"),
}
EMPTY_COLLECTION0 = (("database0", "collection0", ()),)
PRE_POST = {
    "database0": Entity("change-stream-tests"),
    "collection0": Entity("change-stream-tests", "test"),
}
PRE_POST_DATA = (("change-stream-tests", "test", ({"_id": 1},)),)
NS0 = {"db": "database0", "coll": "collection0"}

IMAGES_BEGIN_AT_COLLMOD = (
    "rxcs differs here: document images begin with what the oplog records once they are on, and this case's "
    "document was written before the collMod that turns them on (MongoDB reads it from the collection); the "
    "same case with the document written after the collMod passes (test_images_kept_from_collmod_on)"
)


def watch(on: str = "collection0", pipeline: list[Any] | None = None, **options: Any) -> Op:
    """createChangeStream on an entity, saved as changeStream0."""
    return Op("createChangeStream", on, {"pipeline": pipeline or [], **options}, save_as="changeStream0")


def expect(result: Any = None, *, error: type[BaseException] | None = None, spec_error: Any = None) -> Op:
    """iterateUntilDocumentOrError on changeStream0, with its expected result or error."""
    return Op("iterateUntilDocumentOrError", "changeStream0", expect_result=result, expect_error=error,
              spec_error=spec_error)


def cs_case(description: str, *operations: Op, file: str = "change-streams.json") -> Case:
    return Case(file, description, CHANGE_STREAMS, operations, EMPTY_COLLECTION0)


def insert(on: str, document: dict[str, Any]) -> Op:
    return Op("insertOne", on, {"document": document})


# -- change-streams.json ----------------------------------------------------------------------------------------

CASES: list[Case | Any] = [
    cs_case(
        "Test array truncation",
        insert("collection0", {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]}),
        watch(),
        Op("updateOne", "collection0", {"filter": {"_id": 1}, "update": [{"$set": {"array": ["foo", {"a": "bar"}]}}]}),
        expect({
            "operationType": "update", "ns": NS0,
            "updateDescription": {
                "updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "array", "newSize": 2}],
                "disambiguatedPaths": {"$$unsetOrMatches": {"$$exists": True}},
            },
        }),
    ),
    cs_case(
        "to field is set in a rename change event",
        watch(),
        Op("dropCollection", "database0", {"collection": "collection1"}),
        Op("rename", "collection0", {"to": "collection1"}),
        expect({"operationType": "rename", "ns": NS0, "to": {"db": "database0", "coll": "collection1"}}),
    ),
    cs_case(
        "Test unknown operationType MUST NOT err",
        watch(pipeline=[{"$project": {"operationType": "addedInFutureMongoDBVersion", "ns": 1}}]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"operationType": "addedInFutureMongoDBVersion", "ns": NS0}),
    ),
    cs_case(
        "Test newField added in response MUST NOT err",
        watch(pipeline=[{"$project": {"operationType": 1, "ns": 1, "newField": "newFieldValue"}}]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"operationType": "insert", "ns": NS0, "newField": "newFieldValue"}),
    ),
    cs_case(
        "Test new structure in ns document MUST NOT err",
        watch(pipeline=[{"$project": {"operationType": "insert", "ns.viewOn": "db.coll"}}]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"operationType": "insert", "ns": {"viewOn": "db.coll"}}),
    ),
    cs_case(
        "Test modified structure in ns document MUST NOT err",
        watch(pipeline=[
            {"$project": {"operationType": "insert", "ns": {"db": "$ns.db", "coll": "$ns.coll", "viewOn": "db.coll"}}},
        ]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"operationType": "insert", "ns": {**NS0, "viewOn": "db.coll"}}),
    ),
    cs_case(
        "Test server error on projecting out _id",
        watch(pipeline=[{"$project": {"_id": 0}}]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect(error=rxcs.PipelineError, spec_error={
            "errorCode": 280, "errorCodeName": "ChangeStreamFatalError",
            "errorLabelsContain": ["NonResumableChangeStreamError"],
        }),
    ),
    cs_case(
        "Test projection in change stream returns expected fields",
        watch(pipeline=[{"$project": {"optype": "$operationType", "ns": 1, "newField": "value"}}]),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"optype": "insert", "ns": NS0, "newField": "value"}),
    ),
    cs_case(
        "$changeStream must be the first stage in a change stream pipeline sent to the server",
        watch(),
        insert("globalCollection0", {"x": 1}),
        expect({
            "_id": {"$$exists": True}, "documentKey": {"$$exists": True}, "operationType": "insert", "ns": NS0,
            "fullDocument": {"x": 1, "_id": {"$$exists": True}},
        }),
    ),
    cs_case(
        "The server returns change stream responses in the specified server response format",
        watch(),
        insert("globalCollection0", {"x": 1}),
        expect({
            "_id": {"$$exists": True}, "documentKey": {"$$exists": True}, "operationType": "insert", "ns": NS0,
            "fullDocument": {"x": 1, "_id": {"$$exists": True}},
        }),
    ),
    cs_case(
        "Executing a watch helper on a Collection results in notifications for changes to the specified collection",
        watch(),
        insert("globalDb0Collection1", {"x": 1}),
        insert("globalDb1Collection0", {"y": 2}),
        insert("globalCollection0", {"z": 3}),
        expect({"operationType": "insert", "ns": NS0, "fullDocument": {"z": 3, "_id": {"$$exists": True}}}),
    ),
    cs_case(
        "Change Stream should allow valid aggregate pipeline stages",
        watch(pipeline=[{"$match": {"fullDocument.z": 3}}]),
        insert("globalCollection0", {"y": 2}),
        insert("globalCollection0", {"z": 3}),
        expect({"operationType": "insert", "ns": NS0, "fullDocument": {"z": 3, "_id": {"$$exists": True}}}),
    ),
    cs_case(
        "Executing a watch helper on a Database results in notifications for changes to all collections in the "
        "specified database.",
        watch("database0"),
        insert("globalDb0Collection1", {"x": 1}),
        insert("globalDb1Collection0", {"y": 2}),
        insert("globalCollection0", {"z": 3}),
        expect({
            "operationType": "insert", "ns": {"db": "database0", "coll": "collection1"},
            "fullDocument": {"x": 1, "_id": {"$$exists": True}},
        }),
        expect({"operationType": "insert", "ns": NS0, "fullDocument": {"z": 3, "_id": {"$$exists": True}}}),
    ),
    cs_case(
        "Executing a watch helper on a MongoClient results in notifications for changes to all collections in all "
        "databases in the cluster.",
        watch("client0"),
        insert("globalDb0Collection1", {"x": 1}),
        insert("globalDb1Collection0", {"y": 2}),
        insert("globalCollection0", {"z": 3}),
        expect({
            "operationType": "insert", "ns": {"db": "database0", "coll": "collection1"},
            "fullDocument": {"x": 1, "_id": {"$$exists": True}},
        }),
        expect({
            "operationType": "insert", "ns": {"db": "database1", "coll": "collection0"},
            "fullDocument": {"y": 2, "_id": {"$$exists": True}},
        }),
        expect({"operationType": "insert", "ns": NS0, "fullDocument": {"z": 3, "_id": {"$$exists": True}}}),
    ),
    cs_case(
        "Test insert, update, replace, and delete event types",
        watch(),
        insert("globalCollection0", {"x": 1}),
        Op("updateOne", "globalCollection0", {"filter": {"x": 1}, "update": {"$set": {"x": 2}}}),
        Op("replaceOne", "globalCollection0", {"filter": {"x": 2}, "replacement": {"x": 3}}),
        Op("deleteOne", "globalCollection0", {"filter": {"x": 3}}),
        expect({"operationType": "insert", "ns": NS0, "fullDocument": {"x": 1, "_id": {"$$exists": True}}}),
        expect({
            "operationType": "update", "ns": NS0,
            "updateDescription": {
                "updatedFields": {"x": 2}, "removedFields": [],
                "truncatedArrays": {"$$unsetOrMatches": {"$$exists": True}},
                "disambiguatedPaths": {"$$unsetOrMatches": {"$$exists": True}},
            },
        }),
        expect({"operationType": "replace", "ns": NS0, "fullDocument": {"x": 3, "_id": {"$$exists": True}}}),
        expect({"operationType": "delete", "ns": NS0}),
    ),
    cs_case(
        "Test rename and invalidate event types",
        watch(),
        Op("dropCollection", "database0", {"collection": "collection1"}),
        Op("rename", "globalCollection0", {"to": "collection1"}),
        expect({"operationType": "rename", "ns": NS0, "to": {"db": "database0", "coll": "collection1"}}),
        expect({"operationType": "invalidate"}),
    ),
    cs_case(
        "Test drop and invalidate event types",
        watch(),
        Op("dropCollection", "database0", {"collection": "collection0"}),
        expect({"operationType": "drop", "ns": NS0}),
        expect({"operationType": "invalidate"}),
    ),
    cs_case(
        "Test wallTime field is set in a change event",
        watch(),
        insert("collection0", {"_id": 1, "a": 1}),
        expect({"operationType": "insert", "ns": NS0, "wallTime": {"$$exists": True}}),
    ),
    # -- change-streams-clusterTime.json ----------------------------------------------------------------------
    cs_case(
        "clusterTime is present",
        watch(),
        insert("collection0", {"_id": 1}),
        expect({"ns": NS0, "clusterTime": {"$$exists": True}}),
        file="change-streams-clusterTime.json",
    ),
    # -- change-streams-disambiguatedPaths.json ------------------------------------------------------------------
    cs_case(
        "disambiguatedPaths is not present when showExpandedEvents is false/unset",
        insert("collection0", {"_id": 1, "a": {"1": 1}}),
        watch(),
        Op("updateOne", "collection0", {"filter": {"_id": 1}, "update": {"$set": {"a.1": 2}}}),
        expect({
            "operationType": "update", "ns": NS0,
            "updateDescription": {
                "updatedFields": {"$$exists": True}, "removedFields": {"$$exists": True},
                "truncatedArrays": {"$$exists": True}, "disambiguatedPaths": {"$$exists": False},
            },
        }),
        file="change-streams-disambiguatedPaths.json",
    ),
    cs_case(
        "disambiguatedPaths is present on updateDescription when an ambiguous path is present",
        insert("collection0", {"_id": 1, "a": {"1": 1}}),
        watch(showExpandedEvents=True),
        Op("updateOne", "collection0", {"filter": {"_id": 1}, "update": {"$set": {"a.1": 2}}}),
        expect({
            "operationType": "update", "ns": NS0,
            "updateDescription": {
                "updatedFields": {"$$exists": True}, "removedFields": {"$$exists": True},
                "truncatedArrays": {"$$exists": True}, "disambiguatedPaths": {"a.1": ["a", "1"]},
            },
        }),
        file="change-streams-disambiguatedPaths.json",
    ),
    cs_case(
        "disambiguatedPaths returns array indices as integers",
        insert("collection0", {"_id": 1, "a": [{"1": 1}]}),
        watch(showExpandedEvents=True),
        Op("updateOne", "collection0", {"filter": {"_id": 1}, "update": {"$set": {"a.0.1": 2}}}),
        expect({
            "operationType": "update", "ns": NS0,
            "updateDescription": {
                "updatedFields": {"$$exists": True}, "removedFields": {"$$exists": True},
                "truncatedArrays": {"$$exists": True},
                "disambiguatedPaths": {"a.0.1": ["a", {"$$type": "int"}, "1"]},
            },
        }),
        file="change-streams-disambiguatedPaths.json",
    ),
    # -- change-streams-errors.json ----------------------------------------------------------------------------------
    cs_case(
        "Change Stream should error when an invalid aggregation stage is passed in",
        Op("createChangeStream", "collection0", {"pipeline": [{"$unsupported": "foo"}]},
           expect_error=rxcs.PipelineError, spec_error={"errorCode": 40324}),
        file="change-streams-errors.json",
    ),
    cs_case(
        "Change Stream should error when _id is projected out",
        watch(pipeline=[{"$project": {"_id": 0}}]),
        insert("globalCollection0", {"z": 3}),
        expect(error=rxcs.PipelineError, spec_error={"errorCode": 280}),
        file="change-streams-errors.json",
    ),
    # -- change-streams-nsType.json ------------------------------------------------------------------------------
    *(
        cs_case(
            f"nsType is present when creating {kind}s",
            Op("dropCollection", "database0", {"collection": "foo"}),
            watch("database0", showExpandedEvents=True),
            Op("createCollection", "database0", {"collection": "foo", **options}),
            expect({"operationType": "create", "nsType": kind}),
            file="change-streams-nsType.json",
        )
        for kind, options in (("collection", {}), ("view", {"viewOn": "testName"}))
    ),
    # -- change-streams-showExpandedEvents.json ------------------------------------------------------------------
    cs_case(
        "when showExpandedEvents is true, new fields on change stream events are handled appropriately",
        Op("dropCollection", "database0", {"collection": "foo"}),
        Op("createCollection", "database0", {"collection": "foo"}),
        watch(showExpandedEvents=True),
        insert("collection0", {"a": 1}),
        Op("createIndex", "collection0", {"keys": {"x": 1}, "name": "x_1"}),
        Op("rename", "collection0", {"to": "foo", "dropTarget": True}),
        expect({"operationType": "insert", "ns": NS0, "collectionUUID": {"$$exists": True}}),
        expect({"operationType": "createIndexes", "ns": NS0, "operationDescription": {"$$exists": True}}),
        expect({
            "operationType": "rename", "ns": NS0, "to": {"db": "database0", "coll": "foo"},
            "operationDescription": {"dropTarget": {"$$exists": True}, "to": {"db": "database0", "coll": "foo"}},
        }),
        file="change-streams-showExpandedEvents.json",
    ),
    cs_case(
        "when showExpandedEvents is true, createIndex events are reported",
        watch(pipeline=[{"$match": {"operationType": {"$ne": "create"}}}], showExpandedEvents=True),
        Op("createIndex", "collection0", {"keys": {"x": 1}, "name": "x_1"}),
        expect({"operationType": "createIndexes"}),
        file="change-streams-showExpandedEvents.json",
    ),
    cs_case(
        "when showExpandedEvents is true, dropIndexes events are reported",
        Op("createIndex", "collection0", {"keys": {"x": 1}, "name": "x_1"}),
        watch(showExpandedEvents=True),
        Op("dropIndex", "collection0", {"name": "x_1"}),
        expect({"operationType": "dropIndexes"}),
        file="change-streams-showExpandedEvents.json",
    ),
    *(
        cs_case(
            f"when showExpandedEvents is true, create events{suffix} are reported",
            Op("dropCollection", "database0", {"collection": "foo"}),
            watch("database0", showExpandedEvents=True),
            Op("createCollection", "database0", {"collection": "foo", **options}),
            expect({"operationType": "create"}),
            file="change-streams-showExpandedEvents.json",
        )
        for suffix, options in (("", {}), (" on views", {"viewOn": "testName"}))
    ),
    cs_case(
        "when showExpandedEvents is true, modify events are reported",
        Op("createIndex", "collection0", {"keys": {"x": 1}, "name": "x_2"}),
        watch(showExpandedEvents=True),
        Op("runCommand", "database0", {"command": {"collMod": "collection0"}, "commandName": "collMod"}),
        expect({"operationType": "modify"}),
        file="change-streams-showExpandedEvents.json",
    ),
]


# -- change-streams-pre_and_post_images.json ---------------------------------------------------------------------


def _pre_post(option: str, mode: str, enabled: bool, *, document_after_collmod: bool = False) -> Case:
    """One case of the pre- and post-image file: collMod, a stream with ``option=mode``, one $set, one event.

    With ``document_after_collmod`` the case's initial document is written after the collMod instead of before
    it: the form in which rxcs's document images, which begin when they are turned on, know it.
    """
    updated = {"operationType": "update", "ns": {"db": "change-stream-tests", "coll": "test"},
               "updateDescription": {"$$type": "object"}}
    if mode == "required" and not enabled:
        outcome = expect(error=rxcs.MissingImageError, spec_error={"isClientError": False})
    elif option == "fullDocument":
        outcome = expect({**updated, "fullDocument": {"_id": 1, "x": 1} if enabled else None})
    elif mode == "off":
        outcome = expect({**updated, "fullDocumentBeforeChange": {"$$exists": False}})
    else:
        outcome = expect({**updated, "fullDocumentBeforeChange": {"_id": 1} if enabled else None})
    collmod = Op("runCommand", "database0", {
        "commandName": "collMod",
        "command": {"collMod": "test", "changeStreamPreAndPostImages": {"enabled": enabled}},
    })
    setup = (collmod, insert("collection0", {"_id": 1})) if document_after_collmod else (collmod,)
    return Case(
        "change-streams-pre_and_post_images.json",
        f"{option}:{mode} with changeStreamPreAndPostImages {'enabled' if enabled else 'disabled'}",
        PRE_POST,
        (
            *setup,
            watch(**{option: mode}),
            Op("updateOne", "collection0", {"filter": {"_id": 1}, "update": {"$set": {"x": 1}}}),
            outcome,
        ),
        (("change-stream-tests", "test", ()),) if document_after_collmod else PRE_POST_DATA,
    )


PRE_POST_MODES = [
    (option, mode, enabled)
    for option, modes in (("fullDocument", ("whenAvailable", "required")),
                          ("fullDocumentBeforeChange", ("whenAvailable", "required", "off")))
    for mode in modes
    for enabled in (True, False)
]
CASES += [
    pytest.param(
        _pre_post(option, mode, enabled),
        marks=[pytest.mark.xfail(strict=True, reason=IMAGES_BEGIN_AT_COLLMOD)] if enabled and mode != "off" else [],
    )
    for option, mode, enabled in PRE_POST_MODES
]
# The enabled cases again, with the document written once images are on (see _pre_post).
IMAGES_FROM_COLLMOD = [
    _pre_post(option, mode, enabled, document_after_collmod=True)
    for option, mode, enabled in PRE_POST_MODES
    if enabled and mode != "off"
]


def case_of(param: Any) -> Case:
    """The case a list entry holds (bare, or inside a pytest.param with its marks)."""
    return param if isinstance(param, Case) else param.values[0]


def _ids() -> list[str]:
    return [case_of(param).id for param in CASES]


class TestUnifiedCases:
    @pytest.mark.parametrize("case", CASES, ids=_ids())
    def test_case(self, case: Case, oplog: rxcs.Oplog) -> None:
        """The ported case passes on this backend: every expected result matches, every expected error is raised."""
        returned = run_case(case, oplog)
        iterations = [op for op in case.operations if op.name == "iterateUntilDocumentOrError"]
        assert len(returned) == sum(op.expect_error is None for op in iterations)

    @pytest.mark.parametrize("case", IMAGES_FROM_COLLMOD, ids=[case.id for case in IMAGES_FROM_COLLMOD])
    def test_images_kept_from_collmod_on(self, case: Case, oplog: rxcs.Oplog) -> None:
        """The pre- and post-image cases with changeStreamPreAndPostImages enabled pass when the document is
        written after the collMod that turns images on."""
        assert len(run_case(case, oplog)) == 1


class TestTheCasesMeanWhatTheySay:
    """A ported case fails when rxcs behaves otherwise: the runner is not a rubber stamp."""

    def test_a_case_expecting_another_event_fails(self, memory_oplog: rxcs.Oplog) -> None:
        """The insert/update/replace/delete case with the update's field changed no longer passes."""
        case = next(case_of(c) for c in CASES if case_of(c).description.startswith("Test insert, update"))
        wrong = Case(case.file, case.description, case.entities, [
            op if op.expect_result is None or op.expect_result.get("operationType") != "update"
            else Op(op.name, op.object, expect_result={**op.expect_result, "operationType": "replace"})
            for op in case.operations
        ], case.initial_data)
        with pytest.raises(AssertionError, match="operationType: expected 'replace', got 'update'"):
            run_case(wrong, memory_oplog)

    def test_a_case_expecting_an_error_fails_without_one(self, memory_oplog: rxcs.Oplog) -> None:
        """The projected-out _id case with a pipeline that keeps _id raises nothing, and so fails."""
        case = Case("change-streams.json", "keeps _id", CHANGE_STREAMS, (
            watch(pipeline=[{"$project": {"a": 0}}]),
            insert("collection0", {"_id": 1, "a": 1}),
            expect(error=rxcs.PipelineError),
        ), EMPTY_COLLECTION0)
        with pytest.raises(AssertionError, match="expected PipelineError"):
            run_case(case, memory_oplog)

    def test_the_update_records_what_the_server_would(self, memory_oplog: rxcs.Oplog) -> None:
        """The runner's updateOne records the $set fields, and a shorter array as truncated."""
        case = case_of(CASES[0])
        run_case(case, memory_oplog)
        update = memory_oplog.read(after=0, limit=10)[-1]
        assert update.update_description == {
            "updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "array", "newSize": 2}],
        }
