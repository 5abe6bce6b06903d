"""Whole-directory checks of a FileOplog: every frame, every index against its segment, the gaps between.

``FileOplog.verify`` reports the first problem these checks find;
``FileOplog.repair`` plans from them what it may fix: rebuild indexes, cut
a torn tail, remove what a crash left half made, and, only when asked, cut
the newest segment at damage. This module reads files and decides; it
changes nothing (``FileOplog`` applies a plan while holding the writer lock).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, final

from rxcs.errors import OplogCorruptedError
from rxcs.log import log
from rxcs.oplog.codec import EntryDecodeError, decode_entry
from rxcs.oplog.segments import (
    FRAME_HEADER,
    HEADER,
    INDEX_RECORD,
    INDEX_SUFFIX,
    TEMPORARY_SUFFIX,
    BadFrame,
    SegmentIndex,
    SegmentScan,
    check_header,
    frame_at,
    index_file_records,
    index_path,
    list_segments,
    scan_segment,
    segment_path,
    valid_frame_after,
)

__all__ = ["RepairPlan", "RepairStep", "SegmentCheck", "check_segment", "plan_repair", "verify_directory"]

_REPAIR_FLAG: Final = "--truncate-at-damage"


@final
@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """One segment and its index, checked: what is wrong, and what the index should hold."""

    path: Path
    first: int
    size: int
    header: str | None  # what is wrong with the header; None when it is sound
    scan: SegmentScan | None  # None when the header is not sound
    index_problem: tuple[int, str] | None  # (byte, reason) of the first index record that is wrong
    index_expected: bytes  # the index a writer keeps for the segment's good frames
    index_current: bytes | None  # the index file's bytes; None when there is none

    @property
    def index_path(self) -> Path:
        return self.path.with_suffix(INDEX_SUFFIX)


def check_segment(path: Path, first: int, oplog_id: bytes, *, newest: bool, decode: bool = False) -> SegmentCheck:
    """Check a segment's header, every frame (checksums, lengths, op_ids) and its index file.

    With ``decode``, every good frame's entry is decoded too, and one that is
    not an entry raises ``OplogCorruptedError``. Raises ``FileNotFoundError``
    when the segment is gone (trimmed meanwhile).
    """
    data = path.read_bytes()
    try:
        current: bytes | None = index_path(path.parent, first).read_bytes()
    except FileNotFoundError:
        current = None
    header = check_header(data, oplog_id, first)
    if header is not None:
        return SegmentCheck(path, first, len(data), header, None, None, b"", current)
    scan = scan_segment(data, first, newest=newest, keep_starts=True)
    if decode:
        _decode_all(path, memoryview(data), scan, first)
    expected = SegmentIndex.of(index_path(path.parent, first), scan.index).encoded()
    problem = None if current is None else _index_problem(current, scan, first, newest=newest)
    return SegmentCheck(path, first, len(data), None, scan, problem, expected, current)


def _index_problem(raw: bytes, scan: SegmentScan, first: int, *, newest: bool) -> tuple[int, str] | None:
    """The first record of an index file that does not point at the start of a good frame of its op_id.

    In the newest segment, records past its good frames are left alone: they
    are being written, or stale past a torn tail that the writer rebuilds.
    """
    assert scan.starts is not None
    starts = scan.starts
    previous = (0, 0)
    for number, (op_id, offset) in enumerate(index_file_records(raw)):
        at = number * INDEX_RECORD.size
        if newest and offset >= scan.end:
            continue
        position = bisect.bisect_left(starts, offset)
        if position == len(starts) or starts[position] != offset:
            return at, f"index record (op_id {op_id}, offset {offset}) points at no frame start"
        if first + position != op_id:
            return at, f"index record (op_id {op_id}, offset {offset}): the frame there holds op_id {first + position}"
        if op_id <= previous[0] or offset <= previous[1]:
            return at, f"index record (op_id {op_id}, offset {offset}) is out of order"
        previous = (op_id, offset)
    return None


def verify_directory(
    directory: Path, oplog_id: bytes, progress: Callable[[int, int], None] | None = None
) -> int:
    """Check every segment, frame, entry and index record of a FileOplog; return the entries checked.

    Raises ``OplogCorruptedError`` naming the file and byte offset of the
    first problem: a bad frame or header, an entry that does not decode, an
    index record that points at no frame of its op_id, a gap between
    segments. A torn tail of the newest segment, and a newest segment whose
    header is not written yet, are what a live writer or a crash leaves: they
    are logged, not raised (the writer cuts or finishes them). Segments
    trimmed while it runs are passed over.
    """
    segments = list_segments(directory)
    sizes = {}
    for first in segments:
        try:
            sizes[first] = os.path.getsize(segment_path(directory, first))
        except FileNotFoundError:
            continue
    total, done, checked = sum(sizes.values()), 0, 0
    for position, first in enumerate(segments):
        path = segment_path(directory, first)
        newest = position == len(segments) - 1
        try:
            check = check_segment(path, first, oplog_id, newest=newest, decode=True)
        except FileNotFoundError:
            continue  # trimmed meanwhile
        if check.header is not None:
            if newest and check.size < HEADER.size:
                log.warning("oplog segment being started", path=str(path), bytes=check.size)
                break
            raise OplogCorruptedError(check.header, path=str(path), offset=0)
        scan = check.scan
        assert scan is not None
        if scan.problem is not None:
            if scan.problem.damage:
                raise OplogCorruptedError(scan.problem.reason, path=str(path), offset=scan.problem.offset)
            log.warning("oplog torn tail", path=str(path), offset=scan.problem.offset, bytes=check.size - scan.end)
        checked += scan.last_op_id - first + 1
        if not newest and scan.last_op_id + 1 != segments[position + 1] and segment_path(directory, first).exists():
            raise OplogCorruptedError(
                f"segment ends at op_id {scan.last_op_id} but the next starts at {segments[position + 1]}",
                path=str(path), offset=scan.end,
            )
        if check.index_problem is not None:
            raise OplogCorruptedError(check.index_problem[1], path=str(check.index_path), offset=check.index_problem[0])
        done += sizes.get(first, 0)
        if progress is not None:
            progress(done, total)
    return checked


def _decode_all(path: Path, view: memoryview, scan: SegmentScan, first: int) -> None:
    """Decode every frame of the whole commits of a scanned segment and check its entry's op_id."""
    assert scan.starts is not None
    for number, offset in enumerate(scan.starts):
        length = FRAME_HEADER.unpack_from(view, offset)[0]
        start = offset + FRAME_HEADER.size
        try:
            entry = decode_entry(bytes(view[start : start + length]))
        except EntryDecodeError as exc:
            raise OplogCorruptedError(f"frame payload is not an entry ({exc})", path=str(path), offset=offset) from None
        if entry.op_id != first + number:
            raise OplogCorruptedError(
                f"frame header says op_id {first + number}, its entry says {entry.op_id}", path=str(path), offset=offset
            )


