"""The fault suites: a deterministic sample in every run, every case under ``RXCS_FAULTS=all`` (``tox -e faults``).

Their counts are printed when the session ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from .tally import SESSION

FULL = os.environ.get("RXCS_FAULTS") == "all"
"""True for the full fault runs (``tox -e faults``); the normal suite runs a fixed sample."""

full_run = pytest.mark.skipif(not FULL, reason="the full fault run: RXCS_FAULTS=all (tox -e faults)")


@pytest.fixture(scope="module", autouse=True)
def quiet_logs() -> Iterator[None]:
    """Thousands of recoveries log nothing here: the cases are judged by what they return and raise."""
    configured, previous = structlog.is_configured(), structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        yield
    finally:
        if configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SESSION:
        return
    terminalreporter.section("fault injection")
    for name, tally in sorted(SESSION.items()):
        terminalreporter.write_line(tally.line(name))
