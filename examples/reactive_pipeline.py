"""A reactive pipeline: change events chained through reactivex operators.

Events are grouped by namespace and batched per namespace every 100 ms
(``buffer_with_time``), the way a service would flush per-collection
counters or search-index updates.

Run: python examples/reactive_pipeline.py
"""

from __future__ import annotations

import threading
from typing import Any

from reactivex import operators as ops

import rxcs


def main() -> dict[str, int]:
    totals: dict[str, int] = {}
    done = threading.Event()
    lock = threading.Lock()

    def add_batch(batch: tuple[str, list[Any]]) -> None:
        namespace, events = batch
        with lock:
            totals[namespace] = totals.get(namespace, 0) + len(events)
            if sum(totals.values()) >= 30:
                done.set()

    with rxcs.open_oplog(":memory:") as oplog:
        pipeline = rxcs.watch(oplog, "shop").pipe(
            ops.group_by(lambda event: str(event.ns)),
            ops.flat_map(
                lambda group: group.pipe(
                    ops.buffer_with_time(0.1),
                    ops.filter(bool),
                    ops.map(lambda events, key=group.key: (key, events)),
                )
            ),
        )
        subscription = pipeline.subscribe(add_batch)
        for i in range(10):
            oplog.insert("shop", "users", {"_id": i})
            oplog.insert("shop", "orders", {"_id": i, "user": i})
            oplog.update("shop", "orders", i, updated_fields={"status": "paid"})
        done.wait(10)
        subscription.dispose()
    print(f"events per namespace: {totals}")
    return totals


if __name__ == "__main__":
    main()
