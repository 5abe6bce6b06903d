"""The msgpack encoding of one oplog entry, shared by every backend.

An entry is one msgpack array, positional for speed::

    [op_id, time, inc, wall_ms, op, db, coll, document_key, full_document,
     full_document_before_change, update_description, to, operation_description,
     txn_number]

with trailing nulls left off. Aware datetimes travel as msgpack Timestamps.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Final

import msgpack

from rxcs.errors import InvalidChangeError
from rxcs.events import ClusterTime, Namespace
from rxcs.limits import MAX_ENTRY_BYTES
from rxcs.oplog.entry import Change, OplogEntry

__all__ = ["DATA_CHANGE_HEAD", "decode_entry", "encode_entry", "EntryDecodeError"]

_FIXED_FIELDS = 7  # op_id .. coll: always present
_ALL_FIELDS = 14
# Field positions inside the record.
_TO = 11
_NONES = (None,) * _ALL_FIELDS
_new_tuple = tuple.__new__

_UINT = rb"(?:[\x00-\x7f]|\xcc.|\xcd..|\xce.{4}|\xcf.{8})"  # each of msgpack's unsigned int forms
DATA_CHANGE_HEAD: Final = re.compile(
    rb"[\x97-\x9e]" + _UINT * 4 + rb"(?:\xa6(?:insert|update|delete)|\xa7replace)", re.DOTALL
)
"""Matches the start of a record of an insert, update, replace or delete, and nothing else.

A record is a fixarray of 7 to 14 fields led by four unsigned ints (op_id,
time, inc, wall_ms) and the operation's name; a msgpack value's first byte
fixes its length, so the head parses one way only.
"""


class EntryDecodeError(ValueError):
    """A record decoded from msgpack is not an entry; the backend adds where it was."""


_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer: making one per entry costs as much as packing the entry."""
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(datetime=True, use_bin_type=True)
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
        record = msgpack.unpackb(data, raw=False, timestamp=3, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise EntryDecodeError(f"not a msgpack entry ({exc})") from None
    return entry_from_record(record)


def entry_from_record(record: Any) -> OplogEntry:
    """Build an entry from its decoded msgpack array, checking its shape."""
    if type(record) is not list or not _FIXED_FIELDS <= len(record) <= _ALL_FIELDS:
        raise EntryDecodeError("entry record is not an array of 7 to 14 fields")
    op_id, time, inc, wall_ms, op, db = record[:6]
    if not (type(op_id) is int and type(time) is int and type(inc) is int
            and type(wall_ms) is int and type(op) is str and type(db) is str):
        raise EntryDecodeError("entry record has fields of the wrong types")
    if len(record) > _TO and record[_TO] is not None:
        to = record[_TO]
        if type(to) is not list or len(to) != 2:
            raise EntryDecodeError("entry record has a malformed rename target")
        record[_TO] = Namespace(*to)
    if len(record) < _ALL_FIELDS:
        record.extend(_NONES[len(record) :])
    # [op_id, time, inc, ...] becomes (op_id, ClusterTime(time, inc), ...): built directly, a hot path.
    record[1:3] = (_new_tuple(ClusterTime, (time, inc)),)
    return _new_tuple(OplogEntry, record)
