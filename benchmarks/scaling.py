"""Cost as work grows: catch-up rate and seek time to the last op_id, at 10^4, 10^5 and 10^6 entries.

One FileOplog grows through the sizes. The catch-up rate (``watch()`` with
scope, from BEGINNING) should not fall as the log grows; the seek (a cursor
opened after ``last - 1`` reading one entry, and ``watch(resume_after=token
of entry last - 1)`` until its first event) should barely grow: it is a
binary search, not a scan.
"""

from __future__ import annotations

import statistics
import time

import rxcs
from benchmarks.catchup import observed, scoped
from benchmarks.common import Bench, Report, Row, medians, populate, ratio

SEEKS = 50


def sizes(bench: Bench) -> list[int]:
    """Powers of ten from 10^4 (10^3 with --quick) up to --events."""
    low = 3 if bench.quick else 4
    found = [10**k for k in range(low, 8) if 10**k <= bench.events]
    return found or [bench.events]


def seek_cursor(oplog: rxcs.Oplog) -> float:
    """Median seconds to open a cursor after last - 1 and read the last entry."""
    last = oplog.last_op_id
    times = []
    for _ in range(SEEKS + 1):  # the first, untimed, warms what every later seek finds ready
        began = time.perf_counter()
        with oplog.cursor(last - 1) as cursor:
            (entry,) = cursor.read(1)
        times.append(time.perf_counter() - began)
        assert entry.op_id == last
    return statistics.median(times[1:])


def seek_watch(oplog: rxcs.Oplog) -> float:
    """Median seconds from ``watch(resume_after=token of last - 1)`` to the last entry's event."""
    last = oplog.last_op_id
    token = rxcs.ResumeToken(oplog.oplog_id, last - 1)
    times = []
    for _ in range(SEEKS // 2 + 1):
        began = time.perf_counter()
        with rxcs.watch(oplog, "shop", "users", resume_after=token).iterate() as stream:
            event = stream.next(timeout=30)
        times.append(time.perf_counter() - began)
        assert event.id.op_id == last
    return statistics.median(times[1:])


def run(bench: Bench, report: Report) -> None:
    section = report.section("Cost as work grows: one FileOplog at growing sizes (ratio to the smallest)")
    path = bench.directory / "scaling"
    grown = 0
    first: tuple[float, float, float] | None = None
    for size in sizes(bench):
        with rxcs.open_oplog(path, durability="none") as oplog:
            populate(oplog, grown, size)
        grown = size
        (rate,) = medians(bench.repeat, observed(path, size, scoped, size))
        with rxcs.open_oplog(path, readonly=True) as reader:
            cursor_seek, watch_seek = seek_cursor(reader), seek_watch(reader)
        first = first or (rate, cursor_seek, watch_seek)
        section.rows += [
            Row(f"{size:,} entries: catch-up, watch() with scope", rate, "events/s", ratio(rate, first[0])),
            Row(f"{size:,} entries: seek, cursor after last - 1 reads one entry", cursor_seek * 1e6, "µs",
                ratio(cursor_seek, first[1])),
            Row(f"{size:,} entries: seek, watch(resume_after=token) to its first event", watch_seek * 1e6, "µs",
                ratio(watch_seek, first[2])),
        ]
        report.figures["scaling.rate_ratio"] = rate / first[0]
