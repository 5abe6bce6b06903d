"""Inspecting named consumers: the Python API, ``rxcs consumers`` as a user runs it, and ``GET /consumers``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve.helpers import get, running

import rxcs
from rxcs.http import create_app


def rxcs_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rxcs", *args], capture_output=True, text=True, timeout=60, check=False
    )


def two_consumers(location: str) -> None:
    """An oplog with 5 orders and 1 user, a consumer ``billing`` at the start, ``audit`` at the end."""
    with rxcs.open_oplog(location) as oplog:
        for i in range(5):
            oplog.insert("shop", "orders", {"_id": i})
        start = rxcs.BEGINNING
        rxcs.watch(oplog, "shop", "orders", consumer="billing", start_at_operation_time=start).iterate().close()
        oplog.insert("shop", "users", {"_id": 1})
        rxcs.watch(oplog, "shop", None, [{"$match": {"operationType": "insert"}}], consumer="audit").iterate().close()


@pytest.fixture(params=["file", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An oplog location of each durable backend, holding ``two_consumers``."""
    if request.param == "redis":
        location = f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
    else:
        location = str(tmp_path / "oplog")
    two_consumers(location)
    return location


class TestApi:
    def test_list_reports_position_lag_and_scope(self, where: str) -> None:
        """list_consumers: each consumer's position, lag in entries, commit time, scope and pipeline."""
        with rxcs.open_oplog(where) as oplog:
            found = {info.name: info for info in rxcs.list_consumers(oplog)}
        assert sorted(found) == ["audit", "billing"]
        assert (found["billing"].op_id, found["billing"].lag_entries) == (0, 6)
        assert (found["audit"].op_id, found["audit"].lag_entries, found["audit"].lag_seconds) == (6, 0, 0.0)
        assert (found["billing"].db, found["billing"].collection) == ("shop", "orders")
        assert "operationType" in (found["audit"].pipeline or "")
        assert found["billing"].committed_at is not None

    def test_reset_and_delete(self, where: str) -> None:
        """reset_consumer moves a consumer (its next run resumes there); delete_consumer forgets it."""
        with rxcs.open_oplog(where) as oplog:
            assert rxcs.reset_consumer(oplog, "audit", rxcs.BEGINNING).op_id == 0
            with rxcs.watch(oplog, "shop", None, [{"$match": {"operationType": "insert"}}],
                            consumer="audit").iterate() as stream:
                assert stream.next(timeout=5).op_id == 1
            assert rxcs.delete_consumer(oplog, "billing") is True
            assert rxcs.delete_consumer(oplog, "billing") is False
            assert [info.name for info in rxcs.list_consumers(oplog)] == ["audit"]

    def test_reset_refuses_what_it_cannot_do_and_writes_nothing(self, where: str, tmp_path: Path) -> None:
        """An unknown name, a bad name or another oplog's token: a clear error, and the records unchanged."""
        with rxcs.open_oplog(where) as oplog, rxcs.open_oplog(tmp_path / "other") as other:
            other.insert("shop", "orders", {"_id": 1})
            foreign = rxcs.ResumeToken(other.oplog_id, 1)
            before = oplog.checkpoints.load_all()
            with pytest.raises(rxcs.RxcsError, match="no consumer named 'nobody'"):
                rxcs.reset_consumer(oplog, "nobody", "now")
            with pytest.raises(rxcs.InvalidOptionError, match="consumer name"):
                rxcs.reset_consumer(oplog, "a/b", "now")
            with pytest.raises(rxcs.InvalidResumeToken, match="not from this one"):
                rxcs.reset_consumer(oplog, "billing", foreign)
            with pytest.raises(rxcs.ChangeStreamHistoryLost, match="ends at op_id 6"):
                rxcs.reset_consumer(oplog, "billing", rxcs.ResumeToken(oplog.oplog_id, 99))
            assert oplog.checkpoints.load_all() == before


