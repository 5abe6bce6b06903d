"""The wire forms: whatever a document holds, an SSE frame or a WebSocket message carries it as data only.

Frames are parsed back with httpx-sse's decoder, an implementation of the
HTML standard's event-stream interpretation (CR, LF and CRLF all end lines).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import httpx_sse
from hypothesis import given, settings
from hypothesis import strategies as st

import rxcs
from rxcs.events import OperationType
from rxcs.http._sse import StreamEnd, sse_end, sse_event, ws_end, ws_event

from .helpers import PROGRAM, Served

TOKEN = "82ab01"
OPERATION_TYPES = {kind.value for kind in OperationType}

# Text that tries every line ending and field name the event-stream format knows.
hostile_text = st.lists(
    st.sampled_from(["\n", "\r", "\r\n", "\x00", ":", " ", "id", "event", "data", "retry", "error", "x", "é"]),
    max_size=40,
).map("".join) | st.text(max_size=20)


def parse(stream: bytes) -> list[httpx_sse.ServerSentEvent]:
    """Every event a spec-following client dispatches from ``stream``."""
    decoder = httpx_sse._decoders.SSEDecoder()
    lines = httpx_sse._decoders.SSELineDecoder()
    events = []
    for line in [*lines.decode(stream.decode()), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


class TestSSEFrames:
    @settings(max_examples=300, deadline=None)
    @given(operation_type=hostile_text, payload=hostile_text)
    def test_document_data_never_forges_a_field(self, operation_type: str, payload: str) -> None:
        """A reshaped document's operationType and fields, whatever they hold, give one event with the real id."""
        document = {"_id": {"_data": TOKEN}, "operationType": operation_type, "note": payload}
        events = parse(sse_event(document))
        assert len(events) == 1
        (event,) = events
        assert event.id == TOKEN
        assert event.retry is None
        assert json.loads(event.data) == document
        expected = operation_type if operation_type in OPERATION_TYPES else "message"
        assert (event.event or "message") == expected

    def test_a_newline_in_operation_type_makes_a_plain_message(self) -> None:
        """The issue's forgery: "insert\\nid: X\\nevent: error" is carried as data of a plain message."""
        forged = "insert\nid: forged\nevent: error\ndata: {}\n"
        events = parse(sse_event({"_id": {"_data": TOKEN}, "operationType": forged}))
        assert [(event.id, event.event or "message") for event in events] == [(TOKEN, "message")]
        assert json.loads(events[0].data)["operationType"] == forged

    def test_a_reshaped_error_operation_type_is_not_the_servers_error_event(self) -> None:
        """A document cannot pose as the server's own closing ``error`` event."""
        (event,) = parse(sse_event({"_id": {"_data": TOKEN}, "operationType": "error"}))
        assert (event.event or "message") == "message"

    @given(message=hostile_text)
    def test_error_events_carry_their_message_as_data(self, message: str) -> None:
        """The closing error event: one event named error, its message intact in the JSON."""
        (event,) = parse(sse_end(StreamEnd("stream_failed", message, True, TOKEN)))
        assert event.event == "error"
        assert json.loads(event.data)["message"] == message

    @given(operation_type=hostile_text, message=hostile_text)
    def test_websocket_messages_are_one_json_document_each(self, operation_type: str, message: str) -> None:
        """WebSocket messages are JSON: document data stays inside its string, whatever it holds."""
        document = {"_id": {"_data": TOKEN}, "operationType": operation_type}
        change = json.loads(ws_event(document))
        assert change == {"type": "change", "id": TOKEN, "operationType": operation_type, "change": document}
        end = json.loads(ws_end(StreamEnd("stream_failed", message, True, TOKEN)))
        assert end["message"] == message


class TestServedFrames:
    def test_a_pipeline_setting_operation_type_from_data_forges_nothing(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """End to end: $set operationType from a document's field; the client's last event id stays the real one."""
        served = serve()
        pipeline = json.dumps([{"$set": {"operationType": "$fullDocument.kind"}}])
        forged = "insert\nid: forged-id\nevent: error\ndata: {\"code\": \"invalidated\"}\n\nevent: insert"
        with httpx.Client(timeout=15) as client, httpx_sse.connect_sse(
            client, "GET", f"{served.url}/watch", params={"pipeline": pipeline}, headers=PROGRAM
        ) as source:
            events = source.iter_sse()
            next(events)  # the opening position
            oplog.insert("shop", "users", {"_id": 1, "kind": forged})
            oplog.insert("shop", "users", {"_id": 2, "kind": "insert"})
            received: list[Any] = [next(events), next(events)]
        tokens = [json.loads(event.data)["_id"]["_data"] for event in received]
        assert [event.id for event in received] == tokens
        assert [event.event for event in received] == ["message", "insert"]
        assert json.loads(received[0].data)["operationType"] == forged

