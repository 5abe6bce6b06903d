"""Many oplogs on a Redis Cluster: aggregate append rate with 30 oplogs on 1 primary against 3 primaries.

Two clusters are formed in the same run from the same redis-server binary,
persistence off, no replicas: one whose only primary serves all 16384 slots,
and one of three primaries. Writer processes (not threads: the GIL would
bound the client side first) each take a share of 30 oplogs
(``redis+cluster://`` URLs) and append batches of prebuilt inserts to them in
turn for a fixed time; the figure is every entry appended, over the wall
time. The ratio of the two is the scale-out. The CPU seconds each side used
(the writers, and the redis-server processes) are reported beside it: on a
machine with fewer cores than servers plus writers, the cores, not Redis,
bound the ratio.

A second table tails each oplog of the 3-primary cluster with watchers
(``watch()``, a consumer thread each, in this process) while a writer
process appends one entry at a time: delivered events per second over all
watchers, and the writer's rate.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rxcs
from benchmarks.common import Bench, Report, Row, child_env, find_redis_server, free_port, go, writer_process

OPLOGS = 30
WRITERS = 4
BATCH = 100
SLOTS = 16384

_WRITER = r"""
import sys, time
import rxcs
from benchmarks.common import document
url, names, seconds, batch = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), int(sys.argv[4])
oplogs = [rxcs.open_oplog(f"{url}?stream={name}") for name in names]
changes = [rxcs.Change.insert("shop", "users", document(i)) for i in range(batch)]
print("ready", flush=True)
sys.stdin.readline()
began, cpu, count = time.perf_counter(), time.process_time(), 0
while time.perf_counter() - began < seconds:
    for oplog in oplogs:
        count += len(oplog.append_many(changes))
print(count, time.perf_counter() - began, time.process_time() - cpu, flush=True)
for oplog in oplogs:
    oplog.close()
"""


_ONE_BY_ONE = r"""
import sys, time
import rxcs
url, names, rounds = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
oplogs = [rxcs.open_oplog(f"{url}?stream={name}") for name in names]
print("ready", flush=True)
sys.stdin.readline()
began = time.perf_counter()
for i in range(rounds):
    for oplog in oplogs:
        oplog.insert("shop", "users", {"_id": i})
print(rounds * len(oplogs) / (time.perf_counter() - began), flush=True)
for oplog in oplogs:
    oplog.close()
