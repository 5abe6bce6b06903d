"""Changes are validated before they reach the log; entries round-trip through the codec."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

import rxcs
from rxcs.events import ClusterTime
from rxcs.oplog.codec import DATA_CHANGE_HEAD, EntryDecodeError, decode_entry, encode_entry
from rxcs.oplog.entry import Change, OplogEntry


class TestValidation:
    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: Change.insert("shop", "users", {"name": "x"}), "document: has no '_id'"),
            (lambda: Change.insert("shop", "users", {"_id": 1, "a": {2: 3}}), "document.a: field name 2"),
            (lambda: Change.insert("shop", "users", {"_id": 1, "a": [{"b": {1: 1}}]}), "document.a.0.b: field name 1"),
            (lambda: Change.insert("", "users", {"_id": 1}), "db: expected a non-empty string"),
            (lambda: Change.insert("a.b", "users", {"_id": 1}), "db: 'a.b' contains"),
            (lambda: Change.insert("shop", "$cmd", {"_id": 1}), "coll: '$cmd' is not a valid"),
            (lambda: Change.insert("shop", "users", [1]), "document: expected a document"),
            (lambda: Change.replace("shop", "users", 1, {"_id": 2}), "document._id: 2 differs"),
            (lambda: Change.update("shop", "users", 1, truncated_arrays=[{"field": "a"}]), "truncated_arrays.0"),
            (lambda: Change.update("shop", "users", 1, removed_fields="a"), "removed_fields: expected a list"),
            (lambda: Change.update("shop", "users", None), "document_key: must not be None"),
            (lambda: Change.update("shop", "users", {"x": 1}), "document_key: has no '_id'"),
            (lambda: Change.insert("shop", "users", {"_id": 1}, txn=-1), "txn: expected a non-negative int"),
            (lambda: Change.create_index("shop", "users", {"name": "x"}), "index_spec: has no 'key'"),
            (lambda: Change.drop_index("shop", "users", ""), "index_name"),
            (lambda: Change.rename_collection("shop", "users", "shop", ""), "to_coll"),
            (lambda: Change.rename_collection("shop", "users", "shop", "users"), "to: shop.users is the collection"),
            (lambda: Change.create_collection("shop", "v", {"viewOn": 3}), "options.viewOn: expected the name"),
            (lambda: Change.create_collection("shop", "v", {"viewOn": "users", "pipeline": {}}),
             "options.pipeline: expected a list"),
            (lambda: Change.create_collection("shop", "t", {"timeseries": "at"}), "options.timeseries: expected a"),
            (lambda: Change.rename_collection("shop", "a", "shop", "b", drop_target=1), "drop_target: expected"),
            (lambda: Change.drop_index("shop", "users", "a\x00"), "index_name: expected a non-empty string"),
            (lambda: Change.update("shop", "users", 1, updated_fields={"a.b": 1}, disambiguated_paths={"c": ["c"]}),
             "disambiguated_paths: 'c' is not a path"),
            (lambda: Change.update("shop", "users", 1, updated_fields={"a.b": 1}, disambiguated_paths={"a.b": ["a"]}),
             "does not spell 'a.b'"),
            (lambda: Change.update("shop", "users", 1, updated_fields={"a.0": 1},
                                   disambiguated_paths={"a.0": ["a", -1]}),
             "disambiguated_paths.a.0: -1 is neither"),
            (lambda: Change.update("shop", "users", 1, updated_fields={"a": 1}, disambiguated_paths={"a": "a"}),
             "disambiguated_paths.a: expected a list"),
        ],
    )
    def test_bad_changes_name_the_argument(self, make: Any, message: str) -> None:
        """Each malformed change raises InvalidChangeError naming what is wrong."""
        with pytest.raises(rxcs.InvalidChangeError, match=message.replace("$", r"\$").replace(".", r"\.")):
            make()

    def test_default_index_name(self) -> None:
        """An index without a name gets MongoDB's default name."""
        change = Change.create_index("shop", "users", {"key": {"a": 1, "b": -1}})
        assert change.operation_description == {"indexes": [{"key": {"a": 1, "b": -1}, "name": "a_1_b_-1"}]}

    def test_document_key_forms(self) -> None:
        """A key is a document with _id, or the _id value itself."""
        assert Change.delete("shop", "users", 5).document_key == {"_id": 5}
        assert Change.delete("shop", "users", {"_id": 5, "region": "eu"}).document_key == {"_id": 5, "region": "eu"}


offsets = st.integers(-86_399, 86_399).map(lambda seconds: timezone(timedelta(seconds=seconds)))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
              st.text(max_size=10), st.binary(max_size=10),
              st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
              st.decimals(allow_nan=False), st.uuids(), st.dates(),
              st.times(timezones=st.one_of(st.none(), st.timezones(), offsets))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=10,
)


