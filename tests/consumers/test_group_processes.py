"""A group of three member processes on a FileOplog and on a RedisOplog: one SIGKILLed and one added mid-run.

Each member notes every change it handles, ``MEMBER DOCUMENT VERSION``, in
one shared file (one ``os.write`` each, ``O_APPEND``: the file's order is
the order of handling). A producer in this process writes versions 0, 1,
2... of each document. Checked: every change is handled; for each document,
the versions handled by one member in a row rise one by one; where another
member takes over, it goes on from the next version or, after the killed
member, from an earlier one (what it handled without committing, handled
again) and never skips one; and the killed member's uncommitted changes
were handled again by another member (it never commits, so it leaves some).

The normal suite writes 6,000 changes to 200 documents; ``RXCS_FAULTS=all``
writes 100,000 to 1,000.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import rxcs
from rxcs.groups import PARTITIONS

FULL = os.environ.get("RXCS_FAULTS") == "all"
CHANGES, DOCUMENTS = (100_000, 1_000) if FULL else (6_000, 200)

MEMBER = textwrap.dedent(
    """
    import os, sys
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    import rxcs

    location, log, name, stop, commit = sys.argv[1:6]
    policy = "manual" if commit == "manual" else rxcs.CommitEvery(events=200, seconds=0.5)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with rxcs.open_oplog(location) as oplog:
        watch = rxcs.watch(oplog, "shop", "orders", group="workers", member=name, lease_ttl=1.0, max_await_time=0.05,
                           commit=policy, start_at_operation_time=rxcs.BEGINNING)
        with watch.iterate() as stream:
            while not os.path.exists(stop):
                event = stream.try_next()
                if event is not None:
                    os.write(out, f"{name} {event.document_key['_id']} {event.full_document['v']}\\n".encode())
    """
)


def produce(oplog: rxcs.Oplog, stop: threading.Event) -> None:
    """Versions 0.. of each document, in rounds over the documents, a batch at a time, then stop."""
    versions = CHANGES // DOCUMENTS
    for version in range(versions):
        for first in range(0, DOCUMENTS, 50):
            if stop.is_set():
                return
            oplog.append_many([
                rxcs.Change.insert("shop", "orders", {"_id": d, "v": 0}) if version == 0
                else rxcs.Change.replace("shop", "orders", d, {"_id": d, "v": version})
                for d in range(first, min(first + 50, DOCUMENTS))
            ])
            time.sleep(0.002)


def handled_lines(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    lines = log.read_text().split("\n")[:-1]
    return [(name, int(document), int(version)) for name, document, version in (line.split() for line in lines)]


def run_group(location: str, tmp_path: Path) -> tuple[list[tuple[str, int, int]], str]:
    """Three members, the producer; kill one when it is busy, add a fourth; wait for every change; stop them."""
    log, stop_file = tmp_path / "handled.log", tmp_path / "stop"
    command = [sys.executable, "-c", MEMBER, location, str(log)]
    members = {  # w1, the one killed, never commits: whatever it handled is handled again by another member
        name: subprocess.Popen([*command, name, str(stop_file), "manual" if name == "w1" else "every"])
        for name in ("w1", "w2", "w3")
    }
    stop = threading.Event()
    with rxcs.open_oplog(location) as oplog:
        producer = threading.Thread(target=produce, args=(oplog, stop))
        try:
            producer.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                len(handled_lines(log)) < CHANGES // 4 or not any(line[0] == "w1" for line in handled_lines(log)[-50:])
            ):
                time.sleep(0.01)
            members["w1"].send_signal(signal.SIGKILL)  # busy: handling the producer's changes
            members["w1"].wait(10)
            members["w4"] = subprocess.Popen([*command, "w4", str(stop_file), "every"])
            producer.join(300)
            expected = {(d, v) for d in range(DOCUMENTS) for v in range(CHANGES // DOCUMENTS)}
            deadline = time.monotonic() + (600 if FULL else 60)
            while time.monotonic() < deadline and not expected <= {(d, v) for _, d, v in handled_lines(log)}:
                time.sleep(0.05)
            while time.monotonic() < deadline and not taken_over(oplog, "w1"):
                time.sleep(0.05)  # the killed member's share moved once its lease ran out ...
            count = -1
            while time.monotonic() < deadline and count != len(handled_lines(log)):
                count = len(handled_lines(log))
                time.sleep(1.0)  # ... and its new owners handled it again
        finally:
            stop.set()
            stop_file.touch()
            for process in members.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert members["w1"].returncode == -signal.SIGKILL
    assert all(process.returncode == 0 for name, process in members.items() if name != "w1")
    return handled_lines(log), "w1"


def taken_over(oplog: rxcs.Oplog, killed: str) -> bool:
    """True once every partition of the group is owned, none by ``killed``."""
    owners = (oplog.checkpoints.load("workers") or {}).get("owners", {})
    return len(owners) == PARTITIONS and all(owner["member"] != killed for owner in owners.values())


def check(lines: list[tuple[str, int, int]], killed: str) -> None:
    versions = CHANGES // DOCUMENTS
    assert {(d, v) for _, d, v in lines} == {(d, v) for d in range(DOCUMENTS) for v in range(versions)}
    runs: dict[int, list[tuple[str, list[int]]]] = collections.defaultdict(list)
    for name, document, version in lines:
        document_runs = runs[document]
        if document_runs and document_runs[-1][0] == name:
            document_runs[-1][1].append(version)
        else:
            document_runs.append((name, [version]))
    handed_back = 0
    for document, document_runs in runs.items():
        highest = -1
        previous = None
        for name, run in document_runs:
            assert run == list(range(run[0], run[0] + len(run))), f"document {document}: {name} handled {run}"
            assert run[0] <= highest + 1, f"document {document}: {name} skipped from {highest} to {run[0]}"
            if run[0] <= highest:
                assert previous == killed, f"document {document}: {name} handled {run[0]} again after {previous}"
                handed_back += 1
            highest = max(highest, run[-1])
            previous = name
    assert handed_back >= 1  # the killed member's uncommitted changes went to another member


class TestGroupOfProcesses:
    def test_file_oplog(self, tmp_path: Path) -> None:
        """Three processes on one FileOplog: one killed, one added; every change handled, in document order."""
        location = str(tmp_path / "oplog")
        with rxcs.open_oplog(location):
            pass
        check(*run_group(location, tmp_path))

    def test_redis_oplog(self, redis_server: Any, tmp_path: Path) -> None:
        """The same on a RedisOplog, the members sharing only the Redis server."""
        location = f"{redis_server.url}?stream={tmp_path.name}"
        check(*run_group(location, tmp_path))

