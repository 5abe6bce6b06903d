"""Document images: what keeping them costs appends, and what serving them costs a replay.

Run: python -m benchmarks.bench_images [--entries 50000] [--repeat 3] [--no-redis]

One workload, on each backend (MemoryOplog; FileOplog with group commit;
RedisOplog on a redis-server this script starts, when there is one): 5,000
documents inserted, then updates of them (two fields set, an array element
set, now and then a field removed), appended one by one and with
``append_many`` of 1,000. Each figure is measured with document images off
and on, in turns, the median of ``--repeat`` runs kept; the ratio printed is
on/off (1.00: no cost). The rate "with images" counts until the images have
caught up with the last entry (``sync()``), not only until the appends return.

Then a replay of the FileOplog's entries through ``watch()`` from BEGINNING:
``full_document="updateLookup"`` and ``full_document_before_change=
"whenAvailable"`` from the kept images, against the same replay with the
default options (no images read).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

import rxcs
from benchmarks.common import RedisServer, document, find_redis_server

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

DOCUMENTS = 5_000
BATCH = 1_000
_counter = itertools.count()


def changes(count: int) -> list[rxcs.Change]:
    """The workload: the documents' inserts, then updates of them, ``count`` changes in all."""
    inserts = [rxcs.Change.insert("shop", "users", document(i)) for i in range(min(count, DOCUMENTS))]
    updates = []
    for n in range(count - len(inserts)):
        key = (n * 7919) % DOCUMENTS
        updates.append(rxcs.Change.update(
            "shop", "users", {"_id": key},
            updated_fields={"total": n * 0.5, "status": ("paid", "shipped")[n % 2], "tags.0": f"t{n % 10}"},
            removed_fields=["city"] if n % 10 == 0 else None,
        ))
    return inserts + updates


def append_rate(
    open_oplog: Callable[[bool], rxcs.Oplog], work: list[rxcs.Change], batch: int
) -> Callable[[bool], float]:
    def measure(images: bool) -> float:
        with open_oplog(images) as oplog:
            began = time.perf_counter()
            if batch == 1:
                for change in work:
                    oplog.append(change)
            else:
                for start in range(0, len(work), batch):
                    oplog.append_many(work[start:start + batch])
            oplog.sync()
            rate = len(work) / (time.perf_counter() - began)
            if images:
                kept = oplog.document_images
                assert kept is not None
                assert kept.statistics()["applied"] == oplog.last_op_id
            return rate

    return measure


def replay_rate(path: Path, count: int, **options: Any) -> float:
    with rxcs.open_oplog(path, readonly=True) as oplog:
        stream = rxcs.watch(oplog, "shop", "users", start_at_operation_time=rxcs.BEGINNING, **options)
        began = time.perf_counter()
        with stream.iterate() as events:
            for _ in range(count):
                events.next(timeout=30)
        return count / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_images", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args(argv)
    work = changes(args.entries)
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-images-") as temporary:
        directory = Path(temporary)
        redis = None
        binary = None if args.no_redis else find_redis_server()
        if binary is not None:
            redis = RedisServer(binary, directory / "redis")
            redis.start()
        try:
            backends: list[tuple[str, Callable[[bool], rxcs.Oplog]]] = [
                ("MemoryOplog", lambda images: rxcs.open_oplog(":memory:", document_images=images)),
                ("FileOplog, durability=group",
                 lambda images: rxcs.open_oplog(directory / f"file-{next(_counter)}", document_images=images)),
            ]
            if redis is not None:
                url = redis.url
                backends.append(("RedisOplog", lambda images: rxcs.open_oplog(
                    f"{url}?stream=images-{next(_counter)}", document_images=images)))
            print(f"document images: {len(work):,} changes ({DOCUMENTS:,} inserts, then updates), "
                  f"median of {args.repeat}; ratio = images on / off")
            print(f"{'backend':<30} {'appended':<16} {'off /s':>10} {'on /s':>10} {'ratio':>6}")
            for name, open_oplog in backends:
                for label, batch in (("one by one", 1), (f"append_many({BATCH})", BATCH)):
                    # A round trip each on Redis: a smaller sample.
                    sample = work[:10_000] if name == "RedisOplog" and batch == 1 else work
                    measure = append_rate(open_oplog, sample, batch)
                    off: list[float] = []
                    on: list[float] = []
                    for _ in range(args.repeat):
                        off.append(measure(False))
                        on.append(measure(True))
                    rate_off, rate_on = statistics.median(off), statistics.median(on)
                    print(f"{name:<30} {label:<16} {rate_off:>10,.0f} {rate_on:>10,.0f} {rate_on / rate_off:>6.2f}",
                          flush=True)
            path = directory / "replayed"
            with rxcs.open_oplog(path, document_images=True) as oplog:
                for start in range(0, len(work), BATCH):
                    oplog.append_many(work[start:start + BATCH])
            plain = [replay_rate(path, len(work)) for _ in range(args.repeat)]
            looked = [
                replay_rate(path, len(work), full_document="updateLookup", full_document_before_change="whenAvailable")
                for _ in range(args.repeat)
            ]
            rate_plain, rate_looked = statistics.median(plain), statistics.median(looked)
            print(f"replay through watch(): default {rate_plain:,.0f} events/s, updateLookup + pre-images from the "
                  f"kept images {rate_looked:,.0f} events/s, ratio {rate_looked / rate_plain:.2f}")
        finally:
            if redis is not None:
                redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
