"""Health probes: rxcs serve's /healthz and /readyz against a real Redis stopped and restarted; rxcs oplog info."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, redis_server_available
from support import eventually

import rxcs

from .helpers import get
from .test_cli_serve import rxcs_serve

RXCS = [sys.executable, "-m", "rxcs"]



def readyz(url: str) -> tuple[int, Any]:
    response = get(f"{url}/readyz", timeout=20)
    return response.status_code, response.json()


class TestProbes:
    @pytest.mark.skipif(not redis_server_available(), reason="no redis-server binary or redis client")
    def test_readyz_follows_redis_going_away_and_coming_back(self, tmp_path: Path) -> None:
        """/readyz is 200 while Redis answers, 503 naming it once Redis is stopped, 200 again once it returns;
        /healthz (the process) stays 200 throughout."""
        server = RedisServer(tmp_path / "redis", appendonly=True)  # the oplog's identity survives the restart
        server.start()
        try:
            url = f"{server.url}?stream=probed"
            with rxcs.open_oplog(url) as oplog:
                oplog.insert("shop", "users", {"_id": 1})
            with rxcs_serve(url) as (_, served):
                assert get(f"{served}/healthz", timeout=10).status_code == 200
                status, body = readyz(served)
                assert (status, body["status"]) == (200, "ready"), body
                server.stop()
                assert eventually(lambda: readyz(served)[0] == 503, 20.0)
                status, body = readyz(served)
                assert body["status"] == "unready"
                assert "OplogUnavailableError" in body["problems"][0]
                assert get(f"{served}/healthz", timeout=10).status_code == 200
                server.restart()
                assert eventually(lambda: readyz(served)[0] == 200, 20.0)
        finally:
            server.stop()

    def test_probes_need_no_token_but_the_api_does(self, tmp_path: Path) -> None:
        """With --token-file, /healthz and /readyz answer without the token (probes carry none); /oplog does not."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        with rxcs_serve(str(path), "--token-file", str(token_file)) as (_, served):
            assert get(f"{served}/healthz", timeout=10).status_code == 200
            assert readyz(served)[0] == 200
            assert get(f"{served}/oplog", timeout=10).status_code == 401


class TestOplogInfoAsAProbe:
    def test_info_exits_1_when_an_entry_cannot_be_read(self, tmp_path: Path) -> None:
        """`rxcs oplog info` prints the info and exits 0 on a sound oplog, 1 naming the damage on a damaged one."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
            for i in range(100):
                oplog.insert("shop", "users", {"_id": i, "pad": "x" * 100})
        command = [*RXCS, "oplog", "info", str(path)]
        assert subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0
        oldest = min(path.glob("*.seg"))
        with oldest.open("r+b") as segment:
            segment.seek(60)
            segment.write(b"XXXXXXXX")
        damaged = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert damaged.returncode == 1
        assert damaged.stderr.startswith("rxcs oplog info: unhealthy: OplogCorruptedError")
        assert oldest.name in damaged.stderr
