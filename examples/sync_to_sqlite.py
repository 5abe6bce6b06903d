"""Real-time sync to a second store, exactly once, surviving a crash.

A worker process mirrors the collection shop.users into SQLite. It commits
each event's effect and the event's resume token in one transaction, so
when it is killed (even with SIGKILL) and restarted, it resumes from the
last committed token: every change applied once, none lost. Documents hold
datetimes, so the store keeps them as Extended JSON (rxcs.extjson), which
gives them back as datetimes; plain json.dumps would refuse them.

Run the whole story (a producer, a worker killed mid-stream, a restart):
    python examples/sync_to_sqlite.py
Run only a worker:
    python examples/sync_to_sqlite.py worker OPLOG_DIR DB_FILE --until OP_ID
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rxcs
from rxcs import extjson

START = datetime(2026, 1, 1, tzinfo=UTC)


def open_store(path: Path) -> sqlite3.Connection:
    store = sqlite3.connect(path, isolation_level=None)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    store.execute("CREATE TABLE IF NOT EXISTS sync_state (one INTEGER PRIMARY KEY CHECK (one = 1), token TEXT)")
    return store


def apply(store: sqlite3.Connection, event: rxcs.ChangeEvent) -> None:
    key = event.document_key["_id"] if event.document_key else None
    if event.operation_type in ("insert", "replace") and event.full_document is not None:
        store.execute("INSERT OR REPLACE INTO users VALUES (?, ?)", (key, extjson.dumps(event.full_document)))
    elif event.operation_type == "update" and event.update_description is not None:
        row = store.execute("SELECT body FROM users WHERE id = ?", (key,)).fetchone()
        document = extjson.loads(row[0]) if row else {"_id": key}
        document.update(event.update_description.updated_fields)
        for path in event.update_description.removed_fields:
            document.pop(path, None)
        store.execute("INSERT OR REPLACE INTO users VALUES (?, ?)", (key, extjson.dumps(document)))
    elif event.operation_type == "delete":
        store.execute("DELETE FROM users WHERE id = ?", (key,))


def worker(oplog_dir: Path, db_file: Path, until: int) -> int:
    """Mirror shop.users until the event of op_id ``until`` is applied; return events applied."""
    store = open_store(db_file)
    row = store.execute("SELECT token FROM sync_state").fetchone()
    options: dict[str, Any] = {"resume_after": row[0]} if row else {"start_at_operation_time": rxcs.BEGINNING}
    applied = 0
    with rxcs.open_oplog(oplog_dir, readonly=True) as oplog:
        if row and rxcs.ResumeToken.parse(row[0]).op_id >= until:
            return 0
        with rxcs.watch(oplog, "shop", "users", **options).iterate() as stream:
            for event in stream:
                store.execute("BEGIN")
                apply(store, event)
                store.execute("INSERT OR REPLACE INTO sync_state VALUES (1, ?)", (str(event.id),))
                store.execute("COMMIT")
                applied += 1
                if event.op_id >= until:
                    break
    return applied


def produce(oplog: rxcs.Oplog, n: int) -> dict[int, dict[str, Any]]:
    """Write n changes to shop.users; return the state they lead to."""
    state: dict[int, dict[str, Any]] = {}
    for i in range(n):
        key = i % 50
        if key not in state:
            document = {"_id": key, "name": f"user{key}", "visits": 0, "joined": START + timedelta(minutes=i)}
            oplog.insert("shop", "users", document)
            state[key] = document
        elif i % 7 == 0:
            oplog.delete("shop", "users", key)
            del state[key]
        else:
            changed = {"visits": state[key]["visits"] + 1, "last_visit": START + timedelta(minutes=i)}
            oplog.update("shop", "users", key, updated_fields=changed)
            state[key] = {**state[key], **changed}
    return state


def mirrored(db_file: Path) -> dict[int, dict[str, Any]]:
    store = open_store(db_file)
    return {row[0]: extjson.loads(row[1]) for row in store.execute("SELECT id, body FROM users")}


def main() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        oplog_dir, db_file = Path(tmp) / "oplog", Path(tmp) / "mirror.db"
        with rxcs.open_oplog(oplog_dir) as oplog:
            expected = produce(oplog, 3000)
            last = oplog.last_op_id
        command = [sys.executable, __file__, "worker", str(oplog_dir), str(db_file), "--until", str(last)]
        first = subprocess.Popen(command)
        time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)  # a crash in the middle of the sync
        first.wait()
        subprocess.run(command, check=True, timeout=120)
        same = mirrored(db_file) == {key: dict(doc) for key, doc in expected.items()}
    print(f"mirror matches the source after a SIGKILL and a restart: {same}")
    return same


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        parser = argparse.ArgumentParser()
        parser.add_argument("role")
        parser.add_argument("oplog_dir", type=Path)
        parser.add_argument("db_file", type=Path)
        parser.add_argument("--until", type=int, required=True)
        args = parser.parse_args()
        worker(args.oplog_dir, args.db_file, args.until)
    else:
        sys.exit(0 if main() else 1)
