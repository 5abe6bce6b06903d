"""BSON semantics for Python values: type order, comparison, equality, type names."""

from __future__ import annotations

import datetime
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from rxcs.events import ClusterTime

__all__ = [
    "MISSING",
    "bson_type_name",
    "compare_values",
    "is_number",
    "type_rank",
    "values_equal",
]


class _Missing:
    """A path that resolves to nothing (distinct from null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

# MongoDB's canonical type order (lower sorts first). A time of day has no BSON type: it sorts after dates.
_NULL, _NUMBER, _STRING, _OBJECT, _ARRAY, _BINARY, _BOOL, _DATE, _TIME, _TIMESTAMP, _REGEX = (
    5, 10, 15, 20, 25, 30, 40, 45, 46, 47, 50,
)
_OTHER = 100

_INT32 = 2**31


def is_number(value: object) -> bool:
    """True for int, float and Decimal, never for bool."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def type_rank(value: object) -> int:
    """The canonical rank of a value's BSON type; comparisons order ranks first."""
    if value is None or value is MISSING:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float, Decimal)):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, ClusterTime):  # a tuple subclass: before the array check
        return _TIMESTAMP
    if isinstance(value, Mapping):
        return _OBJECT
    if isinstance(value, (list, tuple)):
        return _ARRAY
    if isinstance(value, (bytes, bytearray, memoryview, uuid.UUID)):
        return _BINARY
    if isinstance(value, datetime.date):  # a datetime, or a calendar date (captured from SQL): midnight UTC
        return _DATE
    if isinstance(value, datetime.time):
        return _TIME
    if isinstance(value, re.Pattern):
        return _REGEX
    return _OTHER


def bson_type_name(value: object) -> str | None:
    """MongoDB's ``$type`` alias of a value; None for a missing one."""
    if value is MISSING:
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -_INT32 <= value < _INT32 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ClusterTime):
        return "timestamp"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, bytearray, memoryview, uuid.UUID)):
        return "binData"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, re.Pattern):
        return "regex"
    return None


def _compare_numbers(a: Any, b: Any) -> int:
    a_nan = isinstance(a, (float, Decimal)) and a != a  # noqa: PLR0124 - NaN test
    b_nan = isinstance(b, (float, Decimal)) and b != b  # noqa: PLR0124 - NaN test
    if a_nan or b_nan:
        return 0 if a_nan and b_nan else (-1 if a_nan else 1)  # NaN sorts below every number
    if isinstance(a, Decimal) != isinstance(b, Decimal):
        if isinstance(a, float) and math.isinf(a):
            return -1 if a < 0 else 1
        if isinstance(b, float) and math.isinf(b):
            return 1 if b < 0 else -1
        a, b = Decimal(a), Decimal(b)
    return int((a > b) - (a < b))


def _binary(value: Any) -> tuple[int, int, bytes]:
    raw = value.bytes if isinstance(value, uuid.UUID) else bytes(value)
    return (len(raw), 4 if isinstance(value, uuid.UUID) else 0, raw)


def compare_values(a: Any, b: Any) -> int:
    """Compare two values in MongoDB's order: -1, 0 or 1 (missing sorts as null)."""
    rank_a, rank_b = type_rank(a), type_rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if rank_a == _NULL:
        return 0
    if rank_a == _NUMBER:
        return _compare_numbers(a, b)
    if rank_a in (_STRING, _BOOL, _TIMESTAMP):
        return int((a > b) - (a < b))
    if rank_a == _DATE:
        return _compare_dates(a, b)
    if rank_a == _TIME:
        x4, y4 = _time_key(a), _time_key(b)
        return (x4 > y4) - (x4 < y4)
    if rank_a == _OBJECT:
        return _compare_documents(a, b)
    if rank_a == _ARRAY:
        for x, y in zip(a, b, strict=False):
            order = compare_values(x, y)
            if order:
                return order
        return (len(a) > len(b)) - (len(a) < len(b))
    if rank_a == _BINARY:
        x, y = _binary(a), _binary(b)
        return (x > y) - (x < y)
    if rank_a == _REGEX:
        x2, y2 = (a.pattern, a.flags), (b.pattern, b.flags)
        return (x2 > y2) - (x2 < y2)
    x3, y3 = repr(a), repr(b)
    return (x3 > y3) - (x3 < y3)


def _time_key(value: datetime.time) -> tuple[int, int]:
    """A time of day as (seconds, microseconds) in UTC; a naive time is taken as UTC."""
    offset = value.utcoffset()
    seconds = value.hour * 3600 + value.minute * 60 + value.second
    return (seconds - (0 if offset is None else int(offset.total_seconds())), value.microsecond)


def _as_datetime(value: datetime.date) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)


def _compare_dates(a: datetime.date, b: datetime.date) -> int:
    if type(a) is datetime.date and type(b) is datetime.date:
        return (a > b) - (a < b)
    x, y = _as_datetime(a), _as_datetime(b)  # a calendar date is its midnight, UTC
    if (x.tzinfo is None) != (y.tzinfo is None):  # naive values are taken as UTC
        x = x if x.tzinfo is not None else x.replace(tzinfo=datetime.UTC)
        y = y if y.tzinfo is not None else y.replace(tzinfo=datetime.UTC)
    return (x > y) - (x < y)


def _compare_documents(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    for (key_a, value_a), (key_b, value_b) in zip(a.items(), b.items(), strict=False):
        rank_a, rank_b = type_rank(value_a), type_rank(value_b)
        if rank_a != rank_b:
            return -1 if rank_a < rank_b else 1
        if key_a != key_b:
            return -1 if key_a < key_b else 1
        order = compare_values(value_a, value_b)
        if order:
            return order
    return (len(a) > len(b)) - (len(a) < len(b))


def values_equal(a: Any, b: Any) -> bool:
    """MongoDB equality: numbers across int/float, bool apart from numbers, documents in order."""
    if type(a) is type(b) and type(a) in (str, int, float, bool):
        return bool(a == b) or (type(a) is float and a != a and b != b)  # noqa: PLR0124 - NaN equals NaN
    return compare_values(a, b) == 0
