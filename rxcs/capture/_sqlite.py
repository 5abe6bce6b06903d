"""SQLite capture: triggers record each change in an outbox table inside the application's own transaction.

The capture installs, per table, AFTER INSERT / UPDATE / DELETE triggers that
write the row (old and new, as JSON) to ``_rxcs_outbox``; an application's
transaction commits its changes and their outbox rows together, or neither.
SQLite has one writer at a time, so outbox ids rise in commit order. The
capture moves the rows to the oplog in id order, each batch one
``append_many`` whose entries carry their outbox id, syncs the oplog, and
only then deletes the rows: a capture killed between the two finds the
newest id it recorded in the oplog and deletes, not repeats, those rows.

Values keep SQLite's storage classes: INTEGER is int, REAL float (written
with 20 significant digits, so every double comes back exactly), TEXT str,
BLOB bytes, NULL None. The declared column type does not change them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

from rxcs.capture._mapping import TableMapping, sqlite_value
from rxcs.capture._position import newest_position
from rxcs.capture._running import Running
from rxcs.errors import CaptureError, InvalidChangeError
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.oplog.entry import Change, check_namespace

__all__ = ["OUTBOX", "SqliteCapture", "SqliteCaptureStatistics"]

OUTBOX: Final = "_rxcs_outbox"
_TRIGGER_PREFIX: Final = "_rxcs_"
_BATCH: Final = 5000
_BUSY_TIMEOUT_MS: Final = 5000


@final
@dataclass(frozen=True, slots=True)
class SqliteCaptureStatistics:
    """What a running SQLite capture has done: rows moved, the last outbox id recorded, rows waiting."""

    running: bool
    changes: int
    recorded_id: int
    pending: int


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value(expression: str) -> str:
    """SQL that turns a column into a JSON value: reals and blobs tagged, so they come back exactly."""
    return (
        f"CASE typeof({expression}) WHEN 'real' THEN json_object('r', printf('%!.20e', {expression})) "
        f"WHEN 'blob' THEN json_object('b', hex({expression})) ELSE {expression} END"
    )


def _row_json(columns: Sequence[str], prefix: str) -> str:
    pairs = ", ".join(f"{_literal(column)}, {_value(prefix + _quote(column))}" for column in columns)
    return f"json_object({pairs})"


@final
class SqliteCapture(Running):
    """Moves the changes recorded by the outbox triggers of a SQLite file to an oplog. See ``rxcs.capture.sqlite``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        oplog: Oplog,
        *,
        tables: Sequence[str] | None = None,
        db: str | None = None,
        snapshot: bool = True,
        name: str | None = None,
        poll_interval: float = 0.05,
        close_oplog: bool = False,
    ) -> None:
        if not isinstance(oplog, Oplog):
            raise TypeError(f"oplog must be an Oplog, not {type(oplog).__name__}")
        self._path = Path(path)
        if not self._path.is_file():
            raise CaptureError(f"{self._path}: no SQLite database there")
        self._oplog = oplog
        self._close_oplog = close_oplog
        self._wanted = None if tables is None else list(tables)
        self._db = db or self._path.stem
        try:
            check_namespace(self._db, "x")
        except InvalidChangeError as exc:
            raise CaptureError(f"{self._path}: {self._db!r} cannot be the namespace's db ({exc}); pass db=") from None
        self._snapshot = snapshot
        self.name = name or f"sqlite:{self._db}"
        if not poll_interval > 0:
            raise CaptureError(f"poll_interval must be positive, not {poll_interval!r}")
        self._poll = poll_interval
        super().__init__()
        self._mappings: dict[str, TableMapping] = {}
        self._connection: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._schema_version = -1
        self._changes = 0
        self._recorded = 0
        self._running = False
        self._skip = (0, -1)
        self._deleted = -1  # outbox rows up to this id are deleted; the first batch deletes what the oplog holds

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Install or check the triggers, then move outbox rows to the oplog until ``stop()``."""
        try:
            self._take_lock()
            self._connection = self._connect()
            self._install()
            position = newest_position(self._oplog, self.name)
            # The newest row recorded may have been recorded in part (a key change is two changes): its rest
            # is appended again from its outbox row, skipping the changes the oplog holds.
            self._recorded, self._skip = (position.lsn - 1, (position.lsn, position.seq)) if position else (0, (0, -1))
            self._running = True
            log.info("capture started", capture=self.name, path=str(self._path), tables=sorted(self._mappings),
                     resume_id=self._recorded)
            self._move()
        except BaseException as exc:
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                log.error("capture failed", capture=self.name, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._running = False
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if self._close_oplog:
                self._oplog.close()
            log.info("capture stopped", capture=self.name, recorded_id=self._recorded)

    def statistics(self) -> SqliteCaptureStatistics:
        """Rows moved, the last outbox id recorded, and how many rows wait in the outbox (read now)."""
        pending = 0
        with contextlib.suppress(sqlite3.Error), contextlib.closing(self._connect()) as connection:
            pending = connection.execute(f"SELECT count(*) FROM {OUTBOX} WHERE id > ?", (self._recorded,)).fetchone()[0]
        return SqliteCaptureStatistics(self._running, self._changes, self._recorded, pending)

    # -- setup -----------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock = self._path.with_name(self._path.name + "-rxcs.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CaptureError(f"{self._path}: another capture is running on it (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise CaptureError(f"{self._path}: cannot open it ({exc})") from None
        return connection

    def _install(self) -> None:
        """Create the outbox and each table's triggers (in one transaction with their snapshot), or check them."""
        connection = self._connection
        assert connection is not None
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {OUTBOX} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT)"
            )
            installed = dict(connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_rxcs\\_%' ESCAPE '\\'"
            ))
            for table in self._tables(connection):
                self._install_table(connection, table, installed)
            self._schema_version = connection.execute("PRAGMA schema_version").fetchone()[0]
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _tables(self, connection: sqlite3.Connection) -> list[str]:
        names = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "AND name NOT LIKE '\\_rxcs\\_%' ESCAPE '\\' ORDER BY name"
        )]
        if self._wanted is None:
            return names
        missing = [table for table in self._wanted if table not in names]
        if missing:
            raise CaptureError(f"{self._path}: no table {', '.join(missing)}")
        return list(self._wanted)

    def _install_table(self, connection: sqlite3.Connection, table: str, installed: dict[str, str]) -> None:
        info = connection.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
        columns = tuple(row[1] for row in info)
        key = tuple(index for _, index in sorted((row[5], position) for position, row in enumerate(info) if row[5]))
        if not key:
            if self._wanted is not None:
                raise CaptureError(f"{self._path}: table {table} has no primary key, so its rows have no documentKey")
            log.warning("capture leaves out a table without a primary key", capture=self.name, table=table)
            return
        if "_id" in columns and tuple(columns[i] for i in key) != ("_id",):
            raise CaptureError(f"{table}._id: a column named _id that is not the whole primary key would be hidden")
        try:
            check_namespace(self._db, table)
        except InvalidChangeError as exc:
            raise CaptureError(f"{self._path}: table {table} cannot be a collection ({exc})") from None
        self._mappings[table] = TableMapping(
            table, self._db, table, columns, key, tuple(sqlite_value for _ in columns)
        )
        name = _TRIGGER_PREFIX + table
        target, tbl = _quote(table), _literal(table)
        wanted = {
            f"{name}_insert": f"CREATE TRIGGER {_quote(name + '_insert')} AFTER INSERT ON {target} BEGIN "
            f"INSERT INTO {OUTBOX} (tbl, op, new) VALUES ({tbl}, 'i', {_row_json(columns, 'NEW.')}); END",
            f"{name}_update": f"CREATE TRIGGER {_quote(name + '_update')} AFTER UPDATE ON {target} BEGIN "
            f"INSERT INTO {OUTBOX} (tbl, op, old, new) VALUES ({tbl}, 'u', {_row_json(columns, 'OLD.')}, "
            f"{_row_json(columns, 'NEW.')}); END",
            f"{name}_delete": f"CREATE TRIGGER {_quote(name + '_delete')} AFTER DELETE ON {target} BEGIN "
            f"INSERT INTO {OUTBOX} (tbl, op, old) VALUES ({tbl}, 'd', {_row_json(columns, 'OLD.')}); END",
        }
        fresh = not any(trigger in installed for trigger in wanted)
        for trigger, sql in wanted.items():
            if installed.get(trigger) == sql:
                continue
            if trigger in installed:
                connection.execute(f"DROP TRIGGER {_quote(trigger)}")
                log.info("capture updated a trigger for a changed table", capture=self.name, table=table)
            connection.execute(sql)
        if fresh and self._snapshot:
            count = connection.execute(
                f"INSERT INTO {OUTBOX} (tbl, op, new) SELECT {tbl}, 'i', {_row_json(columns, '')} "
                f"FROM {target}"
            ).rowcount
            log.info("capture snapshot of a table", capture=self.name, table=table, rows=count)

    # -- moving ------------------------------------------------------------------------------------------

    def _move(self) -> None:
        """Move outbox rows until stopped; a database busy with the application's writes is waited for, not an error."""
        idle = 0
        while not self._stopping.is_set():
            try:
                moved = self._move_batch()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise CaptureError(f"{self._path}: {exc}") from None
                moved = False  # the application holds the write lock: the rows wait, nothing is lost
            if moved:
                idle = 0
                continue
            idle = min(idle + 1, 6)
            self._stopping.wait(self._poll * min(1.0, 0.1 * 2 ** idle))  # soon again after a busy moment

    def _move_batch(self) -> bool:
        """Delete what the oplog holds, then append the next batch of outbox rows; False when there was none."""
        connection = self._connection
        assert connection is not None
        if self._deleted < self._recorded:
            connection.execute(f"DELETE FROM {OUTBOX} WHERE id <= ?", (self._recorded,))
            self._deleted = self._recorded
        version = connection.execute("PRAGMA schema_version").fetchone()[0]
        if version != self._schema_version:
            self._install()  # a table changed: its triggers are rewritten for its columns now
        rows = connection.execute(
            f"SELECT id, tbl, op, old, new FROM {OUTBOX} WHERE id > ? ORDER BY id LIMIT {_BATCH}",
            (self._recorded,),
        ).fetchall()
        if not rows:
            return False
        changes = []
        skip_id, skip_seq = self._skip
        for outbox_id, table, op, old, new in rows:
            for seq, change in enumerate(self._changes_of(table, op, old, new)):
                if outbox_id == skip_id and seq <= skip_seq:
                    continue
                changes.append(change.with_source({"capture": self.name, "outbox": outbox_id, "seq": seq}))
        if changes:
            self._oplog.append_many(changes)
            self._oplog.sync()  # the rows are deleted only once their entries are on disk
        self._recorded = rows[-1][0]
        self._changes += len(changes)
        return True

    def _changes_of(self, table: str, op: str, old: str | None, new: str | None) -> list[Change]:
        mapping = self._mappings.get(table)
        if mapping is None:
            raise CaptureError(f"{self._path}: the outbox holds a change of {table}, which is not captured")
        try:
            before = _row(mapping, old)
            after = _row(mapping, new)
        except ValueError as exc:
            raise CaptureError(f"{self._path}: an outbox row of {table} does not parse ({exc})") from None
        if op == "i" and after is not None:
            return [mapping.insert(after, None)]
        if op == "d" and before is not None:
            return [mapping.delete(mapping.key_of(before), mapping.document(before), None)]
        if op == "u" and before is not None and after is not None:
            key, old_key = mapping.key_of(after), mapping.key_of(before)
            document, previous = mapping.document(after), mapping.document(before)
            if key != old_key:
                return [mapping.delete(old_key, previous, None), mapping.insert(after, None)]
            changed = {column: document[column] for column in mapping.columns if document[column] != previous[column]
                       or type(document[column]) is not type(previous[column])}
            return [Change.update(
                mapping.db, mapping.coll, {"_id": key}, updated_fields=changed, full_document=document,
                full_document_before_change=previous,
            )]
        raise CaptureError(f"{self._path}: an outbox row of {table} has operation {op!r} without its row")


def _row(mapping: TableMapping, text: str | None) -> list[Any] | None:
    """An outbox row's JSON as the table's column values, in column order (a column it lacks is NULL)."""
    if text is None:
        return None
    values = json.loads(text)
    return [values.get(column) for column in mapping.columns]

