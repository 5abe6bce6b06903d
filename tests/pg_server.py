"""A real PostgreSQL server for the tests and benchmarks, started in a temporary directory.

``initdb`` makes a cluster with ``wal_level=logical`` and trust authentication
on loopback; ``postgres`` serves it on a free loopback port. PostgreSQL
refuses to run as root, so when the tests run as root (as in CI) the server
runs as an unprivileged user: ``postgres`` when that account exists (Debian's
package makes it), else ``nobody``. The binaries come from ``PATH``, else from
Debian's ``/usr/lib/postgresql/*/bin``. No fakes: every capture test talks to
this process.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "find_postgres_bin", "unavailable_reason"]

_START_TIMEOUT = 30.0


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: from ``PATH``, else Debian's newest; None when absent."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    return None


def unavailable_reason() -> str | None:
    """Why a PostgreSQL server cannot be run here, or None when it can."""
    if find_postgres_bin() is None:
        return (
            "no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql "
            "(apt-get install postgresql)"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install rxcs[postgres])"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root; None when we are not root (it runs as us)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, on a free loopback port; ``dsn(db)`` connects to it.

    ``settings`` are extra ``postgresql.conf`` lines (``{"fsync": "off"}``).
    """

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries")
        self.bin_dir = bin_dir
        self.user = _server_user()
        # Not under pytest's tmp_path: its parents are root's alone, and the server may run as another user.
        self.directory = Path(tempfile.mkdtemp(prefix="rxcs-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.settings = {
            "wal_level": "logical", "max_replication_slots": "40", "max_wal_senders": "40",
            "max_connections": "100", "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.directory}'", "shared_buffers": "64MB",
            "log_min_messages": "warning", "logging_collector": "off",
            **(settings or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres", **extra: str) -> str:
        """A libpq connection string for database ``dbname`` as the superuser ``rxcs``."""
        words = {"host": "127.0.0.1", "port": str(self.port), "user": "rxcs", "dbname": dbname, **extra}
        return " ".join(f"{key}={value}" for key, value in words.items())

    def _as_server_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """initdb (first time), then start the server; return once it accepts connections."""
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        if not self.data.exists():
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "rxcs", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.directory,
                **self._as_server_user(),  # type: ignore[arg-type]
            )
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in self.settings.items())
        for _ in range(5):
            log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the server writes to it while it runs
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port)],
                stdout=log, stderr=log, cwd=self.directory, start_new_session=True,
                **self._as_server_user(),  # type: ignore[arg-type]
            )
            log.close()
            if self._wait_until_ready():
                return
            self.kill()
            self.port = _free_port()
        raise RuntimeError(f"PostgreSQL did not start; see {self.directory / 'server.log'}")

    def _wait_until_ready(self) -> bool:
        import psycopg2

        assert self.process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                psycopg2.connect(self.dsn(), connect_timeout=2).close()
            except psycopg2.OperationalError:
                time.sleep(0.05)
                continue
            return True
        return False

    def execute(self, sql: str, dbname: str = "postgres", *, autocommit: bool = True) -> list[tuple[object, ...]]:
        """Run one statement in its own connection; return its rows (none for a statement without)."""
        import psycopg2

        connection = psycopg2.connect(self.dsn(dbname))
        try:
            connection.autocommit = autocommit
            with connection.cursor() as cursor:
                cursor.execute(sql)
                rows = cursor.fetchall() if cursor.description is not None else []
            if not autocommit:
                connection.commit()
            return rows
        finally:
            connection.close()

    def kill(self) -> None:
        """SIGKILL the postmaster's whole process group, and wait."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients, no waiting on them
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
