"""Segment files: a header, then CRC-checked frames, each holding one entry.

Layout of a segment ``{first_op_id:020d}.seg``::

    header  8s  magic b"RXCSSEG1"
            16s oplog identity (UUID bytes)
            Q   first op_id of the segment
    frame   I   payload length        (little-endian)
            I   CRC-32 of op_id bytes + payload
            Q   op_id
            ... payload: the msgpack entry (rxcs.oplog.codec)

Beside it, ``{first_op_id:020d}.idx`` is a sparse index: (op_id, offset)
pairs, little-endian ``QQ``, one for the first frame written at or after
every ``INDEX_INTERVAL`` bytes, so a seek reads the index and at most that
many bytes of frame headers. Only the writer writes either file.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "FRAME_HEADER",
    "FRAME_LIMIT",
    "HEADER",
    "INDEX_INTERVAL",
    "Frame",
    "SegmentIndex",
    "encode_frame",
    "index_path",
    "scan_frames",
    "segment_name",
    "segment_path",
]

MAGIC: Final = b"RXCSSEG1"
HEADER: Final = struct.Struct("<8s16sQ")
FRAME_HEADER: Final = struct.Struct("<IIQ")
INDEX_RECORD: Final = struct.Struct("<QQ")
FRAME_LIMIT: Final = 64 * 1024 * 1024  # the largest payload accepted, checked before reading it
INDEX_INTERVAL: Final = 16 * 1024
SEGMENT_SUFFIX: Final = ".seg"
INDEX_SUFFIX: Final = ".idx"
_OP_ID = struct.Struct("<Q")


def segment_name(first_op_id: int) -> str:
    return f"{first_op_id:020d}{SEGMENT_SUFFIX}"


def segment_path(directory: Path, first_op_id: int) -> Path:
    return directory / segment_name(first_op_id)


def index_path(directory: Path, first_op_id: int) -> Path:
    return directory / f"{first_op_id:020d}{INDEX_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """The first op_ids of the segments in a directory, ascending."""
    return sorted(
        int(name[:20])
        for name in os.listdir(directory)
        if name.endswith(SEGMENT_SUFFIX) and len(name) == 20 + len(SEGMENT_SUFFIX) and name[:20].isdigit()
    )


def encode_header(oplog_id: bytes, first_op_id: int) -> bytes:
    return HEADER.pack(MAGIC, oplog_id, first_op_id)


def check_header(data: bytes, oplog_id: bytes, first_op_id: int) -> str | None:
    """None when the header is this oplog's for this segment, else what is wrong."""
    if len(data) < HEADER.size:
        return "the segment header is incomplete"
    magic, identity, first = HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not an rxcs segment (bad magic)"
    if identity != oplog_id:
        return "the segment belongs to another oplog"
    if first != first_op_id:
        return f"the header says first op_id {first}, the name says {first_op_id}"
    return None


