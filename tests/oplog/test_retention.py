"""Retention that runs by itself: FileOplog in whole segments, RedisOplog exactly, each limit a floor."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server  # noqa: F401 - the session's Redis server
from support import eventually

import rxcs
from rxcs.oplog.file import FileOplog
from rxcs.oplog.redis import RedisOplog
from rxcs.oplog.retention import Retention


def retained(oplog: rxcs.Oplog) -> int:
    return oplog.last_op_id - oplog.first_op_id + 1


def segments(path: Path) -> list[int]:
    return sorted(int(p.stem) for p in path.glob("*.seg"))


class TestLimits:
    def test_bad_limits_are_refused_naming_the_limit(self, tmp_path: Path) -> None:
        """A limit that is not positive is an error naming it, from both backends' validation."""
        with pytest.raises(ValueError, match="retain_age"):
            Retention.of(retain_age=-1)
        with pytest.raises(ValueError, match="retain_entries"):
            rxcs.open_oplog(tmp_path / "oplog", retain_entries=0)


class TestFileOplog:
    def test_retain_entries_keeps_at_least_n_and_at_most_n_plus_one_segment(self, tmp_path: Path) -> None:
        """retain_entries=N: never fewer than N entries while appending; soon at most N plus one segment's worth."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096, retain_entries=50) as oplog:
            assert isinstance(oplog, FileOplog)
            fewest = None
            for i in range(2000):
                oplog.insert("shop", "users", {"_id": i, "pad": "x" * 40})
                if i >= 50:
                    fewest = retained(oplog) if fewest is None else min(fewest, retained(oplog))
            per_segment = max(b - a for a, b in zip(segments(path), segments(path)[1:], strict=False))
            assert fewest is not None
            assert fewest >= 50
            assert eventually(lambda: retained(oplog) <= 50 + per_segment)
            assert retained(oplog) >= 50
            # counted by the keeper once each drop returns: a moment after the files show it
            assert eventually(lambda: oplog.retention_statistics().entries_trimmed == oplog.first_op_id - 1)
            assert oplog.retention_statistics().segments_trimmed >= 2000 // per_segment - 3

    def test_retain_bytes_keeps_at_least_that_many_bytes(self, tmp_path: Path) -> None:
        """retain_bytes=B: the segments left hold at least B bytes, and at most B plus one segment."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096, retain_bytes=20_000) as oplog:
            for i in range(1500):
                oplog.insert("shop", "users", {"_id": i, "pad": "x" * 40})

            def size() -> int:  # a segment listed may be dropped before it is measured
                sizes = []
                for segment in path.glob("*.seg"):
                    with contextlib.suppress(FileNotFoundError):
                        sizes.append(segment.stat().st_size)
                return sum(sizes)

            assert eventually(lambda: size() <= 20_000 + 4096)
            assert size() >= 20_000
            assert oplog.first_op_id > 1

    def test_an_idle_writer_drops_old_segments_once_retain_age_passes(self, tmp_path: Path) -> None:
        """retain_age=1 s with no append after the burst: the old segments go about 1 s later, the newest stays."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096, retain_age=1) as oplog:
            for i in range(500):
                oplog.insert("shop", "users", {"_id": i})
            written = time.monotonic()
            assert len(segments(path)) > 3
            time.sleep(0.3)
            if time.monotonic() - written < 0.8:  # younger than the limit: kept (a floor, not a target)
                assert oplog.first_op_id == 1
            assert eventually(lambda: len(segments(path)) == 1, timeout=3.0)
            assert time.monotonic() - written < 1.0 + 1.0  # due at 1 s; dropped within the next second
            assert oplog.last_op_id == 500
            assert oplog.first_op_id == segments(path)[0]

    def test_the_catalog_keeps_a_collection_whose_entries_retention_dropped(self, tmp_path: Path) -> None:
        """Retention drops only segments the saved collection catalog holds: after the writer is SIGKILLed (no
        close, no save then), the collection created in a dropped segment keeps its UUID, as after trim()."""
        path = tmp_path / "oplog"
        script = textwrap.dedent(
            """
            import os, signal, sys, time, rxcs
            oplog = rxcs.open_oplog(sys.argv[1], segment_bytes=4096, retain_entries=20)
            oplog.create_collection("shop", "users")
            print(oplog.collections()[rxcs.Namespace("shop", "users")].uuid, flush=True)
            for i in range(500):
                oplog.insert("shop", "orders", {"_id": i})
            deadline = time.monotonic() + 10
            while oplog.first_op_id < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        writer = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert writer.returncode == -signal.SIGKILL, writer.stderr
        with rxcs.open_oplog(path) as reopened:
            assert reopened.first_op_id >= 100
            assert str(reopened.collections()[rxcs.Namespace("shop", "users")].uuid) == writer.stdout.strip()

    def test_a_stream_passed_by_retention_gets_history_lost(self, tmp_path: Path) -> None:
        """A trim by retention that passes a reader's position is ChangeStreamHistoryLost for it, as any trim."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096, retain_entries=20) as oplog:
            oplog.insert("shop", "users", {"_id": -1})
            with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                stream.next(timeout=5)
                for i in range(1000):
                    oplog.insert("shop", "users", {"_id": i})
                assert eventually(lambda: oplog.first_op_id > 200)

                def read_on() -> None:
                    for _ in range(1000):
                        stream.next(timeout=5)

                with pytest.raises(rxcs.ChangeStreamHistoryLost):
                    read_on()


class TestRedisOplog:
    def test_retain_entries_is_exact(self, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
        """retain_entries=N on Redis: soon after the appends exactly the newest N remain."""
        url = f"{redis_server.url}?stream={tmp_path.name}-entries&retain_entries=100"
        with rxcs.open_oplog(url) as oplog:
            assert isinstance(oplog, RedisOplog)
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(1000)])
            assert eventually(lambda: retained(oplog) == 100)
            assert oplog.first_op_id == 901
            assert oplog.info().entries == 100
            # counted by the keeper once the trim returns: a moment after the stream shows it
            assert eventually(lambda: oplog.retention_statistics().entries_trimmed == 900)

    def test_retain_age_trims_by_the_servers_clock_while_idle(
        self, redis_server: RedisServer, tmp_path: Path  # noqa: F811
    ) -> None:
        """retain_age=1 s on Redis: entries older than 1 s (server time) go, with no further append."""
        url = f"{redis_server.url}?stream={tmp_path.name}-age"
        with rxcs.open_oplog(url, retain_age=1.0) as oplog:
            assert isinstance(oplog, RedisOplog)
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(50)])
            written = time.monotonic()
            time.sleep(0.6)
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(50, 60)])
            if time.monotonic() - written < 0.9:
                assert oplog.first_op_id == 1  # nothing is 1 s old yet
            assert eventually(lambda: oplog.first_op_id == 51, timeout=3.0)  # the first 50 went, idle
            assert oplog.last_op_id == 60
            assert eventually(lambda: oplog.first_op_id == 61, timeout=3.0)  # then the rest
