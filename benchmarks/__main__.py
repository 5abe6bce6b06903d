"""rxcs benchmarks: every figure measured in one run, next to its reference, as a ratio.

Run: python -m benchmarks [--events N] [--repeat K] [--write-docs]

Scenarios:
- catch-up: replay N realistic change events (8-field documents) from a
  FileOplog, against raw msgpack.Unpacker decoding of the same documents;
- live latency: an event appended every millisecond, writer thread or writer
  process, to a blocking consumer, against a bare threading.Condition hand-off;
- append rate: FileOplog per durability mode, single and append_many, against
  SQLite in WAL mode inserting the same payloads;
- fan-out: memory per idle watcher (tracemalloc) and threads for 1,000 watchers.

With --write-docs, the results replace the "Results" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import structlog

import rxcs

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

Row = tuple[str, float, str, str]  # name, value, unit, note


def document(i: int) -> dict[str, Any]:
    return {
        "_id": i, "name": f"user{i}", "email": f"user{i}@example.org", "age": 18 + i % 60,
        "status": ("new", "paid", "shipped")[i % 3], "total": round(i * 1.37 % 500, 2),
        "tags": ["a", "b"][: i % 3], "city": ("Paris", "Lima", "Oslo")[i % 3],
    }


def best(repeat: int, run: Callable[[], float]) -> float:
    """The median of ``repeat`` runs of a rate measurement."""
    return statistics.median(run() for _ in range(repeat))


def catch_up(directory: Path, n: int, repeat: int) -> list[Row]:
    path = directory / "catchup"
    with rxcs.open_oplog(path, durability="none") as oplog:
        for start in range(0, n, 5000):
            chunk = range(start, min(n, start + 5000))
            oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in chunk])
    raw = b"".join(msgpack.packb(document(i)) for i in range(n))

    def unpacker() -> float:
        began = time.perf_counter()
        count = sum(1 for _ in msgpack.Unpacker(raw_stream(raw), raw=False))
        assert count == n
        return n / (time.perf_counter() - began)

    def read_only() -> float:
        with rxcs.open_oplog(path, readonly=True) as reader:
            began = time.perf_counter()
            count = 0
            with reader.cursor(0) as cursor:
                while batch := cursor.read(1000):
                    count += len(batch)
            assert count == n
            return n / (time.perf_counter() - began)

    def observed(make: Callable[[rxcs.Oplog], Any], expected: int) -> Callable[[], float]:
        """The rate of entries replayed (all n of them) until ``expected`` events have arrived."""
        def run() -> float:
            with rxcs.open_oplog(path, readonly=True) as reader:
                done = threading.Event()
                seen = [0]

                def on_event(_: Any) -> None:
                    seen[0] += 1
                    if seen[0] == expected:
                        done.set()

                began = time.perf_counter()
                subscription = make(reader).subscribe(on_event)
                done.wait()
                elapsed = time.perf_counter() - began
                subscription.dispose()
                return n / elapsed

        return run

    paid = sum(1 for i in range(n) if i % 3 == 1)
    match = [{"$match": {"fullDocument.status": "paid"}}]

    def iterate() -> float:
        with rxcs.open_oplog(path, readonly=True) as reader:
            began = time.perf_counter()
            with rxcs.watch(reader, "shop", "users", start_at_operation_time=rxcs.BEGINNING,
                            batch_size=1000).iterate() as stream:
                for _ in range(n):
                    stream.next()
            return n / (time.perf_counter() - began)

    def aiterate() -> float:
        async def consume(reader: rxcs.Oplog) -> None:
            count = 0
            async with rxcs.watch(reader, "shop", "users", start_at_operation_time=rxcs.BEGINNING,
                                  batch_size=1000).aiterate() as stream:
                async for _ in stream:
                    count += 1
                    if count == n:
                        return

        with rxcs.open_oplog(path, readonly=True) as reader:
            began = time.perf_counter()
            asyncio.run(consume(reader))
            return n / (time.perf_counter() - began)

    limit = best(repeat, unpacker)
    rows: list[Row] = [("raw msgpack.Unpacker (the limit)", limit, "events/s", "1.00")]
    scenarios: list[tuple[str, Callable[[], float]]] = [
        ("FileOplog cursor, read only", read_only),
        ("oplog_entries() source", observed(lambda o: rxcs.oplog_entries(o, after=0, batch_size=1000), n)),
        ("watch() with scope", observed(lambda o: rxcs.watch(o, "shop", "users", batch_size=1000,
                                                              start_at_operation_time=rxcs.BEGINNING), n)),
        ("watch() with scope + $match (a third pass; entries/s)", observed(
            lambda o: rxcs.watch(o, "shop", "users", match, batch_size=1000, start_at_operation_time=rxcs.BEGINNING),
            paid,
        )),
        ("watch() through iterate()", iterate),
        ("watch() through aiterate()", aiterate),
    ]
    for name, run in scenarios:
        rate = best(repeat, run)
        rows.append((name, rate, "events/s", f"{rate / limit:.2f}"))
    return rows


def raw_stream(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


WRITER = """
import sys, time, rxcs, structlog
structlog.configure(
    logger_factory=structlog.PrintLoggerFactory(sys.stderr), wrapper_class=structlog.make_filtering_bound_logger(40)
)
oplog = rxcs.open_oplog(sys.argv[1])
count = int(sys.argv[2])
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
for i in range(count):
    oplog.insert("shop", "users", {"_id": i, "sent": time.perf_counter_ns()})
    time.sleep(0.001)