# -- repair -------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RepairStep:
    """One change ``repair`` makes (or, in a dry run, would make) to one file."""

    action: Literal["cut", "rebuild", "remove"]
    path: Path
    why: str
    offset: int = 0  # cut: where the segment is cut
    cut_bytes: int = 0  # cut: how many bytes go
    dropped: tuple[int, int] | None = None  # cut: the first and last op_id that go, when any frame of one goes
    data: bytes = b""  # rebuild: the index's new bytes

    def describe(self, *, done: bool) -> str:
        """One line: what was done (``done``) or would be done."""
        if self.action == "cut":
            what = f"cut {self.cut_bytes} bytes at byte {self.offset} of {self.path.name}"
        else:
            what = f"{self.action} {self.path.name}"
        return f"{'' if done else 'would '}{what} ({self.why})"


@final
@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What repair does, in order; or, when ``refusal`` is set, what it would do but will not (nothing is done)."""

    steps: tuple[RepairStep, ...]
    refusal: OplogCorruptedError | None


def plan_repair(directory: Path, oplog_id: bytes, *, truncate_at_damage: bool) -> RepairPlan:
    """Decide how to repair a FileOplog directory (the caller holds the writer lock).

    Fixes what loses no entry: stale, damaged or missing indexes are
    rebuilt from their segments; a torn tail is cut; a newest segment whose
    header was never written, files half made under a temporary name and
    indexes without a segment are removed. Damage (a bad frame with good
    frames after it, or a whole last frame failing its checks) in the newest
    segment is cut, with the op_ids that go, only with ``truncate_at_damage``;
    damage in an older segment, or a gap between segments, is never cut,
    since every newer entry would go: the refusal names it and the trim that
    drops it with the older entries.
    """
    steps: list[RepairStep] = []
    names = sorted(os.listdir(directory))
    steps.extend(
        RepairStep("remove", directory / name, "a file left half made by a crash")
        for name in names
        if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)
    )
    segments = list_segments(directory)
    present = {f"{first:020d}" for first in segments}
    steps.extend(
        RepairStep("remove", directory / name, "an index without its segment")
        for name in names
        if name.endswith(INDEX_SUFFIX) and name[:-len(INDEX_SUFFIX)] not in present
    )
    for position, first in enumerate(segments):
        newest = position == len(segments) - 1
        check = check_segment(segment_path(directory, first), first, oplog_id, newest=newest)
        refusal = _plan_segment(check, steps, newest=newest, truncate_at_damage=truncate_at_damage)
        if refusal is None and not newest:
            refusal = _gap(check, segments[position + 1])
        if refusal is not None:
            return RepairPlan(tuple(steps), refusal)
    return RepairPlan(tuple(steps), None)


def _plan_segment(
    check: SegmentCheck, steps: list[RepairStep], *, newest: bool, truncate_at_damage: bool
) -> OplogCorruptedError | None:
    path = check.path
    if check.header is not None:
        if newest and check.size < HEADER.size:
            steps.append(RepairStep("remove", path, "a segment whose header was never written: no entries"))
            if check.index_current is not None:
                steps.append(RepairStep("remove", check.index_path, "the index of that segment"))
            return None
        return OplogCorruptedError(f"{check.header}; repair cannot rebuild a segment header", path=str(path), offset=0)
    scan = check.scan
    assert scan is not None
    problem = scan.problem
    if problem is not None and not problem.damage:
        unfinished = (scan.last_op_id + 1, scan.last_frame) if scan.last_frame > scan.last_op_id else None
        why = (
            "a torn tail: no whole entry in it" if unfinished is None else
            f"a torn tail: op_ids {unfinished[0]}..{unfinished[1]} go, the frames of a commit whose last frame "
            "never reached the file, so never an entry"
        )
        steps.append(RepairStep(
            "cut", path, why, offset=scan.end, cut_bytes=check.size - scan.end, dropped=unfinished,
        ))
    elif problem is not None:
        if not newest:
            return OplogCorruptedError(
                f"{problem.reason}; repair cuts only the newest segment (cutting here would drop every newer one): "
                f"`rxcs oplog trim --before {scan.last_op_id + 2}` drops this segment with the older ones instead",
                path=str(path), offset=problem.offset,
            )
        dropped = (scan.last_op_id + 1, _last_op_id_after(path, problem.offset, scan.last_frame + 1))
        going = f"op_ids {dropped[0]}..{dropped[1]}"
        if not truncate_at_damage:
            return OplogCorruptedError(
                f"{problem.reason}; {going} are at or after it; `rxcs oplog repair {_REPAIR_FLAG}` drops them",
                path=str(path), offset=problem.offset,
            )
        steps.append(RepairStep(
            "cut", path, f"damage: {going} go", offset=scan.end, cut_bytes=check.size - scan.end, dropped=dropped,
        ))
    if check.index_current != check.index_expected:
        if check.index_current is None:
            why = "it is missing"
        elif check.index_problem is not None:
            why = f"byte {check.index_problem[0]}: {check.index_problem[1]}"
        elif len(check.index_current) % INDEX_RECORD.size:
            why = "it ends in a partial record"
        else:
            why = "it does not match its segment"
        steps.append(RepairStep("rebuild", check.index_path, why, data=check.index_expected))
    return None


def _gap(check: SegmentCheck, following: int) -> OplogCorruptedError | None:
    assert check.scan is not None
    if check.scan.last_op_id + 1 == following:
        return None
    return OplogCorruptedError(
        f"segment ends at op_id {check.scan.last_op_id} but the next starts at {following}; repair cannot fill a gap: "
        f"`rxcs oplog trim --before {following}` drops the segments before it",
        path=str(check.path), offset=check.scan.end,
    )


def _last_op_id_after(path: Path, offset: int, expected: int) -> int:
    """The highest op_id of a valid frame after the damage at ``offset``; ``expected`` when there is none."""
    data = path.read_bytes()
    view = memoryview(data)
    highest = expected
    position = valid_frame_after(data, offset, expected)
    while position is not None:
        while True:  # follow the run of good frames from there
            try:
                frame = frame_at(view, position, 0, None)
            except BadFrame:
                break
            if frame is None:
                break
            highest, position = max(highest, frame.op_id), frame.end
        position = valid_frame_after(data, position, expected) if position < len(data) else None
    return highest