def encode_frame(op_id: int, payload: bytes) -> bytes:
    op_bytes = _OP_ID.pack(op_id)
    crc = zlib.crc32(payload, zlib.crc32(op_bytes))
    return FRAME_HEADER.pack(len(payload), crc, op_id) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: where it starts, its op_id, and its payload."""

    offset: int
    op_id: int
    payload: memoryview
    end: int


class BadFrame(Exception):
    """A frame that fails its checks, at ``offset``; ``complete`` when it lies wholly in the data."""

    def __init__(self, offset: int, reason: str, *, complete: bool) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.complete = complete


def frame_at(data: memoryview, position: int, base: int, expected_op_id: int | None) -> Frame | None:
    """Parse the frame at ``position`` of ``data`` (whose first byte is at file offset ``base``).

    Returns None when the data ends inside the frame; raises ``BadFrame``
    when the frame is malformed.
    """
    available = len(data) - position
    if available < FRAME_HEADER.size:
        return None
    length, crc, op_id = FRAME_HEADER.unpack_from(data, position)
    offset = base + position
    if length == 0 or length > FRAME_LIMIT:
        raise BadFrame(offset, f"frame length {length} is out of bounds", complete=True)
    end = position + FRAME_HEADER.size + length
    if end > len(data):
        return None
    payload = data[position + FRAME_HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(data[position + 8 : position + 16])) != crc:
        raise BadFrame(offset, "frame checksum mismatch", complete=True)
    if expected_op_id is not None and op_id != expected_op_id:
        raise BadFrame(offset, f"frame holds op_id {op_id}, expected {expected_op_id}", complete=True)
    return Frame(offset, op_id, payload, base + end)


def scan_frames(data: memoryview, base: int, first_expected: int) -> Iterator[Frame]:
    """Every whole frame of ``data``, in order; stops at the first incomplete one."""
    position = 0
    expected = first_expected
    while True:
        frame = frame_at(data, position, base, expected)
        if frame is None:
            return
        yield frame
        position = frame.end - base
        expected += 1


def valid_frame_after(data: memoryview, start: int) -> int | None:
    """The offset in ``data`` of a checksum-valid frame after ``start``, if any (a resync scan).

    Used to tell a torn tail (garbage to the end) from damage in the middle
    (good frames after a bad one).
    """
    limit = len(data) - FRAME_HEADER.size
    for position in range(start + 1, limit + 1):
        length = int.from_bytes(data[position : position + 4], "little")
        if length == 0 or position + FRAME_HEADER.size + length > len(data):
            continue
        payload = data[position + FRAME_HEADER.size : position + FRAME_HEADER.size + length]
        if not payload or not 0x97 <= payload[0] <= 0x9F:  # a msgpack array of 7..15 fields
            continue
        crc = int.from_bytes(data[position + 4 : position + 8], "little")
        if zlib.crc32(payload, zlib.crc32(data[position + 8 : position + 16])) == crc:
            return position
    return None


class SegmentIndex:
    """The sparse (op_id, offset) index of one segment, in memory and on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.op_ids: list[int] = []
        self.offsets: list[int] = []
        self._file: tuple[int, int] | None = None  # (inode, bytes read) of what was loaded

    @classmethod
    def load(cls, path: Path, *, max_offset: int | None = None) -> SegmentIndex:
        """Read an index file; records past ``max_offset`` (a torn tail) are left out."""
        index = cls(path)
        try:
            with path.open("rb") as file:
                inode = os.fstat(file.fileno()).st_ino
                raw = file.read()
        except FileNotFoundError:
            return index
        usable = len(raw) - len(raw) % INDEX_RECORD.size
        index._take(raw[:usable], max_offset)
        index._file = (inode, usable)
        return index

    def _take(self, raw: bytes, max_offset: int | None) -> bool:
        """Append records in order; False at the first that does not follow (or lies past ``max_offset``)."""
        for op_id, offset in INDEX_RECORD.iter_unpack(raw):
            if max_offset is not None and offset >= max_offset:
                return False
            if self.op_ids and (op_id <= self.op_ids[-1] or offset <= self.offsets[-1]):
                return False
            self.op_ids.append(op_id)
            self.offsets.append(offset)
        return True

    def refreshed(self) -> SegmentIndex:
        """The index with what the writer appended since it was read: only the new records are read.

        A reader calls this for the segment being written. An index file that
        was replaced (a recovery rewrote it) or shrank is read again whole.
        """
        try:
            with self.path.open("rb") as file:
                status = os.fstat(file.fileno())
                if self._file is None or status.st_ino != self._file[0] or status.st_size < self._file[1]:
                    return SegmentIndex.load(self.path)
                file.seek(self._file[1])
                raw = file.read()
        except FileNotFoundError:
            return SegmentIndex(self.path)
        usable = len(raw) - len(raw) % INDEX_RECORD.size
        if not self._take(raw[:usable], None):
            return SegmentIndex.load(self.path)
        self._file = (self._file[0], self._file[1] + usable)
        return self

    def start_for(self, op_id: int) -> tuple[int, int] | None:
        """The indexed (op_id, offset) closest at or before ``op_id``."""
        position = bisect.bisect_right(self.op_ids, op_id) - 1
        if position < 0:
            return None
        return self.op_ids[position], self.offsets[position]

    def add(self, op_id: int, offset: int) -> bytes:
        """Record a pair; return its bytes to append to the file."""
        self.op_ids.append(op_id)
        self.offsets.append(offset)
        return INDEX_RECORD.pack(op_id, offset)

    @property
    def last_offset(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    def rewrite(self) -> None:
        """Write the whole index anew (after a recovery truncated the segment)."""
        data = b"".join(INDEX_RECORD.pack(o, f) for o, f in zip(self.op_ids, self.offsets, strict=True))
        temporary = self.path.with_suffix(".idx.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)
