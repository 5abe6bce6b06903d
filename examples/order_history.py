"""Order history: what each change did to a document, from an oplog that keeps document images.

The producer records only what changed (MongoDB's updatedFields,
removedFields, truncatedArrays), as a database's change feed does. The oplog
keeps document images, so the consumer gets, with no help from the producer,
the whole order before and after each change (``full_document_before_change``)
and the order as it is now (``updateLookup``), and can write a readable history.

Run: python examples/order_history.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import rxcs


def produce(oplog: rxcs.Oplog) -> None:
    oplog.insert("shop", "orders", {"_id": 7, "status": "new", "items": ["tea", "cups", "pot"], "note": "gift"})
    oplog.update("shop", "orders", 7, updated_fields={"status": "paid"}, removed_fields=["note"])
    oplog.update("shop", "orders", 7, updated_fields={"items.1": "mugs"},
                 truncated_arrays=[{"field": "items", "newSize": 2}])
    oplog.update("shop", "orders", 7, updated_fields={"status": "shipped"})


def history(oplog: rxcs.Oplog) -> list[str]:
    """One line per update: the order before it, after it, and now."""
    lines: list[str] = []
    stream = rxcs.watch(
        oplog, "shop", "orders", [{"$match": {"operationType": "update"}}],
        start_at_operation_time=rxcs.BEGINNING, full_document="updateLookup",
        full_document_before_change="required",
    )
    with stream.iterate() as events:
        for _ in range(3):
            event = events.next(timeout=10)
            before: dict[str, Any] = event.full_document_before_change or {}
            now: dict[str, Any] = event.full_document or {}
            lines.append(f"{before['status']} {before['items']} -> changed {event.update_description.updated_fields}"
                         f" (now {now['status']} {now['items']})")
    return lines


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as directory:
        # document_images=True: the oplog keeps the images, for every process that opens it from now on.
        with rxcs.open_oplog(Path(directory) / "oplog", document_images=True) as oplog:
            produce(oplog)
        with rxcs.open_oplog(Path(directory) / "oplog", readonly=True) as oplog:
            return history(oplog)


if __name__ == "__main__":
    for line in main():
        print(line)
