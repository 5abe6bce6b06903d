"""``http``: SSE watchers of ``rxcs serve`` receiving a burst, and the latency at a steady rate.

The server runs in this process (uvicorn on a free loopback port); the
watchers are asyncio httpx clients in another process, so the clients' work
does not share the server's GIL. Skipped, with a note, without the
``rxcs[http]`` extra or httpx.
"""

from __future__ import annotations

import importlib.util

from benchmarks import bench_http
from benchmarks.common import Bench, Report, Row


def run(bench: Bench, report: Report) -> None:
    if any(importlib.util.find_spec(name) is None for name in ("starlette", "uvicorn", "httpx")):
        report.notes.append("HTTP scenario skipped: the rxcs[http] extra or httpx is not installed.")
        return
    watchers, events = (10, 1_000) if bench.quick else (100, 10_000)
    steady_events, rate = (250, 250.0) if bench.quick else (2_500, 500.0)
    section = report.section(f"rxcs serve: {watchers} SSE watchers of one stream (writer in the server's process)")
    burst = bench_http.run(watchers, events, "memory")
    complete = burst["in_order"] == watchers and burst["delivered"] == watchers * events
    section.rows += [
        Row(f"burst of {events:,} events: deliveries", burst["events_per_s"], "events/s",
            f"{watchers} x {events:,}, every one in order: {'yes' if complete else 'NO'}"),
        Row(f"burst of {events:,} events: write → receipt p99", burst["p99_ms"], "ms", "queueing behind the burst"),
    ]
    steady = bench_http.run(watchers, steady_events, "memory", rate=rate)
    section.rows += [
        Row(f"steady {rate:,.0f} events/s: write → receipt p50", steady["p50_ms"], "ms", ""),
        Row(f"steady {rate:,.0f} events/s: write → receipt p99", steady["p99_ms"], "ms",
            f"{watchers * rate:,.0f} deliveries/s"),
    ]
    report.figures["http_complete"] = float(complete)
