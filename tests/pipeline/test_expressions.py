"""Aggregation expression operators, table by table, from MongoDB's documented behaviour.

Each row is (expression, document, expected); ``MISSING`` as the expected
value means the expression yields nothing (a field set to it is left out).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import rxcs
from rxcs.query import DESCEND, KEEP, MISSING, PRUNE, Frame, compile_expression

DOC: dict[str, Any] = {
    "_id": 1,
    "qty": 5,
    "price": 2.5,
    "name": "Widget",
    "nothing": None,
    "tags": ["a", "b", "c"],
    "item": {"sku": "X1", "dims": {"h": 2}},
    "items": [{"n": 1}, {"n": 2}],
    "when": datetime(2024, 1, 1, tzinfo=UTC),
    "dec": Decimal("1.5"),
    "flag": True,
    "price.usd": 9,
}


def evaluate(expression: Any, document: dict[str, Any] | None = None) -> Any:
    return compile_expression(expression, "e")(DOC if document is None else document)


def check(expression: Any, expected: Any) -> None:
    result = evaluate(expression)
    if expected is MISSING:
        assert result is MISSING
    else:
        assert result == expected
        assert type(result) is type(expected), f"{result!r} is a {type(result).__name__}"


class TestOperands:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("$qty", 5),
            ("$item.sku", "X1"),
            ("$item.dims.h", 2),
            ("$items.n", [1, 2]),
            ("$absent", MISSING),
            ("$item.absent", MISSING),
            ("$$ROOT.qty", 5),
            ("$$CURRENT.item.sku", "X1"),
            ("$$REMOVE", MISSING),
            ("plain string", "plain string"),
            (7, 7),
            (None, None),
            ({"$literal": "$qty"}, "$qty"),
            ({"$literal": {"$add": [1, 2]}}, {"$add": [1, 2]}),
            ({"a": "$qty", "b": {"c": "$name"}, "gone": "$absent"}, {"a": 5, "b": {"c": "Widget"}}),
            (["$qty", "$absent"], [5, None]),
        ],
    )
    def test_operand(self, expression: Any, expected: Any) -> None:
        """Field paths, variables, literals, documents and arrays evaluate as in MongoDB."""
        check(expression, expected)

    def test_root_is_the_whole_document(self) -> None:
        """$$ROOT and $$CURRENT are the document being evaluated."""
        assert evaluate("$$ROOT") is DOC
        assert evaluate("$$CURRENT") is DOC

    def test_frame_keeps_root_while_current_moves(self) -> None:
        """Under a Frame, field paths read the current level and $$ROOT still the event."""
        frame = Frame({"level": 3}, DOC)
        assert compile_expression("$level")(frame) == 3
        assert compile_expression("$$ROOT.name")(frame) == "Widget"
        assert compile_expression("$$CURRENT")(frame) == {"level": 3}

    @pytest.mark.parametrize(("name", "value"), [("$$DESCEND", DESCEND), ("$$PRUNE", PRUNE), ("$$KEEP", KEEP)])
    def test_redact_variables(self, name: str, value: Any) -> None:
        """$redact's variables evaluate to their markers."""
        assert evaluate(name) is value


class TestComparison:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$eq": ["$qty", 5]}, True),
            ({"$eq": ["$qty", 5.0]}, True),
            ({"$eq": ["$absent", None]}, True),
            ({"$ne": ["$name", "Widget"]}, False),
            ({"$gt": ["$qty", 4]}, True),
            ({"$gt": ["$name", 100]}, True),  # strings sort above numbers
            ({"$gte": ["$qty", 5]}, True),
            ({"$lt": ["$price", 3]}, True),
            ({"$lt": ["$nothing", 0]}, True),  # null sorts below numbers
            ({"$lte": ["$qty", 4]}, False),
            ({"$cmp": ["$qty", 7]}, -1),
            ({"$cmp": ["$qty", 5]}, 0),
            ({"$cmp": ["$name", "Aardvark"]}, 1),
        ],
    )
    def test_comparison(self, expression: Any, expected: Any) -> None:
        """Comparisons use BSON order across types, missing as null."""
        check(expression, expected)


