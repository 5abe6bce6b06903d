"""A writer appending large commits, SIGKILLed again and again, while a reader in another process tails the oplog.

Linux may stop a large ``write()`` part way when a fatal signal arrives
(between pages), so a kill can leave the first frames of a commit in the file,
and a reader may read the file while a ``write()`` is still under way. Each
commit here is one ``append_many`` of 2 to 12 entries of up to 200 KB, every
document naming its batch, its place in it and the batch's size. After each
kill a writer in this process recovers the oplog and appends a batch of its
own; every batch there must then be whole, every acknowledged one there, and
the reader must have delivered exactly those entries, in order: never part of
a batch. The normal suite kills 24 writers; ``RXCS_FAULTS=all`` kills 100, of
which about one in ten leaves whole frames of a commit without its last.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rxcs
from rxcs.oplog.file import FileOplog

from .conftest import FULL
from .tally import Tally, record

KILLS = 100 if FULL else 24
OPTIONS = {"durability": "none", "segment_bytes": 4 * 1024 * 1024, "retain_bytes": 96 * 1024 * 1024}
QUIET = "import structlog, sys; structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n"
WRITER = QUIET + textwrap.dedent(
    f"""
    import random, sys, rxcs
    path, run = sys.argv[1], int(sys.argv[2])
    rng = random.Random(run)
    with rxcs.open_oplog(path, **{OPTIONS!r}) as oplog:
        for number in range(10**9):
            batch, size = f"{{run}}-{{number}}", rng.randint(2, 12)
            op_ids = oplog.append_many([
                rxcs.Change.insert("shop", "orders", {{
                    "_id": f"{{batch}}-{{i}}", "batch": batch, "i": i, "n": size,
                    "pad": b"k" * rng.randrange(1_000, 200_000),
                }})
                for i in range(size)
            ])
            print(op_ids[-1], flush=True)
    """
)
READER = QUIET + textwrap.dedent(
    """
    import sys, rxcs
    with rxcs.open_oplog(sys.argv[1], readonly=True) as oplog:
        stream = rxcs.watch(oplog, "shop", "orders", start_at_operation_time=rxcs.BEGINNING, batch_size=50)
        with stream.iterate() as events:
            print("ready", flush=True)
            while True:
                event = events.next()
                document = event.full_document
                print(event.op_id, document["batch"], document["i"], document["n"], flush=True)
    """
)

Delivered = tuple[int, str, int, int]  # op_id, batch, place in the batch, the batch's size


@dataclass
class Reader:
    """The tailing reader process and the lines it printed, gathered by a thread."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    delivered: list[Delivered]
    errors: Path  # what it wrote to stderr

    def delivered_through(self, op_id: int, seconds: float = 60.0) -> list[Delivered]:
        """Wait until the reader has delivered ``op_id``; what it delivered by then."""
        deadline = time.monotonic() + seconds
        while not self.delivered or self.delivered[-1][0] < op_id:
            if self.process.poll() is not None:
                raise AssertionError(f"the reader exited ({self.process.returncode}) at {self.delivered[-1:]}: "
                                     f"{self.errors.read_text()[-3000:]}")
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"the reader did not deliver op_id {op_id} in {seconds} s, after {self.delivered[-1:]}: "
                    f"{self.errors.read_text()[-3000:]}"
                ) from None
            number, batch, place, size = line.split()
            self.delivered.append((int(number), batch, int(place), int(size)))
        return self.delivered


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    """A reader process tailing ``tmp_path / "oplog"`` from its beginning, printing each event it delivers."""
    path = tmp_path / "oplog"
    rxcs.open_oplog(path).close()
    errors = (tmp_path / "reader.stderr").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, stderr=errors, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        yield Reader(process, lines, [], tmp_path / "reader.stderr")
    finally:
        process.kill()
        process.wait()
        errors.close()


def whole_batches(entries: list[rxcs.OplogEntry]) -> list[Delivered]:
    """The entries as (op_id, batch, place, size), checked to be whole batches, each in order."""
    found: list[Delivered] = []
    for entry in entries:
        document = entry.full_document
        assert document is not None
        found.append((entry.op_id, document["batch"], document["i"], document["n"]))
    position = 0
    while position < len(found):
        _, batch, place, size = found[position]
        got = [(b, p) for _, b, p, _ in found[position : position + size]]
        whole = place == 0 and got == [(batch, p) for p in range(size)]
        assert whole, f"op_id {found[position][0]}: the batch {batch} of {size} entries is not whole: {got}"
        position += size
    return found


def kill_a_writer(
    path: Path, run: int, rng: random.Random, *, script: str = WRITER, args: tuple[str, ...] = (), longest: float = 0.12
) -> int:
    """Start a writer, let it append for a random moment, SIGKILL it; the last op_id it acknowledged (0: none).

    ``script`` prints the last op_id of each append; it is given ``path``, ``run`` and ``args``.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(run), *args], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first, f"the writer exited ({process.wait()}) before its first append"
    time.sleep(rng.uniform(0.0, longest))
    os.kill(process.pid, signal.SIGKILL)
    acknowledged = int(first)
    for line in process.stdout:  # lines written before the kill
        acknowledged = int(line)
    process.wait()
    return acknowledged


class TestKilledWriter:
    @pytest.mark.timeout(1800)
    def test_no_part_of_a_batch_is_ever_delivered_or_kept(self, tmp_path: Path, reader: Reader) -> None:
        """Writers of large multi-entry batches SIGKILLed at random moments, each followed by a writer's
        recovery here: every batch in the oplog is whole, every acknowledged one is there, and the reader
        process delivered exactly the oplog's entries, never part of a batch."""
        path = tmp_path / "oplog"
        rng = random.Random(1131)
        kept: list[Delivered] = []
        tally = Tally()
        cut_short = 0  # kills that left whole frames of a commit without its last frame
        for run in range(KILLS):
            acknowledged = kill_a_writer(path, run, rng)
            with FileOplog(path) as oplog:
                plan = oplog.repair(dry_run=True)
            assert plan.refusal is None, plan.refusal
            cut_short += any(step.dropped for step in plan.steps)
            with rxcs.open_oplog(path, **OPTIONS) as writer:  # type: ignore[arg-type]
                marker = [
                    rxcs.Change.insert("shop", "orders", {"_id": f"r{run}-{i}", "batch": f"r{run}", "i": i, "n": 2})
                    for i in range(2)
                ]
                ours = writer.append_many(marker)
                assert ours[0] > acknowledged, f"run {run}: acknowledged op_id {acknowledged} is gone"
                after = kept[-1][0] if kept else writer.first_op_id - 1
                kept.extend(whole_batches(writer.read(after, 10**9)))
            assert kept[-1][0] == ours[-1]
            delivered = reader.delivered_through(ours[-1])
            assert delivered == kept, f"run {run}: the reader delivered other entries than the oplog holds"
            tally.add("recovered")
        record("SIGKILLed writers (a reader tailing)", tally)
        assert tally.recovered == KILLS
        assert len({batch for _, batch, _, _ in kept}) > KILLS * 3
        if FULL:  # about one kill in ten lands inside a write() that is then cut short between pages
            assert cut_short >= 3, f"only {cut_short} of {KILLS} kills left part of a commit"
