"""The library's logger: structlog when the application configured it, else quiet stdlib logging.

rxcs logs lifecycle events (a stream started, paused, dropped events, an
oplog recovered), never one line per event. It never configures logging:
an application that configured structlog gets these lines through its own
processors; one that did not gets them through the standard ``logging``
logger named ``"rxcs"``, which by default shows warnings and errors on
stderr and keeps the rest quiet, as a library's logging should be.
Unconfigured structlog would print every line on stdout.

Examples:
    >>> import logging, structlog
    >>> structlog.is_configured()  # the test session configures it
    True
"""

from __future__ import annotations

import logging
from typing import Any, Final

import structlog

__all__ = ["LibraryLogger", "log"]

_LEVELS: Final = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "error": logging.ERROR, "exception": logging.ERROR,
}


class LibraryLogger:
    """``debug``/``info``/``warning``/``error``/``exception`` with structlog's ``event, **fields`` calls."""

    __slots__ = ("_stdlib", "_structlog")

    def __init__(self, name: str) -> None:
        self._structlog = structlog.get_logger(name)
        self._stdlib = logging.getLogger(name)

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(self._structlog, level)(event, **fields)
            return
        number = _LEVELS[level]
        if self._stdlib.isEnabledFor(number):
            text = " ".join([event, *(f"{key}={value!r}" for key, value in fields.items())])
            self._stdlib.log(number, text, exc_info=level == "exception")

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled."""
        self._log("exception", event, fields)


log: Final = LibraryLogger("rxcs")
