"""Live latency: one event appended per millisecond, from append to the consumer, in process and across processes.

References: a bare ``threading.Condition`` hand-off between two threads, and a
redis-py consumer blocked in ``XREAD BLOCK`` on a plain stream, its writer a
thread or another process. Timestamps are ``perf_counter_ns`` (CLOCK_MONOTONIC
on Linux, one clock for every process of the machine).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import rxcs
from benchmarks.common import Bench, RedisHandle, Report, Row, go, latency_rows, writer_process

WRITER = """
import sys, time
kind, target, stream, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "redis-py":
    import redis
    client = redis.Redis.from_url(target)
    def append(i):
        client.xadd(stream, {"sent": time.perf_counter_ns()})
else:
    import rxcs, structlog
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(40),
    )
    oplog = rxcs.open_oplog(target)
    def append(i):
        oplog.insert("shop", "users", {"_id": i, "sent": time.perf_counter_ns()})
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
for i in range(count):
    append(i)
    time.sleep(0.001)
"""


def paced(count: int, append: Callable[[int], object]) -> threading.Thread:
    """A started writer thread calling ``append(i)`` once per millisecond."""
    def run() -> None:
        for i in range(count):
            append(i)
            time.sleep(0.001)

    thread = threading.Thread(target=run, name="bench-writer")
    thread.start()
    return thread


def sent(i: int) -> dict[str, Any]:
    return {"_id": i, "sent": time.perf_counter_ns()}


def from_stream(stream: rxcs.ChangeStream, count: int) -> list[float]:
    """Latencies in ms of ``count`` events whose documents carry their ``sent`` time."""
    samples = []
    for _ in range(count):
        event = stream.next(timeout=30)
        samples.append((time.perf_counter_ns() - event.full_document["sent"]) / 1e6)
    return samples


def from_xread(client: Any, stream: str, last: bytes, count: int) -> list[float]:
    """Latencies in ms of ``count`` entries read with XREAD BLOCK after ``last``."""
    samples: list[float] = []
    while len(samples) < count:
        reply = client.xread({stream: last}, count=1000, block=5000)
        if not reply:
            raise TimeoutError("no entry within 5 s")
        for entry_id, fields in reply[0][1]:
            samples.append((time.perf_counter_ns() - int(fields[b"sent"])) / 1e6)
            last = entry_id
    return samples


def condition_handoff(count: int) -> list[float]:
    condition = threading.Condition()
    box: list[int] = []
    samples: list[float] = []

    def consumer() -> None:
        for _ in range(count):
            with condition:
                while not box:
                    condition.wait()
                stamp = box.pop()
            samples.append((time.perf_counter_ns() - stamp) / 1e6)

    thread = threading.Thread(target=consumer)
    thread.start()

    def hand(_: int) -> None:
        with condition:
            box.append(time.perf_counter_ns())
            condition.notify()

    paced(count, hand).join()
    thread.join()
    return samples


def file_thread(bench: Bench, count: int) -> list[float]:
    with rxcs.open_oplog(bench.directory / "latency-thread") as oplog, rxcs.watch(oplog).iterate() as stream:
        writer = paced(count, lambda i: oplog.insert("shop", "users", sent(i)))
        samples = from_stream(stream, count)
        writer.join()
    return samples


def file_process(bench: Bench, count: int) -> list[float]:
    path = bench.directory / "latency-process"
    with rxcs.open_oplog(path) as oplog:
        oplog.insert("shop", "init", {"_id": 0})
    with writer_process(WRITER, "rxcs", str(path), "", str(count)) as process, \
            rxcs.open_oplog(path, readonly=True) as reader, \
            rxcs.watch(reader, "shop", "users").iterate() as stream:
        go(process)
        return from_stream(stream, count)


def xread_thread(redis: RedisHandle, count: int) -> list[float]:
    client, stream = redis.client, fresh("raw-thread")
    last = client.xadd(stream, {"sent": 0})
    writer = paced(count, lambda _: client.xadd(stream, {"sent": time.perf_counter_ns()}))
    samples = from_xread(client, stream, last, count)
    writer.join()
    client.delete(stream)
    return samples


def xread_process(redis: RedisHandle, count: int) -> list[float]:
    client, stream = redis.client, fresh("raw-process")
    last = client.xadd(stream, {"sent": 0})
    with writer_process(WRITER, "redis-py", redis.url, stream, str(count)) as process:
        go(process)
        samples = from_xread(client, stream, last, count)
    client.delete(stream)
    return samples


def redis_cursor_thread(redis: RedisHandle, count: int) -> list[float]:
    """The backend's own tail: ``wait()`` then ``cursor.read()``, without the hop into a ChangeStream."""
    url = f"{redis.url}?stream={fresh('cursor')}"
    samples: list[float] = []
    with rxcs.open_oplog(url) as oplog, rxcs.open_oplog(url) as producer, oplog.cursor(oplog.last_op_id) as cursor:
        writer = paced(count, lambda i: producer.insert("shop", "users", sent(i)))
        while len(samples) < count:
            entries = cursor.read(1000)
            if not entries:
                oplog.wait(cursor.position, 5.0)
                continue
            now = time.perf_counter_ns()
            samples += [(now - e.full_document["sent"]) / 1e6 for e in entries]  # type: ignore[index]
        writer.join()
    return samples


