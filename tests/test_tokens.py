"""Resume tokens: printable, opaque, ordered, and strict about what they accept."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

import rxcs
from rxcs.tokens import ResumeToken

stamps = st.one_of(
    st.none(),
    st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
)
tokens = st.builds(
    lambda oplog_id, op_id, invalidate, fragment, high_water, stamp: ResumeToken(
        oplog_id, op_id, invalidate and not high_water, 0 if high_water else fragment, high_water,
        None if stamp is None else stamp[:2], None if stamp is None else stamp[2],
    ),
    st.uuids(),
    st.integers(0, 2**64 - 1),
    st.booleans(),
    st.integers(0, 2**16 - 1),
    st.booleans(),
    stamps,
)


class TestRoundTrip:
    @given(tokens)
    def test_string_round_trip(self, token: ResumeToken) -> None:
        """str(token) parses back to an equal token, and is a printable hex string."""
        text = str(token)
        parsed = ResumeToken.parse(text)
        assert parsed == token
        assert parsed.stamp == token.stamp
        assert all(c in "0123456789abcdef" for c in text)

    @given(tokens)
    def test_document_form(self, token: ResumeToken) -> None:
        """The event _id document ({"_data": ...}) and a token itself parse too."""
        assert ResumeToken.parse(token.to_document()) == token
        assert ResumeToken.parse(token) is token

    @given(st.uuids(), st.lists(st.tuples(st.integers(0, 2**40), st.booleans(), st.integers(0, 9)), min_size=2))
    def test_string_order_is_position_order(self, oplog_id: uuid.UUID, positions: list[tuple[int, bool, int]]) -> None:
        """Tokens of one oplog sort as strings in the order of their positions, whatever their stamps."""
        made = [
            ResumeToken(oplog_id, op, inv, frag, cluster_time=(2**32 - 1 - op % 7, 1), wall_time_ms=op % 5)
            for op, inv, frag in positions
        ]
        assert sorted(made) == sorted(made, key=str)
        assert sorted(made, key=str) == sorted(made, key=lambda t: (t.op_id, t.invalidate, t.fragment))

    def test_high_water_sorts_after_every_event_of_its_entry(self) -> None:
        """A high-water token comes after the entry's events, invalidate included, and before the next entry."""
        oplog_id = uuid.uuid4()
        drop, invalidate = ResumeToken(oplog_id, 5), ResumeToken(oplog_id, 5, invalidate=True)
        mark, following = ResumeToken(oplog_id, 5, high_water=True), ResumeToken(oplog_id, 6)
        assert drop < invalidate < mark < following
        assert str(drop) < str(invalidate) < str(mark) < str(following)

    def test_the_stamp_is_not_part_of_the_position(self) -> None:
        """Two tokens of one position are equal (and hash alike) whether or not they carry a stamp."""
        oplog_id = uuid.uuid4()
        bare, stamped = ResumeToken(oplog_id, 5), ResumeToken(oplog_id, 5, cluster_time=(9, 1), wall_time_ms=9000)
        assert bare == stamped
        assert hash(bare) == hash(stamped)
        assert stamped.stamp == (9, 1, 9000)
        assert bare.stamp is None

    def test_a_version_1_token_is_still_read(self) -> None:
        """Tokens saved before stamps existed (format version 1) parse to their position, without a stamp."""
        oplog_id = uuid.UUID("6f3c7b1e-2a4d-4f7e-9c1b-0d2e3f4a5b6c")
        saved = "016f3c7b1e2a4d4f7e9c1b0d2e3f4a5b6c000000000000002a000000a31396e8"
        token = ResumeToken.parse(saved)
        assert (token.oplog_id, token.op_id, token.invalidate, token.fragment) == (oplog_id, 42, False, 0)
        assert token.stamp is None
        assert len(str(token)) == 96


class TestRefusals:
    @given(st.text(max_size=80))
    def test_arbitrary_text_is_refused(self, text: str) -> None:
        """Any text is either a valid token or InvalidResumeToken, nothing else."""
        with contextlib.suppress(rxcs.InvalidResumeToken):
            ResumeToken.parse(text)

    @given(tokens, st.integers(0, 95), st.sampled_from("0123456789abcdef"))
    def test_a_mistyped_digit_is_caught(self, token: ResumeToken, index: int, digit: str) -> None:
        """Changing any one hex digit makes the token fail its checksum (or another check)."""
        text = str(token)
        if text[index] == digit:
            return
        with pytest.raises(rxcs.InvalidResumeToken):
            ResumeToken.parse(text[:index] + digit + text[index + 1 :])

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("zz", "not a hex string"),
            ("abcd", "has 2 bytes"),
            (42, "must be a string"),
            ({"_data": "x", "extra": 1}, "exactly one field"),
            (None, "must be a string"),
        ],
    )
    def test_garbage_names_the_token(self, value: Any, message: str) -> None:
        """Garbage raises InvalidResumeToken with a message saying what is wrong."""
        with pytest.raises(rxcs.InvalidResumeToken, match=message):
            ResumeToken.parse(value)

    def test_unknown_version_is_refused(self) -> None:
        """A token of another format version is refused, naming the version."""
        import struct
        import zlib

        body = struct.pack(">B16sQBH", 9, uuid.uuid4().bytes, 1, 0, 0)
        text = (body + struct.pack(">I", zlib.crc32(body))).hex()
        with pytest.raises(rxcs.InvalidResumeToken, match="format version 9"):
            ResumeToken.parse(text)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"op_id": -1}, {"op_id": 2**64}, {"op_id": True}, {"fragment": 2**16},
            {"high_water": True, "invalidate": True},
            {"cluster_time": (1, 1)}, {"wall_time_ms": 5}, {"cluster_time": (0, 0), "wall_time_ms": 5},
            {"cluster_time": (2**32, 1), "wall_time_ms": 5}, {"cluster_time": (1, 1), "wall_time_ms": -1},
            {"cluster_time": (1, True), "wall_time_ms": 5},
        ],
    )
    def test_constructor_validates(self, kwargs: dict[str, Any]) -> None:
        """Out-of-range fields are refused when a token is made."""
        fields = {"oplog_id": uuid.uuid4(), "op_id": 1, **kwargs}
        with pytest.raises(rxcs.InvalidResumeToken):
            ResumeToken(**fields)

    def test_oplog_id_must_be_a_uuid(self) -> None:
        """The identity must be a UUID."""
        with pytest.raises(rxcs.InvalidResumeToken):
            ResumeToken("not-a-uuid", 1)  # type: ignore[arg-type]
