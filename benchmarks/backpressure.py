"""Backpressure: a consumer taking 1,000 events/s under a producer appending 50,000 events/s.

The consumer is a ``ChangeStream`` from ``watch().iterate()`` with the
default ``overflow="block"``: the stream stops reading the (durable) log
while its buffer is full, so memory must stay flat however far behind the
consumer falls. The resident set size is sampled every second. When the
producer stops, the consumer drains the rest at full speed and every op_id
must have arrived exactly once, in order.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from pathlib import Path

import rxcs
from benchmarks.common import Bench, Report, Row, document

PRODUCER_RATE = 50_000  # events/s
CONSUMER_RATE = 1_000  # events/s
TICK = 0.01  # the producer appends PRODUCER_RATE * TICK events per tick


def rss_bytes() -> int:
    """The resident set size now (Linux), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Producer(threading.Thread):
    """Appends ``PRODUCER_RATE`` events/s in batches until stopped; remembers the last op_id."""

    def __init__(self, oplog: rxcs.Oplog) -> None:
        super().__init__(name="bench-producer")
        self.oplog = oplog
        self.stop = threading.Event()
        self.count = 0
        self.last_op_id = oplog.last_op_id
        self.elapsed = 0.0

    def run(self) -> None:
        per_tick = int(PRODUCER_RATE * TICK)
        began = due = time.perf_counter()
        while not self.stop.is_set():
            changes = [rxcs.Change.insert("shop", "users", document(self.count + k)) for k in range(per_tick)]
            self.last_op_id = self.oplog.append_many(changes)[-1]
            self.count += per_tick
            due += TICK
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.elapsed = time.perf_counter() - began


def run(bench: Bench, report: Report) -> None:
    seconds = bench.soak_seconds
    window = max(1, int(min(5.0, seconds / 3)))
    with rxcs.open_oplog(bench.directory / "backpressure") as oplog, \
            rxcs.watch(oplog, "shop", "users").iterate() as stream:
        expected = oplog.last_op_id + 1
        order_errors = 0
        samples: list[int] = []
        producer = Producer(oplog)
        producer.start()
        began = time.perf_counter()
        due = next_sample = began
        consumed = 0
        while (now := time.perf_counter()) - began < seconds:
            if now >= next_sample:
                samples.append(rss_bytes())
                next_sample += 1.0
            event = stream.next(timeout=30)
            order_errors += event.id.op_id != expected
            expected = event.id.op_id + 1
            consumed += 1
            due += 1 / CONSUMER_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        soak = time.perf_counter() - began
        lag_at_end = stream.statistics().lag
        producer.stop.set()
        producer.join()

        drain_began = time.perf_counter()
        drained = 0
        while expected <= producer.last_op_id:
            event = stream.next(timeout=30)
            order_errors += event.id.op_id != expected
            expected = event.id.op_id + 1
            drained += 1
        drain_elapsed = time.perf_counter() - drain_began
        stats = stream.statistics()

    first = statistics.mean(samples[:window]) / 2**20
    last = statistics.mean(samples[-window:]) / 2**20
    lost = producer.count - consumed - drained
    section = report.section(
        f"Backpressure: a consumer at {CONSUMER_RATE:,} events/s under a producer at {PRODUCER_RATE:,} events/s, "
        f"{seconds:g} s, watch().iterate() with overflow=\"block\""
    )
    section.rows += [
        Row("producer rate achieved (FileOplog append_many, group commit)", producer.count / producer.elapsed,
            "events/s", f"asked: {PRODUCER_RATE:,}"),
        Row("consumer rate during the soak", consumed / soak, "events/s", f"asked: {CONSUMER_RATE:,}"),
        Row(f"resident memory, mean of the first {window} s", first, "MiB"),
        Row(f"resident memory, mean of the last {window} s", last, "MiB", f"{last / first:.2f} of the first"),
        Row("resident memory, highest sample", max(samples) / 2**20, "MiB", f"{len(samples)} samples, 1 per s"),
        Row("ChangeStream buffer high-water mark", stats.high_water, "events", "buffer_size=1000"),
        Row("times the stream paused reading (buffer full)", stats.pauses, "pauses"),
        Row("entries behind when the producer stopped", lag_at_end, "entries"),
        Row("drained after the producer stopped, at full speed", drained / drain_elapsed if drain_elapsed else 0,
            "events/s", f"{drained:,} events"),
        Row("events appended / received", producer.count, "events", f"received {consumed + drained:,}"),
        Row("events lost, repeated or out of order", abs(lost) + order_errors, "events", "must be 0"),
    ]
    report.figures["backpressure.memory_growth"] = last / first
    report.figures["backpressure.errors"] = abs(lost) + order_errors
