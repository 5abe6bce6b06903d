"""Laws the query engine must obey for any filter and document (hypothesis)."""

from __future__ import annotations

import contextlib
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

import rxcs
from rxcs.query import compile_filter

from .strategies import FIELDS, conditions, documents, filters, json_like, operands, scalars


class TestComplementLaws:
    @given(documents, st.sampled_from(FIELDS), conditions())
    def test_not_is_the_complement(self, doc: dict[str, Any], field: str, condition: dict[str, Any]) -> None:
        """{f: {$not: C}} matches exactly the documents {f: C} does not, missing fields included."""
        positive = compile_filter({field: condition})(doc)
        assert compile_filter({field: {"$not": condition}})(doc) is (not positive)

    @given(documents, filters)
    def test_nor_is_the_complement_of_or(self, doc: dict[str, Any], spec: dict[str, Any]) -> None:
        """{$nor: [F]} matches exactly when F does not."""
        assert compile_filter({"$nor": [spec]})(doc) is (not compile_filter(spec)(doc))

    @given(documents, st.sampled_from(FIELDS), st.lists(scalars, max_size=3))
    def test_nin_is_the_complement_of_in(self, doc: dict[str, Any], field: str, items: list[Any]) -> None:
        """$nin matches exactly when $in with the same list does not."""
        assert compile_filter({field: {"$nin": items}})(doc) is (not compile_filter({field: {"$in": items}})(doc))

    @given(documents, st.sampled_from(FIELDS), operands)
    def test_ne_is_the_complement_of_eq(self, doc: dict[str, Any], field: str, value: Any) -> None:
        """$ne matches exactly when $eq does not."""
        assert compile_filter({field: {"$ne": value}})(doc) is (not compile_filter({field: {"$eq": value}})(doc))


class TestAlgebra:
    @given(documents, st.lists(filters, min_size=1, max_size=3))
    def test_and_is_intersection(self, doc: dict[str, Any], specs: list[dict[str, Any]]) -> None:
        """$and of filters matches exactly when every filter matches."""
        assert compile_filter({"$and": specs})(doc) is all(compile_filter(s)(doc) for s in specs)

    @given(documents, st.lists(filters, min_size=1, max_size=3))
    def test_or_is_union(self, doc: dict[str, Any], specs: list[dict[str, Any]]) -> None:
        """$or of filters matches exactly when some filter matches."""
        assert compile_filter({"$or": specs})(doc) is any(compile_filter(s)(doc) for s in specs)

    @given(documents, st.sampled_from(FIELDS), operands)
    def test_in_singleton_is_eq(self, doc: dict[str, Any], field: str, value: Any) -> None:
        """{$in: [x]} matches exactly like {$eq: x}."""
        assert compile_filter({field: {"$in": [value]}})(doc) is compile_filter({field: {"$eq": value}})(doc)

    @given(documents, st.sampled_from(FIELDS), scalars)
    def test_implicit_equality_is_eq(self, doc: dict[str, Any], field: str, value: Any) -> None:
        """{f: x} matches exactly like {f: {$eq: x}} (the fast path agrees with the general one)."""
        assert compile_filter({field: value})(doc) is compile_filter({field: {"$eq": value}})(doc)


class TestCompileErrors:
    @settings(max_examples=300)
    @given(json_like)
    def test_compile_raises_only_query_error(self, spec: Any) -> None:
        """Compiling anything JSON-like either works or raises QueryError, and evaluation never crashes."""
        try:
            predicate = compile_filter(spec)
        except rxcs.QueryError:
            return
        for doc in ({}, {"a": 1}, {"a": [1, {"b": None}], "b": "x"}):
            # $expr can fail at run time (an $in over a non-array), as in MongoDB.
            with contextlib.suppress(rxcs.QueryError):
                assert predicate(doc) in (True, False)
