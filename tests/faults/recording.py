"""What FileOplog asks of the disk, recorded, and the states a power loss could leave.

``Recorder`` wraps the OS calls of ``rxcs.oplog.osio`` and calls through to
them, so the files are real; it keeps, in order, every write, truncation,
sync, rename, link and removal, and the moments appends were acknowledged.
``crash_state`` builds from that record a directory that a power loss at a
given moment could leave behind:

- each file holds what it held at its last completed sync, then a prefix of
  its later writes, the last of them torn (cut short), zeroed (the size
  reached the disk, the data did not: zeros from a sector boundary, or the
  whole write), or followed by stale bytes;
- the directory holds the entries it held at its last completed sync, then a
  prefix of its later changes (creations, renames, removals).

A sync covers what was written before it began; a sync still running at the
moment of the loss covers nothing.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pytest

from rxcs.oplog import osio
from rxcs.oplog.segments import HEADER, SECTOR

Kind = Literal["create", "write", "truncate", "sync", "rename", "link", "unlink", "dirsync", "ack"]
Variant = Literal["lost", "kept", "torn", "zeroed", "stale", "reordered"]
VARIANTS: tuple[Variant, ...] = ("lost", "kept", "torn", "zeroed", "stale")
NAME_OPS = ("create", "rename", "link", "unlink")


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    file: int = -1  # the file (create, write, truncate, sync)
    name: str = ""  # create, unlink; rename and link: the source
    target: str = ""  # rename, link: the new name
    offset: int = 0  # write: where; truncate: the new size
    data: bytes = b""
    begun: int = 0  # sync, dirsync: the events before this index are covered
    op_ids: tuple[int, ...] = ()  # ack
    at: float = 0.0  # monotonic time when it was recorded


@dataclass
class Recorder:
    """Records the oplog's calls to ``osio`` in one process; ``install`` puts it in place for a test."""

    events: list[Event] = field(default_factory=list)
    _names: dict[str, int] = field(default_factory=dict)
    _fds: dict[int, list[int]] = field(default_factory=dict)  # fd -> [file, append, position]
    _files: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("open_file", "dup", "close", "write_all", "truncate", "fsync", "fdatasync",
                     "fsync_directory", "replace", "link", "unlink"):
            monkeypatch.setattr(osio, name, getattr(self, name))

    def _event(self, kind: Kind, **fields: object) -> None:
        self.events.append(Event(kind, at=time.monotonic(), **fields))  # type: ignore[arg-type]

    def open_file(self, path: Path, flags: int, mode: int = 0o644) -> int:
        with self._lock:
            fd = os.open(path, flags, mode)
            name = str(path)
            file = self._names.get(name)
            if file is None:
                file = self._files = self._files + 1
                self._names[name] = file
                self._event("create", file=file, name=name)
            if flags & os.O_TRUNC:
                self._event("truncate", file=file, offset=0)
            self._fds[fd] = [file, flags & os.O_APPEND, 0]
            return fd

    def dup(self, fd: int) -> int:
        with self._lock:
            new = os.dup(fd)
            self._fds[new] = list(self._fds[fd])
            return new

    def close(self, fd: int) -> None:
        with self._lock:
            os.close(fd)
            self._fds.pop(fd, None)

    def write_all(self, fd: int, data: bytes) -> None:
        with self._lock:
            file, append, position = self._fds[fd]
            offset = os.fstat(fd).st_size if append else position
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._fds[fd][2] = offset + len(data)
            self._event("write", file=file, offset=offset, data=bytes(data))

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            os.ftruncate(fd, size)
            self._event("truncate", file=self._fds[fd][0], offset=size)

    def fsync(self, fd: int) -> None:
        self._sync(fd, os.fsync)

    def fdatasync(self, fd: int) -> None:
        self._sync(fd, os.fdatasync)

    def _sync(self, fd: int, call: object) -> None:
        with self._lock:
            begun, file = len(self.events), self._fds[fd][0]
        call(fd)  # type: ignore[operator]  # outside the lock: writes go on meanwhile, as they do for real
        with self._lock:
            self._event("sync", file=file, begun=begun)

    def fsync_directory(self, directory: Path) -> None:
        with self._lock:
            begun = len(self.events)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._event("dirsync", begun=begun)

    def replace(self, source: Path, target: Path) -> None:
        with self._lock:
            os.replace(source, target)
            self._names[str(target)] = self._names.pop(str(source))
            self._event("rename", name=str(source), target=str(target))

    def link(self, source: Path, target: Path) -> None:
        with self._lock:
            os.link(source, target)
            self._names[str(target)] = self._names[str(source)]
            self._event("link", name=str(source), target=str(target))

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        with self._lock:
            try:
                os.unlink(path)
            except FileNotFoundError:
                if not missing_ok:
                    raise
                return
            self._names.pop(str(path), None)
            self._event("unlink", name=str(path))

    def ack(self, op_ids: Iterable[int]) -> None:
        """The test's mark: an append returned these op_ids."""
        with self._lock:
            self._event("ack", op_ids=tuple(op_ids))