def redis_thread(redis: RedisHandle, count: int) -> list[float]:
    url = f"{redis.url}?stream={fresh('watch-thread')}"
    with rxcs.open_oplog(url) as oplog, rxcs.open_oplog(url) as producer, rxcs.watch(oplog).iterate() as stream:
        writer = paced(count, lambda i: producer.insert("shop", "users", sent(i)))
        samples = from_stream(stream, count)
        writer.join()
    return samples


def redis_process(redis: RedisHandle, count: int) -> list[float]:
    url = f"{redis.url}?stream={fresh('watch-process')}"
    with rxcs.open_oplog(url) as oplog:
        oplog.insert("shop", "init", {"_id": 0})
        with writer_process(WRITER, "rxcs", url, "", str(count)) as process, \
                rxcs.watch(oplog, "shop", "users").iterate() as stream:
            go(process)
            return from_stream(stream, count)


def fresh(name: str) -> str:
    return f"bench-latency-{name}-{uuid.uuid4().hex[:8]}"


def run(bench: Bench, report: Report) -> None:
    count = bench.latency_samples
    section = report.section(f"Live latency: one event per ms, {count:,} samples, append to consumer")
    cases: list[tuple[str, str, Callable[[], list[float]]]] = [
        ("threading.Condition hand-off, writer thread (reference)", "condition", lambda: condition_handoff(count)),
        ("FileOplog → watch().iterate(), writer thread", "file.thread", lambda: file_thread(bench, count)),
        ("FileOplog → watch().iterate(), writer process (inotify)", "file.process", lambda: file_process(bench, count)),
    ]
    redis = bench.redis(report)
    if redis is not None:
        pings = []
        for _ in range(min(count, 1000)):
            began = time.perf_counter_ns()
            redis.client.ping()
            pings.append((time.perf_counter_ns() - began) / 1e6)
        section.rows.append(Row("redis-py PING round trip p50 (for scale)", sorted(pings)[len(pings) // 2], "ms"))
        cases += [
            ("redis-py XADD → XREAD BLOCK, writer thread (peer)", "xread.thread", lambda: xread_thread(redis, count)),
            ("redis-py XADD → XREAD BLOCK, writer process (peer)", "xread.process",
             lambda: xread_process(redis, count)),
            ("RedisOplog → wait() + cursor.read(), writer thread", "redis.cursor",
             lambda: redis_cursor_thread(redis, count)),
            ("RedisOplog → watch().iterate(), writer thread", "redis.thread", lambda: redis_thread(redis, count)),
            ("RedisOplog → watch().iterate(), writer process", "redis.process", lambda: redis_process(redis, count)),
        ]
    for name, key, measure in cases:
        rows = latency_rows(name, measure())
        section.rows += rows
        report.figures[f"latency.{key}.p99"] = rows[1].value
