"""PostgreSQL capture: logical decoding with the built-in ``pgoutput`` plugin, read over streaming replication.

A replication slot keeps the server's changes for the capture; a publication
names the tables. The first run creates the slot with an exported snapshot,
records every existing row as an insert from that snapshot, then streams
from exactly the slot's consistent point. Each source transaction becomes
one ``append_many`` with one ``txnNumber`` (the transaction's xid); the slot
is told a position only after the entries up to it are synced
(``Oplog.sync``), and every entry carries its source position, so a capture
killed at any moment restarts from the oplog's own newest entry: nothing
lost, nothing recorded twice. docs/capture.md tells the whole story.

psycopg2 is an optional extra (``rxcs[postgres]``); only this module imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, final

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from rxcs.capture._mapping import PgType, TableMapping, hashable, pg_parser, truncate_change
from rxcs.capture._pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    ProtocolError,
    Relation,
    Truncate,
    Update,
    format_lsn,
    parse,
    parse_lsn,
)
from rxcs.capture._position import Position, newest_position, own_entries
from rxcs.capture._running import Running
from rxcs.capture._slots import SESSION_OPTIONS, redact_dsn
from rxcs.errors import CaptureError, InvalidChangeError
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.oplog.entry import Change, check_namespace

__all__ = ["CaptureStatistics", "PostgresCapture"]

_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SNAPSHOT_BATCH: Final = 2000
_APPEND_AT: Final = 5000  # changes of finished transactions gathered before an append, when they come that fast
_ADVISORY_SALT: Final = "rxcs capture slot "
_RETRY_FIRST: Final = 0.5
_RETRY_MAX: Final = 5.0

Phase = Literal["starting", "snapshot", "streaming", "stopped", "failed"]


@final
@dataclass(frozen=True, slots=True)
class CaptureStatistics:
    """What a running capture has done, and how far behind the server it is: the hook for metrics.

    ``recorded_lsn`` is the end of the last transaction appended to the oplog,
    ``confirmed_lsn`` what the slot was last told (synced), ``server_lsn`` the
    server's WAL position as last reported to the capture. ``lag_bytes`` is
    ``server_lsn - max(recorded_lsn, what was read)``; ``lag_seconds`` is 0
    when the capture has read everything the server reported, else the age
    of the last transaction it recorded.
    """

    phase: Phase
    snapshot_rows: int
    transactions: int
    changes: int
    recorded_lsn: str | None
    confirmed_lsn: str | None
    server_lsn: str | None
    lag_bytes: int
    lag_seconds: float
    last_commit_time: datetime | None


class _Stopped(Exception):
    """stop() was called while the capture was still taking its snapshot."""


class _Unreachable(CaptureError):
    """The server could not be reached (a CaptureError for callers; retried once the capture has streamed)."""


def _lost_connection(exc: BaseException) -> bool:
    """Whether an error means the connection is gone (retry), not that the server refused something (fail)."""
    if isinstance(exc, (_Unreachable, psycopg2.OperationalError, psycopg2.InterfaceError)):
        return True
    return type(exc) is psycopg2.DatabaseError  # libpq's own: "server closed the connection", "no COPY in progress"


@final
class PostgresCapture(Running):
    """Records the changes a PostgreSQL database commits in an oplog, exactly once, in commit order.

    Build one with ``rxcs.capture.postgres(dsn, oplog, ...)``; ``run()``
    blocks until ``stop()``; ``start()`` (or ``with capture:``) runs it in a
    thread. See ``rxcs.capture.postgres`` for the options.
    """

    def __init__(
        self,
        dsn: str,
        oplog: Oplog,
        *,
        tables: Sequence[str] | None = None,
        slot: str = "rxcs",
        publication: str = "rxcs",
        db: str | None = None,
        namespace: Literal["database", "schema"] = "database",
        snapshot: bool = True,
        name: str | None = None,
        start_timeout: float = 30.0,
        confirm_interval: float = 0.2,
        close_oplog: bool = False,
    ) -> None:
        if not isinstance(oplog, Oplog):
            raise TypeError(f"oplog must be an Oplog, not {type(oplog).__name__}")
        for what, value in (("slot", slot), ("publication", publication)):
            if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
                raise CaptureError(f"{what} {value!r}: use 1-63 lower-case letters, digits and underscores")
        if namespace not in ("database", "schema"):
            raise CaptureError(f"namespace must be 'database' or 'schema', not {namespace!r}")
        if db is not None and namespace == "schema":
            raise CaptureError("db names the namespace's database; with namespace='schema' the schema is the db")
        self._where = redact_dsn(dsn)
        self._dsn = dsn
        self._oplog = oplog
        self._close_oplog = close_oplog
        self._tables = None if tables is None else [_table_name(t) for t in tables]
        self._slot = slot
        self._publication = publication
        self._db = db
        self._namespace = namespace
        self._snapshot = snapshot
        self.name = name or f"postgres:{slot}"
        self._start_timeout = start_timeout
        self._confirm_interval = confirm_interval
        super().__init__()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._lock = threading.Lock()
        # What the capture knows of the source.
        self._captured: dict[int, tuple[str, str, str]] = {}  # relation oid -> (schema, table, replica identity)
        self._keys: dict[int, tuple[str, ...]] = {}
        self._types: dict[int, PgType] = {}
        self._relations: dict[int, TableMapping | None] = {}
        self._catalog: Any = None
        self._replication: Any = None
        self._database = ""
        # Progress, for statistics().
        self._phase: Phase = "starting"
        self._snapshot_rows = 0
        self._transactions = 0
        self._changes = 0
        self._recorded: int | None = None
        self._confirmed: int | None = None
        self._server: int | None = None
        self._read_to = 0
        self._last_commit: datetime | None = None
        self._last_commit_seen: datetime | None = None
        self._streamed = False

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Capture until ``stop()``: connect, check, snapshot or resume, then stream. Raises what stopped it.

        Once it has streamed, a lost connection (a server restart, a network
        cut) is retried with backoff until ``stop()``: each attempt resumes
        from the oplog's own newest entry, as a restarted process would.
        """
        delay = _RETRY_FIRST
        try:
            while True:
                try:
                    self._run()
                    break
                except (psycopg2.DatabaseError, psycopg2.InterfaceError, _Unreachable) as exc:
                    if not self._streamed or self._stopping.is_set() or not _lost_connection(exc):
                        if isinstance(exc, CaptureError):
                            raise
                        raise CaptureError(f"{self._where}: {type(exc).__name__}: {str(exc).strip()}") from exc
                    log.warning("capture lost its connection; reconnecting", capture=self.name,
                                error=str(exc).strip(), retry_in=delay)
                    self._close_connections()
                    self._phase = "starting"
                    if self._stopping.wait(delay):
                        break
                    delay = min(delay * 2, _RETRY_MAX)
        except _Stopped:
            self._phase = "stopped"
            log.info("capture stopped during its snapshot; the next run takes a new one", capture=self.name)
        except BaseException as exc:
            self._phase = "failed"
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                log.error("capture failed", capture=self.name, error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            self._phase = "stopped"
        finally:
            self._close_connections()
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._close_oplog:
                self._oplog.close()

    def statistics(self) -> CaptureStatistics:
        """Where the capture is: a frozen record, cheap to take from any thread (a metrics exporter polls it)."""
        with self._lock:
            read_to = max(self._read_to, self._recorded or 0)
            server = self._server
            lag = max(0, server - read_to) if server is not None else 0
            last = self._last_commit
            seconds = 0.0 if lag == 0 or last is None else max(0.0, (datetime.now(UTC) - last).total_seconds())
            return CaptureStatistics(
                self._phase, self._snapshot_rows, self._transactions, self._changes,
                _lsn_text(self._recorded), _lsn_text(self._confirmed), _lsn_text(server), lag, seconds, last,
            )

    # -- setup -----------------------------------------------------------------------------------

    def _run(self) -> None:
        self._captured.clear()
        self._keys.clear()
        self._relations.clear()
        self._catalog = self._connect()
        self._check_server()
        self._lock_slot()
        self._find_tables()
        position = newest_position(self._oplog, self.name)
        slot = self._slot_row()
        log.info("capture started", capture=self.name, slot=self._slot, publication=self._publication,
                 tables=len(self._captured), resume_lsn=_lsn_text(position.lsn) if position else None)
        if position is not None and not position.snapshot:
            if slot is None:
                raise CaptureError(
                    f"{self._where}: replication slot {self._slot!r} is gone, but the oplog holds changes captured "
                    f"through it up to {format_lsn(position.lsn)}: the changes committed since are lost to it. "
                    "Capture into a new oplog (a new snapshot), or recreate the slot knowingly"
                )
            self._recorded = position.lsn
            self._stream(position)
            return
        if position is not None and not position.last:
            # A snapshot was interrupted: its consistent point died with the process. Take a new one and
            # record what differs from what the oplog already holds.
            self._resnapshot()
            return
        if position is not None or (slot is not None and not self._snapshot):
            self._stream(position)  # the snapshot was done, or none is wanted: the slot has the rest
            return
        self._fresh(slot is not None)

    def _connect(self, **extra: Any) -> Any:
        try:
            options = psycopg2.extensions.parse_dsn(self._dsn)
        except psycopg2.ProgrammingError as exc:
            raise CaptureError(f"{self._where}: not a connection string ({exc})") from None
        options["options"] = (options.get("options", "") + " " + SESSION_OPTIONS).strip()
        options.setdefault("connect_timeout", "10")
        options.setdefault("application_name", f"rxcs capture {self._slot}")
        try:
            connection = psycopg2.connect(**options, **extra)
        except psycopg2.OperationalError as exc:
            raise _Unreachable(f"cannot connect to {self._where}: {str(exc).strip()}") from None
        if "connection_factory" not in extra:
            connection.autocommit = True
        return connection

    def _query(self, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        with self._catalog.cursor() as cursor:
            cursor.execute(sql, parameters)
            rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description is not None else []
            return rows

    def _check_server(self) -> None:
        ((wal_level, database, may_replicate, version),) = self._query(
            "SELECT current_setting('wal_level'), current_database(), "
            "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
            "current_setting('server_version_num')::int"
        )
        if wal_level != "logical":
            raise CaptureError(
                f"{self._where}: wal_level is {wal_level!r}; set wal_level = logical in postgresql.conf and restart"
            )
        if not may_replicate:
            raise CaptureError(
                f"{self._where}: the role may not replicate; ALTER ROLE ... WITH REPLICATION (see docs/capture.md)"
            )
        if version < 100000:
            raise CaptureError(f"{self._where}: PostgreSQL {version} has no pgoutput; 10 or later is needed")
        self._database = database

    def _lock_slot(self) -> None:
        """Take the slot's advisory lock for the capture's life: one capture per slot, on any host."""
        ((key,),) = self._query("SELECT hashtextextended(%s, 0)", _ADVISORY_SALT + self._slot)
        deadline = time.monotonic() + self._start_timeout
        waited = False
        while True:
            ((taken,),) = self._query("SELECT pg_try_advisory_lock(%s)", key)
            if taken:
                return
            holders = [pid for (pid,) in self._query(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = (%s >> 32) & 4294967295 AND objid::bigint = %s & 4294967295", key, key,
            )]
            if time.monotonic() >= deadline or self._stopping.is_set():
                raise CaptureError(
                    f"{self._where}: another capture is running on slot {self._slot!r} "
                    f"(server process {', '.join(map(str, holders)) or 'unknown'}); one capture per slot"
                )
            if not waited:
                log.info("capture waiting for the slot's lock", capture=self.name, holders=holders)
                waited = True
            time.sleep(0.2)

    def _find_tables(self) -> None:
        exists = self._query("SELECT 1 FROM pg_publication WHERE pubname = %s", self._publication)
        if not exists:
            self._create_publication()
        rows = self._query(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident FROM pg_publication_tables p "
            "JOIN pg_namespace n ON n.nspname = p.schemaname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
            "WHERE p.pubname = %s ORDER BY n.nspname, c.relname", self._publication,
        )
        published = {(schema, table): (oid, identity) for oid, schema, table, identity in rows}
        wanted = list(published) if self._tables is None else self._tables
        missing = [f"{schema}.{table}" for schema, table in wanted if (schema, table) not in published]
        if missing:
            raise CaptureError(
                f"{self._where}: publication {self._publication!r} does not publish {', '.join(missing)}; "
                f"ALTER PUBLICATION {self._publication} ADD TABLE ..."
            )
        if not wanted:
            raise CaptureError(f"{self._where}: publication {self._publication!r} publishes no table")
        for schema, table in wanted:
            oid, identity = published[(schema, table)]
            self._capture_table(oid, schema, table, identity)

    def _capture_table(self, oid: int, schema: str, table: str, identity: str) -> None:
        self._keys[oid] = self._key_columns(oid, f"{schema}.{table}", identity)
        self._check_columns(oid, f"{schema}.{table}")
        self._captured[oid] = (schema, table, identity)

    def _create_publication(self) -> None:
        if self._tables is None:
            target = "FOR ALL TABLES"
        else:
            names = ", ".join(f"{_quote(schema)}.{_quote(table)}" for schema, table in self._tables)
            target = f"FOR TABLE {names}"
        try:
            self._query(f"CREATE PUBLICATION {self._publication} {target}")
        except psycopg2.Error as exc:
            raise CaptureError(
                f"{self._where}: cannot create publication {self._publication!r} {target} "
                f"({str(exc).strip()}); create it yourself (docs/capture.md)"
            ) from None
        log.info("capture created its publication", capture=self.name, publication=self._publication, tables=target)

    def _key_columns(self, oid: int, table: str, identity: str) -> tuple[str, ...]:
        rows = self._query(
            "SELECT i.indisprimary, i.indisreplident, ARRAY(SELECT a.attname FROM unnest(i.indkey) "
            "WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "ORDER BY k.n) FROM pg_index i WHERE i.indrelid = %s AND (i.indisprimary OR i.indisreplident)", oid,
        )
        primary = next((tuple(columns) for is_primary, _, columns in rows if is_primary), None)
        replica = next((tuple(columns) for _, is_identity, columns in rows if is_identity), None)
        if identity == "i" and replica is not None:
            return replica  # the server sends these as the old key
        if identity == "n":
            raise CaptureError(f"{table}: REPLICA IDENTITY NOTHING sends no key; use DEFAULT (a primary key) or FULL")
        if primary is None:
            raise CaptureError(
                f"{table}: has no primary key, so its rows have no documentKey; add one, or leave the table out"
            )
        return primary

    def _check_columns(self, oid: int, table: str) -> None:
        rows = self._query(
            "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = '' ORDER BY attnum", oid,
        )
        if any(name == "_id" for name, _ in rows) and self._keys[oid] != ("_id",):
            raise CaptureError(f"{table}._id: a column named _id that is not the whole primary key would be hidden")
        for name, type_oid in rows:
            self._parser(type_oid, f"{table}.{name}")

    def _parser(self, type_oid: int, column: str) -> Any:
        self._load_types([type_oid])
        try:
            return pg_parser(type_oid, self._types)
        except LookupError as exc:
            raise CaptureError(
                f"{column}: PostgreSQL type {exc.args[0]} cannot be mapped to a document value; leave the table out "
                "or change the column's type (docs/capture.md lists the types)"
            ) from None

    def _load_types(self, oids: list[int]) -> None:
        """Read ``pg_type`` rows for these types and those they are built on (elements, domain bases)."""
        pending = [oid for oid in oids if oid not in self._types]
        while pending:
            rows = self._query(
                "SELECT oid, typname, typtype, typcategory, typelem, typbasetype, typdelim "
                "FROM pg_type WHERE oid = ANY(%s)", pending,
            )
            for row in rows:
                self._types[row[0]] = PgType(*row)
            pending = [
                oid for row in rows for oid in (row[4], row[5]) if oid and oid not in self._types
            ]

    def _mapping(self, oid: int, columns: Sequence[tuple[str, int]]) -> TableMapping:
        schema, table, _ = self._captured[oid]
        name = f"{schema}.{table}"
        names = tuple(column for column, _ in columns)
        keys = self._keys[oid]
        missing = [key for key in keys if key not in names]
        if missing:
            raise CaptureError(f"{name}: the key columns {missing} are not among the columns sent")
        if self._namespace == "schema":
            db, coll = schema, table
        else:
            db = self._db or self._database
            coll = table if schema == "public" else f"{schema}.{table}"
        try:
            check_namespace(db, coll)
        except InvalidChangeError as exc:
            raise CaptureError(f"{name}: cannot be the namespace {db}.{coll} ({exc}); choose another db") from None
        converters = tuple(self._parser(type_oid, f"{name}.{column}") for column, type_oid in columns)
        return TableMapping(name, db, coll, names, tuple(names.index(key) for key in keys), converters)

    def _slot_row(self) -> tuple[Any, ...] | None:
        rows = self._query(
            "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            self._slot,
        )
        if not rows:
            return None
        plugin, database, _ = rows[0]
        if plugin != "pgoutput" or database != self._database:
            raise CaptureError(
                f"{self._where}: slot {self._slot!r} exists but decodes {database} with {plugin}, "
                f"not {self._database} with pgoutput; choose another slot name"
            )
        return rows[0]

    # -- snapshot ----------------------------------------------------------------------------------

    def _fresh(self, slot_exists: bool) -> None:
        """First run (or one whose slot holds nothing recorded): a new slot, its snapshot, then the stream."""
        if slot_exists:
            self._query("SELECT pg_drop_replication_slot(%s)", self._slot)
        replication = self._connect(connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            consistent, snapshot_name = self._create_slot(replication)
            if self._snapshot:
                self._take_snapshot(consistent, snapshot_name, None)
        finally:
            replication.close()
        self._stream(Position(consistent, -1, snapshot=True, last=True))

    def _resnapshot(self) -> None:
        """An interrupted snapshot: a new slot and snapshot; rows already recorded come again only if they changed."""
        log.warning("capture snapshot interrupted; taking a new one", capture=self.name)
        recorded: dict[tuple[str, str, Any], Any] = {}
        for entry in own_entries(self._oplog, self.name):
            where = (entry.db, entry.coll or "", hashable((entry.document_key or {}).get("_id")))
            if entry.op == "delete":
                recorded.pop(where, None)
            else:
                recorded[where] = hashable(entry.full_document)
        if self._slot_row() is not None:
            self._query("SELECT pg_drop_replication_slot(%s)", self._slot)
        replication = self._connect(connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            consistent, snapshot_name = self._create_slot(replication)
            self._take_snapshot(consistent, snapshot_name, recorded)
        finally:
            replication.close()
        self._stream(Position(consistent, -1, snapshot=True, last=True))

    def _create_slot(self, replication: Any) -> tuple[int, str]:
        export = "EXPORT_SNAPSHOT" if self._snapshot else "NOEXPORT_SNAPSHOT"
        with replication.cursor() as cursor:
            cursor.execute(f"CREATE_REPLICATION_SLOT {self._slot} LOGICAL pgoutput {export}")
            _, consistent, snapshot_name, _ = cursor.fetchone()
        log.info("capture created its slot", capture=self.name, slot=self._slot, consistent_point=consistent)
        return parse_lsn(consistent), snapshot_name

    def _take_snapshot(
        self, consistent: int, snapshot_name: str, recorded: dict[tuple[str, str, Any], Any] | None
    ) -> None:
        """Record every row as of the exported snapshot; with ``recorded``, only what differs from it."""
        self._phase = "snapshot"
        started = time.monotonic()
        connection = self._connect()  # autocommit: the transaction is begun by hand, to import the snapshot first
        try:
            with connection.cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
            changes = self._snapshot_changes(connection, recorded)
            pending: list[Change] = []
            seq = 0
            for change in changes:
                if self._stopping.is_set():
                    raise _Stopped
                if len(pending) >= _SNAPSHOT_BATCH:
                    self._append_snapshot(pending, consistent, seq, last=False)
                    seq += len(pending)
                    pending = []
                pending.append(change)
            if pending:
                self._append_snapshot(pending, consistent, seq, last=True)
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK")
        finally:
            connection.close()
        log.info("capture snapshot done", capture=self.name, rows=self._snapshot_rows,
                 seconds=round(time.monotonic() - started, 3))

    def _append_snapshot(self, changes: list[Change], consistent: int, first: int, *, last: bool) -> None:
        tagged = []
        for offset, change in enumerate(changes):
            source: dict[str, Any] = {"capture": self.name, "snapshot": consistent, "seq": first + offset}
            if last and offset == len(changes) - 1:
                source["last"] = True
            tagged.append(change.with_source(source))
        self._oplog.append_many(tagged)
        self._snapshot_rows += len(changes)

    def _snapshot_changes(
        self, connection: Any, recorded: dict[tuple[str, str, Any], Any] | None
    ) -> Iterator[Change]:
        for oid, (schema, table, _) in self._captured.items():
            columns = self._query(
                "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", oid,
            )
            mapping = self._mapping(oid, columns)
            # Every column as the server's text form, exactly as pgoutput sends it: one parser for both.
            raw = psycopg2.extensions.new_type(tuple({t for _, t in columns}), "RXCS_TEXT", lambda text, _: text)
            names = ", ".join(_quote(column) for column, _ in columns)
            with connection.cursor() as cursor:
                psycopg2.extensions.register_type(raw, cursor)
                cursor.execute(
                    f"DECLARE rxcs_snapshot NO SCROLL CURSOR FOR SELECT {names} "
                    f"FROM ONLY {_quote(schema)}.{_quote(table)}"
                )
                for row in _fetched(cursor, "rxcs_snapshot"):
                    document = mapping.document(row)
                    if recorded is None:
                        yield Change.insert(mapping.db, mapping.coll, document)
                        continue
                    where = (mapping.db, mapping.coll, hashable(document["_id"]))
                    before = recorded.pop(where, None)
                    if before is None:
                        yield Change.insert(mapping.db, mapping.coll, document)
                    elif before != hashable(document):
                        yield Change.replace(mapping.db, mapping.coll, {"_id": document["_id"]}, document)
                cursor.execute("CLOSE rxcs_snapshot")
            if recorded is not None:
                gone = [where for where in recorded if where[:2] == (mapping.db, mapping.coll)]
                for where in gone:
                    del recorded[where]
                    yield mapping.delete(_unhashable(where[2]), None, None)

    # -- streaming ------------------------------------------------------------------------------------

    def _stream(self, position: Position | None) -> None:
        replication = self._open_stream()
        self._replication = replication
        cursor = replication.cursor()
        self._start_replication(cursor)
        self._phase = "streaming"
        self._streamed = True
        if position is not None and not position.snapshot:
            self._recorded = position.lsn
        log.info("capture streaming", capture=self.name, slot=self._slot, after=_lsn_text(self._recorded))
        skip_to = (position.lsn, position.seq) if position is not None and not position.snapshot else (0, -1)
        connection_fd = replication.fileno()
        syncer = _Syncer(self._oplog, self._wake, self._confirm_interval)
        try:
            self._read_stream(cursor, connection_fd, syncer, skip_to)
        finally:
            syncer.close()
        log.info("capture stopped", capture=self.name, recorded_lsn=_lsn_text(self._recorded))

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"!")

    def _read_stream(self, cursor: Any, connection_fd: int, syncer: _Syncer, skip_to: tuple[int, int]) -> None:
        """Read, map and append transactions until stopped; tell the slot what the syncer has made durable."""
        transaction: list[Change] | None = None
        begin: Begin | None = None
        finished: list[Change] = []
        finished_end = 0
        while not self._stopping.is_set():
            message = cursor.read_message()
            if message is not None:
                decoded = parse(message.payload)
                if isinstance(decoded, Begin):
                    begin, transaction = decoded, []
                elif isinstance(decoded, Commit):
                    if transaction is None or begin is None:
                        raise ProtocolError("commit without begin")
                    changes = self._tag(transaction, begin, decoded, skip_to)
                    finished.extend(changes)
                    finished_end = decoded.end_lsn
                    self._last_commit_seen = decoded.commit_time
                    transaction = begin = None
                    if changes:
                        self._transactions += 1
                    if len(finished) < _APPEND_AT:
                        continue
                elif isinstance(decoded, Relation):
                    self._relation(decoded)
                    continue
                elif transaction is not None and begin is not None:
                    transaction.extend(self._changes_of(decoded, begin.xid))
                    continue
                else:
                    continue
            # Nothing more to read right now, or enough gathered: append what is finished.
            if finished_end:
                if finished:
                    self._oplog.append_many(finished)
                    with self._lock:
                        self._changes += len(finished)
                        self._last_commit = self._last_commit_seen
                with self._lock:
                    self._recorded = max(self._recorded or 0, finished_end)
                finished, finished_end = [], 0
                syncer.want(self._recorded or 0)
            idle = message is None and transaction is None
            server = cursor.wal_end or None
            with self._lock:
                if server is not None:
                    self._server = max(self._server or 0, server)
                if idle:
                    self._read_to = max(self._read_to, server or 0)
            if idle and server:  # nothing open, nothing pending: the server has nothing before this for us
                syncer.want(max(self._recorded or 0, server))
            durable = syncer.synced()  # the slot moves only past entries on disk
            if durable > (self._confirmed or 0):
                cursor.send_feedback(write_lsn=durable, flush_lsn=durable, apply_lsn=durable, force=True)
                with self._lock:
                    self._confirmed = durable
            if message is None:
                ready, _, _ = select.select([connection_fd, self._wake_read], [], [], 1.0)
                if self._wake_read in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 64)
        if finished:
            self._oplog.append_many(finished)
            self._recorded = max(self._recorded or 0, finished_end)
        if self._recorded:
            self._oplog.sync()
            with contextlib.suppress(psycopg2.Error):
                cursor.send_feedback(
                    write_lsn=self._recorded, flush_lsn=self._recorded, apply_lsn=self._recorded, force=True
                )

    def _open_stream(self) -> Any:
        return self._connect(connection_factory=psycopg2.extras.LogicalReplicationConnection)

    def _start_replication(self, cursor: Any) -> None:
        """START_REPLICATION, waiting while a killed capture's server process still holds the slot."""
        deadline = time.monotonic() + self._start_timeout
        waited = False
        while True:
            try:
                cursor.start_replication(
                    slot_name=self._slot, decode=False, status_interval=10,
                    options={"proto_version": "1", "publication_names": self._publication},
                )
                return
            except psycopg2.errors.ObjectInUse as exc:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    raise CaptureError(f"{self._where}: slot {self._slot!r} is in use: {str(exc).strip()}") from None
                if not waited:
                    log.info("capture waiting for its slot to be released", capture=self.name)
                    waited = True
                time.sleep(0.2)
            except psycopg2.errors.UndefinedObject as exc:
                raise CaptureError(f"{self._where}: {str(exc).strip()}") from None

    def _tag(self, changes: list[Change], begin: Begin, commit: Commit, skip_to: tuple[int, int]) -> list[Change]:
        """The transaction's changes with their source positions, less those the oplog holds already."""
        end = commit.end_lsn
        if end < skip_to[0]:
            return []
        first = skip_to[1] + 1 if end == skip_to[0] else 0
        tagged = []
        last = len(changes) - 1
        for seq in range(first, len(changes)):
            source: dict[str, Any] = {"capture": self.name, "lsn": end, "seq": seq}
            if seq == last:
                source["committed"] = commit.commit_time
            tagged.append(changes[seq].with_source(source))
        return tagged

    def _relation(self, relation: Relation) -> None:
        if relation.oid not in self._captured and self._tables is None:
            # Capturing the whole publication: a table added to it since the start is captured from now on.
            self._capture_table(relation.oid, relation.schema, relation.name, relation.replica_identity)
            log.info("capture added a table the publication gained", capture=self.name,
                     table=f"{relation.schema}.{relation.name}")
        if relation.oid not in self._captured:
            self._relations[relation.oid] = None  # a table of the publication left out with tables=
            return
        columns = [(column.name, column.type_oid) for column in relation.columns]
        self._relations[relation.oid] = self._mapping(relation.oid, columns)
        schema, table, _ = self._captured[relation.oid]
        self._captured[relation.oid] = (schema, table, relation.replica_identity)

    def _changes_of(self, message: Any, xid: int) -> list[Change]:
        if isinstance(message, Truncate):
            changes = []
            for oid in message.relations:
                mapping = self._relations.get(oid)
                if mapping is not None:
                    changes.append(truncate_change(
                        mapping.db, mapping.coll, cascade=message.cascade, restart_identity=message.restart_identity,
                        txn=xid,
                    ))
            return changes
        if not isinstance(message, (Insert, Update, Delete)):
            return []
        mapping = self._relations.get(message.relation, None)
        if mapping is None:
            if message.relation in self._captured:
                raise ProtocolError(f"a change of relation {message.relation} before its relation message")
            return []
        if isinstance(message, Insert):
            return [mapping.insert(message.new, xid)]
        if isinstance(message, Delete):
            full = not message.old_is_key
            before = mapping.document(message.old) if full else None
            return [mapping.delete(mapping.key_of(message.old), before, xid)]
        return self._update(mapping, message, xid)

    def _update(self, mapping: TableMapping, message: Update, xid: int) -> list[Change]:
        new, old = list(message.new), message.old
        full_old = old is not None and not message.old_is_key
        if full_old:
            assert old is not None
            new = [o if n is UNCHANGED else n for n, o in zip(new, old, strict=True)]
        unchanged = [index for index, value in enumerate(new) if value is UNCHANGED]
        key = mapping.key_of(new)
        old_key = mapping.key_of(old) if old is not None else key
        if old_key != key or (old is not None and message.old_is_key):
            # The key changed: MongoDB's _id never does, so the old document goes and the new one comes.
            if unchanged:
                raise CaptureError(
                    f"{mapping.name}: an UPDATE changed the key and left TOASTed columns "
                    f"{[mapping.columns[i] for i in unchanged]} unsent; set REPLICA IDENTITY FULL on the table"
                )
            before = mapping.document(old) if full_old and old is not None else None
            return [mapping.delete(old_key, before, xid), mapping.insert(new, xid)]
        if full_old:
            assert old is not None
            changed = [index for index, (n, o) in enumerate(zip(new, old, strict=True)) if n != o]
            after = mapping.document(new)
            return [Change.update(
                mapping.db, mapping.coll, {"_id": key},
                updated_fields={mapping.columns[i]: after[mapping.columns[i]] for i in changed},
                full_document=after, full_document_before_change=mapping.document(old), txn=xid,
            )]
        if unchanged:
            # Without the old row, unchanged TOASTed values are not sent: record what was, as an update.
            known = [index for index in range(len(new)) if new[index] is not UNCHANGED and index not in mapping.key]
            values = mapping.values(new, known)
            fields = {mapping.columns[index]: value for index, value in zip(known, values, strict=True)}
            return [Change.update(mapping.db, mapping.coll, {"_id": key}, updated_fields=fields, txn=xid)]
        return [Change.replace(mapping.db, mapping.coll, {"_id": key}, mapping.document(new), txn=xid)]

    def _close_connections(self) -> None:
        for connection in (self._replication, self._catalog):
            if connection is not None:
                with contextlib.suppress(psycopg2.Error):
                    connection.close()
        self._replication = self._catalog = None


@final
class _Syncer:
    """Syncs the oplog off the reading thread, at most every ``interval`` s, and says which LSN is durable.

    The reader asks for an LSN once the entries up to it are appended
    (``want``) and tells the slot only what ``synced()`` returns: an fsync
    never stalls the stream, and the slot never passes what is on disk.
    """

    def __init__(self, oplog: Oplog, poke: Any, interval: float) -> None:
        self._oplog = oplog
        self._poke = poke
        self._interval = interval
        self._changed = threading.Condition()
        self._wanted = 0
        self._synced = 0
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rxcs-capture-sync", daemon=True)
        self._thread.start()

    def want(self, lsn: int) -> None:
        with self._changed:
            if lsn > self._wanted:
                self._wanted = lsn
                self._changed.notify()

    def synced(self) -> int:
        """The highest LSN whose entries are synced; raises what a sync failed with."""
        with self._changed:
            if self._error is not None:
                raise self._error
            return self._synced

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._wanted <= self._synced and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                target = self._wanted
            try:
                self._oplog.sync()
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
                with self._changed:
                    self._error = exc
                self._poke()
                return
            with self._changed:
                self._synced = max(self._synced, target)
                self._poke()
                self._changed.wait(self._interval)  # one sync per interval at most: the group flusher does the rest


# -- helpers ----------------------------------------------------------------------------------------------------


def _table_name(text: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text:
        raise CaptureError(f"tables: {text!r} is not a table name (schema.table or table)")
    schema, _, table = text.rpartition(".")
    return (schema or "public", table)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _lsn_text(lsn: int | None) -> str | None:
    return None if lsn is None else format_lsn(lsn)


def _fetched(cursor: Any, name: str) -> Iterator[tuple[Any, ...]]:
    while True:
        cursor.execute(f"FETCH {_SNAPSHOT_BATCH} FROM {name}")
        rows = cursor.fetchall()
        if not rows:
            return
        yield from rows


def _unhashable(value: Any) -> Any:
    """``hashable``'s inverse for keys: a tuple of pairs back to a document."""
    if isinstance(value, tuple):
        return {key: _unhashable(item) for key, item in value}
    return value

