"""Values captured from SQL databases (Decimal, UUID, calendar dates, times of day) in filters."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from rxcs.query import compile_filter


class TestDecimals:
    @given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6),
           st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6)))
    def test_order_against_ints_and_floats_is_numeric(self, value: Decimal, bound: float) -> None:
        """$gt/$lt between a Decimal and an int or float follow the numbers' exact values."""
        exact = Decimal(bound)
        assert compile_filter({"p": {"$gt": bound}})({"p": value}) is (value > exact)
        assert compile_filter({"p": {"$lt": bound}})({"p": value}) is (value < exact)

    def test_equality_across_representations(self) -> None:
        """1.50 equals 1.5 and the int 2 equals Decimal 2.0, as MongoDB compares numbers."""
        assert compile_filter({"p": Decimal("1.5")})({"p": Decimal("1.50")})
        assert compile_filter({"p": 2})({"p": Decimal("2.0")})
        assert not compile_filter({"p": 2})({"p": Decimal("2.01")})


class TestUuids:
    def test_equality_and_in(self) -> None:
        """A UUID equals the same UUID and no other; $in finds it."""
        key = uuid.uuid4()
        assert compile_filter({"u": uuid.UUID(str(key))})({"u": key})
        assert not compile_filter({"u": uuid.uuid4()})({"u": key})
        assert compile_filter({"u": {"$in": [uuid.uuid4(), key]}})({"u": key})


class TestDatesAndTimes:
    @pytest.mark.parametrize(
        ("condition", "value", "expected"),
        [
            ({"$gt": date(2024, 1, 9)}, date(2024, 1, 10), True),
            ({"$gt": date(2024, 2, 1)}, date(2024, 10, 1), True),
            ({"$lt": date(2024, 2, 1)}, date(2024, 10, 1), False),
            ({"$gte": datetime(2024, 1, 1, tzinfo=UTC)}, date(2024, 1, 1), True),
            ({"$gt": datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)}, date(2024, 1, 1), False),
            ({"$eq": date(2024, 1, 1)}, datetime(2024, 1, 1, tzinfo=UTC), True),
            ({"$lt": time(10, 0)}, time(9, 59, 59, 999999), True),
            ({"$lt": time(10, 0)}, time(10, 30, tzinfo=timezone(timedelta(hours=1))), True),
            ({"$eq": time(9, 30, tzinfo=UTC)}, time(9, 30), True),
            ({"$type": "date"}, date(2024, 1, 1), True),
        ],
    )
    def test_comparisons(self, condition: dict[str, Any], value: Any, expected: bool) -> None:
        """Dates compare by calendar (a date is its midnight UTC against datetimes); times by instant of day."""
        assert compile_filter({"v": condition})({"v": value}) is expected
