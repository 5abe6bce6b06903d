"""A named consumer SIGKILLed at random points while a producer writes: every change handled, none skipped.

A consumer process handles the changes of a FileOplog that this process
keeps appending to, and is killed with SIGKILL at random moments; each
restart uses the same consumer name. Two sinks:

- a plain log (``os.write`` of each handled op_id): every change must be
  in it (at least once), and each run's first change must be at or before
  the change after the last one any earlier run handled (none skipped);
- a transactional sink (SQLite: the change and its token in one
  transaction, changes at or before the stored token skipped, as
  ``examples/sync_to_sqlite.py`` does): every change exactly once.

The normal suite writes 6,000 changes and kills 6 consumers of each sink;
``RXCS_FAULTS=all`` writes 50,000 and kills 50.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rxcs

FULL = os.environ.get("RXCS_FAULTS") == "all"
CHANGES = 50_000 if FULL else 6_000
KILLS = 50 if FULL else 6

CONSUMER = textwrap.dedent(
    """
    import os, sqlite3, sys
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    import rxcs

    path, sink, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
    policy = rxcs.CommitEvery(events=250, seconds=0.1)
    with rxcs.open_oplog(path, readonly=True) as oplog:
        watch = rxcs.watch(oplog, "shop", "orders", consumer="sink", commit=policy,
                           start_at_operation_time=rxcs.BEGINNING)
        if sink.endswith(".log"):
            out = os.open(sink, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            with watch.iterate() as stream:
                for event in stream:
                    os.write(out, b"%d\\n" % event.op_id)
                    if event.op_id >= target:
                        break
        else:
            store = sqlite3.connect(sink, isolation_level=None)
            store.execute("CREATE TABLE IF NOT EXISTS handled (op_id INTEGER NOT NULL)")
            store.execute("CREATE TABLE IF NOT EXISTS state (one INTEGER PRIMARY KEY, token TEXT)")
            row = store.execute("SELECT token FROM state").fetchone()
            done = rxcs.ResumeToken.parse(row[0]) if row else None
            with watch.iterate() as stream:
                for event in stream:
                    if done is None or event.id > done:
                        store.execute("BEGIN")
                        store.execute("INSERT INTO handled VALUES (?)", (event.op_id,))
                        store.execute("INSERT OR REPLACE INTO state VALUES (1, ?)", (str(event.id),))
                        store.execute("COMMIT")
                    if event.op_id >= target:
                        break
    """
)


@contextlib.contextmanager
def producer(path: Path) -> Iterator[tuple[threading.Thread, list[int]]]:
    """A thread appending changes (``produce``) for the length of the block: the thread and the op_ids written."""
    written: list[int] = []
    stop = threading.Event()
    producing = threading.Thread(target=produce, args=(path, stop, written))
    producing.start()
    try:
        yield producing, written
    finally:
        stop.set()
        producing.join()


def produce(path: Path, stop: threading.Event, written: list[int]) -> None:
    """Append CHANGES changes to shop.orders (and some to another collection), in small commits, then stop."""
    rng = random.Random(17)
    with rxcs.open_oplog(path, durability="none") as oplog:
        count = 0
        while count < CHANGES and not stop.is_set():
            size = rng.randint(1, 40)
            size = min(size, CHANGES - count)
            changes = [rxcs.Change.insert("shop", "orders", {"_id": count + i}) for i in range(size)]
            changes.append(rxcs.Change.insert("shop", "other", {"_id": count}))
            op_ids = oplog.append_many(changes)
            written.extend(op_ids[:-1])
            count += len(changes) - 1
            time.sleep(rng.random() * 0.004)


def run_killed(path: Path, sink: Path, rng: random.Random, producing: threading.Thread, written: list[int]) -> int:
    """Start the consumer again and again, killing each at a random point; finish with a run to the end."""
    command = [sys.executable, "-c", CONSUMER, str(path), str(sink)]
    kills = 0
    for _ in range(KILLS):
        process = subprocess.Popen([*command, str(1 << 60)], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += process.returncode == -signal.SIGKILL
    producing.join(120)
    assert not producing.is_alive()
    subprocess.run([*command, str(written[-1])], stderr=subprocess.DEVNULL, check=True, timeout=120)
    return kills


@pytest.fixture
def oplog_path(tmp_path: Path) -> Path:
    with rxcs.open_oplog(tmp_path / "oplog"):
        pass
    return tmp_path / "oplog"


class TestKilledConsumer:
    def test_every_change_is_handled_at_least_once_and_none_skipped(self, oplog_path: Path, tmp_path: Path) -> None:
        """Killed KILLS times, the consumer handles every change; a run starts at or before where the last stopped."""
        sink = tmp_path / "handled.log"
        with producer(oplog_path) as (producing, written):
            kills = run_killed(oplog_path, sink, random.Random(1), producing, written)
        assert kills == KILLS
        lines = sink.read_text().split("\n")
        handled = [int(line) for line in lines[:-1]]  # a line cut by a kill is only ever the last of a run
        assert set(written) <= set(handled)
        # In order within a run; a restart goes back (a redelivery), never forward past a change not yet handled.
        highest = 0
        for op_id in handled:
            assert op_id <= _next_after(highest, written), f"op_id {op_id} came before {_next_after(highest, written)}"
            highest = max(highest, op_id)

    def test_a_transactional_sink_handles_every_change_exactly_once(self, oplog_path: Path, tmp_path: Path) -> None:
        """The change and its token committed in one SQLite transaction: every change exactly once across kills."""
        sink = tmp_path / "sink.db"
        with producer(oplog_path) as (producing, written):
            kills = run_killed(oplog_path, sink, random.Random(2), producing, written)
        assert kills == KILLS
        store = sqlite3.connect(sink)
        try:
            handled = [row[0] for row in store.execute("SELECT op_id FROM handled ORDER BY rowid")]
        finally:
            store.close()
        assert handled == written


def _next_after(op_id: int, written: list[int]) -> int:
    """The first written op_id after ``op_id`` (the change a run must not start beyond)."""
    import bisect

    index = bisect.bisect_right(written, op_id)
    return written[index] if index < len(written) else written[-1]
