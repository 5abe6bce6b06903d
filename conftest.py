"""Test-session setup shared by tests/ and the doctests in rxcs/: logs go to stderr.

The library never configures structlog; an application (here, the test
session) does. Unconfigured, structlog prints to stdout, which would mix
log lines into doctest output.
"""

from __future__ import annotations

import sys

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
