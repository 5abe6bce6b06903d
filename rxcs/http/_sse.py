"""The wire forms of a watch: Server-Sent Events frames and WebSocket messages.

An SSE event is ``id:`` (the resume token), ``event:`` (the operation type)
and one ``data:`` line of Extended JSON; compact JSON never holds a raw
newline, so one line always suffices. Nothing a document holds is written
outside that JSON: ``event:`` names only MongoDB's operation types (a
pipeline may set ``operationType`` to anything, including line breaks or
``error``; such events go out as plain messages), and ids are checked to be
one line. A frame with only ``id:`` moves the
client's last event id without dispatching an event: it tells a client where
its stream started, so a reconnect before the first event loses nothing.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, final

from rxcs import extjson
from rxcs.events import ChangeEvent, OperationType

__all__ = [
    "Delivery", "FRAME_CACHE_BYTES", "FrameCache", "StreamEnd", "delivery", "event_key", "sse_end", "sse_event",
    "sse_moved", "sse_position", "ws_end", "ws_event", "ws_moved", "ws_position",
]

SSE_HEARTBEAT: Final = b": heartbeat\n\n"
SSE_RETRY_MS: Final = 2000
FRAME_CACHE_BYTES: Final = 8 * 1024 * 1024
"""What the frames shared by watchers of the same stream may take, server-wide."""
_EVENT_NAMES: Final = frozenset(kind.value for kind in OperationType)
_LINE_BREAKS: Final = ("\r", "\n", "\x00")


@final
@dataclass(frozen=True, slots=True)
class Delivery:
    """One event ready to go out: its token, its operation type (None when reshaped away), its document."""

    token: str
    operation_type: str | None
    document: Any


@final
@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a stream ended, as the client is told: a code, a sentence, whether resuming helps, the last id."""

    code: str
    message: str
    resumable: bool
    last_event_id: str

    def to_document(self) -> dict[str, Any]:
        """The JSON body of an ``error`` event or message."""
        return {
            "code": self.code, "message": self.message,
            "resumable": self.resumable, "lastEventId": self.last_event_id,
        }


def delivery(event: Any, token: str) -> Delivery:
    """Turn a stream's event (a ``ChangeEvent`` or a reshaped document) into a ``Delivery``."""
    if isinstance(event, ChangeEvent):
        return Delivery(token, event.operation_type.value, event.to_document())
    kind = event.get("operationType") if isinstance(event, dict) else None
    return Delivery(token, kind if isinstance(kind, str) else None, event)


def _one_line(value: str) -> str:
    """A field value as it must be written: a line break or NUL in it would start another field."""
    if any(character in value for character in _LINE_BREAKS):
        raise ValueError(f"an SSE field value must be one line, not {value!r}")
    return value


def event_key(event: Any) -> Hashable:
    """What names an event within one stream shape: its token (its ``_id._data`` once reshaped)."""
    if isinstance(event, ChangeEvent):
        return event.id
    identity = event.get("_id") if isinstance(event, dict) else None
    return identity.get("_data") if isinstance(identity, dict) else None


def sse_event(event: Any) -> bytes:
    r"""One SSE event.

    Examples:
        >>> import rxcs
        >>> sse_event({"_id": {"_data": "82ab"}, "operationType": "insert"})
        b'id: 82ab\nevent: insert\ndata: {"_id": {"_data": "82ab"}, "operationType": "insert"}\n\n'
    """
    item = delivery(event, _token_text(event))
    data = extjson.dumps(item.document)  # compact JSON escapes every control character: one line
    token = _one_line(item.token)
    if item.operation_type not in _EVENT_NAMES:  # reshaped to anything else: data only
        return f"id: {token}\ndata: {data}\n\n".encode()
    return f"id: {token}\nevent: {item.operation_type}\ndata: {data}\n\n".encode()


def _token_text(event: Any) -> str:
    if isinstance(event, ChangeEvent):
        return str(event.id)
    return str(event["_id"]["_data"])


@final
class FrameCache:
    """The formatted frames of recent events, shared by every watcher of the same stream shape.

    A hundred watchers of one collection would otherwise serialize each
    event a hundred times; the events are the same, so the frames are too.
    Bounded by total size: the oldest frames go first.

    Examples:
        >>> cache = FrameCache(max_bytes=100)
        >>> event = {"_id": {"_data": "82ab"}}
        >>> cache.frame("shape", event, sse_event) is cache.frame("shape", event, sse_event)
        True
    """

    def __init__(self, max_bytes: int = FRAME_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: collections.OrderedDict[Hashable, bytes | str] = collections.OrderedDict()

    def frame(self, shape: Hashable, event: Any, render: Callable[[Any], bytes | str]) -> Any:
        """The frame of ``event`` for watchers of ``shape``, rendered once."""
        key = (shape, event_key(event))
        frames = self._frames
        found = frames.get(key)
        if found is None:
            found = frames[key] = render(event)
            self._bytes += len(found)
            while self._bytes > self._max_bytes and len(frames) > 1:
                self._bytes -= len(frames.popitem(last=False)[1])
        return found


def sse_position(token: str) -> bytes:
    r"""The opening frame: the reconnect delay and the stream's start position, with no event.

    Examples:
        >>> sse_position("82ab")
        b'retry: 2000\nid: 82ab\n\n'
    """
    return f"retry: {SSE_RETRY_MS}\nid: {_one_line(token)}\n\n".encode()


def sse_moved(token: str) -> bytes:
    r"""A frame that moves the client's last event id without an event: the stream went past filtered entries.

    Examples:
        >>> sse_moved("82ac")
        b'id: 82ac\n\n'
    """
    return f"id: {_one_line(token)}\n\n".encode()


def sse_end(end: StreamEnd) -> bytes:
    """The closing ``error`` event."""
    return f"event: error\ndata: {json.dumps(end.to_document())}\n\n".encode()


def ws_position(token: str) -> str:
    """The WebSocket message that opens a stream: its start position."""
    return json.dumps({"type": "started", "id": token})


def ws_moved(token: str) -> str:
    """The WebSocket message that moves the client's position past entries the stream filtered out."""
    return json.dumps({"type": "position", "id": token})


def ws_event(event: Any) -> str:
    """One WebSocket message for one event."""
    item = delivery(event, _token_text(event))
    return extjson.dumps(
        {"type": "change", "id": item.token, "operationType": item.operation_type, "change": item.document}
    )


def ws_end(end: StreamEnd) -> str:
    """The WebSocket message that ends a stream."""
    return json.dumps({"type": "error", **end.to_document()})
