"""RedisOplog against plain redis-py doing the same work, with the same documents, in the same run.

- append rate: ``insert()`` one by one and ``append_many(1000)``, against
  redis-py XADD of the same msgpack payloads, one by one and pipelined 1,000
  at a time;
- catch-up: every entry through a RedisOplog cursor (and through ``watch()``),
  against XREAD COUNT 1000 plus ``msgpack.unpackb`` of each payload.

Live latency through RedisOplog is in the latency scenario, next to FileOplog's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgpack

import rxcs
from benchmarks.common import Bench, Report, Row, cursor_rate, document, fill_raw_stream, medians, xread_rate

BATCH = 1000


def fresh(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def appends(url: str, client: Any, n: int, repeat: int) -> list[Row]:
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
        Row("redis-py XADD one by one (reference)", single_ref, "entries/s", "1.00"),
        Row("RedisOplog insert() one by one", single, "entries/s", f"{single / single_ref:.2f}"),
        Row(f"redis-py XADD pipelined {BATCH:,} at a time (reference)", batch_ref, "entries/s", "1.00"),
        Row(f"RedisOplog append_many({BATCH:,})", batched, "entries/s", f"{batched / batch_ref:.2f}"),
        Row(f"RedisOplog append_many({BATCH:,}), Change objects built beforehand", prebuilt, "entries/s",
            f"{prebuilt / batch_ref:.2f}"),
    ]


def catch_up(url: str, client: Any, n: int, repeat: int) -> list[Row]:
    stream = fresh("catchup")
    raw_stream = fresh("catchup-raw")
    with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
        for start in range(0, n, BATCH):
            chunk = range(start, min(n, start + BATCH))
            oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in chunk])
    fill_raw_stream(client, raw_stream, n, BATCH)

    def raw_xread() -> float:
        return xread_rate(client, raw_stream, n, BATCH)

    def cursor() -> float:
        return cursor_rate(lambda: rxcs.open_oplog(f"{url}?stream={stream}"), n, BATCH)

    def watch() -> float:
        with rxcs.open_oplog(f"{url}?stream={stream}") as reader:
            began = time.perf_counter()
            with rxcs.watch(reader, "shop", "users", start_at_operation_time=rxcs.BEGINNING,
                            batch_size=BATCH).iterate() as events:
                for _ in range(n):
                    events.next()
            return n / (time.perf_counter() - began)

    reference, through_cursor, through_watch = medians(repeat, raw_xread, cursor, watch)
    rows = [Row(f"redis-py XREAD COUNT {BATCH:,} + msgpack.unpackb (reference)", reference, "entries/s", "1.00")]
    for name, rate in ((f"RedisOplog cursor.read({BATCH:,})", through_cursor),
                       ("watch() through iterate()", through_watch)):
        rows.append(Row(name, rate, "entries/s", f"{rate / reference:.2f}"))
    client.delete(stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers", raw_stream)
    return rows


def run(bench: Bench, report: Report) -> None:
    redis = bench.redis(report)
    if redis is None:
        return
    n = min(bench.events, 100_000)
    report.section(f"Redis backend, append rate: {n:,} entries (ratio to redis-py doing the same)").rows += appends(
        redis.url, redis.client, n, bench.repeat
    )
    report.section(f"Redis backend, catch-up: {n:,} entries (ratio to XREAD + msgpack)").rows += catch_up(
        redis.url, redis.client, n, bench.repeat
    )
