"""rxcs: real-time change streams over a durable oplog, as ReactiveX observables."""

from __future__ import annotations

from rxcs.errors import (
    BufferOverflowError,
    ChangeStreamHistoryLost,
    InvalidChangeError,
    InvalidResumeToken,
    MissingImageError,
    OplogClosedError,
    OplogCorruptedError,
    OplogLockedError,
    OplogUnavailableError,
    PipelineError,
    QueryError,
    RxcsError,
    StreamClosedError,
)
from rxcs.events import ChangeEvent, ClusterTime, Namespace, OperationType, UpdateDescription
from rxcs.oplog import Change, MemoryOplog, Oplog, OplogEntry, open_oplog
from rxcs.tokens import ResumeToken

__all__ = [
    "BufferOverflowError",
    "Change",
    "ChangeEvent",
    "ChangeStreamHistoryLost",
    "ClusterTime",
    "InvalidChangeError",
    "InvalidResumeToken",
    "MemoryOplog",
    "MissingImageError",
    "Namespace",
    "OperationType",
    "Oplog",
    "OplogClosedError",
    "OplogCorruptedError",
    "OplogEntry",
    "OplogLockedError",
    "OplogUnavailableError",
    "PipelineError",
    "QueryError",
    "ResumeToken",
    "RxcsError",
    "StreamClosedError",
    "UpdateDescription",
    "open_oplog",
]
