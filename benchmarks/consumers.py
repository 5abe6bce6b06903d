"""What named consumers and groups cost, and what a group gains, as ratios to the plain stream.

Run: python -m benchmarks.consumers [--events N] [--group-events N] [--repeat K]

- catch-up of N events from BEGINNING through ``iterate()`` on a FileOplog:
  a plain stream, against the same stream as a named consumer committing
  every 1,000 events (``CommitEvery(events=1000)``) and after each event;
- a group of 1 and of 3 member processes on one FileOplog, each event's
  handler sleeping 100 µs (an I/O-bound handler: a call to another
  service; Linux makes it 150 µs or so): events/s from the first append to
  the last event handled.

Prints a Markdown table (the figures in docs/performance.md come from it).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import structlog

import rxcs
from benchmarks.common import child_env, populate

MEMBER = textwrap.dedent(
    """
    import sys, time
    import rxcs
    location, name, members = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with rxcs.open_oplog(location, readonly=True) as oplog:
        watch = rxcs.watch(oplog, "shop", "users", group=f"bench-{members}", member=name, lease_ttl=1.0,
                           max_await_time=0.05, batch_size=1000)
        with watch.iterate() as stream:
            print("joined", flush=True)
            handled, last, last_wall = 0, 0.0, 0.0
            while True:
                event = stream.try_next()
                if event is None:
                    if handled and time.monotonic() - last > 1.5:
                        break
                    continue
                time.sleep(100e-6)  # the handler: a 100 µs call to another service
                handled += 1
                last = time.monotonic()
                last_wall = time.time()
    print(handled, last_wall, flush=True)
    """
)


def catch_up(path: Path, n: int, **options: object) -> float:
    """Events/s of ``n`` events from BEGINNING through iterate(), with ``watch()`` options."""
    with rxcs.open_oplog(path, readonly=True) as reader:
        began = time.perf_counter()
        with rxcs.watch(reader, "shop", "users", batch_size=1000, start_at_operation_time=rxcs.BEGINNING,
                        **options).iterate() as stream:  # type: ignore[call-overload]
            for _ in range(n):
                stream.next()
            return n / (time.perf_counter() - began)


def group_rate(directory: Path, n: int, members: int) -> float:
    """Events/s of a group of ``members`` processes handling ``n`` events appended once they all hold partitions."""
    location = directory / f"group-{members}-{time.monotonic_ns()}"
    with rxcs.open_oplog(location, durability="none") as oplog:
        processes = [
            subprocess.Popen([sys.executable, "-c", MEMBER, str(location), f"m{i}", str(members)],
                             stdout=subprocess.PIPE, text=True, env=child_env())
            for i in range(members)
        ]
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every member holds its share: no rebalance while timing
            record = oplog.checkpoints.load(f"bench-{members}") or {}
            holders = {owner["member"] for owner in record.get("owners", {}).values()}
            if len(holders) == members and len(record.get("owners", {})) == rxcs.groups.PARTITIONS:
                break
            time.sleep(0.05)
        began = time.time()
        populate(oplog, 0, n)
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=600)
            handled, last = out.split()[-2:]
            results.append((int(handled), float(last)))
    total = sum(handled for handled, _ in results)
    if total < n:
        raise RuntimeError(f"the group handled {total:,} of {n:,} events")
    return n / (max(last for _, last in results) - began)


def median(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.consumers")
    parser.add_argument("--events", type=int, default=200_000, help="catch-up events (default 200,000)")
    parser.add_argument("--group-events", type=int, default=20_000, help="events a group handles (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n = args.events
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-consumers-") as tmp:
        directory = Path(tmp)
        path = directory / "catchup"
        with rxcs.open_oplog(path, durability="none") as oplog:
            populate(oplog, 0, n)
        counter = iter(range(10**9))
        plain: list[float] = []
        every: list[float] = []
        for _ in range(args.repeat):  # in turns, so a busy moment hits both alike
            plain.append(catch_up(path, n))
            every.append(catch_up(path, n, consumer=f"c{next(counter)}",
                                  commit=rxcs.CommitEvery(events=1000, seconds=None)))
        each_n = min(n, 20_000)
        each = median(args.repeat, lambda: catch_up(path, each_n, consumer=f"c{next(counter)}", commit="each"))
        plain_rate, every_rate = statistics.median(plain), statistics.median(every)
        ones: list[float] = []
        threes: list[float] = []
        for _ in range(args.repeat):  # in turns, as above
            ones.append(group_rate(directory, args.group_events, 1))
            threes.append(group_rate(directory, args.group_events, 3))
        one, three = statistics.median(ones), statistics.median(threes)
    rows = [
        "| Scenario | Rate | Ratio | Target |",
        "|---|---:|---:|---|",
        f"| plain stream, catch-up of {n:,} events, iterate() | {plain_rate:,.0f} events/s | 1.00 | |",
        (f"| named consumer, CommitEvery(events=1000) | {every_rate:,.0f} events/s | {every_rate / plain_rate:.2f} "
        "| ≥ 0.90 |"),
        f"| named consumer, commit=\"each\" ({each_n:,} events) | {each:,.0f} events/s | {each / plain_rate:.3f} | |",
        f"| group of 1 member process, 100 µs handler, {args.group_events:,} events | {one:,.0f} events/s | 1.00 | |",
        f"| group of 3 member processes, same | {three:,.0f} events/s | {three / one:.2f} | ≥ 2.0 |",
    ]
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