class TestBoolean:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$and": [True, "$qty"]}, True),
            ({"$and": ["$qty", 0]}, False),
            ({"$and": ["$absent", True]}, False),
            ({"$and": []}, True),
            ({"$or": [False, "$nothing", "$name"]}, True),
            ({"$or": [0, None]}, False),
            ({"$or": []}, False),
            ({"$not": ["$qty"]}, False),
            ({"$not": [0]}, True),
            ({"$not": ["$absent"]}, True),
            ({"$not": [[]]}, False),  # an array is true, even an empty one
        ],
    )
    def test_boolean(self, expression: Any, expected: Any) -> None:
        """Only false, null, missing and zero are false."""
        check(expression, expected)


class TestConditional:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$cond": {"if": {"$gte": ["$qty", 5]}, "then": "many", "else": "few"}}, "many"),
            ({"$cond": [{"$gt": ["$qty", 10]}, "many", "few"]}, "few"),
            ({"$cond": ["$absent", 1, 2]}, 2),
            ({"$cond": ["$qty", "$name", {"$divide": [1, 0]}]}, "Widget"),  # only the branch taken runs
            ({"$cond": [True, "$absent", 0]}, MISSING),
            ({"$ifNull": ["$name", "none"]}, "Widget"),
            ({"$ifNull": ["$nothing", "none"]}, "none"),
            ({"$ifNull": ["$absent", "none"]}, "none"),
            ({"$ifNull": ["$absent", "$nothing", "$qty", "none"]}, 5),
            ({"$ifNull": ["$absent", "$alsoAbsent"]}, MISSING),
            ({"$ifNull": [0, 1]}, 0),  # zero is not null
        ],
    )
    def test_conditional(self, expression: Any, expected: Any) -> None:
        """$cond picks a branch by truthiness; $ifNull replaces null and missing alike."""
        check(expression, expected)


class TestArithmetic:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$add": ["$qty", 2]}, 7),
            ({"$add": ["$qty", "$price"]}, 7.5),
            ({"$add": ["$qty", "$dec"]}, Decimal("6.5")),
            ({"$add": ["$price", "$dec"]}, Decimal("4.0")),
            ({"$add": []}, 0),
            ({"$add": ["$qty", None]}, None),
            ({"$add": ["$qty", "$absent"]}, None),
            ({"$add": ["$when", 1500]}, datetime(2024, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
            ({"$add": [86_400_000, "$when"]}, datetime(2024, 1, 2, tzinfo=UTC)),
            ({"$subtract": ["$qty", 7]}, -2),
            ({"$subtract": ["$price", 0.5]}, 2.0),
            ({"$subtract": ["$when", 1000]}, datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)),
            ({"$subtract": [{"$add": ["$when", 2500]}, "$when"]}, 2500),
            ({"$subtract": ["$qty", "$absent"]}, None),
            ({"$multiply": ["$qty", "$price", 2]}, 25.0),
            ({"$multiply": ["$qty", 3]}, 15),
            ({"$multiply": ["$qty", "$dec"]}, Decimal("7.5")),
            ({"$multiply": ["$qty", None]}, None),
            ({"$multiply": []}, 1),
            ({"$divide": ["$qty", 2]}, 2.5),
            ({"$divide": [10, 5]}, 2.0),
            ({"$divide": ["$dec", 3]}, Decimal("0.5")),
            ({"$divide": ["$absent", 2]}, None),
            ({"$divide": [1, None]}, None),
        ],
    )
    def test_arithmetic(self, expression: Any, expected: Any) -> None:
        """Numbers combine with Decimal > float > int; null or missing makes null; dates take milliseconds."""
        check(expression, expected)

    def test_naive_and_aware_dates_subtract_as_utc(self) -> None:
        """A naive datetime is taken as UTC when subtracted from an aware one."""
        naive = datetime(2024, 1, 1) + timedelta(seconds=3)
        assert evaluate({"$subtract": [{"$literal": naive}, "$when"]}) == 3000

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ({"$add": ["$qty", "$name"]}, "e.$add: $add only supports numeric or date types, not string"),
            ({"$add": ["$when", "$when"]}, "e.$add: only one date allowed"),
            ({"$add": ["$flag", 1]}, "e.$add: $add only supports numeric or date types, not bool"),
            ({"$multiply": ["$when", 2]}, "e.$multiply: $multiply only supports numeric types, not date"),
            ({"$subtract": [5, "$when"]}, "e.$subtract: can't $subtract date from int"),
            ({"$subtract": ["$name", 1]}, "e.$subtract: can't $subtract int from string"),
            ({"$divide": ["$qty", 0]}, "e.$divide: can't $divide by zero"),
            ({"$divide": ["$qty", 0.0]}, "e.$divide: can't $divide by zero"),
            ({"$divide": ["$name", 2]}, "e.$divide: $divide only supports numeric types, not string and int"),
        ],
    )
    def test_runtime_errors(self, expression: Any, message: str) -> None:
        """Type errors and division by zero are errors when evaluated, naming the operator's path."""
        compiled = compile_expression(expression, "e")
        with pytest.raises(rxcs.QueryError, match=re.escape(message)):
            compiled(DOC)


