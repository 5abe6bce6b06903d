"""rxcs logs through the application's structlog configuration, or quietly through stdlib logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import logging, sys, rxcs
    if sys.argv[2] == "info":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    with rxcs.open_oplog(sys.argv[1]) as oplog:
        oplog.insert("shop", "users", {"_id": 1})
        print("inserted")
    """
)


def run(tmp_path: Path, level: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "oplog"), level],
        capture_output=True, text=True, timeout=60, check=True,
    )


class TestLibraryLogging:
    def test_an_application_that_configures_nothing_sees_no_log_lines(self, tmp_path: Path) -> None:
        """Without any logging configuration, rxcs writes nothing on stdout and no info lines anywhere."""
        result = run(tmp_path, "none")
        assert result.stdout == "inserted\n"
        assert "oplog opened" not in result.stderr

    def test_stdlib_logging_configuration_is_honoured(self, tmp_path: Path) -> None:
        """An application that sets up stdlib logging at INFO gets rxcs's lifecycle lines from logger "rxcs"."""
        result = run(tmp_path, "info")
        assert result.stdout == "inserted\n"
        assert "rxcs INFO oplog opened" in result.stderr
        assert "oplog_id=" in result.stderr
