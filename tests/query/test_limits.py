"""Limits on what a filter, an expression or a pipeline may ask: refused at compile time, naming the path.

MongoDB refuses filters and expressions nested past 100 levels and
pipelines of more than 1,000 stages; so does rxcs, before Python's own
recursion limit could be reached, however deep the input.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxcs import extjson
from rxcs.errors import PipelineError, QueryError
from rxcs.pipeline import compile_pipeline
from rxcs.query import MAX_NESTING, compile_expression, compile_filter, rewrite_event_aliases

DEEP = 3 * sys.getrecursionlimit()


def nested_and(levels: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(levels):
        spec = {"$and": [spec]}
    return spec


def nested_elem_match(levels: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(levels):
        spec = {"a": {"$elemMatch": spec}}
    return spec


def nested_expression(levels: int) -> Any:
    expression: Any = "$a"
    for _ in range(levels):
        expression = {"$add": [expression, 1]}
    return expression


class TestFilterNesting:
    @pytest.mark.parametrize("build", [nested_and, nested_elem_match])
    def test_filters_at_the_limit_compile(self, build: Any) -> None:
        """Nesting up to MAX_NESTING levels is allowed."""
        compile_filter(build(MAX_NESTING // 3))

    @pytest.mark.parametrize("build", [nested_and, nested_elem_match])
    @pytest.mark.parametrize("levels", [MAX_NESTING, DEEP])
    def test_deeper_filters_are_a_query_error_naming_the_path(self, build: Any, levels: int) -> None:
        """Past the limit (and far past Python's recursion limit): QueryError naming where, never RecursionError."""
        with pytest.raises(QueryError, match=rf"nested more than {MAX_NESTING} levels") as raised:
            compile_filter(build(levels))
        where = str(raised.value).split(":", 1)[0]
        assert where.startswith(("$and.0.$and.0", "a.$elemMatch.a.$elemMatch"))

    def test_a_deep_literal_is_refused_too(self) -> None:
        """An equality against a document nested past the limit is refused like a deep operator."""
        value: Any = 1
        for _ in range(DEEP):
            value = {"b": value}
        with pytest.raises(QueryError, match=r"^a\.b\.b\.b"):
            compile_filter({"a": value})

    def test_rewriting_aliases_refuses_deep_filters_first(self) -> None:
        """The alias rewrite walks $and/$or: it refuses a deep filter before it could recurse too far."""
        with pytest.raises(QueryError, match="nested more than"):
            rewrite_event_aliases(nested_and(DEEP))


class TestExpressionNesting:
    def test_expressions_at_the_limit_compile(self) -> None:
        """An expression 30 operators deep compiles and evaluates."""
        assert compile_expression(nested_expression(30))({"a": 1}) == 31

    @pytest.mark.parametrize("levels", [MAX_NESTING, DEEP])
    def test_deeper_expressions_are_a_query_error(self, levels: int) -> None:
        """An expression nested past the limit is a QueryError naming its path."""
        with pytest.raises(QueryError, match=r"^total\.\$add\.0\.\$add\.0.*nested more than"):
            compile_expression(nested_expression(levels), "total")


class TestPipelineLimits:
    @pytest.mark.parametrize("levels", [MAX_NESTING, DEEP])
    def test_a_deep_stage_is_a_pipeline_error_naming_the_stage(self, levels: int) -> None:
        """A $match or $set nested past the limit: PipelineError naming the stage and the path in it."""
        with pytest.raises(PipelineError, match=r"^pipeline\.1\.\$match\.\$and\.0"):
            compile_pipeline([{"$match": {}}, {"$match": nested_and(levels)}])
        with pytest.raises(PipelineError, match=r"^pipeline\.0\.\$set\.x\.\$add\.0"):
            compile_pipeline([{"$set": {"x": nested_expression(levels)}}])

    def test_more_than_1000_stages_are_refused(self) -> None:
        """MongoDB's limit on the length of a pipeline: 1,000 stages."""
        compile_pipeline([{"$match": {}}] * 1000)
        with pytest.raises(PipelineError, match="1001 stages, more than the 1000 allowed"):
            compile_pipeline([{"$match": {}}] * 1001)


class TestJSONDepth:
    @pytest.mark.parametrize("opening", ["[", '{"a":'])
    def test_json_nested_past_the_limit_is_a_value_error_before_parsing(self, opening: str) -> None:
        """extjson.loads refuses text nested deeper than MAX_JSON_DEPTH with ValueError, not RecursionError."""
        closing = "]" if opening == "[" else "}"
        text = opening * (10 * DEEP) + "1" + closing * (10 * DEEP)
        with pytest.raises(ValueError, match=f"nested more than {extjson.MAX_JSON_DEPTH} levels"):
            extjson.loads(text)

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Only structure counts: a string full of brackets is a string."""
        assert extjson.loads(json.dumps({"a": "[" * 10_000})) == {"a": "[" * 10_000}

    def test_json_at_the_limit_parses(self) -> None:
        """Nesting up to MAX_JSON_DEPTH is parsed as usual."""
        depth = extjson.MAX_JSON_DEPTH
        assert extjson.loads("[" * depth + "]" * depth) is not None

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.one_of(
            st.text(alphabet='[]{}":,0123456789-.e ta$', max_size=60),
            st.builds(
                json.dumps,
                st.dictionaries(
                    st.sampled_from(["$date", "$timestamp", "$binary", "$uuid", "$regularExpression", "$numberLong"]),
                    st.recursive(
                        st.none() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
                        max_leaves=6,
                    ),
                    max_size=1,
                ),
            ),
        )
    )
    def test_any_text_parses_or_is_a_value_error(self, text: str) -> None:
        """Whatever a client sends, parsing it gives a value or a ValueError, never another exception."""
        with contextlib.suppress(ValueError):
            extjson.loads(text)

    def test_an_integer_past_64_bits_is_a_double_as_in_mongodb(self) -> None:
        """JSON integers outside the int64 range are read as doubles: no giant Python ints from a request."""
        assert extjson.loads(str(2**63 - 1)) == 2**63 - 1
        assert isinstance(extjson.loads(str(2**63)), float)
        assert isinstance(extjson.loads("-" + "9" * 300), float)


class TestPerEventWork:
    """Operators whose work could grow past the event's size are bounded as MongoDB bounds them."""

    @pytest.mark.parametrize(
        ("operator", "arguments", "expected"),
        [
            ("$multiply", [2**62, 4], float(2**64)),
            ("$add", [2**63 - 1, 1], float(2**63)),
            ("$subtract", [-(2**63), 1], -float(2**63) - 1),
            ("$multiply", [3, 4], 12),
            ("$add", [2**62, 2**62 - 1 + 2**62], float(2**62 + 2**62 - 1 + 2**62)),
        ],
    )
    def test_integers_overflowing_64_bits_become_doubles(
        self, operator: str, arguments: list[int], expected: float
    ) -> None:
        """A long that overflows becomes a double, as in MongoDB: no arbitrarily large Python ints per event."""
        result = compile_expression({operator: arguments})({})
        assert result == expected
        assert type(result) is type(expected)

    def test_repeated_multiplication_stays_a_double(self) -> None:
        """Multiplying a field by itself a thousand times costs a thousand float products, not a giant int."""
        expression = compile_expression({"$multiply": ["$n"] * 1000})
        result = expression({"n": 2**40})
        assert result == float("inf")

    def test_a_python_int_literal_past_64_bits_is_taken_as_a_double(self) -> None:
        """Literals from Python (JSON already reads them as doubles) are brought into range first."""
        assert compile_expression({"$add": [10**400, 1]})({}) == float("inf")
        assert compile_expression({"$multiply": [-(10**400), 10**400]})({}) == float("-inf")

    def test_concat_past_16_mib_is_a_query_error(self) -> None:
        """$concat refuses to build a string over MongoDB's 16 MiB document limit, before building it."""
        concat = compile_expression({"$concat": ["$s"] * 64}, "joined")
        assert len(concat({"s": "x" * 1000})) == 64_000
        with pytest.raises(QueryError, match=r"joined\.\$concat: \$concat would make a string of 67108864 characters"):
            concat({"s": "x" * 1024 * 1024})
