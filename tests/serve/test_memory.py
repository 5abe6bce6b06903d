"""The memory a stalled client costs the server: within the bound docs/http.md states.

``rxcs serve`` runs as a real process with its defaults; a real socket asks
for a stream and then stops reading, while another process writes events
much larger in total than the bound. The server's resident memory (VmRSS)
must grow by no more than the stated bound: per watcher, ``buffer_size``
events waiting plus ``batch_size`` entries read ahead, one write of
``MAX_WRITE_BYTES`` plus uvicorn's 64 KiB; server-wide, the frame cache.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rxcs
from rxcs.http._app import MAX_WRITE_BYTES
from rxcs.http._sse import FRAME_CACHE_BYTES

from .helpers import get

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")

EVENT_BYTES = 20_000
EVENTS = 4_000  # 80 MB written: several times the bound
BUFFER_SIZE = 100  # rxcs serve's default per watcher
BATCH_SIZE = 100  # entries a watcher's cursor reads at once (watch()'s default)
IN_MEMORY = 1.5  # an event of one long string takes about its JSON size as Python objects; margin for the rest
MIB = 1024 * 1024
BOUND = int(FRAME_CACHE_BYTES + (BUFFER_SIZE + BATCH_SIZE) * EVENT_BYTES * IN_MEMORY + MAX_WRITE_BYTES + 64 * 1024)
SLACK = 6 * MIB  # the allocator's own rounding and arenas, measured at 1-3 MiB


def resident(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    path = tmp_path / "oplog"
    with rxcs.open_oplog(path) as oplog:
        oplog.insert("shop", "users", {"_id": 0})
    process = subprocess.Popen(
        [sys.executable, "-m", "rxcs", "serve", str(path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[2].rstrip("/")
        yield process, url, path
    finally:
        process.kill()
        process.wait(10)


class TestStalledClient:
    def test_a_client_that_stops_reading_costs_no_more_than_the_stated_bound(
        self, server: tuple[subprocess.Popen[str], str, Path]
    ) -> None:
        """80 MB of events for a reader that reads nothing: the server grows by less than the bound (about 14 MB)."""
        process, url, path = server
        port = int(url.rsplit(":", 1)[1])
        assert get(f"{url}/oplog", timeout=10).status_code == 200  # warm: imports, first request
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        try:
            stalled.sendall(b"GET /watch?db=shop HTTP/1.1\r\nHost: 127.0.0.1\r\nRxcs-Client: stalled\r\n\r\n")
            assert stalled.recv(15).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)
            before = resident(process.pid)
            peak = before
            with rxcs.open_oplog(path) as writer:
                for i in range(EVENTS):
                    writer.insert("shop", "users", {"_id": i + 1, "padding": "x" * EVENT_BYTES})
                    if i % 100 == 0:
                        peak = max(peak, resident(process.pid))
            deadline = time.monotonic() + 3  # the stream reads on until its buffer is full, then pauses
            while time.monotonic() < deadline:
                peak = max(peak, resident(process.pid))
                time.sleep(0.05)
            info = get(f"{url}/oplog", timeout=10).json()
        finally:
            stalled.close()
        assert info["watchers"] == 1  # still waiting on the stalled client: its buffer is full
        growth = peak - before
        assert growth < BOUND + SLACK, f"grew {growth / MIB:.1f} MiB; bound {BOUND / MIB:.1f} MiB + slack"
        assert BOUND + SLACK < EVENTS * EVENT_BYTES / 3  # the bound is far below what was written
