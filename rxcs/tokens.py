"""Resume tokens: opaque, printable positions in one oplog.

A token is a hex string, like the ``_data`` of MongoDB's tokens. Inside it:
a format version, the identity (UUID) of the oplog it came from, the op_id of
the entry, flags, the fragment index of a split event, the entry's stamp (its
cluster time and wall time, when the entry was read), and a CRC-32 of all of
that so a mistyped token is refused rather than read as another position.
Tokens of one oplog sort as their positions do, as strings too (fixed
widths, big-endian, the stamp after the position).

The stamp lets a stream tell, when it resumes, that the entry at the token's
op_id is still the one the token was taken from: an oplog whose history was
rewritten under a token (a Redis restored from an older snapshot, a failover
to a lagging replica, a FileOplog copied back from a backup) holds another
entry there, and resuming is ``ChangeStreamHistoryLost``, never a silent
skip. Version-1 tokens (no stamp) are still read.

One entry can give a stream more than one event: a dropped collection gives
``drop`` then ``invalidate``; a split event gives its fragments. An *event
token* names one of them (``invalidate``, ``fragment``). A *high-water token*
(``high_water=True``) names the point after every event of its entry: it is
what a stream reports as its position before it has delivered any event,
like MongoDB's post-batch resume token.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, final

from rxcs.errors import InvalidResumeToken
from rxcs.frozen import open_twin

__all__ = ["ResumeToken"]

TOKEN_VERSION = 2
_FLAG_INVALIDATE = 0x01
_FLAG_HIGH_WATER = 0x02
_KNOWN_FLAGS = _FLAG_INVALIDATE | _FLAG_HIGH_WATER
# version, oplog uuid, op_id, flags, fragment, then (version 2) the stamp: cluster time seconds and
# increment, wall time in ms, all zero for none; then the CRC-32 of those bytes.
_BODY_V1 = struct.Struct(">B16sQBH")
_BODY = struct.Struct(">B16sQBHIIQ")
_CRC = struct.Struct(">I")
_TOKEN_BYTES = {1: _BODY_V1.size + _CRC.size, 2: _BODY.size + _CRC.size}
_MAX_OP_ID = 2**64 - 1
_MAX_U32 = 2**32 - 1
_MAX_FRAGMENT = 2**16 - 1
_new = object.__new__
_set = object.__setattr__


@final
@dataclass(frozen=True, slots=True)
class ResumeToken:
    """A position in one oplog, after which a change stream can resume.

    ``str(token)`` is the printable form; ``ResumeToken.parse`` reads it back
    (also from the ``{"_data": ...}`` document of an event's ``_id``).

    Examples:
        >>> import uuid
        >>> token = ResumeToken(uuid.UUID(int=7), 42)
        >>> ResumeToken.parse(str(token)) == token
        True
        >>> ResumeToken.parse("nonsense")
        Traceback (most recent call last):
        ...
        rxcs.errors.InvalidResumeToken: resume token 'nonsense' is not a hex string
    """

    oplog_id: uuid.UUID
    op_id: int
    invalidate: bool = False
    fragment: int = 0
    high_water: bool = False
    cluster_time: tuple[int, int] | None = field(default=None, compare=False)
    """The cluster time ``(seconds, increment)`` of the entry at ``op_id`` when it was read (not the position)."""
    wall_time_ms: int | None = field(default=None, compare=False)
    """The wall time (ms) of the entry at ``op_id``, with ``cluster_time``."""

    def __post_init__(self) -> None:
        if not isinstance(self.oplog_id, uuid.UUID):
            raise InvalidResumeToken(f"oplog_id must be a UUID, not {self.oplog_id!r}")
        if isinstance(self.op_id, bool) or not isinstance(self.op_id, int):
            raise InvalidResumeToken(f"op_id must be an int, not {self.op_id!r}")
        if not 0 <= self.op_id <= _MAX_OP_ID:
            raise InvalidResumeToken(f"op_id {self.op_id} is out of range")
        if not 0 <= self.fragment <= _MAX_FRAGMENT:
            raise InvalidResumeToken(f"fragment {self.fragment} is out of range")
        if self.high_water and (self.invalidate or self.fragment):
            raise InvalidResumeToken("a high-water token names no single event (no invalidate, no fragment)")
        if (self.cluster_time is None) != (self.wall_time_ms is None):
            raise InvalidResumeToken("a stamp has both a cluster time and a wall time, or neither")
        if self.cluster_time is not None:
            time, inc = self.cluster_time
            if not (_in_range(time, _MAX_U32) and _in_range(inc, _MAX_U32) and (time, inc) != (0, 0)):
                raise InvalidResumeToken(f"cluster time {self.cluster_time!r} is out of range")
            if not _in_range(self.wall_time_ms, _MAX_OP_ID):
                raise InvalidResumeToken(f"wall time {self.wall_time_ms!r} is out of range")

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        """``(seconds, increment, wall ms)`` of the entry the token was taken at, or None when not known."""
        if self.cluster_time is None or self.wall_time_ms is None:
            return None
        return (self.cluster_time[0], self.cluster_time[1], self.wall_time_ms)

    @classmethod
    def _trusted(
        cls, oplog_id: uuid.UUID, op_id: int, invalidate: bool, cluster_time: tuple[int, int], wall_time_ms: int
    ) -> ResumeToken:
        """An event token from values the oplog itself produced, without re-validating them.

        Below the class this is replaced by the same construction through a
        twin class of the same slots (``rxcs.frozen``: the cheapest way into
        a frozen slotted dataclass, as ``ChangeEvent._trusted`` is); this
        form is what it does.
        """
        token = _new(cls)
        _set(token, "oplog_id", oplog_id)
        _set(token, "op_id", op_id)
        _set(token, "invalidate", invalidate)
        _set(token, "fragment", 0)
        _set(token, "high_water", False)
        _set(token, "cluster_time", cluster_time)
        _set(token, "wall_time_ms", wall_time_ms)
        return token

    @property
    def _flags(self) -> int:
        return (_FLAG_INVALIDATE if self.invalidate else 0) | (_FLAG_HIGH_WATER if self.high_water else 0)

    def sort_key(self) -> tuple[uuid.UUID, int, int, int]:
        """The order of positions: by op_id, then event within the entry."""
        return (self.oplog_id, self.op_id, self._flags, self.fragment)

    def __lt__(self, other: ResumeToken) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: ResumeToken) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: ResumeToken) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: ResumeToken) -> bool:
        return self.sort_key() >= other.sort_key()

    def __str__(self) -> str:
        time, inc, wall_ms = self.stamp or (0, 0, 0)
        body = _BODY.pack(
            TOKEN_VERSION, self.oplog_id.bytes, self.op_id, self._flags, self.fragment, time, inc, wall_ms
        )
        return (body + _CRC.pack(zlib.crc32(body))).hex()

    def to_document(self) -> dict[str, Any]:
        """Return the token as an event's ``_id`` document: ``{"_data": str(token)}``."""
        return {"_data": str(self)}

    @classmethod
    def parse(cls, value: object) -> ResumeToken:
        """Read a token from its string, its ``{"_data": ...}`` document, or a token.

        Raises ``InvalidResumeToken`` naming the token when it is not one.
        """
        if isinstance(value, ResumeToken):
            return value
        if isinstance(value, Mapping):
            if set(value) != {"_data"}:
                raise InvalidResumeToken(
                    f"resume token document {dict(value)!r} must have exactly one field, '_data'"
                )
            value = value["_data"]
        if not isinstance(value, str):
            raise InvalidResumeToken(
                f"resume token must be a string or {{'_data': string}}, not {type(value).__name__}"
            )
        shown = value if len(value) <= 80 else value[:77] + "..."
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise InvalidResumeToken(f"resume token {shown!r} is not a hex string") from None
        if len(raw) not in _TOKEN_BYTES.values():
            expected = " or ".join(str(size) for size in sorted(_TOKEN_BYTES.values()))
            raise InvalidResumeToken(f"resume token {shown!r} has {len(raw)} bytes, expected {expected}")
        body, (crc,) = raw[: -_CRC.size], _CRC.unpack(raw[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise InvalidResumeToken(f"resume token {shown!r} fails its checksum (mistyped?)")
        version = body[0]
        if _TOKEN_BYTES.get(version) != len(raw):
            raise InvalidResumeToken(
                f"resume token {shown!r} has format version {version} in {len(raw)} bytes; "
                f"this rxcs reads versions {', '.join(map(str, _TOKEN_BYTES))}"
            )
        if version == 1:
            _, oplog_bytes, op_id, flags, fragment = _BODY_V1.unpack(body)
            time = inc = wall_ms = 0
        else:
            _, oplog_bytes, op_id, flags, fragment, time, inc, wall_ms = _BODY.unpack(body)
        if flags & ~_KNOWN_FLAGS:
            raise InvalidResumeToken(f"resume token {shown!r} has unknown flags {flags:#x}")
        stamped = (time, inc, wall_ms) != (0, 0, 0)
        try:
            return cls(
                uuid.UUID(bytes=oplog_bytes), op_id, bool(flags & _FLAG_INVALIDATE), fragment,
                bool(flags & _FLAG_HIGH_WATER), (time, inc) if stamped else None, wall_ms if stamped else None,
            )
        except InvalidResumeToken as exc:
            raise InvalidResumeToken(f"resume token {shown!r}: {exc}") from None


def _trusted_token_builder() -> Any:
    """``ResumeToken._trusted`` written out: built through a twin class of the same slots (``rxcs.frozen``)."""
    twin, new, token_class = open_twin(ResumeToken), _new, ResumeToken

    def trusted(
        oplog_id: uuid.UUID, op_id: int, invalidate: bool, cluster_time: tuple[int, int], wall_time_ms: int
    ) -> ResumeToken:
        token: Any = new(twin)
        token.oplog_id = oplog_id
        token.op_id = op_id
        token.invalidate = invalidate
        token.fragment = 0
        token.high_water = False
        token.cluster_time = cluster_time
        token.wall_time_ms = wall_time_ms
        token.__class__ = token_class
        built: ResumeToken = token
        return built

    trusted.__doc__ = ResumeToken._trusted.__doc__
    return trusted


ResumeToken._trusted = _trusted_token_builder()  # type: ignore[method-assign]


def _in_range(value: object, largest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= largest
