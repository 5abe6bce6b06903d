"""Damage cases for a FileOplog and the judge of how the oplog takes each.

A pristine oplog is built once; a case copies it, truncates one of its files
at an offset, or flips bits of one byte, and runs every way in: a reader's
full read and its seeks, its ``last_op_id`` and ``info()``, ``verify()``,
``watch()``, and a writer that reopens and appends. Each must end one of
three ways:

- recovered: every commit that is still whole is read back intact (a cut
  newest segment loses what was cut, and the whole frames of a commit cut
  short with it, nothing else);
- reported: ``OplogCorruptedError`` naming the damaged file (and, for a
  frame, the byte where it starts);
- for damage in the middle (an older segment), readers and ``verify``
  report it while the writer may go on appending.

Never a wrong entry, part of a commit (the 13 entries of one
``append_many``), a silent stop short of entries that exist, another
exception, or a hang.
"""

from __future__ import annotations

import random
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import rxcs
from rxcs.oplog.file import META_NAME, FileOplog
from rxcs.oplog.segments import FRAME_HEADER, HEADER, scan_frames

from .tally import Outcome

Region = Literal["header", "length", "crc", "op_id", "payload", "record", "meta"]
SEEK_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    first: int
    spans: tuple[tuple[int, int], ...]  # (start, end) of each frame
    newest: bool


@dataclass(frozen=True, slots=True)
class Pristine:
    """An oplog to damage copies of, and what it holds."""

    path: Path
    entries: tuple[rxcs.OplogEntry, ...]
    segments: tuple[Segment, ...]
    commits: tuple[tuple[int, int], ...]  # the first and last op_id of each append_many, as appended

    def commit_of(self, op_id: int) -> tuple[int, int]:
        """The (first, last) op_ids of the commit holding ``op_id``."""
        return next(commit for commit in self.commits if commit[0] <= op_id <= commit[1])

    def whole_through(self, op_id: int) -> int:
        """The last op_id of the last commit that ends at or before ``op_id`` (0 when none does)."""
        return max((last for _, last in self.commits if last <= op_id), default=0)


def build_pristine(path: Path, *, large: bool = False) -> Pristine:
    """Three segments of ~600-byte entries (four index records each), appended 13 to a commit; ``large``: one
    segment around a 1.3 MB entry, a commit of its own between two commits of 20."""
    commits: list[tuple[int, int]] = []
    if large:
        with rxcs.open_oplog(path, durability="none", segment_bytes=8 * 1024 * 1024) as oplog:
            for batch in (
                [rxcs.Change.insert("shop", "users", {"_id": i, "pad": "s" * 300}) for i in range(20)],
                [rxcs.Change.insert("shop", "users", {"_id": "large", "pad": "L" * 1_300_000})],
                [rxcs.Change.insert("shop", "users", {"_id": i, "pad": "s" * 300}) for i in range(20)],
            ):
                op_ids = oplog.append_many(batch)
                commits.append((op_ids[0], op_ids[-1]))
    else:
        rng = random.Random(16)
        with rxcs.open_oplog(path, durability="none", segment_bytes=64 * 1024) as oplog:
            for start in range(0, 260, 13):
                op_ids = oplog.append_many([
                    rxcs.Change.insert("shop", "users", {"_id": i, "pad": "p" * rng.randrange(400, 800)})
                    for i in range(start, start + 13)
                ])
                commits.append((op_ids[0], op_ids[-1]))
    with rxcs.open_oplog(path, readonly=True) as oplog:
        entries = tuple(oplog.read(0, 10_000))
    names = sorted(p.name for p in path.glob("*.seg"))
    segments = []
    for number, name in enumerate(names):
        data = (path / name).read_bytes()
        first = int(name[:20])
        frames = scan_frames(memoryview(data)[HEADER.size :], HEADER.size, first)
        segments.append(Segment(name, first, tuple((f.offset, f.end) for f in frames), number == len(names) - 1))
    return Pristine(path, entries, tuple(segments), tuple(commits))


@dataclass(frozen=True, slots=True)
class Case:
    """One damage: ``mutation`` of ``file`` at ``offset`` (flip: xor ``mask`` into that byte; truncate: cut there)."""

    file: str
    region: Region
    offset: int
    mutation: Literal["flip", "truncate"]
    mask: int = 0
    frame: int | None = None  # the frame (its index in the segment) the offset falls in
    last: bool = False  # the last frame of the newest segment: the tail

    def __str__(self) -> str:
        what = f"{self.mutation} {self.mask:#04x}" if self.mutation == "flip" else self.mutation
        place = f"frame {self.frame}{' (last)' if self.last else ''} " if self.frame is not None else ""
        return f"{what} {self.file} {self.region} {place}at byte {self.offset}"


