"""What metrics cost: append and catch-up rates with rxcs.metrics registered and scraped, as a ratio to without.

Run: python -m benchmarks.metrics_overhead [--events N] [--repeat K] [--scrape-interval SECONDS]

Each run pairs two measurements on fresh FileOplogs, in alternating order:
without metrics, and with the oplog's collector registered, the stream
tracked, and a thread scraping the registry (``generate_latest``) every
``--scrape-interval`` seconds (0.1 by default: 150 times as often as a
15 s Prometheus scrape, so the cost shows). The ratio is with / without
(1.00: no cost; the target is at least 0.97), of rates by the wall clock
and by the process's CPU time (every thread's, the scraper's included):
the CPU ratio is the cost itself, and holds on a machine that other work
keeps busy, where the wall-clock ratio mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, generate_latest

import rxcs
import rxcs.metrics
from benchmarks.common import document
from rxcs.oplog.health import check_oplog

BATCH = 100


@contextmanager
def scraped(oplog: rxcs.Oplog, interval: float) -> Iterator[rxcs.metrics.OplogCollector]:
    """The oplog's collector in a registry of its own, scraped every ``interval`` seconds until the block ends."""
    registry = CollectorRegistry()
    collector = rxcs.metrics.register(oplog, registry)
    stop = threading.Event()

    generate_latest(registry)  # the first scrape runs the health check, again only every HEALTH_INTERVAL: untimed

    def scrape() -> None:
        while not stop.wait(interval):
            generate_latest(registry)

    thread = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        stop.set()
        thread.join()


def appends(directory: Path, n: int, metrics: bool, interval: float) -> tuple[float, float]:
    """Entries appended per second of wall clock and of CPU, in batches of BATCH (group commit, the default)."""
    payloads = [rxcs.Change.insert("shop", "users", document(i)) for i in range(n)]
    with (
        rxcs.open_oplog(directory, segment_bytes=8 * 1024 * 1024) as oplog,
        scraped(oplog, interval) if metrics else nullcontext(),
    ):
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, BATCH):
            oplog.append_many(payloads[start:start + BATCH])
        return n / (time.perf_counter() - began), n / (time.process_time() - cpu)


def catch_up(directory: Path, n: int, metrics: bool, interval: float) -> tuple[float, float]:
    """Events per second (wall clock, CPU) a ``watch().iterate()`` stream delivers replaying ``n`` entries."""
    with rxcs.open_oplog(directory, segment_bytes=8 * 1024 * 1024) as oplog:
        for start in range(0, n, 5000):
            oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in range(start, start + 5000)])
        stream = rxcs.watch(oplog, "shop", "users", start_at_operation_time=rxcs.BEGINNING).iterate()
        with stream, scraped(oplog, interval) if metrics else nullcontext() as collector:
            if collector is not None:
                collector.track(stream, "bench")
            began, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                stream.next(timeout=10)
            return n / (time.perf_counter() - began), n / (time.process_time() - cpu)


def paired(
    measure: Callable[[Path, int, bool, float], tuple[float, float]], n: int, repeat: int, interval: float
) -> tuple[list[float], list[float]]:
    """Ratios with/without (wall clock, CPU) of ``repeat`` pairs, the order alternating so drift favours neither."""
    wall, cpu = [], []
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-metrics-") as tmp:
        for run in range(repeat):
            rates = {}
            for metrics in ((False, True) if run % 2 == 0 else (True, False)):
                rates[metrics] = measure(Path(tmp) / f"{measure.__name__}-{run}-{metrics}", n, metrics, interval)
            wall.append(rates[True][0] / rates[False][0])
            cpu.append(rates[True][1] / rates[False][1])
    return wall, cpu


def scrape_cost(directory: Path, n: int) -> tuple[float, float]:
    """Seconds one scrape takes (median of 200) on an oplog of ``n`` entries with one tracked stream, and
    seconds of one health check (median of 5), which a scrape repeats at most every HEALTH_INTERVAL."""
    with rxcs.open_oplog(directory, segment_bytes=8 * 1024 * 1024) as oplog:
        for start in range(0, n, 5000):
            oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in range(start, start + 5000)])
        registry = CollectorRegistry()
        collector = rxcs.metrics.register(oplog, registry)
        with rxcs.watch(oplog).iterate() as stream:
            collector.track(stream, "bench")
            generate_latest(registry)  # the first scrape runs the health check, repeated every HEALTH_INTERVAL
            timings = []
            for _ in range(200):
                began = time.perf_counter()
                generate_latest(registry)
                timings.append(time.perf_counter() - began)
        checks = []
        for _ in range(5):
            began = time.perf_counter()
            check_oplog(oplog)
            checks.append(time.perf_counter() - began)
    return statistics.median(timings), statistics.median(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scrape-interval", type=float, default=0.1)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # benchmarks log errors only
    print(f"metrics overhead: {args.events} events, {args.repeat} pairs, a scrape every {args.scrape_interval} s")
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-metrics-") as tmp:
        cost, health = scrape_cost(Path(tmp) / "scrape", args.events)
    print(
        f"one scrape: {cost * 1000:.3f} ms, so {cost / args.scrape_interval:.2%} of one core at this interval "
        f"and {cost / 15:.4%} at a 15 s scrape; the health check: {health * 1000:.1f} ms every "
        f"{rxcs.metrics.HEALTH_INTERVAL:.0f} s, {health / rxcs.metrics.HEALTH_INTERVAL:.2%}"
    )
    for measure in (appends, catch_up):
        for clock, ratios in zip(("wall", "cpu"), paired(measure, args.events, args.repeat, args.scrape_interval),
                                 strict=True):
            print(
                f"{measure.__name__:<9} {clock:<4} with/without: median {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.97)"
            )


if __name__ == "__main__":
    main()
