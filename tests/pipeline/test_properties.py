"""Properties of the reshaping stages over generated documents (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import rxcs
from rxcs.pipeline import compile_pipeline
from rxcs.query import DESCEND, KEEP, MISSING, PRUNE, Frame

NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(), max_size=2)
)
VALUES = st.recursive(SCALARS, lambda inner: st.dictionaries(NAMES, inner, max_size=4), max_leaves=12)
DOCUMENTS = st.dictionaries(NAMES, VALUES, max_size=5).map(lambda fields: {"_id": 1, **fields})
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(".".join)


def merge(left: Any, right: Any) -> Any:
    """Deep union of two documents (what an inclusion and an exclusion of the same paths split apart)."""
    if isinstance(left, dict) and isinstance(right, dict):
        out = dict(right)
        for key, value in left.items():
            out[key] = merge(value, right[key]) if key in right else value
        return out
    return right


def prefix_free(paths: list[str]) -> list[str]:
    """Drop paths under another one (a projection would refuse the collision)."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(p.startswith(q + ".") for q in unique)]


class TestProjectInverse:
    @given(DOCUMENTS, st.lists(PATHS, min_size=1, max_size=4))
    def test_inclusion_and_exclusion_of_the_same_paths_rebuild_the_document(
        self, document: dict[str, Any], paths: list[str]
    ) -> None:
        """$project {p: 1} and $project {p: 0} split a document in two parts whose union is the document."""
        paths = prefix_free(paths)
        included = compile_pipeline([{"$project": dict.fromkeys(paths, 1)}]).run(document)
        excluded = compile_pipeline([{"$project": dict.fromkeys(paths, 0)}]).run(document)
        assert merge(included, excluded) == document

    @given(DOCUMENTS, st.lists(NAMES, min_size=1, max_size=4, unique=True))
    def test_top_level_inclusion_and_exclusion_partition_the_fields(
        self, document: dict[str, Any], names: list[str]
    ) -> None:
        """At the top level the two projections share only _id and keep the document's order."""
        included = compile_pipeline([{"$project": dict.fromkeys(names, 1)}]).run(document)
        excluded = compile_pipeline([{"$project": dict.fromkeys(names, 0)}]).run(document)
        assert included is not None
        assert excluded is not None
        assert set(included) & set(excluded) == {"_id"}
        assert set(included) | set(excluded) == set(document)
        assert list(included) == [key for key in document if key in included]
        assert list(excluded) == [key for key in document if key in excluded]

    @given(DOCUMENTS, st.lists(PATHS, min_size=1, max_size=4))
    def test_unset_is_an_exclusion(self, document: dict[str, Any], paths: list[str]) -> None:
        """$unset of paths gives what $project excluding them gives."""
        paths = prefix_free(paths)
        unset = compile_pipeline([{"$unset": paths}]).run(document)
        assert unset == compile_pipeline([{"$project": dict.fromkeys(paths, 0)}]).run(document)


class TestSetThenUnset:
    @given(DOCUMENTS, st.dictionaries(NAMES, VALUES, min_size=1, max_size=3))
    def test_set_then_unset_of_top_level_fields_is_unset(
        self, document: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        """$set of fields followed by $unset of them leaves what $unset alone leaves."""
        literal = {name: {"$literal": value} for name, value in fields.items()}
        both = compile_pipeline([{"$set": literal}, {"$unset": list(fields)}]).run(document)
        assert both == compile_pipeline([{"$unset": list(fields)}]).run(document)

    @given(
        DOCUMENTS.map(lambda doc: {**doc, "sub": {"x": 1, "y": 2}}),
        st.dictionaries(NAMES, VALUES, min_size=1, max_size=3),
    )
    def test_set_then_unset_of_nested_fields_is_unset(
        self, document: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        """Inside an existing sub-document, $set then $unset of dotted paths equals $unset alone."""
        literal = {f"sub.{name}": {"$literal": value} for name, value in fields.items()}
        paths = list(literal)
        both = compile_pipeline([{"$set": literal}, {"$unset": paths}]).run(document)
        assert both == compile_pipeline([{"$unset": paths}]).run(document)

    @given(DOCUMENTS, st.dictionaries(NAMES, VALUES, min_size=1, max_size=3))
    def test_set_sets_exactly_its_fields(self, document: dict[str, Any], fields: dict[str, Any]) -> None:
        """After $set, each field holds its value and every other field is untouched."""
        result = compile_pipeline([{"$set": {name: {"$literal": value} for name, value in fields.items()}}]).run(
            document
        )
        assert result is not None
        assert all(result[name] == value for name, value in fields.items())
        assert {k: v for k, v in result.items() if k not in fields} == {
            k: v for k, v in document.items() if k not in fields
        }


EXPRESSION_KEYS = [
    "$add", "$subtract", "$multiply", "$divide", "$concat", "$toUpper", "$toLower", "$cond", "$ifNull", "$size",
    "$arrayElemAt", "$in", "$type", "$getField", "$mergeObjects", "$literal", "$eq", "$gt", "$and", "$not",
    "if", "then", "else", "field", "input", "a", "b",
]
PATH_STRINGS = st.sampled_from(["$a", "$b", "$a.b", "$$ROOT", "$$CURRENT", "$$REMOVE", "$$KEEP", "$$PRUNE",
                                "$$DESCEND", "$", "$$NOPE", "x"])
JSON_LIKE: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 0.0, -2.0]), PATH_STRINGS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(EXPRESSION_KEYS), inner, max_size=2),
    ),
    max_leaves=8,
)
STAGE_NAMES = ["$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith", "$redact",
               "$changeStreamSplitLargeEvent", "$group"]
PIPELINES = st.lists(st.dictionaries(st.sampled_from(STAGE_NAMES), JSON_LIKE, min_size=1, max_size=1), max_size=3)
INPUTS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, "x", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner,
                                                                          max_size=2)),
    max_leaves=6,
).map(lambda value: {"_id": 1, "a": value, "b": {"a": value}})


class TestOnlyPipelineErrors:
    @given(PIPELINES, INPUTS)
    def test_any_json_pipeline_fails_only_with_pipeline_error(self, stages: list[Any], document: Any) -> None:
        """Whatever JSON is given as stages, and whatever the event, errors are PipelineError and nothing else,
        and outputs are plain documents."""
        try:
            compiled = compile_pipeline(stages)
        except rxcs.PipelineError:
            return
        try:
            result = compiled.run(document)
        except rxcs.PipelineError:
            return
        assert result is None or (isinstance(result, dict) and no_internal_values(result))


def no_internal_values(value: Any) -> bool:
    """No MISSING, $redact marker or Frame leaks into an output document."""
    if value is MISSING or value is DESCEND or value is KEEP or value is PRUNE or isinstance(value, Frame):
        return False
    if isinstance(value, dict):
        return all(no_internal_values(item) for item in value.values())
    if isinstance(value, list):
        return all(no_internal_values(item) for item in value)
    return True
