"""rxcs: real-time change streams over a durable oplog, as ReactiveX observables."""

from rxcs import capture, documents, operators, query
from rxcs.documents import (
    ChangeStreamDocument,
    NamespaceDocument,
    ResumeTokenDocument,
    TruncatedArrayDocument,
    UpdateDescriptionDocument,
)
from rxcs.errors import (
    BufferOverflowError,
    CaptureError,
    ChangeStreamHistoryLost,
    EventTooLargeError,
    InvalidChangeError,
    InvalidLocationError,
    InvalidOptionError,
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
from rxcs.oplog import Change, CollectionInfo, MemoryOplog, Oplog, OplogEntry, open_oplog
from rxcs.plan import WatchOptions
from rxcs.source import BEGINNING, oplog_entries
from rxcs.stream import AsyncChangeStream, ChangeStream, ChangeStreamObservable, StreamStatistics, watch
from rxcs.tokens import ResumeToken

__all__ = [
    "BEGINNING",
    "AsyncChangeStream",
    "BufferOverflowError",
    "CaptureError",
    "Change",
    "ChangeEvent",
    "ChangeStream",
    "ChangeStreamDocument",
    "ChangeStreamHistoryLost",
    "ChangeStreamObservable",
    "ClusterTime",
    "CollectionInfo",
    "EventTooLargeError",
    "InvalidChangeError",
    "InvalidLocationError",
    "InvalidOptionError",
    "InvalidResumeToken",
    "MemoryOplog",
    "MissingImageError",
    "Namespace",
    "NamespaceDocument",
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
    "ResumeTokenDocument",
    "RxcsError",
    "StreamClosedError",
    "StreamStatistics",
    "TruncatedArrayDocument",
    "UpdateDescription",
    "UpdateDescriptionDocument",
    "WatchOptions",
    "capture",
    "documents",
    "oplog_entries",
    "open_oplog",
    "operators",
    "query",
    "watch",
]
