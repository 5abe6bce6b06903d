"""GET /ws/watch: the same change streams over WebSocket, driven by the websockets client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import rxcs

from .helpers import PROGRAM, Served


@contextmanager
def _open(served: Served, request: dict[str, Any] | str) -> Iterator[ClientConnection]:
    with connect(f"{served.url.replace('http', 'ws')}/ws/watch", additional_headers=PROGRAM, open_timeout=10) as ws:
        ws.send(request if isinstance(request, str) else json.dumps(request))
        yield ws


def _next(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return message


class TestWebSocketWatch:
    def test_the_first_message_is_the_request_then_events_arrive(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """started (with the start position), then one change message per event, id = resume token."""
        served = serve()
        with _open(served, {"db": "shop", "collection": "users"}) as ws:
            started = _next(ws)
            oplog.insert("shop", "orders", {"_id": 9})
            oplog.insert("shop", "users", {"_id": 1})
            oplog.update("shop", "users", 1, updated_fields={"a": 1})
            changes = [_next(ws), _next(ws)]
        assert started["type"] == "started"
        assert rxcs.ResumeToken.parse(started["id"]).oplog_id == oplog.oplog_id
        assert [change["type"] for change in changes] == ["change", "change"]
        assert [change["operationType"] for change in changes] == ["insert", "update"]
        for change in changes:
            assert change["id"] == change["change"]["_id"]["_data"]
        assert changes[0]["change"]["fullDocument"] == {"_id": 1}

    def test_resume_after_in_the_request_replays_what_came_since(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A request with resume_after gets exactly the events after that token."""
        served = serve()
        with _open(served, {"db": "shop"}) as ws:
            _next(ws)
            for i in range(3):
                oplog.insert("shop", "users", {"_id": i})
            first = _next(ws)
        oplog.insert("shop", "users", {"_id": 3})
        with _open(served, {"db": "shop", "resume_after": first["id"]}) as ws:
            _next(ws)
            keys = [_next(ws)["change"]["documentKey"]["_id"] for _ in range(3)]
        assert keys == [1, 2, 3]

    def test_invalidate_ends_with_a_typed_error_and_a_normal_close(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """After invalidate: an error message (invalidated, not resumable), then close code 1000."""
        served = serve()
        with _open(served, {"db": "shop", "collection": "users"}) as ws:
            _next(ws)
            oplog.drop_collection("shop", "users")
            messages = [_next(ws), _next(ws), _next(ws)]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert [m.get("operationType") for m in messages[:2]] == ["drop", "invalidate"]
        assert messages[2]["type"] == "error"
        assert messages[2]["code"] == "invalidated"
        assert messages[2]["resumable"] is False
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000

    @pytest.mark.parametrize(
        ("request_text", "message"),
        [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            ('{"colection": "users"}', "unknown field 'colection'"),
            ('{"pipeline": [{"$bogus": {}}]}', "$bogus"),
            ('{"resume_after": "deadbeef"}', "resume token"),
        ],
    )
    def test_a_bad_request_gets_a_typed_error_then_close_1008(
        self, serve: Callable[..., Served], request_text: str, message: str
    ) -> None:
        """A malformed first message: an error message naming the problem, then policy-violation close."""
        served = serve()
        with _open(served, request_text) as ws:
            error = _next(ws)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert error["type"] == "error"
        assert message in error["message"]
        assert error["resumable"] is False
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert served.app.statistics().watchers == 0

    def test_a_filtered_stretch_sends_a_position_message(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Changes the pipeline filters out move the client's position with a {"type": "position"} message."""
        served = serve(heartbeat=0.1)
        with _open(served, {"db": "shop", "pipeline": [{"$match": {"operationType": "delete"}}]}) as ws:
            assert _next(ws)["type"] == "started"
            for i in range(200):
                oplog.insert("shop", "users", {"_id": i})
            message = _next(ws)
            while message["type"] == "heartbeat":
                message = _next(ws)
        assert message["type"] == "position"
        moved = rxcs.ResumeToken.parse(message["id"])
        assert (moved.op_id, moved.high_water) == (oplog.last_op_id, True)

    def test_heartbeats_while_idle_and_the_cap_closes_with_1013(self, serve: Callable[..., Served]) -> None:
        """A quiet socket gets heartbeat messages; a watcher beyond the cap gets too_many_watchers, code 1013."""
        served = serve(heartbeat=0.1, max_watchers=1)
        with _open(served, {}) as first:
            assert _next(first)["type"] == "started"
            assert _next(first) == {"type": "heartbeat"}
            with _open(served, {}) as second:
                refused = _next(second)
                with pytest.raises(ConnectionClosed) as closed:
                    second.recv(timeout=10)
        assert refused["code"] == "too_many_watchers"
        assert refused["resumable"] is True
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013


class TestWebSocketLimits:
    @pytest.mark.parametrize("levels", [150, 3000, 100_000])
    def test_a_deeply_nested_request_gets_an_error_and_close_1008_with_a_reason(
        self, serve: Callable[..., Served], levels: int
    ) -> None:
        """However deep the JSON: an error message, then a close frame 1008 whose reason says why."""
        served = serve(max_request_bytes=2 * 1024 * 1024)
        spec = '{"a": 1}'
        for _ in range(levels):
            spec = '{"$or": [' + spec + "]}"
        with _open(served, '{"pipeline": [{"$match": ' + spec + "}]}") as ws:
            error = _next(ws)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert error["type"] == "error"
        assert "nested more than" in error["message"]
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "nested more than" in closed.value.rcvd.reason

    def test_a_request_over_max_request_bytes_is_refused_with_a_close_frame(
        self, serve: Callable[..., Served]
    ) -> None:
        """A message longer than max_request_bytes is not even buffered: close 1009 (message too big), a reason."""
        served = serve(max_request_bytes=4096)
        request = json.dumps({"pipeline": [{"$match": {"a": {"$in": list(range(2000))}}}]})
        with _open(served, request) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        assert "exceeds limit of 4096" in closed.value.rcvd.reason
        assert served.app.statistics().served == 0

    def test_a_pipeline_that_fails_on_an_event_ends_with_pipeline_failed_and_1008(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """An event the pipeline cannot run on ($divide by zero): pipeline_failed, not resumable, close 1008."""
        served = serve()
        request = {"db": "shop", "pipeline": [{"$set": {"ratio": {"$divide": [1, "$fullDocument.n"]}}}]}
        with _open(served, request) as ws:
            _next(ws)
            oplog.insert("shop", "users", {"_id": 1, "n": 2})
            oplog.insert("shop", "users", {"_id": 2, "n": 0})
            change, error = _next(ws), _next(ws)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert change["change"]["ratio"] == 0.5
        assert error["code"] == "pipeline_failed"
        assert error["resumable"] is False
        assert "divide by zero" in error["message"]
        assert error["lastEventId"] == change["id"]
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
