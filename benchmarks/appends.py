"""Append rate: FileOplog per durability mode, one by one and append_many, against SQLite WAL and redis-py XADD."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgpack

import rxcs
from benchmarks.common import Bench, Report, Row, document, medians, ratio

BATCH = 1000
XADD_PIPELINE = 100
_counter = itertools.count()


def run(bench: Bench, report: Report) -> None:
    n = min(bench.events, 100_000)
    payloads = [document(i) for i in range(n)]
    directory = bench.directory

    def sqlite_wal() -> float:
        connection = sqlite3.connect(directory / f"wal-{next(_counter)}.db")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, body BLOB)")
        began = time.perf_counter()
        for start in range(0, n, BATCH):
            with connection:
                connection.executemany(
                    "INSERT INTO log (body) VALUES (?)", [(msgpack.packb(p),) for p in payloads[start:start + BATCH]]
                )
        rate = n / (time.perf_counter() - began)
        connection.close()
        return rate

    def batched(durability: str) -> Callable[[], float]:
        def measure() -> float:
            with rxcs.open_oplog(directory / f"append-{durability}-{next(_counter)}", durability=durability) as oplog:
                began = time.perf_counter()
                for start in range(0, n, BATCH):
                    oplog.append_many([rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + BATCH]])
                return n / (time.perf_counter() - began)

        return measure

    def single(durability: str) -> Callable[[], float]:
        count = min(n, 500 if durability == "fsync" else 20_000)

        def measure() -> float:
            with rxcs.open_oplog(directory / f"single-{durability}-{next(_counter)}", durability=durability) as oplog:
                began = time.perf_counter()
                for p in payloads[:count]:
                    oplog.insert("shop", "users", p)
                return count / (time.perf_counter() - began)

        return measure

    runs: list[tuple[str, str, Callable[[], float]]] = [
        (f"SQLite WAL, {BATCH:,} inserts per transaction (reference)", "sqlite", sqlite_wal),
    ]
    xadd = xadd_pipelined(bench, report, payloads)
    if xadd is not None:
        runs.append((f"redis-py XADD pipelined {XADD_PIPELINE} at a time (peer)", "xadd", xadd))
    for durability in ("group", "fsync", "none"):
        runs += [
            (f"FileOplog append_many({BATCH:,}), durability={durability}", f"many.{durability}", batched(durability)),
            (f"FileOplog insert() one by one, durability={durability}", f"single.{durability}", single(durability)),
        ]
    rates = medians(bench.repeat, *(measure for _, _, measure in runs))
    reference = rates[0]
    section = report.section(f"Append rate: {n:,} entries of the same documents (ratio to SQLite WAL)")
    for (name, key, _), rate in zip(runs, rates, strict=True):
        section.rows.append(Row(name, rate, "entries/s", ratio(rate, reference)))
        report.figures[f"append.{key}"] = rate


def xadd_pipelined(bench: Bench, report: Report, payloads: list[dict[str, Any]]) -> Callable[[], float] | None:
    redis = bench.redis(report)
    if redis is None:
        return None
    client = redis.client

    def measure() -> float:
        stream = f"bench-append-xadd-{next(_counter)}"
        began = time.perf_counter()
        for start in range(0, len(payloads), XADD_PIPELINE):
            pipe = client.pipeline(transaction=False)
            for p in payloads[start:start + XADD_PIPELINE]:
                pipe.xadd(stream, {"entry": msgpack.packb(p)})
            pipe.execute()
        rate = len(payloads) / (time.perf_counter() - began)
        client.delete(stream)
        return rate

    return measure