class TestCommandLine:
    def test_list_as_a_table_and_as_json(self, where: str) -> None:
        """rxcs consumers LOCATION prints a table; --json one document per consumer."""
        table = rxcs_command("consumers", where)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["NAME", "POSITION", "LAG", "LAG_S", "COMMITTED", "SCOPE"]
        assert lines[1].split()[:3] == ["audit", "6", "0"]
        assert lines[2].split()[:3] == ["billing", "0", "6"]
        listed = rxcs_command("consumers", "list", where, "--json").stdout
        documents = [json.loads(line) for line in listed.splitlines()]
        assert [(d["name"], d["op_id"], d["collection"]) for d in documents] == [
            ("audit", 6, None), ("billing", 0, "orders")
        ]

    def test_reset_to_now_and_to_a_token_then_delete(self, where: str) -> None:
        """reset --to NOW / TOKEN moves a consumer; delete forgets it; each says what it did."""
        moved = rxcs_command("consumers", "reset", where, "billing", "--to", "NOW")
        assert moved.returncode == 0, moved.stderr
        assert "after op_id 6" in moved.stdout
        with rxcs.open_oplog(where) as oplog:
            token = str(rxcs.ResumeToken(oplog.oplog_id, 2))
        assert rxcs_command("consumers", "reset", where, "billing", "--to", token).returncode == 0
        listed = {d["name"]: d for d in map(json.loads, rxcs_command("consumers", where, "--json").stdout.splitlines())}
        assert listed["billing"]["op_id"] == 2
        deleted = rxcs_command("consumers", "delete", where, "billing")
        assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted consumer billing")
        assert "billing" not in rxcs_command("consumers", where).stdout

    @pytest.mark.parametrize(
        ("args", "status", "message"),
        [
            (["reset", "{where}", "nobody", "--to", "NOW"], 1, "no consumer named 'nobody'"),
            (["delete", "{where}", "nobody"], 1, "no consumer named 'nobody'"),
            (["delete", "{where}", "../etc"], 2, "consumer name '../etc' is not allowed"),
            (["reset", "{where}", "billing", "--to", "zz"], 2, "resume token 'zz'"),
            (["reset", "{where}", "billing"], 2, "--to"),
        ],
    )
    def test_errors_are_one_line_and_write_nothing(
        self, where: str, args: list[str], status: int, message: str
    ) -> None:
        """Bad names, unknown consumers, bad tokens: one line on stderr, the documented status, no change."""
        with rxcs.open_oplog(where) as oplog:
            before = oplog.checkpoints.load_all()
        done = rxcs_command("consumers", *[arg.format(where=where) for arg in args])
        assert done.returncode == status
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        with rxcs.open_oplog(where) as oplog:
            assert oplog.checkpoints.load_all() == before

    def test_a_missing_directory_is_a_usage_error(self, tmp_path: Path) -> None:
        """rxcs consumers on a path without an oplog exits 2 and creates nothing."""
        done = rxcs_command("consumers", str(tmp_path / "nowhere"))
        assert done.returncode == 2
        assert "no oplog directory there" in done.stderr
        assert not (tmp_path / "nowhere").exists()


class TestServe:
    def test_get_consumers(self, tmp_path: Path) -> None:
        """GET /consumers on rxcs serve lists the consumers as JSON."""
        two_consumers(str(tmp_path / "oplog"))
        with rxcs.open_oplog(tmp_path / "oplog", readonly=True) as oplog, running(create_app(oplog)) as served:
            answer: Any = get(f"{served.url}/consumers", timeout=10).json()
            refused = httpx.get(f"{served.url}/consumers", timeout=10)
        assert [(c["name"], c["op_id"], c["lag_entries"]) for c in answer["consumers"]] == [
            ("audit", 6, 0), ("billing", 0, 6)
        ]
        assert refused.status_code == 403  # the same access rules as /oplog