def all_cases(pristine: Pristine, *, full: bool) -> list[Case]:
    """Every case of every file kind and offset class; ``full``: every byte of each field, three masks."""
    cases: list[Case] = []
    masks = (0x01, 0x80, 0xFF) if full else (0x10,)
    for segment in pristine.segments:
        cases.extend(_segment_cases(segment, masks, full=full))
        cases.extend(_index_cases(pristine.path, segment, masks, full=full))
    meta = (pristine.path / META_NAME).read_bytes()
    for offset in range(len(meta)) if full else range(0, len(meta), 7):
        cases.extend(Case(META_NAME, "meta", offset, "flip", mask) for mask in masks)
        cases.append(Case(META_NAME, "meta", offset, "truncate"))
    return cases


def _segment_cases(segment: Segment, masks: tuple[int, ...], *, full: bool) -> list[Case]:
    cases = [
        Case(segment.name, "header", offset, "flip", mask)
        for offset in (range(HEADER.size) if full else (0, 9, 24)) for mask in masks
    ]
    cases.extend(Case(segment.name, "header", offset, "truncate") for offset in (0, 5, HEADER.size - 1))
    for number, (start, end) in enumerate(segment.spans):
        last = segment.newest and number == len(segment.spans) - 1
        if not full and number % 9 and not last and number != len(segment.spans) - 1:
            continue
        fields: list[tuple[Region, range | tuple[int, ...]]] = [
            ("length", range(start, start + 4) if full else (start, start + 2)),
            ("crc", range(start + 4, start + 8) if full else (start + 5,)),
            ("op_id", range(start + 8, start + 16) if full else (start + 8, start + 14)),
            ("payload", (start + FRAME_HEADER.size, (start + end) // 2, end - 1)),
        ]
        for region, offsets in fields:
            for offset in offsets:
                cases.extend(
                    Case(segment.name, region, offset, "flip", mask, number, last) for mask in masks
                )
                cases.append(Case(segment.name, region, offset, "truncate", frame=number, last=last))
    return cases


def _index_cases(directory: Path, segment: Segment, masks: tuple[int, ...], *, full: bool) -> list[Case]:
    name = segment.name.replace(".seg", ".idx")
    size = (directory / name).stat().st_size
    offsets = range(size) if full else range(3, size, 11)
    cases = [Case(name, "record", offset, "flip", mask) for offset in offsets for mask in masks]
    cases.extend(Case(name, "record", offset, "truncate") for offset in range(0, size, 5 if full else 13))
    return cases


def sample(cases: list[Case], count: int, seed: int) -> list[Case]:
    """A fixed, spread sample: every region and mutation of every file kind, then the rest at random."""
    rng = random.Random(seed)
    by_kind: dict[tuple[str, str, str, bool], list[Case]] = {}
    for case in cases:
        kind = case.file.rsplit(".", 1)[-1]
        by_kind.setdefault((kind, case.region, case.mutation, case.last), []).append(case)
    chosen = [rng.choice(group) for _, group in sorted(by_kind.items())]
    rest = [case for case in cases if case not in chosen]
    return chosen + rng.sample(rest, max(0, min(len(rest), count - len(chosen))))


def apply(case: Case, directory: Path) -> None:
    path = directory / case.file
    data = bytearray(path.read_bytes())
    if case.mutation == "flip":
        data[case.offset] ^= case.mask
    else:
        del data[case.offset :]
    path.write_bytes(bytes(data))


# -- what a case should come to --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the oplog must show after a case's damage.

    ``kind``: ``recover``, a crash's cut of the newest segment, which every
    way in must take without an error; ``damage``, which readers and
    ``verify`` must report (and the writer too, in the newest segment);
    ``index``, which only ``verify`` may report while everything else reads
    every entry; ``meta``, which every way in reports, or none does when the
    change was harmless.
    """

    kind: Literal["recover", "damage", "index", "meta"]
    entries: int  # entries 1..entries are there (with damage, readers stop before ``first_bad``)
    damaged: str | None = None  # the file an error must name
    first_bad: int | None = None  # op_id of the first entry the damage touches: the first of the damaged commit
    bad_frame: int | None = None  # op_id of the damaged frame; a seek to before it, in its commit, gets nothing
    offset: int | None = None  # the byte an error must name, when it is known
    writer_refuses: bool = False  # damage in the newest segment: the writer must not append after it
    verify_must_report: bool = False


def expect(pristine: Pristine, case: Case) -> Expectation:
    n = len(pristine.entries)
    if case.region == "meta":
        return Expectation("meta", n, case.file)
    if case.region == "record":
        newest = pristine.segments[-1].name.replace(".seg", ".idx") == case.file
        return Expectation("index", n, case.file, verify_must_report=case.mutation == "flip" and not newest)
    segment = next(s for s in pristine.segments if s.name == case.file)
    if case.mutation == "truncate":
        whole = sum(1 for _, end in segment.spans if end <= case.offset) if case.offset >= HEADER.size else 0
        if segment.newest:  # a crash's cut: what is cut is gone, with the part of a commit before it; the rest recovers
            return Expectation("recover", pristine.whole_through(segment.first - 1 + whole))
        bad = segment.first + whole
        return Expectation("damage", n, case.file, pristine.commit_of(bad)[0], bad_frame=bad)
    if case.region == "header":
        return Expectation("damage", n, case.file, segment.first, segment.first, 0, writer_refuses=segment.newest)
    assert case.frame is not None
    start = segment.spans[case.frame][0]
    bad = segment.first + case.frame
    return Expectation(
        "damage", n, case.file, pristine.commit_of(bad)[0], bad, start, writer_refuses=segment.newest
    )


# -- running a case -----------------------------------------------------------------------------------


class Wrong(Exception):
    """A case ended in a way the oplog must never end: the message says how."""


def bounded(call: Callable[[], Any], seconds: float = SEEK_TIMEOUT) -> Any:
    """Run ``call`` with a time limit: a hang is a wrong outcome, not a stuck test run."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Wrong(f"hung for {seconds} s")
    if failure:
        raise failure[0]
    return result[0] if result else None


def run_case(pristine: Pristine, case: Case, work: Path, *, watch: bool) -> Outcome:
    """Damage a copy as ``case`` says and hold every way in to the expectation; raise ``Wrong`` otherwise."""
    directory = work / "oplog"
    shutil.copytree(pristine.path, directory)
    try:
        apply(case, directory)
        expectation = expect(pristine, case)
        judge = _Judge(pristine, expectation, directory)
        bounded(judge.reader)
        if watch:
            bounded(judge.watcher)
        bounded(judge.writer)
        return judge.outcome
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Judge:
    def __init__(self, pristine: Pristine, expectation: Expectation, directory: Path) -> None:
        self.entries = pristine.entries
        self.expectation = expectation
        self.directory = directory
        self.reported: list[str] = []

    @property
    def outcome(self) -> Outcome:
        return "reported" if self.reported else "recovered"

    def error(self, exc: BaseException, what: str) -> None:
        """An exception from ``what``: fine when it is the documented error naming the damaged file."""
        expected = self.expectation
        if isinstance(exc, Wrong):
            raise exc
        if not isinstance(exc, rxcs.OplogCorruptedError):
            raise Wrong(f"{what} raised {type(exc).__name__}: {exc}") from exc
        if expected.kind == "recover" or (expected.kind == "index" and what != "verify"):
            raise Wrong(f"{what} reported damage where it had to recover: {exc}")
        if exc.path != str(self.directory / str(expected.damaged)):
            raise Wrong(f"{what} named {exc.path} at byte {exc.offset}, not {expected.damaged}: {exc}")
        if expected.offset is not None and exc.offset != expected.offset:
            raise Wrong(f"{what} named byte {exc.offset}, not {expected.offset}: {exc}")
        self.reported.append(what)

    def prefix(self, got: list[rxcs.OplogEntry], what: str) -> None:
        """``got`` must be the first entries, exactly as appended."""
        if got != list(self.entries[: len(got)]):
            wrong = next(e.op_id for e, w in zip(got, self.entries, strict=False) if e != w)
            raise Wrong(f"{what} read a wrong entry at op_id {wrong}")

    def complete(self, got: list[rxcs.OplogEntry], what: str) -> None:
        """A read that ended without an error must have every entry there is, and only those."""
        self.prefix(got, what)
        expected = self.expectation
        if expected.kind == "damage":
            raise Wrong(f"{what} read {len(got)} entries and no error, over damage at op_id {expected.first_bad}")
        if len(got) != expected.entries:
            raise Wrong(f"{what} stopped at op_id {len(got)} without an error; {expected.entries} entries are there")

    def reader(self) -> None:
        try:
            oplog = FileOplog(self.directory, readonly=True)
        except rxcs.RxcsError as exc:
            self.error(exc, "opening")
            return
        with oplog:
            self._read_all(oplog)
            self._seeks(oplog)
            self._last_op_id(oplog)
            self._verify(oplog)

    def _read_all(self, oplog: FileOplog) -> None:
        got: list[rxcs.OplogEntry] = []
        try:
            with oplog.cursor(0) as cursor:
                while batch := cursor.read(50):
                    got.extend(batch)
        except Exception as exc:
            self.prefix(got, "a reader")
            first_bad = self.expectation.first_bad
            if first_bad is not None and len(got) >= first_bad:
                raise Wrong(f"a reader read past damage at op_id {first_bad}") from exc
            self.error(exc, "a reader")
            return
        self.complete(got, "a reader")

    def _seeks(self, oplog: FileOplog) -> None:
        expected = self.expectation
        around = () if expected.first_bad is None else (expected.first_bad - 1, (expected.bad_frame or 1) - 1)
        for after in sorted({0, 1, 7, 50, 99, 150, 201, 240, expected.entries - 1, expected.entries, *around}):
            if not 0 <= after <= len(self.entries):
                continue
            try:
                got = oplog.read(after, 1)
            except Exception as exc:
                self.error(exc, f"a seek after {after}")
                continue
            if got:
                self.prefix([*self.entries[:after], *got], f"a seek after {after}")
                if expected.first_bad is not None and expected.first_bad <= after + 1 <= (expected.bad_frame or 0):
                    raise Wrong(f"a seek after {after} read part of the damaged commit")
            elif after < expected.entries:
                raise Wrong(f"a seek after {after} found nothing; {expected.entries} entries are there")

    def _last_op_id(self, oplog: FileOplog) -> None:
        expected = self.expectation
        for what, probe in (("last_op_id", lambda: oplog.last_op_id), ("info()", lambda: oplog.info().last_op_id)):
            try:
                last = probe()
            except Exception as exc:
                self.error(exc, what)
                continue
            if last != expected.entries:
                raise Wrong(f"{what} says {last}; {expected.entries} entries are there")

    def _verify(self, oplog: FileOplog) -> None:
        expected = self.expectation
        try:
            checked = oplog.verify()
        except Exception as exc:
            self.error(exc, "verify")
            return
        if expected.kind == "damage" or expected.verify_must_report:
            raise Wrong(f"verify passed {checked} entries over damage in {expected.damaged}")
        if checked != expected.entries:
            raise Wrong(f"verify checked {checked} entries; {expected.entries} are there")

    def watcher(self) -> None:
        expected = self.expectation
        try:
            oplog = FileOplog(self.directory, readonly=True)
        except rxcs.RxcsError as exc:
            self.error(exc, "watch()")
            return
        got: list[int] = []
        with oplog:
            try:
                with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                    while True:
                        try:
                            event = stream.next(timeout=5.0 if len(got) < expected.entries else 0.2)
                        except TimeoutError:
                            break
                        got.append(event.op_id)
            except Exception as exc:
                if got != list(range(1, len(got) + 1)):
                    raise Wrong(f"watch() delivered op_ids {got[:5]}... out of order") from exc
                if expected.first_bad is not None and len(got) >= expected.first_bad:
                    raise Wrong(f"watch() delivered op_id {len(got)}, past damage at {expected.first_bad}") from exc
                self.error(exc, "watch()")
                return
        if got != list(range(1, len(got) + 1)):
            raise Wrong("watch() delivered op_ids out of order")
        self.complete([self.entries[op_id - 1] for op_id in got if op_id <= len(self.entries)], "watch()")

    def writer(self) -> None:
        expected = self.expectation
        try:
            with FileOplog(self.directory, durability="none") as oplog:
                op_id = oplog.insert("shop", "users", {"_id": "after"})
        except Exception as exc:
            self.error(exc, "a writer")
            return
        if expected.writer_refuses:
            raise Wrong(f"a writer appended op_id {op_id} after damage in the newest segment")
        if op_id != expected.entries + 1:
            raise Wrong(f"a writer appended op_id {op_id}; {expected.entries} entries were there")
        if expected.kind != "damage":
            with FileOplog(self.directory, readonly=True) as oplog:
                got = oplog.read(0, 10_000)
            self.prefix(got[:-1], "a reader after the writer")
            if len(got) != op_id or got[-1].full_document != {"_id": "after"}:
                raise Wrong(f"after the writer, a reader read {len(got)} entries, not {op_id}")
