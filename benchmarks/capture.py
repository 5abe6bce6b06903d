"""PostgreSQL capture: rows per second from commit to oplog, and commit-to-event latency at one commit per ms.

Throughput: N rows of the benchmark's document (``document(i)`` as a table
row, 8 columns), committed 1,000 per transaction while no capture reads; then
a capture catches up from its slot into a FileOplog (group commit) and is
timed until the last row is recorded. Reference, in the same run on the same
server: ``pg_logical_slot_get_binary_changes`` of a second pgoutput slot over
the same WAL, which is the server's own decoding alone, with nothing sent.

Latency: the capture streams; a writer commits one row per millisecond
(an autocommit INSERT, timed from the moment it is sent, so the round trip of
the INSERT and its commit, about 0.1 ms, is in every figure) and a
``watch().iterate()`` consumer of the same oplog timestamps each event.
Reference: a bare psycopg2 replication reader of another slot, timestamping
each Insert message as it arrives (decoding and sending by the server, no
rxcs).

The server is started by the benchmark (``tests/pg_server.py``: initdb in a
temporary directory, ``fsync=off`` so the disk does not set the pace). Without
PostgreSQL binaries or psycopg2 the scenario is skipped with a note.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from typing import Any

import rxcs
from benchmarks.common import ROOT, Bench, Report, Row, latency_rows, medians, ratio


def _server_module() -> Any:
    spec = importlib.util.spec_from_file_location("rxcs_bench_pg_server", ROOT / "tests" / "pg_server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TABLE = ("CREATE TABLE users (_id bigint PRIMARY KEY, name text, email text, age int, status text, "
         "total numeric, tags text[], city text)")
ROWS = ("INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.org', 18 + g %% 60, "
        "(ARRAY['new', 'paid', 'shipped'])[1 + g %% 3], round((g * 1.37) %% 500, 2), "
        "(ARRAY['a', 'b'])[1:g %% 3], (ARRAY['Paris', 'Lima', 'Oslo'])[1 + g %% 3] "
        "FROM generate_series(%s, %s) g")


def run(bench: Bench, report: Report) -> None:
    pg = _server_module()
    reason = pg.unavailable_reason()
    if reason is not None:
        report.notes.append(f"Capture scenario skipped: {reason}.")
        sys.stderr.write(report.notes[-1] + "\n")
        return
    server = pg.PostgresServer(settings={"fsync": "off", "full_page_writes": "off"})
    server.start()
    try:
        _run(bench, report, server)
    finally:
        server.stop()


def _run(bench: Bench, report: Report, server: Any) -> None:
    rows = 20_000 if bench.quick else 200_000
    throughput = [0]

    def capture_rate() -> float:
        rate, reference = _throughput(bench, server, rows, f"t{throughput[0]}")
        throughput[0] += 1
        _references.append(reference)
        return rate

    _references: list[float] = []
    (rate,) = medians(bench.repeat, capture_rate)
    reference = sorted(_references)[len(_references) // 2]
    section = report.section(f"Capture: {rows:,} PostgreSQL rows from commit to oplog (ratio to server-side decoding)")
    section.rows.append(Row("pg_logical_slot_get_binary_changes, pgoutput (reference)", reference, "rows/s", "1.00"))
    section.rows.append(Row("rxcs capture postgres → FileOplog (group commit)", rate, "rows/s", ratio(rate, reference)))
    report.figures["capture_rows_per_s"] = rate
    report.figures["capture_reference_rows_per_s"] = reference

    samples = bench.latency_samples
    raw = _raw_latency(server, samples)
    captured = _capture_latency(bench, server, samples)
    section = report.section(f"Capture latency: one commit per ms, commit → event, {samples:,} commits")
    section.rows.extend(latency_rows("psycopg2 replication reader, Insert message received (reference)", raw))
    section.rows.extend(latency_rows("rxcs capture → FileOplog → watch().iterate()", captured))
    report.figures["capture_latency_p99_ms"] = sorted(captured)[int(0.99 * len(captured))]


def _database(server: Any, name: str) -> str:
    server.execute(f"CREATE DATABASE {name}")
    server.execute(TABLE, name)
    server.execute("CREATE PUBLICATION rxcs FOR TABLE users", name)
    return str(server.dsn(name))


def _throughput(bench: Bench, server: Any, rows: int, name: str) -> tuple[float, float]:
    """(capture rate, reference rate) in rows/s over the same committed rows."""
    dsn = _database(server, name)
    server.execute("INSERT INTO users (_id) VALUES (0)", name)
    path = bench.directory / f"capture-{name}"
    with rxcs.open_oplog(path) as oplog:  # a first run: the slot, and a snapshot of one row
        first = rxcs.capture.postgres(dsn, oplog, slot=f"{name}_rxcs", tables=["users"])
        first.start()
        _wait(lambda: first.statistics().phase == "streaming", "the capture's slot")
        first.stop()
    server.execute(f"SELECT pg_create_logical_replication_slot('{name}_ref', 'pgoutput')", name)
    connection = _connect(dsn)
    with connection.cursor() as cursor:
        for start in range(1, rows + 1, 1000):
            cursor.execute(ROWS, (start, min(rows, start + 999)))
            connection.commit()
    connection.close()
    began = time.perf_counter()
    server.execute(f"SELECT count(*) FROM pg_logical_slot_get_binary_changes('{name}_ref', NULL, NULL, "
                   "'proto_version', '1', 'publication_names', 'rxcs')", name)
    reference = rows / (time.perf_counter() - began)
    with rxcs.open_oplog(path) as oplog:
        capture = rxcs.capture.postgres(dsn, oplog, slot=f"{name}_rxcs", tables=["users"])
        began = time.perf_counter()
        capture.start()
        _wait(lambda: oplog.last_op_id >= rows + 1, "the capture to record every row", 600)
        elapsed = time.perf_counter() - began
        capture.stop()
    server.execute(f"SELECT pg_drop_replication_slot('{name}_rxcs')", name)
    server.execute(f"SELECT pg_drop_replication_slot('{name}_ref')", name)
    return rows / elapsed, reference


def _connect(dsn: str) -> Any:
    import psycopg2

    return psycopg2.connect(dsn)


def _wait(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _paced_commits(dsn: str, count: int, committed: dict[int, int]) -> threading.Thread:
    """A started thread committing one row per millisecond; ``committed[i]`` is when commit i returned (ns)."""
    connection = _connect(dsn)
    connection.autocommit = True

    def write() -> None:
        with connection.cursor() as cursor:
            next_at = time.perf_counter()
            for i in range(count):
                committed[i] = time.perf_counter_ns()  # the commit is in this autocommit INSERT
                cursor.execute("INSERT INTO users (_id, name) VALUES (%s, 'x')", (i,))
                next_at += 0.001
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        connection.close()

    thread = threading.Thread(target=write, name="bench-commits")
    thread.start()
    return thread


def _raw_latency(server: Any, count: int) -> list[float]:
    import psycopg2.extras

    dsn = _database(server, "latency_raw")
    connection = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cursor = connection.cursor()
    cursor.create_replication_slot("raw", output_plugin="pgoutput")
    cursor.start_replication(slot_name="raw", decode=False, options={"proto_version": "1", "publication_names": "rxcs"})
    committed: dict[int, int] = {}
    received: dict[int, int] = {}
    writer = _paced_commits(dsn, count, committed)
    import select

    while len(received) < count:
        message = cursor.read_message()
        if message is None:
            select.select([connection], [], [], 1.0)
            continue
        if message.payload[:1] == b"I":  # 'I', relation oid, 'N', column count, 't', length, the _id as text
            length = int.from_bytes(message.payload[9:13], "big")
            received[int(message.payload[13 : 13 + length])] = time.perf_counter_ns()
            cursor.send_feedback(flush_lsn=message.data_start)
    writer.join()
    connection.close()
    server.execute("SELECT pg_drop_replication_slot('raw')")
    return [(received[i] - committed[i]) / 1e6 for i in range(count)]


def _capture_latency(bench: Bench, server: Any, count: int) -> list[float]:
    dsn = _database(server, "latency_rxcs")
    path = bench.directory / "capture-latency"
    with rxcs.open_oplog(path) as oplog:
        capture = rxcs.capture.postgres(dsn, oplog, slot="latency", tables=["users"]).start()
        _wait(lambda: capture.statistics().phase == "streaming", "the capture to stream")
        committed: dict[int, int] = {}
        received: dict[int, int] = {}
        with rxcs.open_oplog(path, readonly=True) as reader, \
                rxcs.watch(reader, "latency_rxcs", "users").iterate() as stream:
            writer = _paced_commits(dsn, count, committed)
            for _ in range(count):
                event = stream.next(timeout=30)
                received[event.document_key["_id"]] = time.perf_counter_ns()
            writer.join()
        capture.stop()
    server.execute("SELECT pg_drop_replication_slot('latency')", "latency_rxcs")
    return [(received[i] - committed[i]) / 1e6 for i in range(count)]
