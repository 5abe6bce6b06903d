"""The msgpack encoding of one oplog entry, shared by every backend.

An entry is one msgpack array, positional for speed::

    [op_id, time, inc, wall_ms, op, db, coll, document_key, full_document,
     full_document_before_change, update_description, to, operation_description,
     txn_number, source]

with trailing nulls left off (``source``, the 15th field, came later: records
of 7 to 14 fields written before it read as they always did). Aware datetimes
travel as msgpack Timestamps; the values msgpack has no type for travel as
extension types of their own (``EXT_DECIMAL``, ``EXT_UUID``, ``EXT_DATE``,
``EXT_TIME``) and decode as themselves.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import threading
import uuid
from decimal import Decimal
from typing import Any, Final

import msgpack

from rxcs.errors import InvalidChangeError
from rxcs.events import ClusterTime, Namespace
from rxcs.limits import MAX_ENTRY_BYTES
from rxcs.oplog.entry import Change, OplogEntry

__all__ = [
    "DATA_CHANGE_HEAD", "EXT_DATE", "EXT_DECIMAL", "EXT_TIME", "EXT_UUID", "UNPACK_OPTIONS", "EntryDecodeError",
    "decode_entry", "encode_entry",
]

_FIXED_FIELDS = 7  # op_id .. coll: always present
_ALL_FIELDS = 15
# Field positions inside the record.
_TO = 11
_NONES = (None,) * _ALL_FIELDS
_new_tuple = tuple.__new__

_UINT = rb"(?:[\x00-\x7f]|\xcc.|\xcd..|\xce.{4}|\xcf.{8})"  # each of msgpack's unsigned int forms
DATA_CHANGE_HEAD: Final = re.compile(
    rb"[\x97-\x9f]" + _UINT * 4 + rb"(?:\xa6(?:insert|update|delete)|\xa7replace)", re.DOTALL
)
"""Matches the start of a record of an insert, update, replace or delete, and nothing else.

A record is a fixarray of 7 to 15 fields led by four unsigned ints (op_id,
time, inc, wall_ms) and the operation's name; a msgpack value's first byte
fixes its length, so the head parses one way only.
"""


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


def encode_entry(op_id: int, cluster_time: ClusterTime, wall_time_ms: int, change: Change) -> bytes:
    """Encode one entry.

    A value msgpack cannot carry, or an entry over ``MAX_ENTRY_BYTES``, is an ``InvalidChangeError``.
    """
    record: list[Any] = [op_id, cluster_time[0], cluster_time[1], wall_time_ms, *change]
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


def entry_from_record(record: Any) -> OplogEntry:
    """Build an entry from its decoded msgpack array, checking its shape (a hot path: every entry read)."""
    if type(record) is not list:
        raise EntryDecodeError("entry record is not an array of 7 to 15 fields")
    size = len(record)
    if size < _FIXED_FIELDS or size > _ALL_FIELDS:
        raise EntryDecodeError("entry record is not an array of 7 to 15 fields")
    op_id, time, inc, wall_ms, op, db = record[:6]
    if not (type(op_id) is type(time) is type(inc) is type(wall_ms) is int and type(op) is type(db) is str):
        raise EntryDecodeError("entry record has fields of the wrong types")
    if size > _TO and record[_TO] is not None:
        to = record[_TO]
        if type(to) is not list or len(to) != 2:
            raise EntryDecodeError("entry record has a malformed rename target")
        record[_TO] = Namespace(*to)
    # [op_id, time, inc, ...] becomes (op_id, ClusterTime(time, inc), ...): built in place, then padded.
    record[1] = _new_tuple(ClusterTime, (time, inc))
    del record[2]
    if size < _ALL_FIELDS:
        record += _NONES[size:]
    return _new_tuple(OplogEntry, record)
