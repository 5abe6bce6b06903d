"""Capture: the changes an existing database commits, recorded in an oplog, exactly once, in commit order.

``rxcs.capture.postgres(dsn, oplog, ...)`` reads PostgreSQL's logical
decoding (``pgoutput``) over a replication slot; ``rxcs.capture.sqlite(path,
oplog, ...)`` moves the rows that triggers write to an outbox table inside
the application's own transactions. Both map a table to a namespace, its
primary key to the ``documentKey`` and a row to a document, append each
source transaction as one ``append_many``, and keep their source position
in the entries they append, so a capture killed at any moment restarts
without losing or repeating a change. docs/capture.md has the details.

A capture is a producer: it uses ``rxcs.oplog`` and nothing above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rxcs.errors import CaptureError
from rxcs.oplog import Oplog, open_oplog

if TYPE_CHECKING:
    from rxcs.capture._postgres import PostgresCapture
    from rxcs.capture._slots import SlotStatus
    from rxcs.capture._sqlite import SqliteCapture

__all__ = ["drop_postgres_slot", "postgres", "postgres_slots", "sqlite"]


def _oplog(oplog: Oplog | str | PathLike[str]) -> tuple[Oplog, bool]:
    """The oplog to write, and whether the capture opened it (and so closes it)."""
    if isinstance(oplog, Oplog):
        return oplog, False
    return open_oplog(oplog if isinstance(oplog, str) else Path(oplog)), True


def postgres(
    dsn: str,
    oplog: Oplog | str | PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    slot: str = "rxcs",
    publication: str = "rxcs",
    db: str | None = None,
    namespace: Literal["database", "schema"] = "database",
    snapshot: bool = True,
    name: str | None = None,
    start_timeout: float = 30.0,
) -> PostgresCapture:
    """A capture of a PostgreSQL database into ``oplog`` (an Oplog, or a location ``open_oplog`` takes).

    - ``tables``: ``"schema.table"`` or ``"table"`` (schema ``public``);
      default: every table of the publication. The publication is created
      when missing: ``FOR TABLE`` these, or ``FOR ALL TABLES`` (superuser).
    - ``slot``, ``publication``: their names (``rxcs``). One capture per slot.
    - ``namespace="database"`` (default): ``db`` is the database's name (or
      ``db=``), ``coll`` the table, ``schema.table`` outside ``public``;
      ``"schema"``: ``db`` is the schema.
    - ``snapshot``: record the existing rows first (default), from the
      snapshot the slot is created with, then stream from that exact point.
    - ``name``: the capture's name in the entries' ``source`` (default
      ``postgres:<slot>``); a restart finds its position by it.
    - ``start_timeout``: how long to wait for a capture killed a moment ago
      to let go of the slot.

    The capture is not running yet: ``run()`` blocks until ``stop()``;
    ``start()`` or ``with`` runs it in a thread. Needs ``rxcs[postgres]``.

    Usage (with a server whose ``wal_level`` is ``logical``)::

        with rxcs.capture.postgres("host=db dbname=shop user=rxcs", "data/oplog", tables=["orders"]):
            for event in rxcs.watch(rxcs.open_oplog("data/oplog", readonly=True), "shop", "orders").iterate():
                ...
    """
    module = _postgres_module()
    target, owned = _oplog(oplog)
    capture: PostgresCapture = module.PostgresCapture(
        dsn, target, tables=tables, slot=slot, publication=publication, db=db, namespace=namespace,
        snapshot=snapshot, name=name, start_timeout=start_timeout, close_oplog=owned,
    )
    return capture


def sqlite(
    path: str | PathLike[str],
    oplog: Oplog | str | PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    db: str | None = None,
    snapshot: bool = True,
    name: str | None = None,
    poll_interval: float = 0.05,
) -> SqliteCapture:
    """A capture of a SQLite database file into ``oplog`` through a trigger outbox.

    - ``tables``: default every table with a primary key (others are an error
      when named). Triggers are installed on them, in one transaction with
      the snapshot of their existing rows (``snapshot=False`` skips it).
    - ``db``: the namespace's database (default: the file's name without
      its suffix); the collection is the table.
    - ``name``: the capture's name in the entries' ``source`` (default
      ``sqlite:<db>``).
    - ``poll_interval``: how often the outbox is checked when idle (it is
      also checked at once when the file changes).

    ``run()`` blocks until ``stop()``; ``start()`` or ``with`` runs it in a thread.
    """
    from rxcs.capture._sqlite import SqliteCapture

    target, owned = _oplog(oplog)
    return SqliteCapture(
        path, target, tables=tables, db=db, snapshot=snapshot, name=name, poll_interval=poll_interval,
        close_oplog=owned,
    )


def postgres_slots(dsn: str, slot: str | None = None) -> list[SlotStatus]:
    """The server's logical replication slots (or the one named): active or left behind, WAL held, lag.

    A slot no capture reads keeps WAL on the server until it is dropped:
    ``drop_postgres_slot`` drops it. ``rxcs capture status DSN`` prints these.
    """
    slots: list[SlotStatus] = _postgres_module("_slots").slot_status(dsn, slot)
    return slots


def drop_postgres_slot(dsn: str, slot: str) -> None:
    """Drop a replication slot left behind by a capture that will not run again."""
    _postgres_module("_slots").drop_slot(dsn, slot)


def _postgres_module(name: str = "_postgres") -> Any:
    """A module of the PostgreSQL capture (they import psycopg2, an optional extra)."""
    try:
        return importlib.import_module(f"rxcs.capture.{name}")
    except ImportError as exc:
        raise CaptureError(f"PostgreSQL capture needs psycopg2 ({exc}); install rxcs[postgres]") from None


def __getattr__(name: str) -> Any:  # the classes, for type annotations, without importing psycopg2 eagerly
    if name in ("PostgresCapture", "CaptureStatistics"):
        return getattr(_postgres_module(), name)
    if name == "SlotStatus":
        return _postgres_module("_slots").SlotStatus
    if name in ("SqliteCapture", "SqliteCaptureStatistics"):
        return getattr(importlib.import_module("rxcs.capture._sqlite"), name)
    raise AttributeError(name)


del annotations  # the __future__ import binds this name; it is not part of the package
