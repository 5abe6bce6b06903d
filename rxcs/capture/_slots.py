"""PostgreSQL replication slots as the server sees them, and the connection details every capture session shares.

psycopg2 is an optional extra (``rxcs[postgres]``); only the capture modules import this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

import psycopg2
import psycopg2.extensions

from rxcs.errors import CaptureError

__all__ = ["SESSION_OPTIONS", "SlotStatus", "drop_slot", "redact_dsn", "slot_status"]

# Every session the capture opens speaks these, so values arrive in one text form.
SESSION_OPTIONS: Final = (
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex"
)


@final
@dataclass(frozen=True, slots=True)
class SlotStatus:
    """A logical replication slot as the server sees it, with the WAL it holds and how far behind it is."""

    slot: str
    plugin: str
    database: str
    active: bool
    active_pid: int | None
    confirmed_lsn: str | None
    restart_lsn: str | None
    server_lsn: str
    retained_bytes: int
    lag_bytes: int
    lag_seconds: float | None
    wal_status: str | None


def slot_status(dsn: str, slot: str | None = None) -> list[SlotStatus]:
    """The logical slots of the server (or the one named): active or left behind, WAL held, lag.

    ``lag_seconds`` is the server's own ``flush_lag`` for an active slot
    (0 when caught up), None for a slot nobody reads.
    """
    where = redact_dsn(dsn)
    try:
        connection = psycopg2.connect(dsn, options=SESSION_OPTIONS)
    except psycopg2.OperationalError as exc:
        raise CaptureError(f"cannot connect to {where}: {str(exc).strip()}") from None
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.slot_name, s.plugin, s.database, s.active, s.active_pid, s.confirmed_flush_lsn::text, "
                "s.restart_lsn::text, pg_current_wal_lsn()::text, "
                "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint, "
                "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint, "
                "extract(epoch FROM r.flush_lag)::float8, s.wal_status, r.pid IS NOT NULL "
                "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.slot_type = 'logical' AND (%s::text IS NULL OR s.slot_name = %s) ORDER BY s.slot_name",
                (slot, slot),
            )
            rows = cursor.fetchall()
    finally:
        connection.close()
    return [
        SlotStatus(
            name, plugin, database, active, pid, confirmed, restart, current, max(0, int(retained)), max(0, int(lag)),
            (flush_lag or 0.0) if active and has_sender else None, wal_status,
        )
        for (name, plugin, database, active, pid, confirmed, restart, current, retained, lag, flush_lag, wal_status,
             has_sender) in rows
    ]


def drop_slot(dsn: str, slot: str) -> None:
    """Drop a replication slot left behind (it holds WAL on the server until it is dropped)."""
    where = redact_dsn(dsn)
    try:
        connection = psycopg2.connect(dsn)
    except psycopg2.OperationalError as exc:
        raise CaptureError(f"cannot connect to {where}: {str(exc).strip()}") from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    except psycopg2.Error as exc:
        raise CaptureError(f"{where}: cannot drop slot {slot!r}: {str(exc).strip()}") from None
    finally:
        connection.close()


def redact_dsn(dsn: str) -> str:
    """A connection string for messages: its parts without the password."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<a connection string that does not parse>"
    parts.pop("password", None)
    first = [key for key in ("host", "port", "dbname", "user") if key in parts]
    ordered = first + sorted(key for key in parts if key not in first)
    return " ".join(f"{key}={parts[key]}" for key in ordered) or "<defaults>"
