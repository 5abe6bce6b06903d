"""The msgpack encoding of one oplog entry, shared by every backend.

An entry is one msgpack array, positional for speed::

    [op_id, time, inc, wall_ms, op, db, coll, document_key, full_document,
     full_document_before_change, update_description, to, operation_description,
     txn_number, source, collection_uuid, dropped]

with trailing nulls left off. Fields were added at the end, so records written
before them read as they always did: ``source`` (the 15th) came after records of
7 to 14 fields, ``collection_uuid`` and ``dropped`` (the 16th and 17th, which
the oplog's collection catalog fills in) after records of 7 to 15. A record of
up to 15 fields is a msgpack fixarray, one of 16 or 17 an array 16
(``0xdc 0x00 0x10``). ``collection_uuid`` is the collection's UUID as 16 raw
bytes (msgpack bin), so decoding it costs no extension hook; ``dropped`` is
a bin of 16 bytes for a rename (the dropped target's UUID), the index's
``{v, key}`` for a dropIndexes, and a map of collection names to 16-byte bins
for a dropDatabase.

Aware datetimes travel as msgpack Timestamps; the values msgpack has no type
for travel as extension types of their own (``EXT_DECIMAL``, ``EXT_UUID``,
``EXT_DATE``, ``EXT_TIME``) and decode as themselves.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import threading
import uuid
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import msgpack

from rxcs.errors import InvalidChangeError
from rxcs.events import ClusterTime, Namespace
from rxcs.limits import MAX_ENTRY_BYTES
from rxcs.oplog.entry import Change, OplogEntry

__all__ = [
    "DATA_CHANGE_HEAD", "EXT_DATE", "EXT_DECIMAL", "EXT_TIME", "EXT_UUID", "RECORD_HEADS", "UNPACK_OPTIONS",
    "EntryDecodeError", "decode_entry", "decode_value", "encode_entry", "encode_value", "needle_sift", "sift_needle",
]

_FIXED_FIELDS = 7  # op_id .. coll: always present
_ALL_FIELDS = 17
# Field positions inside the record.
_TO = 11
_COLLECTION_UUID = 15
_DROPPED = 16
_NONES = (None,) * _ALL_FIELDS
_new_tuple = tuple.__new__
_UUIDS: dict[bytes, uuid.UUID] = {}  # the UUID of each collection's 16 bytes: a few collections, many entries
_UUIDS_KEPT = 4096

_UINT = rb"(?:[\x00-\x7f]|\xcc.|\xcd..|\xce.{4}|\xcf.{8})"  # each of msgpack's unsigned int forms
RECORD_HEADS: Final = (*range(0x97, 0xA0), 0xDC)
"""The first byte of every record: a fixarray of 7 to 15 fields, or an array 16 (16 or 17 fields)."""
DATA_CHANGE_HEAD: Final = re.compile(
    rb"(?:[\x97-\x9f]|\xdc\x00[\x10\x11])" + _UINT * 4 + rb"(?:\xa6(?:insert|update|delete)|\xa7replace)",
    re.DOTALL,
)
"""Matches the start of a record of an insert, update, replace or delete, and nothing else.

