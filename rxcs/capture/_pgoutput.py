"""The messages of PostgreSQL's built-in ``pgoutput`` plugin (logical replication protocol, version 1), parsed.

Each replication message's payload is one of these; values arrive in their
text form (the type's output function, under the session's ``DateStyle``
and ``TimeZone``). See PostgreSQL's "Logical Replication Message Formats".
Nothing here talks to a server.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, final

from rxcs.errors import CaptureError

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "ProtocolError",
    "Relation",
    "Truncate",
    "Update",
    "format_lsn",
    "parse",
    "parse_lsn",
]

_POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class ProtocolError(CaptureError, ValueError):
    """A replication message that does not parse as pgoutput, or comes where it cannot."""


@final
class _Unchanged:
    """A TOASTed value the server did not send because the update left it unchanged."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

Tuple = list[str | _Unchanged | None]
"""A row: one text value per column, None for NULL, ``UNCHANGED`` for an unchanged TOASTed value."""


@final
@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@final
@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@final
@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool


@final
@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@final
@dataclass(frozen=True, slots=True)
class Insert:
    relation: int
    new: Tuple


@final
@dataclass(frozen=True, slots=True)
class Update:
    relation: int
    old: Tuple | None  # the whole old row (REPLICA IDENTITY FULL), or its key when the key changed
    old_is_key: bool
    new: Tuple


@final
@dataclass(frozen=True, slots=True)
class Delete:
    relation: int
    old: Tuple
    old_is_key: bool


@final
@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@final
@dataclass(frozen=True, slots=True)
class Other:
    """A message the capture has no use for (origin, type, logical decoding message)."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Other

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")


class _Reader:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, layout: struct.Struct) -> int:
        value: int = layout.unpack_from(self.data, self.offset)[0]
        self.offset += layout.size
        return value

    def byte(self) -> str:
        if self.offset >= len(self.data):
            raise ProtocolError("message ends early")
        value = chr(self.data[self.offset])
        self.offset += 1
        return value

    def string(self) -> str:
        end = self.data.index(0, self.offset)
        value = self.data[self.offset : end].decode("utf-8")
        self.offset = end + 1
        return value

    def timestamp(self) -> datetime:
        return _POSTGRES_EPOCH + timedelta(microseconds=self.take(_I64))

    def tuple(self) -> Tuple:
        """TupleData: a column count, then per column a kind byte ('t' text, 'n' null, 'u' unchanged TOAST)."""
        data, offset = self.data, self.offset
        count = int.from_bytes(data[offset : offset + 2], "big", signed=True)
        offset += 2
        size = len(data)
        values: Tuple = []
        append = values.append
        for _ in range(count):  # the hot loop of a capture: one pass, no calls per column but the decode
            kind = data[offset]
            offset += 1
            if kind == 0x74:  # 't'
                end = offset + 4 + int.from_bytes(data[offset : offset + 4], "big")
                if end > size:
                    raise ProtocolError("a value runs past the message")
                append(data[offset + 4 : end].decode("utf-8"))
                offset = end
            elif kind == 0x6E:  # 'n'
                append(None)
            elif kind == 0x75:  # 'u'
                append(UNCHANGED)
            else:
                raise ProtocolError(f"unknown column kind {chr(kind)!r} (binary values are not requested)")
        self.offset = offset
        return values


def parse(payload: bytes) -> Message:
    """Parse one pgoutput message; ``ProtocolError`` when it does not parse."""
    try:
        return _parse(_Reader(payload))
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"malformed pgoutput message ({exc})") from None


def _parse(reader: _Reader) -> Message:
    kind = reader.byte()
    if kind == "B":
        final_lsn = reader.take(_U64)
        commit_time = reader.timestamp()
        return Begin(final_lsn, commit_time, reader.take(_U32))
    if kind == "C":
        reader.take(_I8)  # flags, unused
        commit_lsn = reader.take(_U64)
        end_lsn = reader.take(_U64)
        return Commit(commit_lsn, end_lsn, reader.timestamp())
    if kind == "R":
        oid = reader.take(_U32)
        schema, name = reader.string(), reader.string()
        identity = reader.byte()
        columns = []
        for _ in range(reader.take(_I16)):
            flags = reader.take(_I8)
            column_name = reader.string()
            columns.append(Column(column_name, reader.take(_U32), reader.take(_I32), bool(flags & 1)))
        return Relation(oid, schema, name, identity, tuple(columns))
    if kind == "I":
        relation = reader.take(_U32)
        if reader.byte() != "N":
            raise ProtocolError("insert without a new tuple")
        return Insert(relation, reader.tuple())
    if kind == "U":
        relation = reader.take(_U32)
        marker = reader.byte()
        old: Tuple | None = None
        if marker in ("K", "O"):
            old = reader.tuple()
            old_is_key = marker == "K"
            marker = reader.byte()
        else:
            old_is_key = False
        if marker != "N":
            raise ProtocolError("update without a new tuple")
        return Update(relation, old, old_is_key, reader.tuple())
    if kind == "D":
        relation = reader.take(_U32)
        marker = reader.byte()
        if marker not in ("K", "O"):
            raise ProtocolError("delete without an old tuple")
        return Delete(relation, reader.tuple(), marker == "K")
    if kind == "T":
        count = reader.take(_U32)
        options = reader.take(_I8)
        relations = tuple(reader.take(_U32) for _ in range(count))
        return Truncate(relations, bool(options & 1), bool(options & 2))
    if kind in ("O", "Y", "M"):
        return Other(kind)
    raise ProtocolError(f"unknown pgoutput message {kind!r}")


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` as the 64-bit position it names."""
    high, _, low = text.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"{text!r} is not an LSN (XXX/XXX)") from None


def format_lsn(lsn: int) -> str:
    """A 64-bit position as PostgreSQL writes it: ``"16/B374D848"``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
