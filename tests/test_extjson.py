"""Extended JSON of the values captured from SQL databases."""

from __future__ import annotations

import uuid
from datetime import UTC, date, time
from decimal import Decimal

import hypothesis.strategies as st
import pytest
from hypothesis import given

from rxcs import extjson


class TestSqlValues:
    @given(st.decimals())
    def test_decimals_are_number_decimal_and_read_back(self, value: Decimal) -> None:
        """A Decimal is {"$numberDecimal": str} as MongoDB writes it, and loads() gives the same digits back."""
        text = extjson.dumps({"v": value})
        assert text == f'{{"v": {{"$numberDecimal": "{value}"}}}}'
        assert str(extjson.loads(text)["v"]) == str(value)

    def test_uuids_dates_and_times(self) -> None:
        """A UUID is $binary subtype 04; a calendar date and a time of day are ISO 8601 strings."""
        key = uuid.UUID("12345678-1234-5678-1234-567812345678")
        document = {"u": key, "d": date(2024, 2, 29), "t": time(9, 30, 0, 5, tzinfo=UTC)}
        assert extjson.to_extended(document) == {
            "u": {"$binary": {"base64": "EjRWeBI0VngSNFZ4EjRWeA==", "subType": "04"}},
            "d": "2024-02-29", "t": "09:30:00.000005+00:00",
        }
        assert extjson.loads(extjson.dumps({"u": key}))["u"] == key

    def test_a_bad_number_decimal_is_a_value_error(self) -> None:
        """{"$numberDecimal": "abc"} is refused with the bad text named."""
        with pytest.raises(ValueError, match="'abc' is not a decimal"):
            extjson.loads('{"$numberDecimal": "abc"}')