A record is an array of 7 to 17 fields (a fixarray up to 15, an array 16
beyond) led by four unsigned ints (op_id, time, inc, wall_ms) and the
operation's name; a msgpack value's first byte fixes its length, so the head
parses one way only.
"""


_NEEDLES: weakref.WeakKeyDictionary[Callable[[bytes, int, int], bool], bytes] = weakref.WeakKeyDictionary()


def needle_sift(needle: bytes) -> Callable[[bytes, int, int], bool]:
    """The sift (``rxcs.oplog.base.Sift``) passing the records that hold ``needle``, and every record that is not of
    an insert, update, replace or delete (``DATA_CHANGE_HEAD``), which no sift may leave out.

    ``sift_needle`` gives ``needle`` back: a cursor scanning many records may
    search for it once across them rather than call the sift on each.
    """
    data_change = DATA_CHANGE_HEAD.match

    def sift_one(data: bytes, start: int, end: int) -> bool:
        return data.find(needle, start, end) >= 0 or data_change(data, start, end) is None

    _NEEDLES[sift_one] = needle
    return sift_one


def sift_needle(sift: Callable[[bytes, int, int], bool]) -> bytes | None:
    """The string ``sift`` looks for when ``needle_sift`` made it, else None."""
    return _NEEDLES.get(sift)


class EntryDecodeError(ValueError):
    """A record decoded from msgpack is not an entry; the backend adds where it was."""


EXT_DECIMAL: Final = 1
"""``decimal.Decimal``: its ``str()`` in ASCII (exact: sign, digits, exponent, NaN and infinities)."""
EXT_UUID: Final = 2
"""``uuid.UUID``: its 16 bytes."""
EXT_DATE: Final = 3
"""``datetime.date``: its proleptic ordinal, a big-endian uint32."""
EXT_TIME: Final = 4
"""``datetime.time``: hour, minute, second (3 bytes) and microsecond (uint32), then, for an aware time, its UTC
offset in seconds (int32), all big-endian."""
_TIME = struct.Struct(">BBBI")
_OFFSET = struct.Struct(">i")
_DATE = struct.Struct(">I")


def _extension(value: Any) -> msgpack.ExtType:
    """The extension type of a value msgpack has no type for; anything else is refused (TypeError)."""
    kind = type(value)
    if kind is Decimal:
        return msgpack.ExtType(EXT_DECIMAL, str(value).encode("ascii"))
    if kind is uuid.UUID:
        return msgpack.ExtType(EXT_UUID, value.bytes)
    if kind is dt.date:
        return msgpack.ExtType(EXT_DATE, _DATE.pack(value.toordinal()))
    if kind is dt.time:
        data = _TIME.pack(value.hour, value.minute, value.second, value.microsecond)
        offset = value.utcoffset()
        if offset is not None:
            data += _OFFSET.pack(offset.days * 86_400 + offset.seconds)  # a timedelta of whole seconds or less
        return msgpack.ExtType(EXT_TIME, data)
    if kind is dt.datetime:
        raise TypeError("a naive datetime (give it a tzinfo: rxcs records UTC instants)")
    raise TypeError(f"can not serialize {kind.__name__!r} object")


def _from_extension(code: int, data: bytes) -> Any:
    """A value back from its extension type; an unknown code or malformed data is a ValueError."""
    try:
        if code == EXT_DECIMAL:
            return Decimal(data.decode("ascii"))
        if code == EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == EXT_DATE:
            return dt.date.fromordinal(_DATE.unpack(data)[0])
        if code == EXT_TIME:
            hour, minute, second, micro = _TIME.unpack_from(data)
            tz = None
            if len(data) == _TIME.size + _OFFSET.size:
                tz = dt.timezone(dt.timedelta(seconds=_OFFSET.unpack_from(data, _TIME.size)[0]))
            elif len(data) != _TIME.size:
                raise ValueError(f"{len(data)} bytes")
            return dt.time(hour, minute, second, micro, tzinfo=tz)
    except (ArithmeticError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"malformed extension value of type {code} ({exc})") from None
    raise ValueError(f"unknown extension type {code}")


UNPACK_OPTIONS: Final[dict[str, Any]] = {
    "raw": False, "timestamp": 3, "strict_map_key": False, "ext_hook": _from_extension,
}
"""How every backend unpacks a record: ``msgpack.unpackb(data, **UNPACK_OPTIONS)``."""

_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer: making one per entry costs as much as packing the entry.

    ``default`` is called only for values msgpack has no type for, so
    ordinary values pay nothing for the extension types.
    """
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(datetime=True, use_bin_type=True, default=_extension)
    return packer


def encode_value(value: Any) -> bytes:
    """One value in the codec's msgpack, extension types included: what the catalog keeps of an index, to put in a
    record as it is, and the documents and keys the document images keep (``rxcs.oplog.images``).

    A value msgpack cannot carry raises ``TypeError``.
    """
    packed: bytes = _packer().pack(value)
    return packed