class TestCodec:
    @given(st.dictionaries(st.text(max_size=5), json_values, max_size=5), st.integers(1, 2**40))
    def test_round_trip(self, document: dict[str, Any], op_id: int) -> None:
        """Any storable document decodes to an equal entry at the same position."""
        change = Change.insert("shop", "users", {**document, "_id": 1})
        entry = decode_entry(encode_entry(op_id, ClusterTime(10, 3), 1234, change))
        assert entry == OplogEntry(op_id, ClusterTime(10, 3), 1234, *change)

    def test_records_written_before_the_catalog_fields_still_decode(self) -> None:
        """Records of 7 to 15 fields (no collection UUID, nothing dropped) decode as before, with those fields None."""
        change = Change.insert("shop", "users", {"_id": 1}, txn=3).with_source({"lsn": 1})
        record = encode_entry(4, ClusterTime(10, 3), 1234, change)
        assert record[0] == 0x9F  # a fixarray of 15: what rxcs wrote before collection identities
        entry = decode_entry(record)
        assert (entry.collection_uuid, entry.dropped, entry.source) == (None, None, {"lsn": 1})
        short = decode_entry(b"\x97\x01\x01\x01\x01\xa4drop\xa1s\xa1c")
        assert (short.op, short.collection_uuid) == ("drop", None)

    @pytest.mark.parametrize(
        ("change", "dropped"),
        [
            (Change.insert("shop", "users", {"_id": 1}), None),
            (Change.rename_collection("shop", "a", "shop", "b", drop_target=True), uuid.UUID(int=2)),
            (Change.drop_index("shop", "users", "a_1"), {"v": 2, "key": {"a": 1}}),
            (Change.drop_database("shop"), {"users": uuid.UUID(int=3), "orders": uuid.UUID(int=4)}),
        ],
    )
    def test_catalog_fields_round_trip(self, change: Change, dropped: Any) -> None:
        """An entry's collection UUID and what it dropped are an array 16 record and come back as they went in."""
        identity = None if change.coll is None else uuid.UUID(int=1)
        record = encode_entry(9, ClusterTime(10, 3), 1234, change, identity, dropped)
        assert record[:3] == (b"\xdc\x00\x11" if dropped is not None else b"\xdc\x00\x10")
        entry = decode_entry(record)
        assert (entry.collection_uuid, entry.dropped) == (identity, dropped)
        recorded = change._replace(collection_uuid=identity, dropped=dropped)
        assert entry == OplogEntry(9, ClusterTime(10, 3), 1234, *recorded)

    def test_data_change_head_matches_records_with_a_collection_uuid(self) -> None:
        """The sift's record-head test knows inserts in both record forms, and no other operation in either."""
        identity = uuid.UUID(int=1)
        cases = ((Change.insert("s", "c", {"_id": 1}), True), (Change.drop_collection("s", "c"), False))
        for change, data_change in cases:
            for record in (encode_entry(1, ClusterTime(1, 1), 1, change),
                           encode_entry(1, ClusterTime(1, 1), 1, change, identity)):
                assert (DATA_CHANGE_HEAD.match(record) is not None) == data_change

    @pytest.mark.parametrize("bad", [b"\xc4\x03abc", b"\x01", b"\x91\x01"])
    def test_a_malformed_collection_uuid_is_a_decode_error(self, bad: bytes) -> None:
        """A 16th field that is not 16 bytes of UUID is EntryDecodeError, not another exception."""
        record = b"\xdc\x00\x10\x01\x01\x01\x01\xa6insert\xa1s\xa1c" + b"\xc0" * 8 + bad
        with pytest.raises(EntryDecodeError, match="collection UUID"):
            decode_entry(record)

    @pytest.mark.parametrize("value", [{1, 2}, datetime(2026, 1, 1), object()])
    def test_values_msgpack_cannot_carry(self, value: Any) -> None:
        """A set, a naive datetime or an arbitrary object is refused, naming the op and namespace."""
        change = Change.insert("shop", "users", {"_id": 1, "v": value})
        with pytest.raises(rxcs.InvalidChangeError, match=r"insert on shop\.users"):
            encode_entry(1, ClusterTime(1, 1), 1, change)
        # The thread's packer is reused: a refused value leaves nothing behind in it.
        good = Change.insert("shop", "users", {"_id": 2, "v": [1, {"a": "b"}]})
        assert decode_entry(encode_entry(2, ClusterTime(1, 2), 1, good)) == OplogEntry(2, ClusterTime(1, 2), 1, *good)

    @given(st.one_of(st.decimals(), st.uuids(), st.dates(), st.times(timezones=st.one_of(st.none(), offsets))))
    def test_extension_values_decode_as_the_same_value_and_type(self, value: Any) -> None:
        """Decimal (NaN, infinities and exponents too), UUID, date and time decode as themselves, digit for digit."""
        entry = decode_entry(encode_entry(1, ClusterTime(1, 1), 1, Change.insert("s", "c", {"_id": 1, "v": value})))
        assert entry.full_document is not None
        back = entry.full_document["v"]
        assert type(back) is type(value)
        assert str(back) == str(value)
        if isinstance(value, time):
            assert back.utcoffset() == value.utcoffset()

    @pytest.mark.parametrize("data", [b"\xc7\x02\x03\x00\x01", b"\xd4\x09\x00", b"\xc7\x01\x01\xff"])
    def test_malformed_extension_values_are_decode_errors(self, data: bytes) -> None:
        """A truncated date, an unknown extension type or a non-ASCII decimal in a record is EntryDecodeError."""
        record = b"\x98\x01\x01\x01\x01\xa6insert\xa1s\xa1c" + b"\x81\xa3_id" + data
        with pytest.raises(EntryDecodeError):
            decode_entry(record)

    @given(st.binary(max_size=64))
    def test_arbitrary_bytes_decode_or_raise_entry_decode_error(self, data: bytes) -> None:
        """Decoding any bytes yields an entry or EntryDecodeError, never another exception."""
        with contextlib.suppress(EntryDecodeError):
            assert isinstance(decode_entry(data), OplogEntry)