# -- what the record says ---------------------------------------------------------------------------


def synced_until(events: list[Event], moment: int, file: int | None) -> int:
    """The events before this index are durable at ``moment`` (for ``file``; None: the directory's entries)."""
    covered = 0
    for event in events[:moment]:
        synced_file = file is not None and event.kind == "sync" and event.file == file
        if synced_file or (file is None and event.kind == "dirsync"):
            covered = max(covered, event.begun)
    return covered


@dataclass(frozen=True, slots=True)
class Written:
    """Where an entry was written: the event, the file, and the segment's name."""

    event: int
    file: int
    name: str


def written_entries(events: list[Event]) -> dict[int, Written]:
    """For every op_id, the write that put its frame in a segment (frames go in after the segment is named)."""
    names: dict[int, str] = {}  # file -> its name now
    where: dict[int, Written] = {}
    for index, event in enumerate(events):
        if event.kind == "create":
            names[event.file] = event.name
        elif event.kind == "rename":
            for file, name in list(names.items()):
                if name == event.name:
                    names[file] = event.target
        elif event.kind == "write" and event.offset >= HEADER.size and names.get(event.file, "").endswith(".seg"):
            for op_id in _frames(event.data):
                where[op_id] = Written(index, event.file, names[event.file])
    return where


def _frames(data: bytes) -> list[int]:
    """The op_ids of the whole frames a write holds (a commit: frames back to back)."""
    return [op_id for op_id, _, _ in frame_spans(data)]


def frame_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(op_id, start, end) of each frame a write holds; the top bit of a frame's op_id field marks a commit
    going on after it, and is not part of the op_id."""
    spans, position = [], 0
    while position + 16 <= len(data):
        length = int.from_bytes(data[position : position + 4], "little")
        op_id = int.from_bytes(data[position + 8 : position + 16], "little") & ~(1 << 63)
        spans.append((op_id, position, position + 16 + length))
        position += 16 + length
    return spans


def durable_at(events: list[Event], moment: int) -> set[int]:
    """The op_ids a power loss at ``moment`` cannot take: their frames and their segment's name are synced."""
    directory = synced_until(events, moment, None)
    named: dict[str, int] = {}  # segment name -> the event that gave it
    for index, event in enumerate(events[:moment]):
        if event.kind in ("rename", "link"):
            named[event.target] = index
        elif event.kind == "create":
            named.setdefault(event.name, index)
    durable = set()
    for op_id, written in written_entries(events[:moment]).items():
        if written.event < synced_until(events, moment, written.file) and named.get(written.name, moment) < directory:
            durable.add(op_id)
    return durable


def acknowledged(events: list[Event], moment: int) -> list[int]:
    return [op_id for event in events[:moment] if event.kind == "ack" for op_id in event.op_ids]