class TestStrings:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$concat": ["$name", "-", "$item.sku"]}, "Widget-X1"),
            ({"$concat": []}, ""),
            ({"$concat": ["$name", None]}, None),
            ({"$concat": ["$name", "$absent"]}, None),
            ({"$toUpper": "$name"}, "WIDGET"),
            ({"$toUpper": ["$name"]}, "WIDGET"),
            ({"$toLower": "$name"}, "widget"),
            ({"$toUpper": "$nothing"}, ""),
            ({"$toLower": "$absent"}, ""),
            ({"$toUpper": "straße"}, "STRAßE"),  # ASCII letters only, as documented
            ({"$toUpper": 12}, "12"),
            ({"$toLower": "$when"}, "2024-01-01t00:00:00.000z"),
        ],
    )
    def test_strings(self, expression: Any, expected: Any) -> None:
        """$concat is null on null or missing; case changes give "" for null and touch ASCII only."""
        check(expression, expected)

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ({"$concat": ["$name", 5]}, "e.$concat: $concat only supports strings, not int"),
            ({"$toUpper": "$tags"}, "e.$toUpper: can't convert from array to string"),
        ],
    )
    def test_runtime_errors(self, expression: Any, message: str) -> None:
        """Values that are not strings (or convertible) are errors naming the path."""
        compiled = compile_expression(expression, "e")
        with pytest.raises(rxcs.QueryError, match=re.escape(message)):
            compiled(DOC)


class TestArrays:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$size": "$tags"}, 3),
            ({"$size": [[]]}, 0),
            ({"$arrayElemAt": ["$tags", 0]}, "a"),
            ({"$arrayElemAt": ["$tags", -1]}, "c"),
            ({"$arrayElemAt": ["$tags", 1.0]}, "b"),
            ({"$arrayElemAt": ["$tags", 3]}, MISSING),
            ({"$arrayElemAt": ["$tags", -4]}, MISSING),
            ({"$arrayElemAt": ["$absent", 0]}, None),
            ({"$arrayElemAt": ["$tags", None]}, None),
            ({"$in": ["b", "$tags"]}, True),
            ({"$in": ["z", "$tags"]}, False),
            ({"$in": [5.0, [1, 5]]}, True),
        ],
    )
    def test_arrays(self, expression: Any, expected: Any) -> None:
        """$size counts; $arrayElemAt indexes from either end and is missing out of range; $in tests membership."""
        check(expression, expected)

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ({"$size": "$name"}, "e.$size: the argument to $size must be an array, not string"),
            ({"$size": "$absent"}, "e.$size: the argument to $size must be an array, not missing"),
            ({"$arrayElemAt": ["$name", 0]}, "e.$arrayElemAt: $arrayElemAt's first argument must be an array"),
            ({"$arrayElemAt": ["$tags", 0.5]}, "e.$arrayElemAt: $arrayElemAt's second argument must be an integer"),
            ({"$in": ["a", "$name"]}, "e.$in: the second argument must be an array"),
        ],
    )
    def test_runtime_errors(self, expression: Any, message: str) -> None:
        """Non-arrays where arrays are needed are errors naming the path."""
        compiled = compile_expression(expression, "e")
        with pytest.raises(rxcs.QueryError, match=re.escape(message)):
            compiled(DOC)


