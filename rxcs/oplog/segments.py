"""Segment files: a header, then CRC-checked frames, each holding one entry.

Layout of a segment ``{first_op_id:020d}.seg``::

    header  8s  magic b"RXCSSEG1"
            16s oplog identity (UUID bytes)
            Q   first op_id of the segment
    frame   I   payload length        (little-endian)
            I   CRC-32 of op_id bytes + payload
            Q   op_id; its top bit (CONTINUES) set when more frames of the
                same commit follow this one
            ... payload: the msgpack entry (rxcs.oplog.codec)

A commit (one ``append_many``) is written as one run of frames: each but
the last has ``CONTINUES`` set, so a one-entry commit, and every frame of an
oplog written before commits were marked, has it clear. op_ids never reach
2**63, and the bit is covered by the frame's checksum. Only whole commits
count: the frames of a commit whose last frame is missing are a write cut
short, never entries.

Beside it, ``{first_op_id:020d}.idx`` is a sparse index: (op_id, offset)
pairs, little-endian ``QQ``, one for the first frame written at or after
every ``INDEX_INTERVAL`` bytes, so a seek reads the index and at most that
many bytes of frame headers. Only the writer writes either file.

The segment is the truth and the index a hint: an index record is believed
only once the frame it points at checks out (``frame_starts_at``), and the
index of the newest segment is rebuilt from the frames whenever a writer
opens the oplog. Files being made are written under a temporary name that
starts with a dot (``.{name}.tmp``) and renamed into place whole.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rxcs.limits import MAX_ENTRY_BYTES
from rxcs.oplog import osio
from rxcs.oplog.codec import RECORD_HEADS

__all__ = [
    "CONTINUES",
    "FRAME_HEADER",
    "FRAME_LIMIT",
    "HEADER",
    "INDEX_INTERVAL",
    "INDEX_RECORD",
    "INDEX_SUFFIX",
    "OP_ID_MASK",
    "SECTOR",
    "TEMPORARY_SUFFIX",
    "Frame",
    "Problem",
    "SegmentIndex",
    "SegmentScan",
    "encode_frame",
    "frame_starts_at",
    "index_file_records",
    "index_path",
    "scan_frames",
    "scan_segment",
    "segment_name",
    "segment_path",
    "tail_damage",
    "temporary_path",
    "valid_frame_after",
]

MAGIC: Final = b"RXCSSEG1"
HEADER: Final = struct.Struct("<8s16sQ")
FRAME_HEADER: Final = struct.Struct("<IIQ")
INDEX_RECORD: Final = struct.Struct("<QQ")
FRAME_LIMIT: Final = MAX_ENTRY_BYTES  # the largest payload accepted, checked before reading it
INDEX_INTERVAL: Final = 16 * 1024
SEGMENT_SUFFIX: Final = ".seg"
INDEX_SUFFIX: Final = ".idx"
TEMPORARY_SUFFIX: Final = ".tmp"
SECTOR: Final = 512  # the unit in which a disk writes, or fails to write, a file's data
CONTINUES: Final = 1 << 63  # in a frame's op_id field: more frames of the same commit follow this one
OP_ID_MASK: Final = CONTINUES - 1
_OP_ID = struct.Struct("<Q")


def segment_name(first_op_id: int) -> str:
    return f"{first_op_id:020d}{SEGMENT_SUFFIX}"


def segment_path(directory: Path, first_op_id: int) -> Path:
    return directory / segment_name(first_op_id)


def index_path(directory: Path, first_op_id: int) -> Path:
    return directory / f"{first_op_id:020d}{INDEX_SUFFIX}"


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a dot name no listing takes for a segment."""
    return path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")


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


