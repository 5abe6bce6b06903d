"""Audit log: every change to a database, appended to a JSON-lines file, resumable.

Each line is the MongoDB-shaped event. The resume token is saved next to the
log after each event, so a restarted auditor continues exactly where it
stopped: nothing missed, nothing written twice.

Run: python examples/audit_log.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import rxcs
from rxcs import extjson


def audit(oplog: rxcs.Oplog, log_path: Path, token_path: Path, *, count: int) -> int:
    """Append up to ``count`` events of database "shop" to ``log_path``; return how many."""
    token = token_path.read_text().strip() if token_path.exists() else None
    options = {"resume_after": token} if token else {"start_at_operation_time": rxcs.BEGINNING}
    written = 0
    with rxcs.watch(oplog, "shop", **options).iterate() as stream, log_path.open("a") as log:
        while written < count:
            event = stream.try_next()
            if event is None:
                break  # caught up
            log.write(extjson.dumps(event.to_document()) + "\n")
            log.flush()
            token_path.write_text(str(stream.resume_token))
            written += 1
    return written


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        with rxcs.open_oplog(Path(tmp) / "oplog") as oplog:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            oplog.update("shop", "users", 1, updated_fields={"name": "Ada Lovelace"})
            oplog.insert("shop", "orders", {"_id": 7, "user": 1, "total": 12.5})
            log_path, token_path = Path(tmp) / "audit.jsonl", Path(tmp) / "audit.token"
            first = audit(oplog, log_path, token_path, count=2)  # the auditor stops after two
            oplog.delete("shop", "users", 1)
            second = audit(oplog, log_path, token_path, count=100)  # ... and resumes
        lines = log_path.read_text().splitlines()
    kinds = [extjson.loads(line)["operationType"] for line in lines]
    print(f"audited {first} + {second} events: {', '.join(kinds)}")
    return kinds


if __name__ == "__main__":
    main()
