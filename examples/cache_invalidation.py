"""Cache invalidation: a read-through cache that drops entries the moment they change.

The cache subscribes to the collection's change stream; updates, replaces
and deletes evict the document's key, so the next read goes to the store.

Run: python examples/cache_invalidation.py
"""

from __future__ import annotations

import threading
from typing import Any

import rxcs


class Store:
    """A stand-in for a database: the source of truth, which writes to the oplog."""

    def __init__(self, oplog: rxcs.Oplog) -> None:
        self.oplog = oplog
        self.documents: dict[Any, dict[str, Any]] = {}
        self.reads = 0

    def get(self, key: Any) -> dict[str, Any] | None:
        self.reads += 1
        return self.documents.get(key)

    def put(self, document: dict[str, Any]) -> None:
        key = document["_id"]
        if key in self.documents:
            self.oplog.replace("shop", "users", key, document)
        else:
            self.oplog.insert("shop", "users", document)
        self.documents[key] = document


class Cache:
    """Caches reads; a change event for a key evicts it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[Any, dict[str, Any] | None] = {}
        self._lock = threading.Lock()
        self.evicted = threading.Event()
        changes = rxcs.watch(store.oplog, "shop", "users", [{"$match": {"operationType": {"$ne": "insert"}}}])
        self._subscription = changes.subscribe(self._on_change)

    def _on_change(self, event: rxcs.ChangeEvent) -> None:
        with self._lock:
            self._entries.pop(event.document_key["_id"] if event.document_key else None, None)
        self.evicted.set()

    def get(self, key: Any) -> dict[str, Any] | None:
        with self._lock:
            if key in self._entries:
                return self._entries[key]
        value = self._store.get(key)
        with self._lock:
            self._entries[key] = value
        return value

    def close(self) -> None:
        self._subscription.dispose()


def main() -> tuple[str, int]:
    with rxcs.open_oplog(":memory:") as oplog:
        store = Store(oplog)
        cache = Cache(store)
        store.put({"_id": 1, "name": "Ada"})
        cache.get(1)
        cache.get(1)  # served from the cache
        store.put({"_id": 1, "name": "Ada Lovelace"})
        cache.evicted.wait(5)
        fresh = cache.get(1)  # evicted, so read again
        cache.close()
    assert fresh is not None
    print(f"after the update the cache serves {fresh['name']!r}; store reads: {store.reads}")
    return fresh["name"], store.reads


if __name__ == "__main__":
    main()
