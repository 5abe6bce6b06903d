"""Three worker processes share one stream as a consumer group; one is killed mid-stream.

Each worker handles the changes of the partitions it holds (all the changes
of one order go to one worker, in order) and notes them in a ledger. When
worker w1 is killed with SIGKILL, its partitions move to the others once its
lease runs out, from their last commit: what it handled without committing
is handled again (at-least-once), nothing is lost.

Run the story:
    python examples/group_workers.py
Run only a worker:
    python examples/group_workers.py worker OPLOG_DIR LEDGER NAME STOP_FILE
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rxcs

ORDERS = 100
STEPS = ("placed", "paid", "packed", "shipped", "delivered")


def worker(oplog_dir: Path, ledger: Path, name: str, stop: Path) -> None:
    """Handle the group's changes until STOP exists, one ledger line per change: ``worker order step``."""
    out = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with rxcs.open_oplog(oplog_dir, readonly=True) as oplog:
        stream = rxcs.watch(oplog, "shop", "orders", group="fulfilment", member=name, lease_ttl=1.0,
                            max_await_time=0.1, start_at_operation_time=rxcs.BEGINNING)
        with stream.iterate() as changes:
            while not stop.exists():
                change = changes.try_next()
                if change is not None:
                    order = change.full_document
                    os.write(out, f"{name} {order['_id']} {order['step']}\n".encode())
                    time.sleep(0.001)  # the work: a call to the warehouse


def main() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        oplog_dir, ledger, stop = Path(tmp) / "oplog", Path(tmp) / "ledger", Path(tmp) / "stop"
        with rxcs.open_oplog(oplog_dir) as oplog:
            def start(name: str) -> subprocess.Popen[bytes]:
                command = [sys.executable, __file__, "worker", str(oplog_dir), str(ledger), name, str(stop)]
                return subprocess.Popen(command, stderr=subprocess.DEVNULL)

            workers = {name: start(name) for name in ("w1", "w2", "w3")}
            for step, status in enumerate(STEPS):
                for order in range(ORDERS):
                    document = {"_id": order, "step": step, "status": status}
                    if step == 0:
                        oplog.insert("shop", "orders", document)
                    else:
                        oplog.replace("shop", "orders", order, document)
                if step == 2:
                    time.sleep(1.0)
                    os.kill(workers["w1"].pid, signal.SIGKILL)  # a crash in the middle of the work
                time.sleep(0.2)
            expected = {(order, step) for order in range(ORDERS) for step in range(len(STEPS))}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                handled = [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []
                if expected <= {(int(order), int(step)) for _, order, step in handled}:
                    break
                time.sleep(0.2)
            stop.touch()
            for process in workers.values():
                process.wait(30)
    by_worker = collections.Counter(name for name, _, _ in handled)
    seen = collections.Counter((int(order), int(step)) for _, order, step in handled)
    again = sum(count - 1 for count in seen.values())
    print(f"changes handled per worker: {dict(sorted(by_worker.items()))}")
    print(f"every change handled: {expected <= set(seen)}; handled again after the crash: {again}")
    return expected <= set(seen)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
    else:
        sys.exit(0 if main() else 1)
