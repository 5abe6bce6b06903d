"""Hypothesis strategies for documents and filters over a small field vocabulary."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st

FIELDS = ["a", "b", "a.b", "a.0", "b.c"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.5, 2.0]),
    st.sampled_from(["", "x", "y", "xy"]),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=6,
)
documents = st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=3)

operands = st.one_of(scalars, st.lists(scalars, max_size=2))
OPERATORS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$size", "$type", "$all"]
TYPE_NAMES = ["double", "string", "object", "array", "bool", "null", "int"]


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    """One field condition: an operator document over an operand."""
    op = draw(st.sampled_from(OPERATORS))
    if op in ("$in", "$nin"):
        return {op: draw(st.lists(scalars, max_size=3))}
    if op == "$all":
        return {op: draw(st.lists(scalars, min_size=1, max_size=2))}
    if op == "$exists":
        return {op: draw(st.booleans())}
    if op == "$size":
        return {op: draw(st.integers(0, 3))}
    if op == "$type":
        return {op: draw(st.sampled_from(TYPE_NAMES))}
    return {op: draw(operands)}


field_filters = st.builds(lambda field, cond: {field: cond}, st.sampled_from(FIELDS), conditions())
filters: st.SearchStrategy[dict[str, Any]] = st.recursive(
    field_filters,
    lambda inner: st.one_of(
        st.builds(lambda items: {"$and": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"$or": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"$nor": items}, st.lists(inner, min_size=1, max_size=2)),
    ),
    max_leaves=4,
)
FILTER_KEYS = [
    "$and", "$or", "$in", "$gt", "$regex", "$type", "$elemMatch", "$not", "$expr", "$size", "$mod", "$all", "$exists",
]
json_like: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(FILTER_KEYS)),
            inner, max_size=3,
        ),
    ),
    max_leaves=8,
)