# -- the states a power loss leaves -------------------------------------------------------------------


def crash_state(events: list[Event], moment: int, variant: Variant, seed: int, directory: Path, into: Path) -> None:
    """Write into ``into`` the files of ``directory`` as a power loss at ``moment`` could leave them."""
    rng = random.Random(seed)
    contents: dict[int, bytearray] = {}
    for file in {event.file for event in events[:moment] if event.kind == "create"}:
        durable = synced_until(events, moment, file)
        ops = [(i, e) for i, e in enumerate(events[:moment]) if e.file == file and e.kind in ("write", "truncate")]
        content = bytearray()
        for _, op in (pair for pair in ops if pair[0] < durable):
            _apply(content, op)
        later = [op for i, op in ops if i >= durable]
        _survive(content, later, variant, rng)
        contents[file] = content
    names: dict[str, int] = {}
    synced = synced_until(events, moment, None)
    name_ops = [(i, e) for i, e in enumerate(events[:moment]) if e.kind in NAME_OPS]
    later_names = [e for i, e in name_ops if i >= synced]
    keep = {"lost": 0, "kept": len(later_names), "reordered": len(later_names)}.get(
        variant, rng.randint(0, len(later_names))
    )
    for event in [e for i, e in name_ops if i < synced] + later_names[:keep]:
        if event.kind == "create":
            names[event.name] = event.file
        elif event.kind == "unlink":
            names.pop(event.name, None)
        elif event.kind == "rename":
            names[event.target] = names.pop(event.name)
        else:
            names[event.target] = names[event.name]
    into.mkdir(parents=True, exist_ok=True)
    for name, file in names.items():
        if Path(name).parent == directory:
            (into / Path(name).name).write_bytes(bytes(contents[file]))


def cut_state(events: list[Event], index: int, data: bytes, directory: Path, into: Path) -> None:
    """Write into ``into`` the files as they were when the write ``events[index]`` began, every earlier
    operation kept, and that write leaving ``data`` instead: stopped short, or zeros where it never arrived."""
    crash_state([*events[:index], replace(events[index], data=data)], index + 1, "kept", 0, directory, into)


def _apply(content: bytearray, op: Event) -> None:
    if op.kind == "truncate":
        del content[op.offset :]
        content.extend(bytes(op.offset - len(content)))
        return
    if len(content) < op.offset:
        content.extend(bytes(op.offset - len(content)))
    content[op.offset : op.offset + len(op.data)] = op.data


def _survive(content: bytearray, later: list[Event], variant: Variant, rng: random.Random) -> None:
    """Apply what of the unsynced operations a variant keeps."""
    if variant == "lost":
        return
    if variant == "kept":
        for op in later:
            _apply(content, op)
        return
    if variant == "reordered":  # a later write reached the disk, an earlier one did not (it reads as zeros)
        writes = [number for number, op in enumerate(later) if op.kind == "write"]
        lost = rng.choice(writes[:-1]) if len(writes) > 1 else None
        for number, op in enumerate(later):
            _apply(content, op if number != lost else Event("write", file=op.file, offset=op.offset,
                                                              data=bytes(len(op.data))))
        return
    kept = rng.randint(0, len(later))
    for op in later[:kept]:
        _apply(content, op)
    if kept == len(later) or later[kept].kind != "write":
        return
    op = later[kept]
    cut = rng.randint(0, len(op.data))
    if variant == "torn":
        data = op.data[:cut]
    elif variant == "zeroed":  # from a sector boundary, or the whole write
        boundary = -(-(op.offset + cut) // SECTOR) * SECTOR - op.offset if rng.random() < 0.7 else 0
        data = op.data[: min(boundary, len(op.data))] + bytes(max(0, len(op.data) - boundary))
    else:  # stale bytes after the cut
        data = op.data[:cut] + rng.randbytes(len(op.data) - cut)
    _apply(content, Event("write", file=op.file, offset=op.offset, data=data))
