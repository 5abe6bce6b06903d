"""Where a capture's recorded changes came from, kept in the oplog entries themselves.

Every change a capture appends carries a ``source`` document naming the
capture and its position in the source: a PostgreSQL capture the end LSN of
the change's transaction and the change's place in it (``seq``), or the
snapshot it belongs to; a SQLite capture the outbox row's id. Appended in the
same ``append_many`` as the changes, the position is durable exactly when
they are, so a capture that restarts reads the newest entry it recorded and
knows what it has: no checkpoint written beside the log can disagree with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, final

from rxcs.oplog.base import Oplog
from rxcs.oplog.entry import OplogEntry

__all__ = ["Position", "newest_position", "own_entries"]

_WINDOW: Final = 512


@final
@dataclass(frozen=True, slots=True)
class Position:
    """The source position of a recorded change.

    ``lsn`` is a PostgreSQL transaction's end LSN, a snapshot's consistent
    point (``snapshot`` true), or a SQLite outbox row's id; ``seq`` the
    change's place in its transaction, snapshot or outbox row; ``last`` marks a snapshot's final
    row; ``committed`` the source transaction's commit time, where known.
    """

    lsn: int
    seq: int
    snapshot: bool = False
    last: bool = False
    committed: datetime | None = None
    op_id: int = 0

    @classmethod
    def of(cls, entry: OplogEntry) -> Position:
        source: Any = entry.source
        snapshot = "snapshot" in source
        committed = source.get("committed")
        return cls(
            int(source["snapshot"] if snapshot else source["lsn"] if "lsn" in source else source["outbox"]),
            int(source["seq"]), snapshot,
            bool(source.get("last", False)), committed if isinstance(committed, datetime) else None, entry.op_id,
        )


def _is_own(entry: OplogEntry, name: str) -> bool:
    source = entry.source
    return source is not None and source.get("capture") == name


def newest_position(oplog: Oplog, name: str) -> Position | None:
    """The position of the newest entry capture ``name`` recorded, reading the oplog backwards; None if none."""
    first, high = oplog.first_op_id, oplog.last_op_id
    while high >= first:
        low = max(first, high - _WINDOW + 1)
        entries = oplog.read(low - 1, high - low + 1)
        for entry in reversed(entries):
            if _is_own(entry, name):
                return Position.of(entry)
        high = low - 1
    return None


def own_entries(oplog: Oplog, name: str, after: int = 0) -> Iterator[OplogEntry]:
    """The entries capture ``name`` recorded after op_id ``after``, oldest first."""
    with oplog.cursor(max(after, oplog.first_op_id - 1)) as cursor:
        while batch := cursor.read(1000):
            for entry in batch:
                if _is_own(entry, name):
                    yield entry
