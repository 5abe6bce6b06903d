"""The issue's acceptance: a fan-out burst at 100 watchers, and a killed client that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

import rxcs

from .helpers import Served, sse

# A client in its own process: prints "<id> <document _id>" per event, flushed, until killed.
CLIENT = """
import json, sys, httpx
with httpx.stream("GET", sys.argv[1], headers={"Rxcs-Client": "killed-client"}, timeout=30) as response:
    event_id = None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            print(event_id, json.loads(line[6:])["documentKey"]["_id"], flush=True)
"""


class TestFanOut:
    @pytest.mark.slow
    def test_100_watchers_each_receive_every_event_of_a_10000_event_burst_in_order(self) -> None:
        """100 SSE watchers (httpx, another process) on one oplog: each gets all 10,000 burst events, in order."""
        from benchmarks import bench_http

        result = bench_http.run(watchers=100, events=10_000, backend="memory")
        assert result["delivered"] == 100 * 10_000
        assert result["in_order"] == 100


class TestKilledClient:
    def test_a_client_killed_mid_stream_resumes_with_exactly_the_missing_events(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """SIGKILL a client process mid-stream; reconnecting with the last id it printed gives exactly the rest."""
        served = serve()
        total = 1500
        child = subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"{served.url}/watch?db=shop"], stdout=subprocess.PIPE, text=True
        )

        def write() -> None:
            for i in range(total):
                oplog.insert("shop", "users", {"_id": i})
                if i % 50 == 49:
                    time.sleep(0.01)  # a steady stream, so that the kill lands mid-stream

        try:
            while served.app.statistics().watchers < 1:
                time.sleep(0.01)
            writer = threading.Thread(target=write)
            writer.start()
            assert child.stdout is not None
            seen: list[tuple[str, int]] = []
            while len(seen) < 200:
                event_id, key = child.stdout.readline().split()
                seen.append((event_id, int(key)))
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            # Lines printed before the kill may still be in the pipe: the client saw those too.
            for line in child.stdout.read().splitlines():
                event_id, key = line.split()
                seen.append((event_id, int(key)))
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)
        writer.join(30)
        assert len(seen) < total, "the kill did not land mid-stream"
        assert [key for _, key in seen] == list(range(len(seen)))

        with sse(f"{served.url}/watch", headers={"Last-Event-ID": seen[-1][0]}, db="shop") as reader:
            rest = reader.events(total - len(seen))
            oplog.insert("shop", "users", {"_id": "after"})
            after = reader.event()
        assert [frame.data["documentKey"]["_id"] for frame in rest] == list(range(len(seen), total))
        assert after.data["documentKey"] == {"_id": "after"}  # nothing else came between
