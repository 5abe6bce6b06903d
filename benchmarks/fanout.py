"""Fan-out: 1 to 1,000 concurrent watchers of one FileOplog, each with its own filter.

For each count: the memory of the idle watchers (tracemalloc, per watcher;
the original design quotes about 10 KiB per stream), the threads they use,
and the aggregate rate of events delivered while a writer in the same
process appends. Watcher ``i`` watches collection ``c{i % 10}`` with
``$match: {fullDocument.n: {$gte: i % 100}}``, so every watcher has its
own filter and its own share of the events.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import rxcs
from benchmarks.common import Bench, Report, Row, document

LEVELS = (1, 10, 100, 1000)
COLLECTIONS = 10


def doc(j: int) -> dict[str, Any]:
    return {**document(j), "n": (j // COLLECTIONS) % 100}


def events_for(watchers: int, quick: bool) -> int:
    """Events appended for a level: fewer for more watchers, so every level takes about as long."""
    budget = 200_000 if quick else 2_000_000  # entries x watchers
    return max(1000, min(50_000, budget // watchers))


def level(bench: Bench, watchers: int) -> tuple[float, int, float, float, int]:
    """Memory per idle watcher (bytes), threads the watchers added, events/s delivered, entries/s, events."""
    total = events_for(watchers, bench.quick)
    per_collection: list[Counter[int]] = [Counter() for _ in range(COLLECTIONS)]
    for j in range(total):
        per_collection[j % COLLECTIONS][doc(j)["n"]] += 1
    expected = [sum(c for n, c in per_collection[i % COLLECTIONS].items() if n >= i % 100) for i in range(watchers)]
    remaining = [sum(1 for e in expected if e)]
    done = threading.Event()
    lock = threading.Lock()

    def counter(goal: int) -> Any:
        seen = [0]

        def on_event(_: Any) -> None:
            seen[0] += 1
            if seen[0] == goal:
                with lock:
                    remaining[0] -= 1
                    if not remaining[0]:
                        done.set()

        return on_event

    # durability="none": no group-commit flusher thread to blur the count of the watchers' threads
    with rxcs.open_oplog(bench.directory / f"fanout-{watchers}", durability="none") as oplog:
        threads_before = threading.active_count()
        # A first watcher pays for what all share (the tailer thread and its cursor): not counted per watcher.
        warm = rxcs.watch(oplog, "shop", "none").subscribe(lambda _: None)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        subscriptions = [
            rxcs.watch(oplog, "shop", f"c{i % COLLECTIONS}", [{"$match": {"fullDocument.n": {"$gte": i % 100}}}])
            .subscribe(counter(expected[i]))
            for i in range(watchers)
        ]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        memory = sum(stat.size_diff for stat in after.compare_to(before, "filename")) / watchers
        threads = threading.active_count() - threads_before

        began = time.perf_counter()
        for start in range(0, total, 1000):
            oplog.append_many([rxcs.Change.insert("shop", f"c{j % COLLECTIONS}", doc(j))
                               for j in range(start, min(total, start + 1000))])
        if not done.wait(600):
            raise TimeoutError(f"{watchers} watchers: {remaining[0]} never got all their events")
        elapsed = time.perf_counter() - began
        threads = max(threads, threading.active_count() - threads_before)
        for subscription in [warm, *subscriptions]:
            subscription.dispose()
    delivered = sum(expected)
    return memory, threads, delivered / elapsed, total / elapsed, delivered


def run(bench: Bench, report: Report) -> None:
    section = report.section("Fan-out: concurrent watchers of one FileOplog, each with its own $match")
    for watchers in LEVELS:
        memory, threads, rate, entries, delivered = level(bench, watchers)
        who = f"{watchers:,} watcher{'s' if watchers > 1 else ''}"
        section.rows += [
            Row(f"{who}: events delivered, all watchers together", rate, "events/s",
                f"{delivered:,} events; {entries:,.0f} entries/s appended and tailed"),
            Row(f"{who}: threads used (the first watcher's included)", threads, "threads"),
            Row(f"{who}: memory per idle watcher (tracemalloc)", memory / 1024, "KiB",
                "original design: about 10 KiB"),
        ]
        report.figures[f"fanout.{watchers}.threads"] = threads
        report.figures[f"fanout.{watchers}.memory_kib"] = memory / 1024
        report.figures[f"fanout.{watchers}.rate"] = rate
