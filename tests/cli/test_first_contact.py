"""What a new user meets first: usage, version, error lines, exit statuses, help, the demo; run as a user runs it."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server_available

import rxcs

RXCS = [sys.executable, "-m", "rxcs"]
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RXCS, *args], capture_output=True, text=True, timeout=timeout, check=False)


def trimmed_oplog(path: Path, entries: int = 300) -> str:
    """A directory oplog of small segments whose oldest entries were trimmed; the token of its first entry."""
    with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
        for i in range(entries):
            oplog.insert("shop", "users", {"_id": i, "pad": "x" * 100})
        with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            token = str(stream.next(timeout=5).id)
        oplog.trim(before_op_id=entries - 50)
    return token


class TestUsage:
    def test_no_arguments_prints_the_usage(self) -> None:
        """`rxcs` alone prints its usage with every command on stderr, exit status 2 (usage)."""
        result = run()
        assert result.returncode == 2
        assert result.stderr.startswith("usage: rxcs")
        for command in ("demo", "watch", "serve", "oplog", "capture"):
            assert command in result.stderr

    def test_a_command_that_needs_one_more_word_prints_its_usage(self) -> None:
        """`rxcs oplog` alone prints what may follow (info, dump, verify, trim, repair)."""
        result = run("oplog")
        assert result.returncode == 2
        assert result.stderr.startswith("usage: rxcs oplog")
        assert all(action in result.stderr for action in ("info", "dump", "verify", "trim", "repair"))

    def test_version(self) -> None:
        """`rxcs --version` prints the installed version and exits 0."""
        result = run("--version")
        assert result.returncode == 0
        assert result.stdout.strip() == f"rxcs {importlib.metadata.version('rxcs')}"

    def test_every_watch_option_has_help(self) -> None:
        """Each option `rxcs watch --help` lists is explained, on its line or the next."""
        result = run("watch", "--help")
        assert result.returncode == 0
        lines = result.stdout.split("options:", 1)[1].splitlines()
        options = [i for i, line in enumerate(lines) if re.match(r"^  -", line)]
        assert len(options) >= 14
        for i in options:
            same_line = re.split(r"\s{2,}", lines[i].strip(), maxsplit=1)
            next_line = lines[i + 1] if i + 1 < len(lines) else ""
            explained = len(same_line) == 2 or re.match(r"^\s{10,}\S", next_line)
            assert explained, f"no help for {lines[i].strip()}"


class TestErrors:
    def test_a_directory_without_an_oplog_is_named_once(self, tmp_path: Path) -> None:
        """The error names the path once: `rxcs: error: DIR: no oplog here ...`, not `DIR: DIR: ...`."""
        empty = tmp_path / "notoplog"
        empty.mkdir()
        result = run("watch", str(empty))
        assert result.returncode == 2
        assert result.stderr.count(str(empty)) == 1, result.stderr
        assert "no oplog here" in result.stderr

    def test_history_lost_at_the_start_names_the_stream_and_exits_1(self, tmp_path: Path) -> None:
        """A token older than the log: exit 1 (the stream failed, not usage), the stream named in words."""
        token = trimmed_oplog(tmp_path / "oplog")
        result = run("watch", str(tmp_path / "oplog"), "--resume-after", token)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("rxcs watch: ChangeStreamHistoryLost: watching the whole deployment: ")
        assert "*" not in line
        scoped = run("watch", str(tmp_path / "oplog"), "--db", "shop", "--collection", "users", "--resume-after", token)
        assert "watching shop.users: " in scoped.stderr

    def test_history_lost_while_watching_is_said_once(self, tmp_path: Path) -> None:
        """A trim that passes a running `rxcs watch`: one error line, then the resume token; exit 1."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
            for i in range(2000):
                oplog.insert("shop", "users", {"_id": i, "pad": "x" * 100})
        watcher = subprocess.Popen(
            [*RXCS, "watch", str(path), "--from-beginning", "--format", "pretty"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert watcher.stdout is not None
            watcher.stdout.readline()  # it runs; its pipe fills and it waits for this reader
            with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
                oplog.trim(before_op_id=1900)
            _, stderr = watcher.communicate(timeout=60)
        finally:
            watcher.kill()
            watcher.wait()
        assert watcher.returncode == 1, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 2, stderr
        assert lines[0].startswith("rxcs watch: ChangeStreamHistoryLost: ")
        assert lines[1].startswith("resume token: ")

    @pytest.mark.skipif(not redis_server_available(), reason="no redis-server binary or redis client")
    def test_a_redis_outage_while_watching_is_said_once(self, tmp_path: Path) -> None:
        """Redis killed under `rxcs watch`: one warning when the outage starts, one error line when it gives up,
        then the resume token; exit 1."""
        server = RedisServer(tmp_path / "redis")
        server.start()
        try:
            url = f"{server.url}?stream=watched&retry_for=2"
            with rxcs.open_oplog(url) as oplog:
                oplog.insert("shop", "users", {"_id": 1})
            watcher = subprocess.Popen(
                [*RXCS, "watch", url, "--from-beginning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert watcher.stdout is not None
            watcher.stdout.readline()
            time.sleep(0.5)  # waiting for more, in a blocking read
            server.kill()
            _, stderr = watcher.communicate(timeout=60)
        finally:
            server.stop()
        assert watcher.returncode == 1, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 3, stderr
        assert "redis oplog unreachable; retrying" in lines[0]
        assert lines[1].startswith("rxcs watch: OplogUnavailableError: ")
        assert lines[2].startswith("resume token: ")

    def test_valid_json_with_a_bad_date_names_the_date(self, tmp_path: Path) -> None:
        """`--match` with valid JSON holding a bad $date says what is wrong with it, not "not valid JSON"."""
        trimmed_oplog(tmp_path / "oplog", entries=5)
        result = run("watch", str(tmp_path / "oplog"), "--match", '{"x": {"$gte": {"$date": "garbage"}}}')
        assert result.returncode == 2
        assert "not valid JSON" not in result.stderr
        assert "$date: 'garbage' is not valid" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


class TestDemo:
    def test_updates_read_as_update_documents_and_no_token_of_a_deleted_oplog(self) -> None:
        """The demo shows an update as `{"$set": ...}`, and its last line offers no token for the oplog it deleted."""
        result = run("demo", "--count", "40", "--interval", "0", "--seed", "7", "--color", "never")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        updates = [line for line in lines if " update " in line]
        assert updates
        assert all('{"$set": ' in line for line in updates)
        assert "resume token" not in lines[-1]
        assert lines[-1].startswith("rxcs demo: 40 events")


class TestPackage:
    @pytest.mark.parametrize("name", ["rxcs", "rxcs.capture", "rxcs.http", "rxcs.oplog", "rxcs.pipeline", "rxcs.query"])
    def test_no_future_import_leaks_into_a_package(self, name: str) -> None:
        """`from __future__ import annotations` leaves no `annotations` name in a public package."""
        code = f"import {name} as m; print(json.dumps(hasattr(m, 'annotations')))"
        result = subprocess.run(
            [sys.executable, "-c", f"import json; {code}"], capture_output=True, text=True, check=True, timeout=60
        )
        assert json.loads(result.stdout) is False

    def test_every_page_of_the_docs_is_in_the_navigation(self) -> None:
        """Each docs/*.md page is listed in mkdocs.yml's nav, so readers can reach it."""
        navigation = (ROOT / "mkdocs.yml").read_text()
        for page in sorted((ROOT / "docs").glob("*.md")):
            assert re.search(rf":\s*{re.escape(page.name)}\s*$", navigation, re.MULTILINE), page.name
