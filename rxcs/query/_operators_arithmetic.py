"""Arithmetic expression operators: ``$add $subtract $multiply $divide``.

MongoDB's rules: a null or missing argument makes the result null; numbers
combine across int, float and Decimal (Decimal wins, then float); ``$add``
takes at most one date and adds milliseconds to it; ``$subtract`` of two
dates is their distance in milliseconds; dividing by zero is an error.
Integers are 64-bit, as in MongoDB: one that overflows becomes a double, so
no event makes the engine compute with ever larger integers.
"""

from __future__ import annotations

import decimal
import math
import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.query._expressions import Compiler, Evaluator, arguments, is_nullish, type_name
from rxcs.query._values import is_number

__all__ = ["ARITHMETIC_OPERATORS"]

_MILLISECOND: Final = timedelta(milliseconds=1)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _long(value: Any) -> Any:
    """A number as MongoDB holds it: an int past 64 bits becomes a double (infinite past a double's range)."""
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _combine(combine: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
    """``combine`` a step at a time, overflowing to double as MongoDB does; Decimal errors are QueryErrors."""

    def step(left: Any, right: Any) -> Any:
        try:
            return _long(combine(left, right))
        except decimal.DecimalException as exc:
            raise QueryError(f"{path}: {type(exc).__name__} in decimal arithmetic") from None

    return step


def _promote(values: list[Any]) -> list[Any]:
    """Numbers of one Python type: Decimal if any is, else as they are (int and float mix)."""
    if any(isinstance(value, Decimal) for value in values):
        return [value if isinstance(value, Decimal) else Decimal(repr(value)) for value in values]
    return values


def _milliseconds(value: Any) -> timedelta:
    return timedelta(milliseconds=round(float(value)))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _fold(name: str, combine: Callable[[Any, Any], Any], allow_date: bool) -> Compiler:
    """``$add``/``$multiply``: any number of arguments, combined left to right."""

    def compile_fold(argument: Any, path: str) -> Evaluator:
        parts = arguments(argument, path)
        identity = 0 if combine is operator.add else 1
        step = _combine(combine, path)

        def evaluate(doc: Mapping[str, Any]) -> Any:
            numbers: list[Any] = []
            date: datetime | None = None
            for part in parts:
                value = part(doc)
                if is_nullish(value):
                    return None
                if is_number(value):
                    numbers.append(_long(value))
                elif allow_date and isinstance(value, datetime):
                    if date is not None:
                        raise QueryError(f"{path}: only one date allowed in an $add expression")
                    date = value
                else:
                    kinds = "numeric or date types" if allow_date else "numeric types"
                    raise QueryError(f"{path}: {name} only supports {kinds}, not {type_name(value)}")
            result = reduce(step, _promote(numbers), identity)
            return result if date is None else date + _milliseconds(result)

        return evaluate

    return compile_fold


def _compile_subtract(argument: Any, path: str) -> Evaluator:
    left, right = arguments(argument, path, 2)
    difference = _combine(operator.sub, path)

    def subtract(doc: Mapping[str, Any]) -> Any:
        a, b = left(doc), right(doc)
        if is_nullish(a) or is_nullish(b):
            return None
        if is_number(a) and is_number(b):
            x, y = _promote([_long(a), _long(b)])
            return difference(x, y)
        if isinstance(a, datetime):
            if isinstance(b, datetime):
                return (_utc(a) - _utc(b)) // _MILLISECOND
            if is_number(b):
                return a - _milliseconds(b)
        raise QueryError(f"{path}: can't $subtract {type_name(b)} from {type_name(a)}")

    return subtract


def _compile_divide(argument: Any, path: str) -> Evaluator:
    left, right = arguments(argument, path, 2)

    def divide(doc: Mapping[str, Any]) -> Any:
        a, b = left(doc), right(doc)
        if is_nullish(a) or is_nullish(b):
            return None
        if not (is_number(a) and is_number(b)):
            raise QueryError(f"{path}: $divide only supports numeric types, not {type_name(a)} and {type_name(b)}")
        if b == 0:
            raise QueryError(f"{path}: can't $divide by zero")
        x, y = _promote([_long(a), _long(b)])
        try:
            return x / y
        except decimal.DecimalException as exc:
            raise QueryError(f"{path}: {type(exc).__name__} in decimal arithmetic") from None

    return divide


ARITHMETIC_OPERATORS: Final[dict[str, Compiler]] = {
    "$add": _fold("$add", operator.add, allow_date=True),
    "$subtract": _compile_subtract,
    "$multiply": _fold("$multiply", operator.mul, allow_date=False),
    "$divide": _compile_divide,
}
