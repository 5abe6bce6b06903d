"""Malformed filters fail at compile time, naming the path inside the filter."""

from __future__ import annotations

import re
from typing import Any

import pytest

import rxcs
from rxcs.query import compile_filter, rewrite_event_aliases


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": {"$in": 5}}, "a.$in: expected a list, got int"),
        ({"a": {"$nin": "x"}}, "a.$nin: expected a list"),
        ({"$or": []}, "$or: expected a non-empty list"),
        ({"$and": {"a": 1}}, "$and: expected a non-empty list"),
        ({"$nor": [5]}, "$nor.0: a filter must be a document"),
        ({"a": {"$size": "2"}}, "a.$size: expected an integer"),
        ({"a": {"$size": 1.5}}, "a.$size: expected an integer"),
        ({"a": {"$size": -1}}, "a.$size: expected a non-negative integer"),
        ({"a": {"$regex": "("}}, "a.$regex: bad regular expression"),
        ({"a": {"$regex": "x", "$options": "q"}}, "a.$regex: unknown regex option"),
        ({"a": {"$options": "i"}}, "a.$options: needs a $regex"),
        ({"a": {"$mod": [0, 1]}}, "a.$mod: divisor must not be zero"),
        ({"a": {"$mod": [2]}}, "a.$mod: expected [divisor, remainder]"),
        ({"a": {"$type": "nonsense"}}, "a.$type: unknown type"),
        ({"a": {"$type": True}}, "a.$type: expected a type name or code"),
        ({"a": {"$bogus": 1}}, "a.$bogus: unknown operator"),
        ({"a": {"$gt": 1, "b": 2}}, "a: 'b' cannot be mixed with operators"),
        ({"a": {"$not": 5}}, "a.$not: expected an operator document or a regex"),
        ({"a": {"$not": {}}}, "a.$not: expected an operator document or a regex"),
        ({"a": {"$elemMatch": 3}}, "a.$elemMatch: expected a document"),
        ({"a": {"$all": 3}}, "a.$all: expected a list"),
        ({"a": {"$all": [{"$gt": 1}]}}, "a.$all.0: only $elemMatch is allowed"),
        ({"a": {"$in": [{"$gt": 1}]}}, "a.$in.0: operators are not allowed inside $in"),
        ({"$where": "this.a > 1"}, "$where: JavaScript is not supported"),
        ({"$expr": {"$function": {"body": "x"}}}, "$expr.$function: JavaScript is not supported"),
        ({"$expr": {"$frobnicate": 1}}, "$expr.$frobnicate: unknown expression operator"),
        ({"$expr": {"$eq": ["$a"]}}, "$expr.$eq: expected 2 arguments"),
        ({"$expr": "$$NOPE"}, "$expr: unknown variable"),
        ({"$text": {"$search": "x"}}, "$text: not supported"),
        ({"$bogus": 1}, "$bogus: unknown top-level operator"),
        ({"a..b": 1}, "a..b: bad field path"),
        ({1: 1}, "field name 1 is not a string"),
        ([{"a": 1}], "a filter must be a document, got list"),
        ({"$and": [{"x": {"$in": 1}}]}, "$and.0.x.$in: expected a list"),
    ],
)
def test_error_names_the_path(spec: Any, message: str) -> None:
    """Each malformed filter raises QueryError whose message names where it is wrong."""
    with pytest.raises(rxcs.QueryError, match=re.escape(message)):
        compile_filter(spec)


class TestAliases:
    def test_aliases_rewrite_top_level_and_logical(self) -> None:
        """database/db/collection/coll become ns.db/ns.coll, inside $and/$or/$nor too."""
        spec = {"database": "shop", "$or": [{"coll": "users"}, {"$and": [{"collection": "x"}, {"db": "y"}]}]}
        assert rewrite_event_aliases(spec) == {
            "ns.db": "shop", "$or": [{"ns.coll": "users"}, {"$and": [{"ns.coll": "x"}, {"ns.db": "y"}]}]
        }

    def test_aliases_leave_other_fields_alone(self) -> None:
        """Other fields, nested aliases and non-documents pass through unchanged."""
        assert rewrite_event_aliases({"fullDocument.db": 1}) == {"fullDocument.db": 1}
        assert rewrite_event_aliases(5) == 5

    def test_regex_values(self) -> None:
        """A compiled Python pattern is accepted wherever MongoDB takes a regex."""
        matches = compile_filter({"a": re.compile("^x", re.IGNORECASE), "b": {"$in": [re.compile("z$")]}})
        assert matches({"a": "Xy", "b": "az"})
        assert not matches({"a": "yX", "b": "az"})
        assert compile_filter({"a": {"$regex": re.compile("^q"), "$options": "i"}})({"a": "Qx"})