"""


class _Cluster:
    """``primaries`` cluster-enabled redis-server processes, no persistence, no replicas, slots split evenly."""

    def __init__(self, binary: str, directory: Path, primaries: int) -> None:
        self.binary = binary
        self.directory = directory
        self.primaries = primaries
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/"

    def start(self) -> None:
        import redis

        for index in range(self.primaries):
            port = _free_cluster_port()
            home = self.directory / f"node{index}"
            home.mkdir(parents=True)
            self.ports.append(port)
            self.processes.append(subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home), "--logfile", "redis.log",
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        clients = [redis.Redis(host="127.0.0.1", port=port) for port in self.ports]
        try:
            for client in clients:
                _until(lambda c=client: _answers(c), "a node to answer")
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            bounds = [SLOTS * index // self.primaries for index in range(self.primaries + 1)]
            for index, client in enumerate(clients):
                client.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[index], bounds[index + 1]))
            _until(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients)
                   and all(len(c.execute_command("CLUSTER", "SLOTS")) == self.primaries for c in clients),
                   "cluster_state:ok")
        finally:
            for client in clients:
                client.close()

    def cpu_seconds(self) -> float:
        """CPU time the servers used so far (user + system, from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait()


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists and is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # still starting: any failure means "not yet"
        return False


def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark cluster did not come up: waited for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _cluster(binary: str, directory: Path, primaries: int) -> Iterator[_Cluster]:
    cluster = _Cluster(binary, directory, primaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def aggregate_appends(cluster: _Cluster, names: list[str], seconds: float) -> tuple[float, float, float]:
    """Entries/s appended by WRITERS processes over ``names``; and the CPU seconds of the writers and servers."""
    shares = [names[k::WRITERS] for k in range(WRITERS)]
    processes = [
        subprocess.Popen([sys.executable, "-c", _WRITER, cluster.url, ",".join(share), str(seconds), str(BATCH)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
        for share in shares
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("a writer process did not start")
        servers_before = cluster.cpu_seconds()
        began = time.perf_counter()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            assert process.stdout is not None
            results.append(process.stdout.readline().split())
        wall = time.perf_counter() - began
        servers = cluster.cpu_seconds() - servers_before
        for process in processes:
            process.wait(60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    total = sum(int(count) for count, _, _ in results)
    writers_cpu = sum(float(cpu) for _, _, cpu in results)
    return total / wall, writers_cpu, servers


def watchers(cluster: _Cluster, names: list[str], per_oplog: int, entries: int) -> tuple[float, float]:
    """A writer process appending ``entries`` one at a time, round robin over ``names``, each oplog tailed by
    ``per_oplog`` watchers in this process: (delivered events/s over every watcher, appended entries/s)."""
    oplogs = [rxcs.open_oplog(f"{cluster.url}?stream={name}") for name in names]
    streams = [rxcs.watch(oplog, "shop", "users").iterate() for oplog in oplogs for _ in range(per_oplog)]
    each = entries // len(names)
    counted = [0] * len(streams)

    def drain(index: int) -> None:
        stream = streams[index]
        for _ in range(each):
            stream.next(timeout=60)
            counted[index] += 1

    threads = [threading.Thread(target=drain, args=(index,)) for index in range(len(streams))]
    try:
        for thread in threads:
            thread.start()
        with writer_process(_ONE_BY_ONE, cluster.url, ",".join(names), str(each)) as writer:
            began = time.perf_counter()
            go(writer)
            assert writer.stdout is not None
            appended = float(writer.stdout.readline())
            for thread in threads:
                thread.join(120)
            elapsed = time.perf_counter() - began
    finally:
        for stream in streams:
            stream.close()
        for oplog in oplogs:
            oplog.close()
    assert sum(counted) == each * len(streams), "a watcher missed events"
    return sum(counted) / elapsed, appended


def run(bench: Bench, report: Report) -> None:
    binary = find_redis_server()
    if not bench.use_redis or binary is None:
        report.notes.append("Redis Cluster scenario skipped: --no-redis, or no redis-server binary.")
        return
    seconds = 0.5 if bench.quick else 5.0
    names = [f"tenant-{i}" for i in range(OPLOGS)]
    runs: dict[int, list[tuple[float, float, float]]] = {1: [], 3: []}
    with _cluster(binary, bench.directory / "cluster-1", 1) as one, \
            _cluster(binary, bench.directory / "cluster-3", 3) as three:
        for _ in range(bench.repeat):  # in turns, so a busy moment of the machine hits both alike
            for primaries, cluster in ((1, one), (3, three)):
                rate, writers_cpu, servers_cpu = aggregate_appends(cluster, names, seconds)
                runs[primaries].append((rate, writers_cpu / seconds, servers_cpu / seconds))
        delivered, appended = watchers(three, names, 2 if bench.quick else 4, 300 if bench.quick else 3000)
    section = report.section(
        f"Redis Cluster: {OPLOGS} oplogs, {WRITERS} writer processes appending batches of {BATCH} "
        f"(median of {bench.repeat} runs of {seconds:g} s; ratio to 1 primary)"
    )
    figures = {primaries: tuple(statistics.median(column) for column in zip(*found, strict=True))
               for primaries, found in runs.items()}
    for primaries in (1, 3):
        rate, writers_cores, servers_cores = figures[primaries]
        section.rows.append(Row(
            f"{primaries} primar{'y' if primaries == 1 else 'ies'}: aggregate append_many({BATCH})", rate,
            "entries/s", f"{rate / figures[1][0]:.2f} (writers {writers_cores:.2f} cores, "
            f"servers {servers_cores:.2f} cores)",
        ))
    report.figures["cluster.scale_out"] = figures[3][0] / figures[1][0]
    watched = report.section(f"Redis Cluster, 3 primaries: {OPLOGS} oplogs, watchers on each, one writer")
    watched.rows += [
        Row(f"watchers ({2 if bench.quick else 4} per oplog): delivered events, all watchers", delivered, "events/s"),
        Row("the writer (another process): insert() one at a time, round robin over the oplogs", appended,
            "entries/s"),
    ]
