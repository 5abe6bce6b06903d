"""Catch-up: replay every event from BEGINNING, against raw msgpack and redis-py XREAD over the same documents."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

import rxcs
from benchmarks.common import (
    Bench,
    Report,
    Row,
    cursor_rate,
    document,
    fill_raw_stream,
    medians,
    populate,
    ratio,
    xread_rate,
)

BATCH = 1000
# The target's filter: a third of the entries pass. The cursor leaves the others undecoded (rxcs.prefilter's sift).
MATCH = [{"$match": {"fullDocument.status": "paid"}}]
# Every entry passes: the sift saves nothing and every entry is decoded, filtered and built into an event.
MATCH_ALL = [{"$match": {"fullDocument.status": {"$in": ["new", "paid", "shipped"]}}}]


def build(directory: Path, n: int) -> Path:
    """A FileOplog of ``n`` inserts of ``document(i)``."""
    path = directory / f"catchup-{n}"
    if not path.exists():
        with rxcs.open_oplog(path, durability="none") as oplog:
            populate(oplog, 0, n)
    return path


def observed(path: Path, n: int, make: Callable[[rxcs.Oplog], Any], expected: int) -> Callable[[], float]:
    """A run giving the rate of entries replayed (all ``n``) until ``expected`` events reached a subscriber."""
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
            arrived = done.wait(600)
            elapsed = time.perf_counter() - began
            subscription.dispose()
            if not arrived:
                raise TimeoutError(f"{seen[0]:,} of {expected:,} events arrived in 600 s")
            return n / elapsed

    return run


def scoped(oplog: rxcs.Oplog, pipeline: list[dict[str, Any]] | None = None) -> rxcs.ChangeStreamObservable:
    return rxcs.watch(oplog, "shop", "users", pipeline, batch_size=BATCH, start_at_operation_time=rxcs.BEGINNING)


def run(bench: Bench, report: Report) -> None:
    n = bench.events
    path = build(bench.directory, n)
    raw = b"".join(msgpack.packb(document(i)) for i in range(n))
    paid = sum(1 for i in range(n) if i % 3 == 1)
    last_only = [{"$match": {"fullDocument.email": document(n - 1)["email"]}}]  # one event, at the very end

    def unpacker() -> float:
        began = time.perf_counter()
        count = sum(1 for _ in msgpack.Unpacker(io.BytesIO(raw), raw=False))
        assert count == n
        return n / (time.perf_counter() - began)

    def read_only() -> float:
        return cursor_rate(lambda: rxcs.open_oplog(path, readonly=True), n, BATCH)

    # Both stop the clock at the n-th event, as observed() does: closing the stream is not catch-up.
    def iterate() -> float:
        with rxcs.open_oplog(path, readonly=True) as reader:
            began = time.perf_counter()
            with scoped(reader).iterate() as stream:
                for _ in range(n):
                    stream.next()
                return n / (time.perf_counter() - began)

    def aiterate() -> float:
        async def consume(reader: rxcs.Oplog) -> float:
            count = 0
            began = time.perf_counter()
            async with scoped(reader).aiterate() as stream:
                async for _ in stream:
                    count += 1
                    if count == n:
                        return n / (time.perf_counter() - began)
            raise RuntimeError(f"the stream ended after {count:,} of {n:,} events")

        with rxcs.open_oplog(path, readonly=True) as reader:
            return asyncio.run(consume(reader))

    scenarios: list[tuple[str, Callable[[], float]]] = [
        ("FileOplog cursor.read(1000), read only", read_only),
        ("oplog_entries() source", observed(path, n, lambda o: rxcs.oplog_entries(o, after=0, batch_size=BATCH), n)),
        ("watch() with scope", observed(path, n, scoped, n)),
        ("watch() with scope + $match (a third pass; entries/s)",
         observed(path, n, lambda o: scoped(o, MATCH), paid)),
        ("watch() with scope + $match that every entry passes (entries/s)",
         observed(path, n, lambda o: scoped(o, MATCH_ALL), n)),
        ("watch() with scope + $match that one entry passes (entries/s)",
         observed(path, n, lambda o: scoped(o, last_only), 1)),
        ("watch() through iterate()", iterate),
        ("watch() through aiterate()", aiterate),
    ]
    xread_run = redis_xread(bench, report, n)
    references = [unpacker] if xread_run is None else [unpacker, xread_run]
    measured = medians(bench.repeat, *references, *(scenario for _, scenario in scenarios))
    limit, rates = measured[0], measured[len(references):]
    section = report.section(f"Catch-up: {n:,} events from BEGINNING (ratio to the raw msgpack limit)")
    section.rows.append(Row("raw msgpack.Unpacker over the same documents (the limit)", limit, "events/s", "1.00"))
    if xread_run is not None:
        xread = measured[1]
        section.rows.append(Row(f"redis-py XREAD COUNT {BATCH:,} + msgpack.unpackb of the same documents (peer)",
                                xread, "events/s", ratio(xread, limit)))
        report.figures["catchup.xread"] = xread
    for (name, _), rate in zip(scenarios, rates, strict=True):
        section.rows.append(Row(name, rate, "events/s", ratio(rate, limit)))
    report.figures["catchup.limit"] = limit
    report.figures["catchup.match"] = rates[3]
    report.figures["catchup.match_all"] = rates[4]
    report.figures["catchup.scope"] = rates[2]
    report.figures["catchup.iterate"] = rates[6]


def redis_xread(bench: Bench, report: Report, n: int) -> Callable[[], float] | None:
    """A run giving the rate of XREAD COUNT 1000 plus msgpack decoding over a Redis stream of the same documents."""
    redis = bench.redis(report)
    if redis is None:
        return None
    client = redis.client
    stream = f"bench-catchup-raw-{n}"
    if client.xlen(stream) != n:
        client.delete(stream)
        fill_raw_stream(client, stream, n, BATCH)
    return lambda: xread_rate(client, stream, n, BATCH)
