"""Each change-stream stage, table by table, from MongoDB's documented behaviour.

Rows run one compiled stage on a small document (a stage does not care
that it is not a whole change event) and compare the output, field order
included. The resume-token rule is the pipeline's, tested on its own.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, ClassVar

import pytest

import rxcs
from rxcs.pipeline import compile_pipeline
from rxcs.pipeline._stages import STAGES

EVENT: dict[str, Any] = {
    "_id": {"_data": "token"},
    "operationType": "update",
    "ns": {"db": "shop", "coll": "orders"},
    "documentKey": {"_id": 7},
    "fullDocument": {
        "_id": 7,
        "status": "paid",
        "qty": 3,
        "price": 2.5,
        "customer": {"name": "Ada", "tier": "gold"},
        "lines": [{"sku": "a", "n": 1}, {"sku": "b", "n": 2}, "note"],
    },
}


def run(stage: dict[str, Any], document: dict[str, Any] | None = None) -> Any:
    return compile_pipeline([stage]).run(EVENT if document is None else document)


def run_stage(name: str, spec: Any, document: dict[str, Any]) -> Any:
    """One stage compiled alone and run on a document, without the pipeline's _id check."""
    return STAGES[name](spec, f"pipeline.0.{name}")(document)


def ordered(document: Any) -> Any:
    """A document with its field order made visible, recursively, for comparisons that care."""
    if isinstance(document, dict):
        return [(key, ordered(value)) for key, value in document.items()]
    if isinstance(document, list):
        return [ordered(item) for item in document]
    return document