oplog.close()
"""


def latency(directory: Path, count: int) -> list[Row]:
    rows: list[Row] = []

    # Reference: a bare Condition hand-off between two threads.
    condition = threading.Condition()
    box: list[int] = []
    samples: list[float] = []

    def consumer() -> None:
        for _ in range(count):
            with condition:
                while not box:
                    condition.wait()
                sent = box.pop()
            samples.append((time.perf_counter_ns() - sent) / 1e6)

    thread = threading.Thread(target=consumer)
    thread.start()
    for _ in range(count):
        with condition:
            box.append(time.perf_counter_ns())
            condition.notify()
        time.sleep(0.001)
    thread.join()
    rows += latency_rows("threading.Condition hand-off (reference)", samples)

    with rxcs.open_oplog(directory / "latency-thread") as oplog:
        samples = []
        with rxcs.watch(oplog).iterate() as stream:
            def produce() -> None:
                for i in range(count):
                    oplog.insert("shop", "users", {"_id": i, "sent": time.perf_counter_ns()})
                    time.sleep(0.001)

            writer = threading.Thread(target=produce)
            writer.start()
            for _ in range(count):
                event = stream.next(timeout=30)
                samples.append((time.perf_counter_ns() - event.full_document["sent"]) / 1e6)
            writer.join()
    rows += latency_rows("FileOplog, writer thread → ChangeStream", samples)

    path = directory / "latency-process"
    with rxcs.open_oplog(path) as oplog:
        oplog.insert("shop", "init", {"_id": 0})
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdin is not None
    process.stdout.readline()
    samples = []
    with rxcs.open_oplog(path, readonly=True) as reader, rxcs.watch(reader, "shop", "users").iterate() as stream:
        process.stdin.write("go\n")
        process.stdin.flush()
        for _ in range(count):
            event = stream.next(timeout=30)
            samples.append((time.perf_counter_ns() - event.full_document["sent"]) / 1e6)
    process.wait()
    rows += latency_rows("FileOplog, writer process → ChangeStream (inotify)", samples)
    return rows


def latency_rows(name: str, samples: list[float]) -> list[Row]:
    return [
        (f"{name} p50", percentile(samples, 0.50), "ms", ""),
        (f"{name} p99", percentile(samples, 0.99), "ms", ""),
        (f"{name} p99.9", percentile(samples, 0.999), "ms", ""),
    ]


def appends(directory: Path, n: int, repeat: int) -> list[Row]:
    payloads = [document(i) for i in range(n)]

    def sqlite_wal() -> float:
        database = directory / f"wal-{time.perf_counter_ns()}.db"
        connection = sqlite3.connect(database)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, body BLOB)")
        began = time.perf_counter()
        for start in range(0, n, 1000):
            with connection:
                connection.executemany(
                    "INSERT INTO log (body) VALUES (?)", [(msgpack.packb(p),) for p in payloads[start:start + 1000]]
                )
        rate = n / (time.perf_counter() - began)
        connection.close()
        return rate

    reference = best(repeat, sqlite_wal)
    rows: list[Row] = [("SQLite WAL, 1,000 per transaction (reference)", reference, "entries/s", "1.00")]
    for durability in ("group", "fsync", "none"):
        def batched(durability: str = durability) -> float:
            with rxcs.open_oplog(directory / f"append-{durability}-{time.perf_counter_ns()}",
                                 durability=durability) as oplog:
                began = time.perf_counter()
                for start in range(0, n, 1000):
                    oplog.append_many([rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + 1000]])
                return n / (time.perf_counter() - began)

        def single(durability: str = durability) -> float:
            count = min(n, 20_000 if durability != "fsync" else 500)
            with rxcs.open_oplog(directory / f"single-{durability}-{time.perf_counter_ns()}",
                                 durability=durability) as oplog:
                began = time.perf_counter()
                for p in payloads[:count]:
                    oplog.insert("shop", "users", p)
                return count / (time.perf_counter() - began)

        rate = best(repeat, batched)
        rows.append((f"FileOplog append_many(1000), durability={durability}", rate, "entries/s",
                     f"{rate / reference:.2f}"))
        rate = best(repeat, single)
        rows.append((f"FileOplog insert() one by one, durability={durability}", rate, "entries/s",
                     f"{rate / reference:.2f}"))
    return rows


def query_engine(repeat: int) -> list[Row]:
    """Compiled-filter evaluations per second on event documents, against a plain dict lookup."""
    from rxcs.query import compile_filter

    events = [
        {"_id": {"_data": "00"}, "operationType": ("insert", "update", "delete")[i % 3],
         "ns": {"db": "shop", "coll": ("users", "orders")[i % 2]}, "documentKey": {"_id": i},
         "fullDocument": document(i)}
        for i in range(10_000)
    ]

    def rate(predicate: Callable[[Any], Any]) -> float:
        def run() -> float:
            began = time.perf_counter()
            for _ in range(5):
                for event in events:
                    predicate(event)
            return 5 * len(events) / (time.perf_counter() - began)

        return best(repeat, run)

    reference = rate(lambda event: event["fullDocument"]["status"] == "paid")
    rows: list[Row] = [("plain Python dict lookups: fullDocument.status == 'paid' (reference)", reference,
                        "evaluations/s", "1.00")]
    filters: list[tuple[str, dict[str, Any]]] = [
        ("{operationType: 'insert'}", {"operationType": "insert"}),
        ("{operationType: {$in: [insert, update]}}", {"operationType": {"$in": ["insert", "update"]}}),
        ("{fullDocument.status: 'paid'}", {"fullDocument.status": "paid"}),
        ("{fullDocument.total: {$gte: 100, $lt: 400}}", {"fullDocument.total": {"$gte": 100, "$lt": 400}}),
        ("{ns.coll: 'orders', fullDocument.tags: 'b'}", {"ns.coll": "orders", "fullDocument.tags": "b"}),
        ("{$or: [{fullDocument.age: {$lt: 25}}, {fullDocument.city: {$regex: '^O'}}]}",
         {"$or": [{"fullDocument.age": {"$lt": 25}}, {"fullDocument.city": {"$regex": "^O"}}]}),
    ]
    for name, spec in filters:
        value = rate(compile_filter(spec))
        rows.append((name, value, "evaluations/s", f"{value / reference:.2f}"))
    return rows


def fan_out(watchers: int) -> list[Row]:
    with rxcs.open_oplog(":memory:") as oplog:
        first = rxcs.watch(oplog, "shop", "c0").subscribe(lambda _: None)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        subscriptions = [
            rxcs.watch(oplog, "shop", f"c{i % 50}", [{"$match": {"fullDocument.n": {"$gt": i}}}]).subscribe(
                lambda _: None
            )
            for i in range(watchers)
        ]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        threads = len([t for t in threading.enumerate() if t.name.startswith("rxcs-")])
        for subscription in [first, *subscriptions]:
            subscription.dispose()
    return [
        (f"memory per idle watcher ({watchers} watchers, each with a $match)", used / watchers / 1024, "KiB",
         "original design: about 10 KiB"),
        (f"threads for {watchers + 1} watchers of one oplog", threads, "threads", ""),
    ]


def machine() -> str:
    from importlib.metadata import version

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, rxcs {version('rxcs')}")


def render(sections: dict[str, list[Row]], command: str) -> str:
    lines = [f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}, with `{command}`.", ""]
    for title, rows in sections.items():
        lines += [f"### {title}", "", "| scenario | value | unit | ratio / note |", "|---|---:|---|---|"]
        for name, value, unit, note in rows:
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
            lines.append(f"| {name} | {shown} | {unit} | {note} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-") as tmp:
        directory = Path(tmp)
        sections = {
            f"Catch-up: {args.events:,} events from a FileOplog (ratio to the raw msgpack limit)":
                catch_up(directory, args.events, args.repeat),
            f"Live latency: one event per ms, {args.latency_samples:,} samples":
                latency(directory, args.latency_samples),
            f"Append rate: {min(args.events, 100_000):,} entries (ratio to SQLite WAL)":
                appends(directory, min(args.events, 100_000), args.repeat),
            "Query engine: compiled filters on event documents (ratio to plain Python)": query_engine(args.repeat),
            "Fan-out": fan_out(args.watchers),
        }
    text = render(sections, command)
    sys.stdout.write(text + "\n")
    if args.write_docs:
        docs = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
        current = docs.read_text() if docs.exists() else "# Performance\n\n## Results\n"
        head, marker, rest = current.partition("## Results\n")
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        docs.write_text(head + marker + "\n" + text + tail)
        sys.stdout.write(json.dumps({"written": str(docs)}) + "\n")


if __name__ == "__main__":
    main()
