"""The targets of issues #8 and #15, judged on the figures of one run: met, missed, or not measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.common import shown

Figures = dict[str, float]
Verdict = tuple[str, bool]  # what was measured, and whether the target is met


@dataclass(frozen=True)
class Target:
    what: str
    goal: str
    judge: Callable[[Figures], Verdict]
    needs: tuple[str, ...]


def _catchup_ratio(f: Figures) -> Verdict:
    value = f["catchup.match"] / f["catchup.limit"]
    return f"{value:.2f} of the raw rate ({shown(f['catchup.match'])}/s)", value >= 0.5


def _catchup_xread(f: Figures) -> Verdict:
    value = f["catchup.match"] / f["catchup.xread"]
    return f"{value:.2f} x XREAD + decode ({shown(f['catchup.xread'])}/s)", value > 1


def _of_the_limit(key: str, goal: float) -> Callable[[Figures], Verdict]:
    def judge(f: Figures) -> Verdict:
        value = f[key] / f["catchup.limit"]
        return f"{value:.2f} of the raw rate ({shown(f[key])}/s)", value >= goal

    return judge


def _below(key: str, limit: float, unit: str) -> Callable[[Figures], Verdict]:
    return lambda f: (f"{shown(f[key])} {unit}", f[key] < limit)


def _at_least(key: str, limit: float, unit: str) -> Callable[[Figures], Verdict]:
    return lambda f: (f"{shown(f[key])} {unit}", f[key] >= limit)


def _above(key: str, reference: str, name: str) -> Callable[[Figures], Verdict]:
    return lambda f: (f"{f[key] / f[reference]:.2f} x {name} ({shown(f[reference])}/s)", f[key] > f[reference])


TARGETS = [
    Target("catch-up through watch() + $match, against raw msgpack decoding", "≥ 0.5 of its rate", _catchup_ratio,
           ("catchup.match", "catchup.limit")),
    Target("catch-up through watch() + $match, against redis-py XREAD + decode", "above it", _catchup_xread,
           ("catchup.match", "catchup.xread")),
    Target("catch-up through watch() + $match a third pass (#15)", "≥ 0.30 of the raw rate",
           _of_the_limit("catchup.match", 0.30), ("catchup.match", "catchup.limit")),
    Target("catch-up through watch() + $match every entry passes (#15)", "≥ 0.14 of the raw rate",
           _of_the_limit("catchup.match_all", 0.14), ("catchup.match_all", "catchup.limit")),
    Target("catch-up through iterate(), every entry passes (#15)", "≥ 0.13 of the raw rate",
           _of_the_limit("catchup.iterate", 0.13), ("catchup.iterate", "catchup.limit")),
    Target("live latency p99, FileOplog, writer thread", "< 0.5 ms", _below("latency.file.thread.p99", 0.5, "ms"),
           ("latency.file.thread.p99",)),
    Target("live latency p99, FileOplog, writer process", "< 1 ms", _below("latency.file.process.p99", 1.0, "ms"),
           ("latency.file.process.p99",)),
    Target("live latency p99, RedisOplog, writer thread", "< 0.5 ms", _below("latency.redis.thread.p99", 0.5, "ms"),
           ("latency.redis.thread.p99",)),
    Target("live latency p99, RedisOplog, writer process", "< 1 ms",
           _below("latency.redis.process.p99", 1.0, "ms"), ("latency.redis.process.p99",)),
    Target("memory per idle watcher (1,000 watchers)", "< 2 KiB", _below("fanout.1000.memory_kib", 2.0, "KiB"),
           ("fanout.1000.memory_kib",)),
    Target("threads for 1,000 watchers", "a handful (≤ 5)", _below("fanout.1000.threads", 5.5, "thread(s)"),
           ("fanout.1000.threads",)),
    Target("append_many(1000) with group commit", "≥ 150,000 entries/s", _at_least("append.many.group", 150_000, "/s"),
           ("append.many.group",)),
    Target("append_many(1000) with group commit, against SQLite WAL", "above it",
           _above("append.many.group", "append.sqlite", "SQLite WAL"), ("append.many.group", "append.sqlite")),
    Target("append_many(1000) with group commit, against redis-py XADD pipelined 100", "above it",
           _above("append.many.group", "append.xadd", "XADD pipelined"), ("append.many.group", "append.xadd")),
    Target("backpressure: resident memory", "flat: last 5 s ≤ 1.10 x first 5 s",
           _below("backpressure.memory_growth", 1.10 + 1e-9, "x the first 5 s"), ("backpressure.memory_growth",)),
    Target("backpressure: events lost, repeated or out of order", "0",
           _below("backpressure.errors", 0.5, "events"), ("backpressure.errors",)),
    Target("catch-up rate at the largest size", "does not fall: ≥ 0.8 x the smallest size's",
           _at_least("scaling.rate_ratio", 0.8, "x the smallest size's"), ("scaling.rate_ratio",)),
    Target("rxcs serve: a 10,000-event burst to 100 SSE watchers", "every event at every watcher, in order",
           lambda f: ("all, in order" if f["http_complete"] else "some missing", f["http_complete"] == 1.0),
           ("http_complete",)),
]


def verdicts(figures: Figures) -> list[tuple[str, str, str, str]]:
    """One (target, goal, measured, verdict) row per target."""
    rows = []
    for target in TARGETS:
        if all(key in figures for key in target.needs):
            measured, met = target.judge(figures)
            rows.append((target.what, target.goal, measured, "met" if met else "**missed**"))
        else:
            rows.append((target.what, target.goal, "—", "not measured in this run"))
    return rows


def render(figures: Figures) -> str:
    lines = ["### Targets", "", "| target | goal | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {what} | {goal} | {measured} | {verdict} |" for what, goal, measured, verdict in verdicts(figures)]
    return "\n".join([*lines, ""])