class TestProject:
    @pytest.mark.parametrize(
        ("spec", "document", "expected"),
        [
            # inclusion keeps _id by default, then included fields in the document's order
            ({"b": 1, "a": 1}, {"_id": 1, "a": 1, "b": 2, "c": 3}, {"_id": 1, "a": 1, "b": 2}),
            ({"a": True}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 1}),
            ({"a": 5}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 1}),  # any non-zero number includes
            ({"_id": 0, "a": 1}, {"_id": 1, "a": 1, "b": 2}, {"a": 1}),
            ({"_id": 1}, {"_id": 1, "a": 1}, {"_id": 1}),
            ({"missing": 1}, {"_id": 1, "a": 1}, {"_id": 1}),
            # exclusion removes fields and keeps the rest in place
            ({"b": 0}, {"_id": 1, "a": 1, "b": 2, "c": 3}, {"_id": 1, "a": 1, "c": 3}),
            ({"_id": 0}, {"_id": 1, "a": 1}, {"a": 1}),
            ({"a": False, "c": 0}, {"_id": 1, "a": 1, "b": 2, "c": 3}, {"_id": 1, "b": 2}),
            ({"_id": 1, "a": 0}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "b": 2}),  # _id: 1 fits an exclusion
            # dotted paths and nested specifications are the same thing
            ({"a.b": 1}, {"_id": 1, "a": {"b": 1, "c": 2}, "d": 3}, {"_id": 1, "a": {"b": 1}}),
            ({"a": {"b": 1}}, {"_id": 1, "a": {"b": 1, "c": 2}, "d": 3}, {"_id": 1, "a": {"b": 1}}),
            ({"a.b": 0}, {"_id": 1, "a": {"b": 1, "c": 2}, "d": 3}, {"_id": 1, "a": {"c": 2}, "d": 3}),
            ({"a.b": 1, "a.c": 1}, {"_id": 1, "a": {"c": 2, "b": 1, "x": 0}}, {"_id": 1, "a": {"c": 2, "b": 1}}),
            ({"a.b": 1}, {"_id": 1, "a": {"c": 2}}, {"_id": 1, "a": {}}),  # the document stays, emptied
            ({"a.b": 1}, {"_id": 1, "a": 5}, {"_id": 1}),  # a scalar has no b
            # through arrays: each document; inclusion drops scalars, exclusion keeps them
            ({"a.b": 1}, {"_id": 1, "a": [{"b": 1, "c": 2}, 3, {"c": 4}]}, {"_id": 1, "a": [{"b": 1}, {}]}),
            ({"a.b": 0}, {"_id": 1, "a": [{"b": 1, "c": 2}, 3]}, {"_id": 1, "a": [{"c": 2}, 3]}),
            ({"a.b": 1}, {"_id": 1, "a": [[{"b": 1, "c": 2}]]}, {"_id": 1, "a": [[{"b": 1}]]}),
            # computed fields come after the included ones, in the specification's order
            ({"z": "$a", "a": 1}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 1, "z": 1}),
            ({"total": {"$multiply": ["$q", "$p"]}}, {"_id": 1, "q": 2, "p": 3}, {"_id": 1, "total": 6}),
            ({"label": "fixed"}, {"_id": 1}, {"_id": 1, "label": "fixed"}),  # a plain string is a literal
            ({"one": {"$literal": 1}}, {"_id": 1}, {"_id": 1, "one": 1}),
            ({"flag": {"$literal": True}}, {"_id": 1}, {"_id": 1, "flag": True}),
            ({"n": None}, {"_id": 1}, {"_id": 1, "n": None}),
            ({"pair": ["$a", "$nope"]}, {"_id": 1, "a": 1}, {"_id": 1, "pair": [1, None]}),
            ({"gone": "$nope", "a": 1}, {"_id": 1, "a": 1}, {"_id": 1, "a": 1}),  # missing: left out
            ({"gone": "$$REMOVE"}, {"_id": 1}, {"_id": 1}),
            ({"a.x": "$b"}, {"_id": 1, "a": {"y": 1}, "b": 2}, {"_id": 1, "a": {"x": 2}}),
            ({"a.y": 1, "a.x": "$b"}, {"_id": 1, "a": {"y": 1}, "b": 2}, {"_id": 1, "a": {"y": 1, "x": 2}}),
            ({"a.x": "$b"}, {"_id": 1, "a": 5, "b": 2}, {"_id": 1, "a": {"x": 2}}),
            ({"a.x": "$b"}, {"_id": 1, "a": [{"y": 1}, {"y": 2}], "b": 2}, {"_id": 1, "a": [{"x": 2}, {"x": 2}]}),
            ({"_id": "$a"}, {"_id": 1, "a": 9}, {"_id": 9}),  # allowed here; the stream refuses it later
        ],
    )
    def test_project(self, spec: dict[str, Any], document: dict[str, Any], expected: dict[str, Any]) -> None:
        """$project includes, excludes or computes fields, MongoDB's way, order included."""
        assert ordered(run_stage("$project", spec, document)) == ordered(expected)

    def test_project_on_a_change_event(self) -> None:
        """A typical projection of an event keeps _id and the named parts."""
        assert run({"$project": {"operationType": 1, "fullDocument.status": 1}}) == {
            "_id": {"_data": "token"},
            "operationType": "update",
            "fullDocument": {"status": "paid"},
        }

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({}, "pipeline.0.$project: a projection needs at least one field"),
            ([], "pipeline.0.$project: expected a document of fields, got list"),
            ({"a": 1, "b": 0}, "pipeline.0.$project.a: cannot do inclusion in an exclusion projection"),
            ({"a": 0, "b": "$x"}, "pipeline.0.$project.b: cannot compute a field in an exclusion projection"),
            ({"a.b": 0, "c": {"d": 1}}, "pipeline.0.$project.c.d: cannot do inclusion in an exclusion projection"),
            ({"a": 1, "a.b": 1}, "pipeline.0.$project.a.b: path collision at a"),
            ({"a.b": 1, "a": 1}, "pipeline.0.$project.a: path collision at a"),
            ({"a": {}}, "pipeline.0.$project.a: an empty sub-projection is not allowed"),
            ({"$a": 1}, "pipeline.0.$project.$a: field names may not start with '$'"),
            ({"a..b": 1}, "pipeline.0.$project.a..b: bad field path"),
            ({"": 1}, "pipeline.0.$project.: bad field path"),
            ({"total": {"$add": ["$a", {"$bogus": 1}]}}, "pipeline.0.$project.total.$add.1.$bogus: unknown expression"),
            ({"a": {"b": {"$nope": 1}}}, "pipeline.0.$project.a.b.$nope: unknown expression operator"),
            ({"a": "$$KEEP"}, "pipeline.0.$project.a: $$KEEP is only allowed in $redact"),
        ],
    )
    def test_bad_projection(self, spec: Any, message: str) -> None:
        """Malformed projections fail at compile time, naming the stage and the path."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline([{"$project": spec}])


class TestAddFields:
    @pytest.mark.parametrize("name", ["$addFields", "$set"])
    @pytest.mark.parametrize(
        ("spec", "document", "expected"),
        [
            ({"c": 3}, {"_id": 1, "a": 1}, {"_id": 1, "a": 1, "c": 3}),  # 1 is a value here, not "include"
            ({"a": "$b", "b": "$a"}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 2, "b": 1}),  # reads the input
            ({"a": 9}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 9, "b": 2}),  # replaced in place
            ({"a": "$$REMOVE"}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "b": 2}),
            ({"a": "$nope"}, {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "b": 2}),  # missing removes too
            ({"a.c": 2}, {"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": {"b": 1, "c": 2}}),
            ({"a": {"c": 2}}, {"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": {"b": 1, "c": 2}}),  # merged, as MongoDB
            ({"a": {"$literal": {"c": 2}}}, {"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": {"c": 2}}),
            ({"a": {}}, {"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": {}}),
            ({"a.c": 2}, {"_id": 1, "a": 5}, {"_id": 1, "a": {"c": 2}}),
            ({"a.c": 2}, {"_id": 1}, {"_id": 1, "a": {"c": 2}}),
            ({"a.c": 2}, {"_id": 1, "a": [{"b": 1}, 7]}, {"_id": 1, "a": [{"b": 1, "c": 2}, {"c": 2}]}),
            ({"n": {"$size": "$a"}}, {"_id": 1, "a": [1, 2]}, {"_id": 1, "a": [1, 2], "n": 2}),
        ],
    )
    def test_add_fields(self, name: str, spec: dict[str, Any], document: dict[str, Any], expected: Any) -> None:
        """$addFields (and its alias $set) sets fields from expressions over the input document."""
        assert ordered(run_stage(name, spec, document)) == ordered(expected)

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({}, "pipeline.0.$set: needs at least one field"),
            ("a", "pipeline.0.$set: expected a document of fields, got str"),
            ({"a": 1, "a.b": 2}, "pipeline.0.$set.a.b: path collision at a"),
            ({"$a": 1}, "pipeline.0.$set.$a: field names may not start with '$'"),
            ({"a": {"$concat": "$$PRUNE"}}, "pipeline.0.$set.a.$concat: $$PRUNE is only allowed in $redact"),
            ({"a": {"$toUpper": ["$x", "$y"]}}, "pipeline.0.$set.a.$toUpper: expected 1 argument, got 2"),
        ],
    )
    def test_bad_add_fields(self, spec: Any, message: str) -> None:
        """Malformed $set stages fail at compile time, naming the stage and the path."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline([{"$set": spec}])