class TestDocuments:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ({"$type": "$qty"}, "int"),
            ({"$type": "$price"}, "double"),
            ({"$type": "$dec"}, "decimal"),
            ({"$type": "$name"}, "string"),
            ({"$type": "$nothing"}, "null"),
            ({"$type": "$absent"}, "missing"),
            ({"$type": "$tags"}, "array"),
            ({"$type": "$item"}, "object"),
            ({"$type": "$when"}, "date"),
            ({"$type": "$flag"}, "bool"),
            ({"$type": 2**40}, "long"),
            ({"$getField": "name"}, "Widget"),
            ({"$getField": "price.usd"}, 9),  # a field whose name holds a dot
            ({"$getField": {"field": "sku", "input": "$item"}}, "X1"),
            ({"$getField": {"field": {"$literal": "$odd"}, "input": {"$literal": {"$odd": 1}}}}, 1),
            ({"$getField": {"field": "x", "input": "$absent"}}, None),
            ({"$getField": {"field": "x", "input": "$nothing"}}, None),
            ({"$getField": "absent"}, MISSING),
            ({"$mergeObjects": ["$item", {"sku": "Y2", "new": 1}]}, {"sku": "Y2", "dims": {"h": 2}, "new": 1}),
            ({"$mergeObjects": ["$absent", None, {"a": 1}]}, {"a": 1}),
            ({"$mergeObjects": "$item"}, {"sku": "X1", "dims": {"h": 2}}),
            ({"$mergeObjects": []}, {}),
        ],
    )
    def test_documents(self, expression: Any, expected: Any) -> None:
        """$type names BSON types; $getField reads one field (dots included); $mergeObjects merges left to right."""
        check(expression, expected)

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ({"$getField": {"field": "x", "input": "$qty"}}, "e.$getField: $getField's input must be a document"),
            ({"$mergeObjects": ["$item", "$qty"]}, "e.$mergeObjects.1: $mergeObjects requires documents, not int"),
        ],
    )
    def test_runtime_errors(self, expression: Any, message: str) -> None:
        """Non-documents where documents are needed are errors naming the path."""
        compiled = compile_expression(expression, "e")
        with pytest.raises(rxcs.QueryError, match=re.escape(message)):
            compiled(DOC)


class TestCompileErrors:
    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ({"$cond": {"if": True, "then": 1}}, "e.$cond: missing 'else' parameter to $cond"),
            ({"$cond": {"if": True, "then": 1, "else": 2, "other": 3}}, "e.$cond.other: unrecognized parameter"),
            ({"$cond": [True, 1]}, "e.$cond: expected {if, then, else} or a list of 3 expressions"),
            ({"$ifNull": ["$a"]}, "e.$ifNull: expected a list of at least 2 expressions"),
            ({"$ifNull": "$a"}, "e.$ifNull: expected a list of at least 2 expressions"),
            ({"$size": [1, 2]}, "e.$size: expected 1 argument, got 2"),
            ({"$toUpper": ["a", "b"]}, "e.$toUpper: expected 1 argument, got 2"),
            ({"$subtract": [1]}, "e.$subtract: expected 2 arguments, got 1"),
            ({"$divide": [1, 2, 3]}, "e.$divide: expected 2 arguments, got 3"),
            ({"$arrayElemAt": ["$a"]}, "e.$arrayElemAt: expected 2 arguments"),
            ({"$getField": "$name"}, "e.$getField: a field name starting with '$' must be written {$literal"),
            ({"$getField": {"field": 5}}, "e.$getField.field: 'field' must be a string constant"),
            ({"$getField": {"input": "$a"}}, "e.$getField: missing 'field' parameter"),
            ({"$getField": {"field": "a", "from": "$b"}}, "e.$getField.from: unrecognized parameter"),
            ({"$add": ["$a", {"$nope": 1}]}, "e.$add.1.$nope: unknown expression operator"),
            ({"$concat": ["$a..b"]}, "e.$concat.0: bad field path"),
            ("$$REMOVE.x", "e: $$REMOVE has no fields"),
            ("$$NOW", "e: unknown variable $$NOW"),
            ({"$add": [1], "$multiply": [2]}, "e.$add: an operator must be the only field"),
        ],
    )
    def test_compile_errors(self, expression: Any, message: str) -> None:
        """Malformed expressions raise QueryError when compiled, naming the path."""
        with pytest.raises(rxcs.QueryError, match=re.escape(message)):
            compile_expression(expression, "e")

    def test_new_operators_work_inside_match_expr(self) -> None:
        """The registry serves $expr in filters too: one expression engine."""
        matches = rxcs.query.compile_filter({"$expr": {"$gt": [{"$multiply": ["$qty", "$price"]}, 10]}})
        assert matches({"qty": 5, "price": 2.5})
        assert not matches({"qty": 1, "price": 2.5})
