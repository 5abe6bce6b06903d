"""Write a few changes to a file oplog and read them back.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import rxcs


def main() -> list[rxcs.OplogEntry]:
    with tempfile.TemporaryDirectory() as tmp:
        with rxcs.open_oplog(Path(tmp) / "oplog") as oplog:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            oplog.update("shop", "users", 1, updated_fields={"name": "Ada Lovelace"})
            oplog.delete("shop", "users", 1)
        with rxcs.open_oplog(Path(tmp) / "oplog") as oplog:
            entries = oplog.read(after=0, limit=100)
    for entry in entries:
        print(entry.op_id, entry.op, entry.ns, entry.document_key)
    return entries


if __name__ == "__main__":
    main()
