"""The OS calls by which ``FileOplog`` changes files, in one place.

Every write, truncation, sync, rename, link and removal the oplog makes
goes through these functions, so what a power loss can leave on disk is a
function of the calls made here and their order. The fault tests wrap them
to record that order (``tests/faults``); the library calls them plainly.
Reads do not come here: they change nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "close",
    "dup",
    "fdatasync",
    "fsync",
    "fsync_directory",
    "link",
    "open_file",
    "replace",
    "truncate",
    "unlink",
    "write_all",
    "write_whole",
]


def open_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open``: a descriptor of ``path``."""
    return os.open(path, flags, mode)


def dup(fd: int) -> int:
    """A second descriptor of the same open file."""
    return os.dup(fd)


def close(fd: int) -> None:
    os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (at the end, for a descriptor opened with ``O_APPEND``)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def truncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)


def fsync(fd: int) -> None:
    os.fsync(fd)


def fdatasync(fd: int) -> None:
    os.fdatasync(fd)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (files created, renamed, removed) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` atomically."""
    os.replace(source, target)


def link(source: Path, target: Path) -> None:
    """A second name for ``source``; ``FileExistsError`` when ``target`` exists."""
    os.link(source, target)


def unlink(path: Path, *, missing_ok: bool = False) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def write_whole(path: Path, data: bytes, temporary: Path, *, durable: bool) -> None:
    """Make ``path`` hold ``data``, whole or not at all: written to ``temporary`` and renamed over it.

    ``durable`` syncs the file before the rename and the directory after it,
    so the new content survives a power loss; without it a crash may leave
    the old content, never a mix. A failed write may leave the temporary
    behind, for its owner to remove.
    """
    fd = open_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
        if durable:
            fsync(fd)
    finally:
        close(fd)
    replace(temporary, path)
    if durable:
        fsync_directory(path.parent)