class TestUnset:
    @pytest.mark.parametrize(
        ("spec", "document", "expected"),
        [
            ("b", {"_id": 1, "a": 1, "b": 2}, {"_id": 1, "a": 1}),
            (["a", "c"], {"_id": 1, "a": 1, "b": 2, "c": 3}, {"_id": 1, "b": 2}),
            (["a.b"], {"_id": 1, "a": {"b": 1, "c": 2}}, {"_id": 1, "a": {"c": 2}}),
            (["a.b"], {"_id": 1, "a": [{"b": 1, "c": 2}, 5]}, {"_id": 1, "a": [{"c": 2}, 5]}),
            (["nope"], {"_id": 1, "a": 1}, {"_id": 1, "a": 1}),
        ],
    )
    def test_unset(self, spec: Any, document: dict[str, Any], expected: Any) -> None:
        """$unset removes fields, like an exclusion projection."""
        assert ordered(run_stage("$unset", spec, document)) == ordered(expected)

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ([], "pipeline.0.$unset: expected a field path or a non-empty list"),
            ({"a": 1}, "pipeline.0.$unset: expected a field path or a non-empty list"),
            (["a", 5], "pipeline.0.$unset.1: expected a field path, got 5"),
            (["$a"], "pipeline.0.$unset.$a: field names may not start with '$'"),
            (["a", "a"], "pipeline.0.$unset.a: path collision at a"),
        ],
    )
    def test_bad_unset(self, spec: Any, message: str) -> None:
        """Malformed $unset stages fail at compile time."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline([{"$unset": spec}])


class TestReplaceRoot:
    @pytest.mark.parametrize(
        ("stage", "expected"),
        [
            ({"$replaceRoot": {"newRoot": {"_id": "$_id", "doc": "$fullDocument.customer"}}},
             {"_id": {"_data": "token"}, "doc": {"name": "Ada", "tier": "gold"}}),
            ({"$replaceWith": {"$mergeObjects": ["$fullDocument.customer", {"_id": "$_id"}]}},
             {"name": "Ada", "tier": "gold", "_id": {"_data": "token"}}),
            ({"$replaceWith": "$fullDocument.customer"}, {"name": "Ada", "tier": "gold"}),
        ],
    )
    def test_replace_root(self, stage: dict[str, Any], expected: Any) -> None:
        """$replaceRoot/$replaceWith make an expression's document the new root."""
        ((name, spec),) = stage.items()
        assert ordered(run_stage(name, spec, EVENT)) == ordered(expected)

    @pytest.mark.parametrize(
        ("stage", "message"),
        [
            ({"$replaceRoot": "$a"}, "pipeline.0.$replaceRoot: expected {newRoot: <expression>}"),
            ({"$replaceRoot": {"newRoot": "$a", "x": 1}}, "pipeline.0.$replaceRoot: expected {newRoot"),
            ({"$replaceRoot": {"newRoot": {"$nope": 1}}}, "pipeline.0.$replaceRoot.newRoot.$nope: unknown"),
            ({"$replaceWith": "$$NOPE"}, "pipeline.0.$replaceWith.$$NOPE: unknown variable"),
        ],
    )
    def test_bad_replace_root(self, stage: dict[str, Any], message: str) -> None:
        """Malformed replacement stages fail at compile time."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline([stage])

    @pytest.mark.parametrize(
        ("stage", "message"),
        [
            ({"$replaceRoot": {"newRoot": "$fullDocument.qty"}}, ("pipeline.0.$replaceRoot: 'newRoot' must evaluate "
             "to a document, got int 3")),
            ({"$replaceWith": "$nope"}, ("pipeline.0.$replaceWith: the replacement must evaluate to a document, "
             "got missing")),
        ],
    )
    def test_new_root_must_be_a_document(self, stage: dict[str, Any], message: str) -> None:
        """A replacement that is not a document fails when the event is run."""
        compiled = compile_pipeline([stage])
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compiled.run(EVENT)


class TestRedact:
    DOC: ClassVar[dict[str, Any]] = {
        "_id": 1,
        "level": 1,
        "title": "report",
        "secret": {"level": 5, "code": "x"},
        "parts": [{"level": 1, "text": "a"}, {"level": 5, "text": "b"}, "loose"],
        "open": {"level": 2, "inner": {"level": 9, "x": 1}},
    }
    BY_LEVEL: ClassVar[dict[str, Any]] = {"$cond": [{"$gt": ["$level", 3]}, "$$PRUNE", "$$DESCEND"]}

    def test_descend_prunes_levels_at_every_depth(self) -> None:
        """$$DESCEND looks into sub-documents and the documents of arrays; $$PRUNE drops them."""
        assert compile_pipeline([{"$redact": self.BY_LEVEL}]).run(self.DOC) == {
            "_id": 1,
            "level": 1,
            "title": "report",
            "parts": [{"level": 1, "text": "a"}, "loose"],
            "open": {"level": 2},
        }

    def test_keep_keeps_the_whole_level(self) -> None:
        """$$KEEP returns a level with everything below it, unexamined."""
        keep_level_2 = {"$cond": [{"$eq": ["$level", 2]}, "$$KEEP", self.BY_LEVEL]}
        result = compile_pipeline([{"$redact": keep_level_2}]).run(self.DOC)
        assert result is not None
        assert result["open"] == {"level": 2, "inner": {"level": 9, "x": 1}}

    def test_prune_at_the_top_drops_the_event(self) -> None:
        """Pruning the root drops the whole document, like a failed $match."""
        assert compile_pipeline([{"$redact": "$$PRUNE"}]).run(self.DOC) is None

    def test_keep_at_the_top_returns_the_document(self) -> None:
        """$$KEEP at the root passes the document unchanged."""
        assert compile_pipeline([{"$redact": "$$KEEP"}]).run(self.DOC) == self.DOC

    def test_root_stays_the_event_while_descending(self) -> None:
        """Inside a sub-document $$ROOT still names the whole document, field paths the current level."""
        spec = {"$cond": [{"$and": [{"$eq": ["$$ROOT.title", "report"]}, {"$eq": ["$code", "x"]}]},
                          "$$PRUNE", "$$DESCEND"]}
        result = compile_pipeline([{"$redact": spec}]).run(self.DOC)
        assert result is not None
        assert "secret" not in result
        assert result["open"] == self.DOC["open"]

    def test_other_values_are_an_error(self) -> None:
        """An expression returning anything but the three variables fails when run."""
        compiled = compile_pipeline([{"$redact": {"$cond": [True, "yes", "$$KEEP"]}}])
        with pytest.raises(rxcs.PipelineError, match=re.escape("pipeline.0.$redact: the expression must return "
                                                               "$$DESCEND, $$PRUNE or $$KEEP, not 'yes'")):
            compiled.run(self.DOC)

    def test_bad_expression_fails_at_compile_time(self) -> None:
        """A malformed $redact expression names its path."""
        with pytest.raises(rxcs.PipelineError, match=re.escape("pipeline.0.$redact.$cond: expected")):
            compile_pipeline([{"$redact": {"$cond": [1]}}])


class TestMatch:
    def test_match_filters(self) -> None:
        """$match keeps the documents its filter matches and drops the rest."""
        compiled = compile_pipeline([{"$match": {"fullDocument.qty": {"$gte": 3}}}])
        assert compiled.run(EVENT) is EVENT
        assert compiled.run({**EVENT, "fullDocument": {"qty": 1}}) is None

    def test_match_after_a_reshape_sees_the_new_shape(self) -> None:
        """Stages run in order: a $match after $set filters on the computed field."""
        compiled = compile_pipeline([
            {"$set": {"value": {"$multiply": ["$fullDocument.qty", "$fullDocument.price"]}}},
            {"$match": {"value": {"$gt": 7}}},
            {"$project": {"value": 1}},
        ])
        assert compiled.run(EVENT) == {"_id": {"_data": "token"}, "value": 7.5}
        assert compiled.run({**EVENT, "fullDocument": {"qty": 1, "price": 1}}) is None

    def test_match_understands_laura_aliases(self) -> None:
        """db/coll in a $match stage name ns.db/ns.coll."""
        assert compile_pipeline([{"$match": {"coll": "orders"}}]).run(EVENT) is EVENT

    def test_aliases_stop_after_a_reshape(self) -> None:
        """After a reshaping stage the document is no longer an event: its own coll field is matched."""
        compiled = compile_pipeline([{"$project": {"coll": "$fullDocument.status"}}, {"$match": {"coll": "paid"}}])
        assert compiled.run(EVENT) == {"_id": EVENT["_id"], "coll": "paid"}


class TestPipeline:
    def test_filters_only_do_not_reshape(self) -> None:
        """A pipeline of $match stages reports reshapes=False and returns the very same document."""
        compiled = compile_pipeline([{"$match": {}}, {"$match": {"operationType": "update"}}])
        assert compiled.reshapes is False
        assert compiled.run(EVENT) is EVENT

    @pytest.mark.parametrize("stage", [{"$project": {"a": 1}}, {"$set": {"a": 1}}, {"$unset": "a"},
                                       {"$replaceWith": "$$ROOT"}, {"$redact": "$$KEEP"}])
    def test_any_other_stage_reshapes(self, stage: dict[str, Any]) -> None:
        """Every stage but $match (and the split stage) reshapes."""
        assert compile_pipeline([stage]).reshapes is True

    def test_stages_compile_once(self) -> None:
        """The compiled pipeline can run many documents; nothing is re-parsed."""
        compiled = compile_pipeline([{"$set": {"n": {"$add": ["$fullDocument.qty", 1]}}}])
        assert [compiled.run({**EVENT, "fullDocument": {"qty": q}})["n"] for q in range(3)] == [1, 2, 3]  # type: ignore[index]

    @pytest.mark.parametrize(
        ("stages", "message"),
        [
            ({"$match": {}}, "pipeline: expected a list of stages, got dict"),
            ("[]", "pipeline: expected a list of stages, got str"),
            ([{"$match": {}, "$project": {}}], "pipeline.0: a stage is a document with exactly one field"),
            ([5], "pipeline.0: a stage is a document with exactly one field"),
            ([{"$match": {}}, {"$lookup": {}}], ("pipeline.1.$lookup: unsupported stage; a change stream allows "
             "$match, $project, $addFields, $set, $unset, $replaceRoot, $replaceWith, $redact, "
             "$changeStreamSplitLargeEvent")),
            ([{"$group": {}}], "pipeline.0.$group: unsupported stage"),
            ([{"$match": 5}], "pipeline.0.$match: expected a filter document"),
            ([{"$match": {"a": {"$in": 5}}}], "pipeline.0.$match.a.$in: expected a list"),
            ([{"$set": {"a": 1}}, {"$project": {"total": {"$add": 5, "$x": 1}}}],
             "pipeline.1.$project.total.$add: an operator must be the only field"),
        ],
    )
    def test_bad_pipeline_names_the_stage(self, stages: Any, message: str) -> None:
        """Errors name the stage's index, its name and the path inside it."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline(stages)

    def test_runtime_expression_error_names_stage_path_and_event(self) -> None:
        """An expression failing on an event raises PipelineError with the stage prefix and the op_id."""
        token = rxcs.ResumeToken(uuid.UUID(int=1), 42)
        compiled = compile_pipeline([{"$match": {}}, {"$project": {"ratio": {"$divide": ["$a", "$b"]}}}])
        with pytest.raises(rxcs.PipelineError, match=re.escape(
                "pipeline.1.$project.ratio.$divide: can't $divide by zero (the event of op_id 42)")):
            compiled.run({"_id": token.to_document(), "a": 1, "b": 0})

    def test_runtime_error_in_match_expr_names_the_stage(self) -> None:
        """A filter's $expr failing on an event is a PipelineError naming the $match stage."""
        compiled = compile_pipeline([{"$match": {"$expr": {"$in": [1, "$a"]}}}])
        with pytest.raises(rxcs.PipelineError, match=re.escape("pipeline.0.$match.$expr.$in: the second argument")):
            compiled.run({"_id": 1, "a": 5})