def encode_entry(
    op_id: int,
    cluster_time: ClusterTime,
    wall_time_ms: int,
    change: Change,
    collection_uuid: uuid.UUID | None = None,
    dropped: Any = None,
) -> bytes:
    """Encode one entry; ``collection_uuid`` and ``dropped``, when given, are the catalog's, and replace the change's.

    A value msgpack cannot carry, or an entry over ``MAX_ENTRY_BYTES``, is an ``InvalidChangeError``.
    """
    record: list[Any] = [op_id, cluster_time[0], cluster_time[1], wall_time_ms, *change]
    if collection_uuid is None:
        collection_uuid = change.collection_uuid
    if collection_uuid is not None:
        record[_COLLECTION_UUID] = collection_uuid.bytes
    if dropped is None:
        dropped = change.dropped
    if dropped is not None:
        record[_DROPPED] = _dropped_record(dropped)
    while len(record) > _FIXED_FIELDS and record[-1] is None:
        record.pop()
    try:
        packed: bytes = _packer().pack(record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidChangeError(
            f"{change.op} on {change.db}.{change.coll}: a value cannot be stored ({exc})"
        ) from None
    if len(packed) > MAX_ENTRY_BYTES:
        raise InvalidChangeError(
            f"{change.op} on {change.db}.{change.coll}: the entry is {len(packed)} bytes encoded, "
            f"over the limit of {MAX_ENTRY_BYTES} bytes (64 MiB)"
        )
    return packed


def decode_entry(data: bytes) -> OplogEntry:
    """Decode one entry's bytes; anything that is not an entry raises ``EntryDecodeError``."""
    try:
        record = msgpack.unpackb(data, **UNPACK_OPTIONS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise EntryDecodeError(f"not a msgpack entry ({exc})") from None
    return entry_from_record(record)


def _dropped_record(dropped: Any) -> Any:
    """``dropped`` as a record holds it: UUIDs as their 16 bytes."""
    if isinstance(dropped, uuid.UUID):
        return dropped.bytes
    if isinstance(dropped, dict) and dropped and all(isinstance(value, uuid.UUID) for value in dropped.values()):
        return {name: value.bytes for name, value in dropped.items()}
    return dropped


def _uuid(raw: Any) -> uuid.UUID:
    """The UUID of a record's 16 bytes, made once per collection."""
    if type(raw) is not bytes or len(raw) != 16:
        raise EntryDecodeError("entry record has a malformed collection UUID")
    found = _UUIDS.get(raw)
    if found is None:
        if len(_UUIDS) >= _UUIDS_KEPT:
            _UUIDS.clear()
        found = _UUIDS[raw] = uuid.UUID(bytes=raw)
    return found


def _dropped(dropped: Any) -> Any:
    """``dropped`` from a record: 16 bytes are a UUID, a map of them names UUIDs, an index is as it is."""
    if type(dropped) is bytes:
        return _uuid(dropped)
    if type(dropped) is dict and dropped and all(type(value) is bytes for value in dropped.values()):
        return {name: _uuid(value) for name, value in dropped.items()}
    return dropped


def entry_from_record(record: Any) -> OplogEntry:
    """Build an entry from its decoded msgpack array, checking its shape (a hot path: every entry read)."""
    if type(record) is not list:
        raise EntryDecodeError("entry record is not an array of 7 to 17 fields")
    size = len(record)
    if size < _FIXED_FIELDS or size > _ALL_FIELDS:
        raise EntryDecodeError("entry record is not an array of 7 to 17 fields")
    time = record[1]
    inc = record[2]
    if not (
        type(record[0]) is type(time) is type(inc) is type(record[3]) is int
        and type(record[4]) is type(record[5]) is str
    ):
        raise EntryDecodeError("entry record has fields of the wrong types")
    if size > _TO and record[_TO] is not None:
        to = record[_TO]
        if type(to) is not list or len(to) != 2:
            raise EntryDecodeError("entry record has a malformed rename target")
        record[_TO] = Namespace(*to)
    if size > _COLLECTION_UUID:
        raw = record[_COLLECTION_UUID]
        if raw is not None:  # the cache first: one lookup for nearly every entry
            known = _UUIDS.get(raw) if type(raw) is bytes else None
            record[_COLLECTION_UUID] = known if known is not None else _uuid(raw)
        if size > _DROPPED and record[_DROPPED] is not None:
            record[_DROPPED] = _dropped(record[_DROPPED])
    # [op_id, time, inc, ...] becomes (op_id, ClusterTime(time, inc), ...): built in place, then padded.
    record[1] = _new_tuple(ClusterTime, (time, inc))
    del record[2]
    if size == _ALL_FIELDS - 1:  # the usual record: every field up to the collection's UUID
        record.append(None)
    elif size < _ALL_FIELDS:
        record += _NONES[size:]
    return _new_tuple(OplogEntry, record)


def decode_value(data: bytes) -> Any:
    """A value back from ``encode_value``: a new copy each time."""
    return msgpack.unpackb(data, **UNPACK_OPTIONS)
