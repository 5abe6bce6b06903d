"""rxcs benchmarks: every figure measured in one run, next to its reference, as a ratio.

Run: python -m benchmarks [--events N] [--repeat K] [--latency-samples N] [--soak-seconds S]
                          [--only NAME[,NAME]] [--quick] [--no-redis | --redis-url URL]
                          [--write-docs [PATH]] [--profile NAME]

Scenarios (``--only`` takes their names):

- ``catchup``: replay N events from BEGINNING, against raw msgpack decoding
  and redis-py XREAD + decode of the same documents;
- ``latency``: one event per ms, writer thread or process, FileOplog and
  RedisOplog, against a Condition hand-off and redis-py XREAD BLOCK;
- ``appends``: FileOplog per durability mode, against SQLite WAL and
  pipelined redis-py XADD;
- ``query``: compiled filters against plain dict lookups;
- ``fanout``: 1 to 1,000 watchers of one oplog: delivered events/s, threads,
  memory per idle watcher;
- ``backpressure``: a 1,000 events/s consumer under a 50,000 events/s producer;
- ``scaling``: catch-up rate and seek time at 10^4, 10^5, 10^6 entries;
- ``redis``: RedisOplog appends and catch-up against redis-py doing the same;
- ``cluster``: 30 oplogs on a Redis Cluster of 1 and of 3 primaries: the
  aggregate append rate of writer processes (the scale-out), and watchers
  on each oplog;
- ``http``: 100 SSE watchers of ``rxcs serve``: a 10,000-event burst, and latency at a steady rate;
- ``capture``: PostgreSQL rows from commit to oplog, against the server's own
  ``pg_logical_slot_get_binary_changes``, and commit-to-event latency at one
  commit per ms, against a bare psycopg2 replication reader (a PostgreSQL
  server is started; skipped without one).

Redis scenarios start a redis-server on a free loopback port and are skipped,
with a note, when there is none. ``--write-docs`` replaces the "Results"
section of docs/performance.md; ``--profile NAME`` runs one scenario under
pyinstrument (every thread) and prints and saves the report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from benchmarks import (
    appends,
    backpressure,
    capture,
    catchup,
    cluster,
    fanout,
    http_fanout,
    latency,
    query,
    redis_backend,
    scaling,
    targets,
)
from benchmarks.common import ROOT, Bench, Report, machine, render

SCENARIOS: dict[str, Callable[[Bench, Report], None]] = {
    "catchup": catchup.run,
    "latency": latency.run,
    "appends": appends.run,
    "query": query.run,
    "fanout": fanout.run,
    "backpressure": backpressure.run,
    "scaling": scaling.run,
    "redis": redis_backend.run,
    "cluster": cluster.run,
    "http": http_fanout.run,
    "capture": capture.run,
}
DOCS = ROOT / "docs" / "performance.md"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, help="catch-up size (default 1,000,000; 20,000 with --quick)")
    parser.add_argument("--repeat", type=int, help="runs per measurement, the median is kept (default 3)")
    parser.add_argument("--latency-samples", type=int, help="events per latency case (default 5,000)")
    parser.add_argument("--soak-seconds", type=float, help="backpressure soak (default 30)")
    parser.add_argument("--only", type=scenario_names, help=f"some of: {','.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes and one run each: a smoke test")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis scenarios and references")
    parser.add_argument("--redis-url", help="a Redis server to use (default: start one on a free loopback port)")
    parser.add_argument("--write-docs", nargs="?", const=DOCS, type=Path, metavar="PATH",
                        help="replace the Results section of PATH (default docs/performance.md)")
    parser.add_argument("--profile", choices=SCENARIOS, metavar="NAME",
                        help="run one scenario under pyinstrument and print/save the report")
    args = parser.parse_args(argv)
    if args.profile and args.write_docs:
        parser.error("--profile distorts the figures: it cannot be used with --write-docs")
    quick = args.quick
    args.events = args.events or (20_000 if quick else 1_000_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.latency_samples = args.latency_samples or (300 if quick else 5_000)
    args.soak_seconds = args.soak_seconds or (3.0 if quick else 30.0)
    args.only = [args.profile] if args.profile else args.only or list(SCENARIOS)
    return args


def scenario_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario {', '.join(unknown)!r}; choose from {', '.join(SCENARIOS)}")
    return names


@contextmanager
def profiled(name: str) -> Iterator[None]:
    """Profile the main thread and every thread started meanwhile (the tailers do the work), then report."""
    from pyinstrument import Profiler
    from pyinstrument.session import Session

    sessions: list[tuple[str, Any]] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = Profiler(interval=0.0005)
        profiler.start()
        try:
            original(self)
        finally:
            sessions.append((self.name, profiler.stop()))

    threading.Thread.run = run  # type: ignore[method-assign]
    main = Profiler(interval=0.0005)
    main.start()
    try:
        yield
    finally:
        sessions.append(("main", main.stop()))
        threading.Thread.run = original  # type: ignore[method-assign]
    by_thread: dict[str, Any] = {}
    for thread, session in sessions:  # the runs of a scenario start their tailer threads anew: one report each name
        by_thread[thread] = Session.combine(by_thread[thread], session) if thread in by_thread else session
    busy = sorted(by_thread.items(), key=lambda item: -item[1].sample_count)
    text = "\n".join(
        f"## thread {thread} ({session.sample_count} samples)\n" + profiler_text(session)
        for thread, session in busy[:6] if session.sample_count
    )
    path = Path(f"profile-{name}.txt")
    path.write_text(text)
    sys.stdout.write(text + f"\nprofile saved to {path.resolve()}\n")


def profiler_text(session: Any) -> str:
    from pyinstrument.renderers import ConsoleRenderer

    return str(ConsoleRenderer(unicode=True, color=False, show_all=False, short_mode=False).render(session))


def write_docs(path: Path, text: str) -> Path:
    """Replace the "## Results" section of ``path`` (up to the next "## " heading) with ``text``."""
    current = path.read_text()
    head, marker, rest = current.partition("\n## Results\n")
    if not marker:
        head, marker, rest = current.rstrip("\n") + "\n", "\n## Results\n", ""
    following = rest.find("\n## ")
    tail = rest[following:] if following >= 0 else "\n"
    path.write_text(head + marker + "\n" + text.rstrip("\n") + "\n" + tail)
    return path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # the library's errors only
    command = " ".join(["python -m benchmarks", *argv])
    report = Report()
    with tempfile.TemporaryDirectory(prefix="rxcs-bench-") as tmp:
        bench = Bench(args.events, args.repeat, args.latency_samples, args.soak_seconds, args.quick, Path(tmp),
                      use_redis=not args.no_redis, redis_url=args.redis_url)
        try:
            for name in args.only:
                sys.stderr.write(f"running {name}...\n")
                if args.profile:
                    with profiled(name):
                        SCENARIOS[name](bench, report)
                else:
                    SCENARIOS[name](bench, report)
            redis = bench.redis_description
        finally:
            bench.close()
    text = render(report, machine(redis), command, preamble=targets.render(report.figures))
    sys.stdout.write(text + "\n")
    if args.write_docs:
        sys.stdout.write(f"written: {write_docs(args.write_docs, text)}\n")


if __name__ == "__main__":
    main()
