"""The errors rxcs raises: one root, a flat set named after the state of things.

This module imports nothing from the package, so every layer can use it.
"""

from __future__ import annotations

__all__ = [
    "BufferOverflowError",
    "CaptureError",
    "ChangeStreamHistoryLost",
    "ConsumerFencedError",
    "ConsumerMismatchError",
    "EventTooLargeError",
    "InvalidChangeError",
    "InvalidLocationError",
    "InvalidOptionError",
    "InvalidResumeToken",
    "MissingImageError",
    "OplogClosedError",
    "OplogCorruptedError",
    "OplogLockedError",
    "OplogUnavailableError",
    "PipelineError",
    "QueryError",
    "RxcsError",
    "StreamClosedError",
]


class RxcsError(Exception):
    """The root of every error rxcs raises on purpose."""


class QueryError(RxcsError, ValueError):
    """A filter is malformed; the message starts with the path inside the filter."""


class PipelineError(RxcsError, ValueError):
    """A pipeline stage is malformed, or reshaped an event so it cannot resume."""


class EventTooLargeError(RxcsError):
    """A change event is over the stream's size cap (``max_event_bytes``) and cannot be split.

    ``op_id`` names the oplog entry and ``size`` the event's size in bytes.
    """

    def __init__(self, message: str, *, op_id: int | None, size: int) -> None:
        super().__init__(message)
        self.op_id = op_id
        self.size = size


class InvalidResumeToken(RxcsError, ValueError):
    """A resume token is garbage, of an unknown version, or from another oplog."""


class ChangeStreamHistoryLost(RxcsError):
    """The position a stream needs is older than the oldest retained entry."""


class InvalidChangeError(RxcsError, ValueError):
    """A producer tried to append a change that cannot be recorded as given."""


class InvalidLocationError(RxcsError, ValueError):
    """An oplog location (a path or URL) cannot be opened as given: an unknown parameter, a bad value."""


class InvalidOptionError(RxcsError, ValueError, TypeError):
    """An option or argument of ``watch()``, ``oplog_entries()`` or an operator is malformed; the message names it.

    Both a ``ValueError`` and a ``TypeError``: the option has the wrong value
    or the wrong type, and callers that catch either keep working.
    """


class MissingImageError(RxcsError):
    """A document image was required (``"required"`` mode) but not recorded."""


class OplogCorruptedError(RxcsError):
    """An oplog file holds a frame that fails its checks.

    ``path`` and ``offset`` name the file and the byte where the bad frame starts.
    """

    def __init__(self, message: str, *, path: str, offset: int) -> None:
        super().__init__(f"{path} at byte {offset}: {message}")
        self.path = path
        self.offset = offset


class OplogLockedError(RxcsError):
    """Another process holds the oplog's writer lock; ``pid`` names it when known."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class OplogClosedError(RxcsError):
    """The oplog was used after ``close()``."""


class OplogUnavailableError(RxcsError):
    """The oplog's storage cannot be reached (for example a Redis server is down)."""


class CaptureError(RxcsError):
    """A capture cannot go on as configured: a source it cannot reach or read, a value it cannot map.

    The message names what is wrong (the table and column, the slot, the
    connection string without its password); nothing was recorded for the
    change that raised it.
    """


class BufferOverflowError(RxcsError):
    """A stream's buffer filled up under ``overflow="error"``."""


class StreamClosedError(RxcsError):
    """A change stream was used after it was closed."""


class ConsumerMismatchError(RxcsError, ValueError):
    """A named consumer's checkpoint was made by a stream of another scope or pipeline (or the name is a group's)."""


class ConsumerFencedError(RxcsError):
    """A group member's commit was refused: it no longer owns those partitions (its lease ran out, or they moved).

    ``partitions`` are the refused ones; their changes since the last commit
    are handled again by their new owner.
    """

    def __init__(self, message: str, partitions: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.partitions = partitions