def encode_frame(op_id: int, payload: bytes, *, continues: bool = False) -> bytes:
    """A frame of ``op_id``; ``continues`` when more frames of its commit follow it."""
    field = op_id | CONTINUES if continues else op_id
    crc = zlib.crc32(payload, zlib.crc32(_OP_ID.pack(field)))
    return FRAME_HEADER.pack(len(payload), crc, field) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: where it starts, its op_id, its payload, and whether its commit goes on after it."""

    offset: int
    op_id: int
    payload: memoryview
    end: int
    continues: bool = False


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
    length, crc, field = FRAME_HEADER.unpack_from(data, position)
    op_id = field & OP_ID_MASK
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
    return Frame(offset, op_id, payload, base + end, field != op_id)


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


def _is_frame(view: memoryview, position: int, min_op_id: int) -> bool:
    """True when a whole, checksum-valid frame with an op_id of at least ``min_op_id`` starts at ``position``."""
    if len(view) - position < FRAME_HEADER.size:
        return False
    length, crc, field = FRAME_HEADER.unpack_from(view, position)
    end = position + FRAME_HEADER.size + length
    if not 0 < length <= FRAME_LIMIT or end > len(view) or field & OP_ID_MASK < min_op_id:
        return False
    return bool(zlib.crc32(view[position + 8 : end]) == crc)


def valid_frame_after(data: bytes, start: int, min_op_id: int) -> int | None:
    """The offset in ``data`` of the first checksum-valid frame after ``start`` with op_id >= ``min_op_id``.

    A resync scan: it tells damage (good frames after a bad one) from a torn
    tail (nothing good after it). It searches for what every frame of these
    op_ids holds at a fixed place, the high bytes of its op_id field (with or
    without ``CONTINUES``) followed by the msgpack array head of its entry, so
    it runs at memory speed over a whole segment, and checks each candidate's
    checksum.
    """
    view = memoryview(data)
    most = min_op_id + max(0, len(data) - start) // (FRAME_HEADER.size + 1)
    best: int | None = None
    highs = range(min_op_id >> 24, (most >> 24) + 1)
    for high in [*highs, *(high | (CONTINUES >> 24) for high in highs)]:
        prefix = high.to_bytes(5, "little")
        for head in RECORD_HEADS:  # an entry is a msgpack array of 7..17 fields
            needle = prefix + bytes((head,))
            found = data.find(needle, start + 12)
            while found != -1 and (best is None or found - 11 < best):
                if _is_frame(view, found - 11, min_op_id):
                    best = found - 11
                    break
                found = data.find(needle, found + 1)
    return best


def tail_damage(data: bytes, position: int, base: int, expected: int) -> str | None:
    """Why the bytes from ``position`` to the end of ``data`` are damage; None when they are a torn tail.

    ``data`` runs to the end of the newest segment (its first byte at file
    offset ``base``), and the frame at ``position``, which should hold op_id
    ``expected``, is bad or incomplete. A crash leaves the last write (a
    commit's frames) cut short, possibly followed by zeros or stale bytes,
    and possibly after whole frames of it; it never leaves good
    frames after a bad one, nor a last frame that is whole but fails its
    checksum, nor one whose checksum matches the bytes to the end while its
    length says otherwise. Those are damage, and a writer must not cut them
    off: the frames in them were acknowledged. One exception keeps a power
    loss recoverable: a whole last frame whose bytes are zeros from a sector
    boundary to the end is a write the disk never received.
    """
    following = valid_frame_after(data, position, expected)
    if following is not None:
        op_id = FRAME_HEADER.unpack_from(data, following)[2] & OP_ID_MASK
        return f"a valid frame (op_id {op_id}) follows at byte {base + following}"
    if len(data) - position <= FRAME_HEADER.size:
        return None
    length, crc, _ = FRAME_HEADER.unpack_from(data, position)
    if zlib.crc32(memoryview(data)[position + 8 :]) == crc:
        return "the frame runs whole to the end of the segment; its length field is damaged"
    whole = 0 < length <= FRAME_LIMIT and position + FRAME_HEADER.size + length == len(data)
    if whole and not _zeros_from_a_sector(data, position + FRAME_HEADER.size, base):
        return "it is the last frame, whole, so not a torn write"
    return None


def _zeros_from_a_sector(data: bytes, start: int, base: int) -> bool:
    """True when ``data`` is zeros from some sector boundary at or after ``start`` to its end."""
    last = len(data.rstrip(b"\0"))  # the bytes from ``last`` on are zeros
    boundary = -(-(base + max(last, start)) // SECTOR) * SECTOR - base
    return boundary < len(data)


@dataclass(frozen=True, slots=True)
class Problem:
    """What ends a segment's whole commits before its end: a torn tail, or damage."""

    offset: int  # a torn tail: where it starts (the end of the last whole commit); damage: the bad frame
    reason: str
    damage: bool  # False: a torn tail, which only the newest segment can have


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a walk over every frame of a segment found."""

    end: int  # where the whole commits end
    last_op_id: int  # of the last whole commit's last frame; the segment's first op_id - 1 when there is none
    last_offset: int  # where that frame starts; 0 when there is none
    index: list[tuple[int, int]]  # the (op_id, offset) records a writer keeps for the frames of whole commits
    starts: array[int] | None  # the offset of every frame of a whole commit, when asked for
    problem: Problem | None  # None when the whole commits run to the end
    last_frame: int  # op_id of the last good frame: past ``last_op_id`` when a commit was cut short after it


def scan_segment(data: bytes, first: int, *, newest: bool, keep_starts: bool = False) -> SegmentScan:
    """Check every frame of a segment whose header is sound: checksum, length and op_id, in order.

    Decodes nothing. In the newest segment, what follows the whole commits
    is told apart into a torn tail (a commit's write cut short, possibly
    after whole frames of it) and damage (``tail_damage``); in any other
    segment, which was finished whole, it is damage. Costs a CRC pass over
    the segment.
    """
    view = memoryview(data)
    size = len(view)
    position, expected = HEADER.size, first
    end, last_op_id, last_offset = HEADER.size, first - 1, 0  # the last whole commit
    index: list[tuple[int, int]] = []
    starts = array("Q") if keep_starts else None
    unpack, crc32, header_size = FRAME_HEADER.unpack_from, zlib.crc32, FRAME_HEADER.size
    while size - position >= header_size:
        length, crc, field = unpack(view, position)
        frame_end = position + header_size + length
        if (
            (field != expected and field != expected | CONTINUES)
            or not 0 < length <= FRAME_LIMIT or frame_end > size or crc32(view[position + 8 : frame_end]) != crc
        ):
            break
        if not index or position - index[-1][1] >= INDEX_INTERVAL:
            index.append((expected, position))
        if starts is not None:
            starts.append(position)
        if field == expected:  # the last frame of its commit
            end, last_op_id, last_offset = frame_end, expected, position
        position, expected = frame_end, expected + 1
    while index and index[-1][1] >= end:  # records of a commit cut short: a writer cuts it, and them
        index.pop()
    if starts is not None:
        del starts[bisect.bisect_left(starts, end) :]
    unfinished = f"op_ids {last_op_id + 1}..{expected - 1}, the whole frames of a commit whose last frame is missing"
    problem = None
    if position < size:
        try:
            reason = "the segment ends inside a frame" if frame_at(view, position, 0, expected) is None else ""
        except BadFrame as bad:
            reason = bad.reason
        if not newest:
            problem = Problem(position, reason, damage=True)
        else:
            damage = tail_damage(data, position, 0, expected)
            torn = "an unfinished write, cut off by a crash (a torn tail)"
            problem = (
                Problem(end, f"{torn}{'; it holds ' + unfinished if position > end else ''}", damage=False)
                if damage is None else Problem(position, f"{reason}; {damage}", damage=True)
            )
    elif end < size:  # every frame whole, the last commit's last frame not among them
        problem = (
            Problem(end, f"an unfinished commit, cut off by a crash (a torn tail): {unfinished}", damage=False)
            if newest else Problem(end, f"the segment ends inside a commit: {unfinished}", damage=True)
        )
    return SegmentScan(end, last_op_id, last_offset, index, starts, problem, expected - 1)


def frame_starts_at(fd: int, offset: int, op_id: int) -> bool:
    """True when a whole, checksum-valid frame of ``op_id`` starts at ``offset`` of the open file ``fd``."""
    header = os.pread(fd, FRAME_HEADER.size, offset)
    if len(header) < FRAME_HEADER.size:
        return False
    length, crc, found = FRAME_HEADER.unpack(header)
    if found & OP_ID_MASK != op_id or not 0 < length <= FRAME_LIMIT:
        return False
    payload = os.pread(fd, length, offset + FRAME_HEADER.size)
    return len(payload) == length and bool(zlib.crc32(payload, zlib.crc32(header[8:])) == crc)


def index_file_records(raw: bytes) -> list[tuple[int, int]]:
    """Every whole record of an index file, as written (a partial last record, a torn write, left out)."""
    usable = len(raw) - len(raw) % INDEX_RECORD.size
    return list(INDEX_RECORD.iter_unpack(raw[:usable]))


class SegmentIndex:
    """The sparse (op_id, offset) index of one segment, in memory and on disk.

    Its records are hints: readers check the frame a record points at before
    starting there (``candidates``), and ``discard`` one that does not check out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.op_ids: list[int] = []
        self.offsets: list[int] = []
        self._file: tuple[int, int] | None = None  # (inode, bytes read) of what was loaded

    @classmethod
    def load(cls, path: Path) -> SegmentIndex:
        """Read an index file: its records while they rise (a partial last record, a torn write, is left out)."""
        index = cls(path)
        try:
            with path.open("rb") as file:
                inode = os.fstat(file.fileno()).st_ino
                raw = file.read()
        except FileNotFoundError:
            return index
        usable = len(raw) - len(raw) % INDEX_RECORD.size
        index._take(raw[:usable])
        index._file = (inode, usable)
        return index

    @classmethod
    def of(cls, path: Path, records: list[tuple[int, int]]) -> SegmentIndex:
        """An index holding ``records`` (not yet written to ``path``)."""
        index = cls(path)
        for op_id, offset in records:
            index.add(op_id, offset)
        return index

    def _take(self, raw: bytes) -> bool:
        """Append records in order; False at the first that does not follow."""
        for op_id, offset in INDEX_RECORD.iter_unpack(raw):
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
        if not self._take(raw[:usable]):
            return SegmentIndex.load(self.path)
        self._file = (self._file[0], self._file[1] + usable)
        return self

    def start_for(self, op_id: int) -> tuple[int, int] | None:
        """The indexed (op_id, offset) closest at or before ``op_id``."""
        position = bisect.bisect_right(self.op_ids, op_id) - 1
        if position < 0:
            return None
        return self.op_ids[position], self.offsets[position]

    def candidates(self, op_id: int) -> Iterator[tuple[int, int]]:
        """The indexed (op_id, offset) pairs at or before ``op_id``, closest first: where a seek may start.

        The one handed out last may be ``discard``-ed before taking the next.
        """
        for position in range(bisect.bisect_right(self.op_ids, op_id) - 1, -1, -1):
            yield self.op_ids[position], self.offsets[position]

    def discard(self, op_id: int) -> None:
        """Forget the record of ``op_id``: its frame did not check out."""
        position = bisect.bisect_left(self.op_ids, op_id)
        if position < len(self.op_ids) and self.op_ids[position] == op_id:
            del self.op_ids[position], self.offsets[position]

    def records(self) -> list[tuple[int, int]]:
        return list(zip(self.op_ids, self.offsets, strict=True))

    def add(self, op_id: int, offset: int) -> bytes:
        """Record a pair; return its bytes to append to the file."""
        self.op_ids.append(op_id)
        self.offsets.append(offset)
        return INDEX_RECORD.pack(op_id, offset)

    @property
    def last_offset(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    def encoded(self) -> bytes:
        """The index file's bytes for these records."""
        return b"".join(INDEX_RECORD.pack(o, f) for o, f in zip(self.op_ids, self.offsets, strict=True))

    def rewrite(self, *, durable: bool = False) -> None:
        """Write the whole index anew, under a temporary name renamed into place.

        ``durable`` syncs the file and its directory entry; a writer's
        recovery does without, since it rebuilds the newest index each time.
        """
        osio.write_whole(self.path, self.encoded(), temporary_path(self.path), durable=durable)
