"""The image store of a FileOplog: one SQLite database in the oplog's directory, ``images.sqlite``.

Tables (see ``rxcs.oplog.images.store`` for what each holds)::

    store     one row: format, version, oplog_id, applied (the checkpoint) and its entry's stamp,
              every_collection
    settings  (db, coll) -> enabled: collections' own settings
    documents (db, coll, key) -> op_id of the current image
    images    op_id -> prev, document (NULL: none after the change), expires (NULL while current)

The database is in WAL mode: the writer commits while readers in other
processes read. It is made whole under a temporary name and linked into place,
so a reader never finds it half created; commits are transactions checking the
checkpoint first. ``synchronous=NORMAL``: a power loss may take the last
commits, never corrupt the file, and the writer catches up from the oplog.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, final

from rxcs.errors import OplogCorruptedError, RxcsError
from rxcs.oplog.images.store import (
    DROP,
    DROP_DATABASE,
    EXPIRE,
    RENAME,
    ROW,
    SET,
    SETTING,
    UNSET,
    Checkpoint,
    ImageStore,
    Key,
    Settings,
    StoreState,
    Write,
)

__all__ = ["FILE_NAME", "SqliteImageStore"]

FILE_NAME: Final = "images.sqlite"
FORMAT: Final = "rxcs-images"
VERSION: Final = 1
_BUSY_TIMEOUT_MS: Final = 10_000

_SCHEMA: Final = """
CREATE TABLE store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format TEXT NOT NULL,
    version INTEGER NOT NULL,
    oplog_id TEXT NOT NULL,
    applied INTEGER NOT NULL,
    stamp_time INTEGER,
    stamp_inc INTEGER,
    stamp_wall INTEGER,
    every_collection INTEGER NOT NULL
);
CREATE TABLE settings (
    db TEXT NOT NULL, coll TEXT NOT NULL, enabled INTEGER NOT NULL, PRIMARY KEY (db, coll)
) WITHOUT ROWID;
CREATE TABLE documents (
    db TEXT NOT NULL, coll TEXT NOT NULL, key BLOB NOT NULL, op_id INTEGER NOT NULL, PRIMARY KEY (db, coll, key)
) WITHOUT ROWID;
CREATE TABLE images (op_id INTEGER PRIMARY KEY, prev INTEGER, document BLOB, expires INTEGER);
CREATE INDEX images_expiring ON images (expires) WHERE expires IS NOT NULL;
"""

_START_AGAIN: Final = (
    "; the entries are not affected: move the file away and turn images on again (rxcs oplog images PATH --on)"
)
_FORGET: Final = (
    "UPDATE images SET expires = ? WHERE expires IS NULL "
    "AND op_id IN (SELECT op_id FROM documents WHERE db = ? AND coll = ?)"
)


@final
class SqliteImageStore(ImageStore):
    """Document images in ``images.sqlite`` beside a FileOplog's segments.

    Open one with ``open`` (None when the oplog has none) or ``create``.
    ``readonly`` stores only read (a reader of the oplog). One connection,
    used under a lock by every thread of the oplog.
    """

    def __init__(self, path: Path, oplog_id: uuid.UUID, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        try:
            mode = "ro" if readonly else "rw"
            self._db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise RxcsError(f"{path}: cannot open the document images ({exc})") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not readonly:
                self._db.execute("PRAGMA synchronous = NORMAL")
            row = self._db.execute("SELECT format, version, oplog_id FROM store").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OplogCorruptedError(f"not a document image store ({exc}){_START_AGAIN}", path=str(path),
                                      offset=0) from None
        if row is None or row[0] != FORMAT:
            self._db.close()
            raise OplogCorruptedError(f"not a document image store{_START_AGAIN}", path=str(path), offset=0)
        if row[1] != VERSION:
            self._db.close()
            raise RxcsError(f"{path}: document image store version {row[1]}, this rxcs reads {VERSION}")
        if row[2] != str(oplog_id):
            self._db.close()
            raise RxcsError(f"{path}: these document images belong to oplog {row[2]}, not to {oplog_id}")

    @classmethod
    def open(cls, directory: Path, oplog_id: uuid.UUID, *, readonly: bool) -> SqliteImageStore | None:
        """The store of the oplog in ``directory``; None when it keeps no images."""
        path = directory / FILE_NAME
        if not path.exists():
            return None
        return cls(path, oplog_id, readonly=readonly)

    @classmethod
    def create(cls, directory: Path, oplog_id: uuid.UUID, applied: int, *, every_collection: bool) -> SqliteImageStore:
        """The store of the oplog in ``directory``, made at checkpoint ``applied`` unless there is one already.

        Made whole under a temporary name and linked into place, so two
        processes creating it at once agree on one, and nobody opens it half made.
        """
        path = directory / FILE_NAME
        if not path.exists():
            temporary = directory / f".{FILE_NAME}.{os.getpid()}.{threading.get_ident()}"
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            try:
                made = sqlite3.connect(temporary, isolation_level=None)
                try:
                    made.execute("PRAGMA journal_mode = WAL")  # recorded in the file: every connection uses it
                    made.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
                    made.execute(
                        "INSERT INTO store (id, format, version, oplog_id, applied, every_collection) "
                        "VALUES (1, ?, ?, ?, ?, ?)",
                        (FORMAT, VERSION, str(oplog_id), applied, int(every_collection)),
                    )
                finally:
                    made.close()  # checkpoints the WAL into the file and removes it: the file alone is whole
                fd = os.open(temporary, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                with contextlib.suppress(FileExistsError):  # another process made it first: theirs it is
                    os.link(temporary, path)
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except (OSError, sqlite3.Error) as exc:
                raise RxcsError(f"{path}: cannot create the document images ({exc})") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
        store = cls(path, oplog_id, readonly=False)
        if every_collection:
            store.set_every_collection(True)
        return store

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute(begin)
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write_access(self) -> None:
        if self.readonly:
            raise RxcsError(f"{self.path}: opened readonly; the document images are not changed")

    # -- reading ---------------------------------------------------------------------

    def state(self) -> StoreState:
        with self._transaction() as db:
            applied, every = db.execute("SELECT applied, every_collection FROM store").fetchone()
            collections = {(d, c): bool(e) for d, c, e in db.execute("SELECT db, coll, enabled FROM settings")}
        return StoreState(applied, Settings(bool(every), collections))

    def checkpoint(self) -> Checkpoint:
        with self._lock:
            applied, time, inc, wall = self._db.execute(
                "SELECT applied, stamp_time, stamp_inc, stamp_wall FROM store"
            ).fetchone()
        return applied, None if time is None else (time, inc, wall)

    def documents(self, keys: Sequence[Key]) -> tuple[int, dict[Key, tuple[int, bytes]]]:
        found: dict[Key, tuple[int, bytes]] = {}
        with self._transaction() as db:
            (applied,) = db.execute("SELECT applied FROM store").fetchone()
            for key in keys:
                row = db.execute(
                    "SELECT d.op_id, i.document FROM documents d JOIN images i ON i.op_id = d.op_id "
                    "WHERE d.db = ? AND d.coll = ? AND d.key = ?", key,
                ).fetchone()
                if row is not None and row[1] is not None:
                    found[key] = (row[0], row[1])
        return applied, found

    def images(self, op_id: int) -> tuple[int, bytes | None, bytes | None]:
        with self._lock:
            applied, before, after = self._db.execute(
                "SELECT s.applied, p.document, i.document FROM store s "
                "LEFT JOIN images i ON i.op_id = ? LEFT JOIN images p ON p.op_id = i.prev", (op_id,),
            ).fetchone()
        return applied, before, after

    def current(self, key: Key) -> tuple[int, bytes | None]:
        with self._lock:
            applied, document = self._db.execute(
                "SELECT s.applied, i.document FROM store s "
                "LEFT JOIN documents d ON d.db = ? AND d.coll = ? AND d.key = ? "
                "LEFT JOIN images i ON i.op_id = d.op_id", key,
            ).fetchone()
        return applied, document

    def statistics(self) -> dict[str, int]:
        with self._transaction() as db:
            (applied,) = db.execute("SELECT applied FROM store").fetchone()
            (images,) = db.execute("SELECT count(*) FROM images").fetchone()
            (documents,) = db.execute("SELECT count(*) FROM documents").fetchone()
        return {"applied": applied, "images": images, "documents": documents}

    # -- writing ---------------------------------------------------------------------

    def commit(self, expected: int, writes: Sequence[Write], applied: int, stamp: tuple[int, int, int] | None) -> bool:
        self._write_access()
        with self._transaction("BEGIN IMMEDIATE") as db:
            if db.execute("SELECT applied FROM store").fetchone()[0] != expected:
                return False
            for write in writes:
                _apply(db, write)
            time, inc, wall = stamp if stamp is not None else (None, None, None)
            db.execute(
                "UPDATE store SET applied = ?, stamp_time = ?, stamp_inc = ?, stamp_wall = ?",
                (applied, time, inc, wall),
            )
        return True

    def set_every_collection(self, enabled: bool) -> None:
        self._write_access()
        with self._transaction("BEGIN IMMEDIATE") as db:
            db.execute("UPDATE store SET every_collection = ?", (int(enabled),))

    def reset(self, applied: int, *, expected: int) -> bool:
        self._write_access()
        with self._transaction("BEGIN IMMEDIATE") as db:
            if db.execute("SELECT applied FROM store").fetchone()[0] != expected:
                return False
            db.execute("DELETE FROM documents")
            db.execute("DELETE FROM images")
            db.execute(
                "UPDATE store SET applied = ?, stamp_time = NULL, stamp_inc = NULL, stamp_wall = NULL", (applied,)
            )
        return True

    def trim(self, before_op_id: int) -> int:
        self._write_access()
        with self._transaction("BEGIN IMMEDIATE") as db:
            dropped: int = db.execute("DELETE FROM images WHERE expires < ?", (before_op_id,)).rowcount
        return dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _apply(db: sqlite3.Connection, write: Write) -> None:
    """One write, inside the commit's transaction."""
    kind = write[0]
    if kind == ROW:
        _, op_id, prev, document = write
        db.execute(
            "INSERT OR REPLACE INTO images (op_id, prev, document, expires) VALUES (?, ?, ?, ?)",
            (op_id, prev, document, op_id if document is None else None),
        )
    elif kind == EXPIRE:
        db.execute("UPDATE images SET expires = ? WHERE op_id = ? AND expires IS NULL", (write[2], write[1]))
    elif kind == SET:
        db.execute("INSERT OR REPLACE INTO documents (db, coll, key, op_id) VALUES (?, ?, ?, ?)", write[1:])
    elif kind == UNSET:
        db.execute("DELETE FROM documents WHERE db = ? AND coll = ? AND key = ?", write[1:])
    elif kind == SETTING:
        _, name, coll, enabled, at = write
        db.execute("INSERT OR REPLACE INTO settings (db, coll, enabled) VALUES (?, ?, ?)", (name, coll, int(enabled)))
        if not enabled:
            _forget(db, name, coll, at)
    elif kind == DROP:
        _drop(db, write[1], write[2], write[3])
    elif kind == RENAME:
        _, name, coll, to_db, to_coll, at = write
        _drop(db, to_db, to_coll, at)
        for table in ("documents", "settings"):
            db.execute(f"UPDATE {table} SET db = ?, coll = ? WHERE db = ? AND coll = ?",  # noqa: S608 - our tables
                       (to_db, to_coll, name, coll))
    elif kind == DROP_DATABASE:
        _, name, at = write
        db.execute(
            "UPDATE images SET expires = ? WHERE expires IS NULL "
            "AND op_id IN (SELECT op_id FROM documents WHERE db = ?)", (at, name),
        )
        db.execute("DELETE FROM documents WHERE db = ?", (name,))
        db.execute("DELETE FROM settings WHERE db = ?", (name,))
    else:
        raise ValueError(f"unknown image store write {kind!r}")


def _forget(db: sqlite3.Connection, name: str, coll: str, at: int) -> None:
    db.execute(_FORGET, (at, name, coll))
    db.execute("DELETE FROM documents WHERE db = ? AND coll = ?", (name, coll))


def _drop(db: sqlite3.Connection, name: str, coll: str, at: int) -> None:
    _forget(db, name, coll, at)
    db.execute("DELETE FROM settings WHERE db = ? AND coll = ?", (name, coll))