class TestResumeTokenRule:
    @pytest.mark.parametrize(
        "stages",
        [
            [{"$project": {"_id": 0}}],
            [{"$project": {"_id": 0, "operationType": 1}}],
            [{"$unset": "_id"}],
            [{"$set": {"_id": "changed"}}],
            [{"$set": {"_id._data": "changed"}}],
            [{"$replaceWith": "$fullDocument"}],
            [{"$replaceRoot": {"newRoot": {"x": 1}}}],
        ],
    )
    def test_changing_or_removing_id_fails(self, stages: list[dict[str, Any]]) -> None:
        """A pipeline whose output lacks the event's _id, or changes it, fails with PipelineError."""
        compiled = compile_pipeline(stages)
        with pytest.raises(rxcs.PipelineError, match=r"^pipeline: .*_id \(the resume token\) (removed|changed)"):
            compiled.run(EVENT)

    @pytest.mark.parametrize(
        "stages",
        [
            [{"$project": {"operationType": 1}}],
            [{"$project": {"fullDocument": 0}}],
            [{"$set": {"copy": "$_id"}}],
            [{"$match": {"_id": {"$exists": True}}}],
            [{"$set": {"_id": "temporary"}}, {"$set": {"_id": "$copy"}}, {"$unset": "copy"}],
            [{"$replaceWith": {"$mergeObjects": ["$fullDocument", {"_id": "$_id"}]}}],
            [{"$redact": "$$DESCEND"}],
        ],
    )
    def test_reading_or_restoring_id_is_fine(self, stages: list[dict[str, Any]]) -> None:
        """Stages that only read _id, or end with it unchanged, pass (the rule checks the output)."""
        event = {**EVENT, "copy": EVENT["_id"]} if stages[0] == {"$set": {"_id": "temporary"}} else EVENT
        result = compile_pipeline(stages).run(event)
        assert result is not None
        assert result["_id"] == EVENT["_id"]
