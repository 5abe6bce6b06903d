"""Properties of the reshaping stages over generated documents (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rxcs.pipeline import compile_pipeline

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
