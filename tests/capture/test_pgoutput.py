"""The pgoutput message parser and PostgreSQL's text forms, on bytes and strings built here (no server needed)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

import rxcs
from rxcs.capture._mapping import PgType, pg_parser
from rxcs.capture._pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    ProtocolError,
    Relation,
    Truncate,
    Update,
    format_lsn,
    parse,
    parse_lsn,
)


def text(value: str) -> bytes:
    data = value.encode()
    return b"t" + struct.pack(">i", len(data)) + data


def row(*columns: bytes) -> bytes:
    return struct.pack(">h", len(columns)) + b"".join(columns)


class TestMessages:
    def test_begin_and_commit(self) -> None:
        """Begin carries the final LSN, commit time and xid; Commit the commit and end LSNs."""
        stamp = 86_400 * 1_000_000  # one day after 2000-01-01, in microseconds
        begin = parse(b"B" + struct.pack(">QqI", 0x16B374D848, stamp, 731))
        assert begin == Begin(0x16B374D848, datetime(2000, 1, 2, tzinfo=UTC), 731)
        commit = parse(b"C" + struct.pack(">bQQq", 0, 10, 20, stamp))
        assert commit == Commit(10, 20, datetime(2000, 1, 2, tzinfo=UTC))

    def test_relation_and_changes(self) -> None:
        """Relation lists columns with key flags; Insert/Update/Delete carry text, NULL and unchanged-TOAST values."""
        relation = parse(b"R" + struct.pack(">I", 42) + b"public\0items\0f" + struct.pack(">h", 2)
                         + b"\x01id\0" + struct.pack(">Ii", 23, -1) + b"\x00body\0" + struct.pack(">Ii", 25, -1))
        assert isinstance(relation, Relation)
        assert (relation.schema, relation.name, relation.replica_identity) == ("public", "items", "f")
        assert [(c.name, c.type_oid, c.key) for c in relation.columns] == [("id", 23, True), ("body", 25, False)]
        assert parse(b"I" + struct.pack(">I", 42) + b"N" + row(text("1"), b"n")) == Insert(42, ["1", None])
        update = parse(b"U" + struct.pack(">I", 42) + b"O" + row(text("1"), text("a")) + b"N" + row(text("1"), b"u"))
        assert update == Update(42, ["1", "a"], False, ["1", UNCHANGED])
        assert parse(b"U" + struct.pack(">I", 42) + b"N" + row(text("1"), text("é"))) == Update(42, None, False,
                                                                                               ["1", "é"])
        assert parse(b"D" + struct.pack(">I", 42) + b"K" + row(text("1"), b"n")) == Delete(42, ["1", None], True)
        assert parse(b"T" + struct.pack(">Ib", 2, 3) + struct.pack(">II", 42, 43)) == Truncate((42, 43), True, True)

    @pytest.mark.parametrize("payload", [b"", b"Z", b"I\0\0\0\x2aX", b"I\0\0\0\x2aN\0\x01t\0\0\0\x09ab",
                                         b"B\0\0", b"I\0\0\0\x2aN\0\x01b\0\0\0\x01x"])
    def test_malformed_messages_are_protocol_errors(self, payload: bytes) -> None:
        """Unknown kinds, truncated messages, values past the end, binary values: ProtocolError, a CaptureError."""
        with pytest.raises(ProtocolError):
            parse(payload)
        assert issubclass(ProtocolError, rxcs.CaptureError)

    @given(st.integers(0, 2**64 - 1))
    def test_lsn_text_round_trips(self, lsn: int) -> None:
        """An LSN prints as PostgreSQL does (X/X, hex) and parses back."""
        assert parse_lsn(format_lsn(lsn)) == lsn


def types(*rows: PgType) -> dict[int, PgType]:
    return {row.oid: row for row in rows}


INT4 = PgType(23, "int4", "b", "N", 0, 0, ",")
TEXT = PgType(25, "text", "b", "S", 0, 0, ",")
TIMETZ = PgType(1266, "timetz", "b", "D", 0, 0, ",")
BOX = PgType(603, "box", "b", "G", 600, 0, ";")


class TestTextForms:
    @pytest.mark.parametrize(
        ("literal", "expected"),
        [
            ("{}", []),
            ("{1,NULL,3}", [1, None, 3]),
            ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
            ("[0:1]={7,8}", [7, 8]),
        ],
    )
    def test_integer_arrays(self, literal: str, expected: list[Any]) -> None:
        """Arrays of any dimension; NULL elements; a lower-bound decoration is dropped."""
        parse_array = pg_parser(1007, types(INT4, PgType(1007, "_int4", "b", "A", 23, 0, ",")))
        assert parse_array is not None
        assert parse_array(literal) == expected

    def test_text_arrays_with_quotes_escapes_and_the_word_null(self) -> None:
        """Quoted elements keep commas, braces, quotes and backslashes; "NULL" quoted is the string."""
        parse_array = pg_parser(1009, types(TEXT, PgType(1009, "_text", "b", "A", 25, 0, ",")))
        assert parse_array is not None
        assert parse_array('{"a,b","{x}","q\\"t","b\\\\s","NULL",NULL,""}') == [
            "a,b", "{x}", 'q"t', "b\\s", "NULL", None, ""]

    def test_times_with_offsets_of_hours_minutes_and_seconds(self) -> None:
        """timetz offsets print as +05, +05:30 or -00:00:30: each becomes the matching tzinfo."""
        parse_time = pg_parser(1266, types(TIMETZ))
        assert parse_time is not None
        assert parse_time("12:00:00+05") == time(12, tzinfo=timezone(timedelta(hours=5)))
        west = timezone(-timedelta(hours=3, minutes=30))
        assert parse_time("12:00:00.5-03:30") == time(12, 0, 0, 500000, tzinfo=west)
        assert parse_time("12:00:00+00:00:30").utcoffset() == timedelta(seconds=30)

    def test_unsupported_types_and_their_arrays_are_lookup_errors_naming_them(self) -> None:
        """A type outside the mapping (box, and so an array of boxes) raises LookupError with the type's name."""
        with pytest.raises(LookupError, match="box"):
            pg_parser(1020, types(BOX, PgType(1020, "_box", "b", "A", 603, 0, ",")))
