"""rxcs serve, run as a real command in a subprocess: listening, auth, a clean Ctrl-C, usage errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import rxcs

from .helpers import Frame, get, sse

RXCS = [sys.executable, "-m", "rxcs"]


@pytest.fixture
def oplog_dir(tmp_path: Path) -> Path:
    path = tmp_path / "oplog"
    with rxcs.open_oplog(path) as oplog:
        oplog.insert("shop", "users", {"_id": 0})
    return path


@contextmanager
def rxcs_serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``rxcs serve ... --port 0``; yield the process and the URL it prints."""
    process = subprocess.Popen(
        [*RXCS, "serve", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("rxcs serve: http://127.0.0.1:"):
            process.kill()
            pytest.fail(f"rxcs serve did not start: {line}{process.stderr.read() if process.stderr else ''}")
        yield process, line.split()[2].rstrip("/")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RXCS, *args], capture_output=True, text=True, timeout=60, check=False)


class TestServeCommand:
    def test_serves_events_written_by_another_process_and_stops_cleanly_on_ctrl_c(self, oplog_dir: Path) -> None:
        """The server tails a file oplog another process writes; SIGINT ends streams resumably and exits 0."""
        with rxcs_serve(str(oplog_dir)) as (process, url):
            info = get(f"{url}/oplog", timeout=10).json()
            assert info["backend"] == "FileOplog"
            frames: list[Frame] = []
            with sse(f"{url}/watch", db="shop") as reader, rxcs.open_oplog(oplog_dir) as writer:
                reader.frame()
                writer.insert("shop", "users", {"_id": 1})
                frames.append(reader.event())
                process.send_signal(signal.SIGINT)
                frames.extend(reader.rest())
            assert process.wait(15) == 0
        assert [frame.event for frame in frames] == ["insert", "error"]
        assert frames[0].data["documentKey"] == {"_id": 1}
        assert frames[1].data["code"] == "shutting_down"
        assert frames[1].data["lastEventId"] == frames[0].id

    def test_token_file_makes_requests_need_the_token(self, oplog_dir: Path, tmp_path: Path) -> None:
        """With --token-file, a request without the token is 401 and one with it is served."""
        token_file = tmp_path / "token"
        token_file.write_text("t0ken-from-file\n")
        with rxcs_serve(str(oplog_dir), "--token-file", str(token_file)) as (_, url):
            assert get(f"{url}/oplog", timeout=10).status_code == 401
            answer = get(f"{url}/oplog", headers={"Authorization": "Bearer t0ken-from-file"}, timeout=10)
            assert answer.status_code == 200


class TestServeUsageErrors:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--host", "0.0.0.0"], "--token-file"),
            (["--port", "70000"], "--port must be between"),
            (["--max-watchers", "0"], "--max-watchers must be positive"),
            (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token: cannot read"),
        ],
    )
    def test_bad_arguments_exit_2_with_one_line(self, oplog_dir: Path, args: list[str], message: str) -> None:
        """Bad arguments: exit status 2, one clear line on stderr, no traceback."""
        result = run("serve", str(oplog_dir), *args)
        assert result.returncode == 2
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_an_empty_token_file_is_refused(self, oplog_dir: Path, tmp_path: Path) -> None:
        """An empty token file would mean no auth at all: refused."""
        token_file = tmp_path / "token"
        token_file.write_text("\n")
        result = run("serve", str(oplog_dir), "--token-file", str(token_file))
        assert result.returncode == 2
        assert "one token" in result.stderr

    def test_a_missing_oplog_is_a_usage_error(self, tmp_path: Path) -> None:
        """Serving a directory that holds no oplog says so and exits 2."""
        result = run("serve", str(tmp_path / "nowhere"))
        assert result.returncode == 2
        assert "no oplog directory" in result.stderr

    def test_without_the_http_extra_it_says_what_to_install(self, oplog_dir: Path) -> None:
        """When starlette/uvicorn are not installed, rxcs serve exits 2 naming rxcs[http]."""
        script = (
            "import sys; sys.modules['starlette'] = None; from rxcs.cli import main; "
            f"sys.exit(main(['serve', {str(oplog_dir)!r}]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2
        assert "install rxcs[http]" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_a_busy_port_is_one_line(self, oplog_dir: Path) -> None:
        """A port already in use: exit 2 and one line naming it."""
        with rxcs_serve(str(oplog_dir)) as (_, url):
            port = url.rsplit(":", 1)[1]
            result = run("serve", str(oplog_dir), "--port", port)
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


class TestOptionalExtra:
    def test_importing_rxcs_and_its_cli_does_not_import_the_http_extra(self) -> None:
        """rxcs and rxcs.cli import nothing of rxcs.http or starlette: the core install does without them."""
        script = "import sys, rxcs, rxcs.cli; print('rxcs.http' in sys.modules, 'starlette' in sys.modules)"
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.stdout.split() == ["False", "False"]


class TestServeDocumentImages:
    def test_update_lookup_and_pre_images_come_from_the_oplogs_document_images(self, tmp_path: Path) -> None:
        """rxcs serve on an oplog that keeps document images: full_document=updateLookup gives the document now
        and full_document_before_change=required the one before, for updates another process writes with no
        image of their own."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, document_images=True) as oplog:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada", "tags": ["a", "b"]})
        with rxcs_serve(str(path)) as (_, url), rxcs.open_oplog(path) as writer:
            query = {"db": "shop", "full_document": "updateLookup", "full_document_before_change": "required"}
            with sse(f"{url}/watch", **query) as reader:
                reader.frame()
                writer.update("shop", "users", 1, updated_fields={"tags.2": "c"}, removed_fields=["name"])
                frame = reader.event()
        assert frame.data["fullDocument"] == {"_id": 1, "tags": ["a", "b", "c"]}
        assert frame.data["fullDocumentBeforeChange"] == {"_id": 1, "name": "Ada", "tags": ["a", "b"]}
