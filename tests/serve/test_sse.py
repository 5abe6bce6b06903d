"""GET /watch: change streams as Server-Sent Events, from a real server to a real httpx client."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

import rxcs
from rxcs.http import create_app
from rxcs.pipeline import compile_pipeline

from .helpers import PROGRAM, Served, get, head, running, sse, wait_for


class TestEventStream:
    def test_events_carry_token_ids_operation_types_and_extended_json(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Each event: id = its resume token, event = its operation type, data = the MongoDB-shaped document."""
        served = serve()
        with sse(f"{served.url}/watch", db="shop") as reader:
            opening = reader.frame()
            assert opening.fields.get("retry") == "2000"
            assert opening.id is not None
            assert "data" not in opening.fields
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            oplog.update("shop", "users", 1, updated_fields={"name": "Ada L."})
            oplog.delete("shop", "users", 1)
            frames = reader.events(3)
        assert [frame.event for frame in frames] == ["insert", "update", "delete"]
        for frame in frames:
            assert frame.id == frame.data["_id"]["_data"]
            assert rxcs.ResumeToken.parse(frame.id).oplog_id == oplog.oplog_id
            assert set(frame.data["wallTime"]) == {"$date"}
        assert frames[0].data["fullDocument"] == {"_id": 1, "name": "Ada"}
        assert frames[1].data["updateDescription"]["updatedFields"] == {"name": "Ada L."}

    def test_expanded_events_and_visibility_as_mongodb(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """show_expanded_events=true sends collectionUUID and the expanded descriptions; a deployment stream
        leaves out the admin database and system.* collections."""
        served = serve()
        with sse(f"{served.url}/watch", show_expanded_events="true") as reader:
            reader.frame()
            oplog.insert("admin", "users", {"_id": 1})
            oplog.insert("shop", "system.views", {"_id": 1})
            oplog.create_collection("shop", "users")
            oplog.rename_collection("shop", "users", "shop", "people")
            created, renamed = reader.events(2)
        users = oplog.collections()[rxcs.Namespace("shop", "people")].uuid
        assert [created.event, renamed.event] == ["create", "rename"]
        assert created.data["nsType"] == "collection"
        assert created.data["operationDescription"]["idIndex"]["name"] == "_id_"
        assert renamed.data["operationDescription"] == {"to": {"db": "shop", "coll": "people"}}
        for frame in (created, renamed):
            assert frame.data["collectionUUID"]["$binary"]["subType"] == "04"
            assert base64.b64decode(frame.data["collectionUUID"]["$binary"]["base64"]) == users.bytes

    def test_scope_and_pipeline_narrow_the_stream(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """db/collection and a JSON pipeline select events, as rxcs.watch() does."""
        served = serve()
        pipeline = json.dumps([{"$match": {"operationType": "update"}}])
        with sse(f"{served.url}/watch", db="shop", collection="users", pipeline=pipeline) as reader:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.update("shop", "orders", 7, updated_fields={"x": 1})
            oplog.update("shop", "users", 1, updated_fields={"x": 2})
            frame = reader.event()
        assert frame.event == "update"
        assert frame.data["ns"] == {"db": "shop", "coll": "users"}
        assert frame.data["updateDescription"]["updatedFields"] == {"x": 2}

    def test_reshaped_events_without_operation_type_are_plain_messages(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A pipeline that projects operationType away still gives ids; the event has no name (message)."""
        try:
            compile_pipeline([{"$project": {"documentKey": 1}}])
        except rxcs.PipelineError:
            pytest.skip("this build's pipeline has no $project stage yet")
        served = serve()
        pipeline = json.dumps([{"$project": {"documentKey": 1}}])
        with sse(f"{served.url}/watch", pipeline=pipeline) as reader:
            oplog.insert("shop", "users", {"_id": 5})
            frame = reader.event()
        assert frame.event == "message"
        assert frame.data["documentKey"] == {"_id": 5}
        assert frame.id == frame.data["_id"]["_data"]

    def test_resume_after_parameter_gives_the_events_after_the_token(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """resume_after= starts after the given event, replaying what came since."""
        served = serve()
        with rxcs.watch(oplog, "shop").iterate() as stream:
            for i in range(5):
                oplog.insert("shop", "users", {"_id": i})
            tokens = [str(stream.next(timeout=5).id) for _ in range(5)]
        with sse(f"{served.url}/watch", db="shop", resume_after=tokens[1]) as reader:
            frames = reader.events(3)
        assert [frame.id for frame in frames] == tokens[2:]

    def test_full_document_update_lookup_is_passed_through(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """full_document=whenAvailable returns the post-image the producer recorded."""
        served = serve()
        with sse(f"{served.url}/watch", db="shop", full_document="whenAvailable") as reader:
            oplog.update("shop", "users", 1, updated_fields={"a": 1}, full_document={"_id": 1, "a": 1})
            frame = reader.event()
        assert frame.data["fullDocument"] == {"_id": 1, "a": 1}

    def test_heartbeat_comments_while_idle(self, serve: Callable[..., Served]) -> None:
        """A quiet stream sends comment lines, so proxies and clients know it is alive."""
        served = serve(heartbeat=0.1)
        with sse(f"{served.url}/watch") as reader:
            reader.frame()  # the opening position
            frame = reader.frame()
        assert frame.comments == ["heartbeat"]
        assert not frame.fields


class TestResume:
    def test_a_filtered_stretch_moves_the_last_event_id(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """Changes the pipeline filters out move the client's Last-Event-ID (an id-only frame) once nothing is left
        to send, so a reconnect does not read them again."""
        served = serve(heartbeat=0.1)
        deletes = '[{"$match": {"operationType": "delete"}}]'
        with sse(f"{served.url}/watch", db="shop", pipeline=deletes) as reader:
            opening = reader.frame()
            for i in range(200):
                oplog.insert("shop", "users", {"_id": i})
            while True:
                frame = reader.frame()
                if "id" in frame.fields and frame.fields["id"] != opening.fields["id"]:
                    break
        assert "data" not in frame.fields  # no event: only the position moved
        moved = rxcs.ResumeToken.parse(frame.fields["id"])
        assert (moved.op_id, moved.high_water) == (oplog.last_op_id, True)

    def test_reconnect_with_last_event_id_has_no_gap_and_no_repeat(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Last-Event-ID resumes right after the last event seen: the missing events, each once."""
        served = serve()
        with sse(f"{served.url}/watch", db="shop") as reader:
            for i in range(10):
                oplog.insert("shop", "users", {"_id": i})
            seen = reader.events(4)
        for i in range(10, 15):
            oplog.insert("shop", "users", {"_id": i})
        last = seen[-1].id
        assert last is not None
        with sse(f"{served.url}/watch", headers={"Last-Event-ID": last}, db="shop") as reader:
            rest = reader.events(11)
        keys = [frame.data["documentKey"]["_id"] for frame in seen + rest]
        assert keys == list(range(15))
        assert len({frame.id for frame in seen + rest}) == 15

    def test_last_event_id_wins_over_the_url_resume_after(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A reconnecting EventSource keeps its URL; the header is newer than the URL's resume_after."""
        served = serve()
        with sse(f"{served.url}/watch") as reader:
            for i in range(4):
                oplog.insert("shop", "users", {"_id": i})
            frames = reader.events(4)
        assert frames[0].id is not None
        assert frames[2].id is not None
        with sse(
            f"{served.url}/watch", headers={"Last-Event-ID": frames[2].id}, resume_after=frames[0].id
        ) as reader:
            frame = reader.event()
        assert frame.data["documentKey"] == {"_id": 3}

    def test_start_after_an_invalidate_survives_a_reconnect_before_the_first_event(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """start_after=<invalidate> opens at that token; reconnecting with it as Last-Event-ID still works."""
        served = serve()
        with sse(f"{served.url}/watch", db="shop", collection="users") as reader:
            oplog.drop_collection("shop", "users")
            invalidate = next(frame for frame in reader.rest() if frame.event == "invalidate").id
        assert invalidate is not None
        with sse(f"{served.url}/watch", db="shop", collection="users", start_after=invalidate) as reader:
            opening = reader.frame().id
        assert opening == invalidate
        oplog.insert("shop", "users", {"_id": "recreated"})
        with sse(
            f"{served.url}/watch", headers={"Last-Event-ID": opening}, db="shop", collection="users",
            start_after=invalidate,
        ) as reader:
            frame = reader.event()
        assert frame.data["documentKey"] == {"_id": "recreated"}

    def test_the_opening_position_resumes_a_client_that_saw_no_event(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """The opening id-only frame is the stream's start: resuming from it loses nothing written since."""
        served = serve()
        with sse(f"{served.url}/watch") as reader:
            start = reader.frame().id
        assert start is not None
        oplog.insert("shop", "users", {"_id": "while-away"})
        with sse(f"{served.url}/watch", headers={"Last-Event-ID": start}) as reader:
            frame = reader.event()
        assert frame.data["documentKey"] == {"_id": "while-away"}


class TestStreamEnds:
    def test_invalidate_is_delivered_then_an_error_event_then_the_end(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Dropping a watched collection: event invalidate, then event error (not resumable), then close."""
        served = serve()
        with sse(f"{served.url}/watch", db="shop", collection="users") as reader:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.drop_collection("shop", "users")
            frames = reader.rest()
        assert [frame.event for frame in frames] == ["insert", "drop", "invalidate", "error"]
        error = frames[-1].data
        assert error["code"] == "invalidated"
        assert error["resumable"] is False
        assert error["lastEventId"] == frames[2].id
        assert rxcs.ResumeToken.parse(error["lastEventId"]).invalidate

    def test_history_lost_mid_stream_is_an_error_event(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """A stream paused behind a stalled client, then trimmed past: its events, then error history_lost."""
        served = serve(buffer_size=10, send_buffer=65536, send_timeout=30)
        small = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
        with httpx.Client(transport=small, timeout=httpx.Timeout(30.0)) as client:
            with sse(f"{served.url}/watch", client=client) as reader:
                reader.frame()
                for i in range(500):
                    oplog.insert("shop", "users", {"_id": i, "padding": "x" * 4000})
                time.sleep(0.5)  # the stream fills its buffer and pauses behind the stalled client
                oplog.trim(before_op_id=oplog.last_op_id)
                frames = reader.rest()
        assert frames[-1].event == "error"
        assert frames[-1].data["code"] == "history_lost"
        assert frames[-1].data["resumable"] is False
        keys = [frame.data["documentKey"]["_id"] for frame in frames[:-1]]
        assert keys == list(range(len(keys)))
        assert 0 < len(keys) < 500
        assert frames[-1].data["lastEventId"] == frames[-2].id

    def test_a_token_older_than_the_history_is_a_410(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A token older than the retained history is refused with 410 and a clear message."""
        served = serve()
        with rxcs.watch(oplog).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            token = str(stream.next(timeout=5).id)
        for i in range(3):
            oplog.insert("shop", "users", {"_id": i + 2})
        oplog.trim(before_op_id=oplog.last_op_id)
        response = get(f"{served.url}/watch", params={"resume_after": token}, timeout=10)
        assert response.status_code == 410
        assert response.json()["error"] == "history_lost"
        assert "oldest retained" in response.json()["message"]


class TestBadRequests:
    @pytest.mark.parametrize(
        ("params", "code", "message"),
        [
            ({"pipeline": "[{oops"}, "bad_request", "pipeline: not valid JSON"),
            ({"pipeline": '{"$match": {}}'}, "bad_request", "pipeline must be a list of stages, not dict"),
            ({"pipeline": '[{"$bogus": 1}]'}, "bad_request", "$bogus"),
            ({"pipeline": '[{"$match": {"a": {"$nope": 1}}}]'}, "bad_request", "$nope"),
            ({"collection": "users"}, "bad_request", "collection 'users' needs its database"),
            ({"full_document": "sometimes"}, "bad_request", "full_document must be one of"),
            ({"show_expanded_events": "maybe"}, "bad_request", "show_expanded_events"),
            ({"colection": "typo"}, "bad_request", "unknown parameter 'colection'"),
            ({"resume_after": "deadbeef"}, "invalid_resume_token", "resume token"),
            ({"resume_after": "a", "start_after": "b"}, "bad_request", "at most one of resume_after, start_after"),
        ],
    )
    def test_bad_parameters_are_a_400_with_a_clear_message(
        self, serve: Callable[..., Served], params: dict[str, str], code: str, message: str
    ) -> None:
        """Malformed JSON, stages, modes, tokens or names: 400, an error code and a message naming the problem."""
        served = serve()
        response = get(f"{served.url}/watch", params=params, timeout=10)
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == code
        assert message in body["message"]
        assert served.app.statistics().watchers == 0

    def test_a_repeated_parameter_is_refused(self, serve: Callable[..., Served]) -> None:
        """db=a&db=b is ambiguous: 400 rather than silently watching one of them."""
        served = serve()
        response = get(f"{served.url}/watch?db=a&db=b", timeout=10)
        assert response.status_code == 400
        assert "'db' is given more than once" in response.json()["message"]

    def test_head_answers_the_headers_without_opening_a_stream(self, serve: Callable[..., Served]) -> None:
        """HEAD /watch checks a request (auth, parameters) and opens no stream."""
        served = serve()
        response = head(f"{served.url}/watch", params={"db": "shop"}, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert head(f"{served.url}/watch", params={"pipeline": "[x"}, timeout=10).status_code == 400
        assert served.app.statistics().served == 0

    def test_a_token_of_another_oplog_is_refused(self, serve: Callable[..., Served]) -> None:
        """A well-formed token from a different oplog is an invalid_resume_token, not a silent restart."""
        served = serve()
        with rxcs.open_oplog(":memory:") as other, rxcs.watch(other).iterate() as stream:
            other.insert("a", "b", {"_id": 1})
            token = str(stream.next(timeout=5).id)
        response = get(f"{served.url}/watch", headers={"Last-Event-ID": token}, timeout=10)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_resume_token"
        assert "from oplog" in response.json()["message"]


class TestOplogAndPage:
    def test_oplog_info_as_json(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """GET /oplog: identity, op_id range, backend, watchers."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("shop", "users", {"_id": 2})
        served = serve()
        info = get(f"{served.url}/oplog", timeout=10).json()
        assert info["oplog_id"] == str(oplog.oplog_id)
        assert (info["first_op_id"], info["last_op_id"]) == (1, 2)
        assert info["backend"] == "MemoryOplog"
        assert info["watchers"] == 0

    def test_file_oplog_info_includes_its_details(self, tmp_path: Path) -> None:
        """A FileOplog's own info (path, segments, bytes) is part of the answer."""
        with rxcs.open_oplog(tmp_path / "oplog") as oplog:
            oplog.insert("shop", "users", {"_id": 1})
            with running(create_app(oplog)) as served:
                info = get(f"{served.url}/oplog", timeout=10).json()
        assert info["backend"] == "FileOplog"
        assert info["path"] == str(tmp_path / "oplog")
        assert info["segments"] >= 1

    def test_the_page_is_html_that_uses_the_sse_endpoint(self, serve: Callable[..., Served]) -> None:
        """GET / is HTML whose script and style are this server's own files; the script opens an EventSource."""
        served = serve()
        response = httpx.get(f"{served.url}/", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert '<script src="page.js">' in response.text
        assert '<link rel="stylesheet" href="page.css">' in response.text
        script = httpx.get(f"{served.url}/page.js", timeout=10)
        assert script.headers["content-type"].startswith("text/javascript")
        assert "new EventSource(" in script.text
        style = httpx.get(f"{served.url}/page.css", timeout=10)
        assert style.headers["content-type"].startswith("text/css")
        assert ".op-insert" in style.text

    def test_waiting_watchers_are_counted_and_released(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A watcher counts while connected and is released when its client goes away."""
        served = serve()
        with sse(f"{served.url}/watch") as reader:
            reader.frame()
            assert served.app.statistics().watchers == 1
        wait_for(lambda: served.app.statistics().watchers == 0, what="the watcher to be released")
        assert served.app.statistics().served == 1


class TestCreateApp:
    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"token": "  "}, ValueError),
            ({"max_watchers": 0}, ValueError),
            ({"buffer_size": True}, ValueError),
            ({"heartbeat": 0}, ValueError),
            ({"send_timeout": float("inf")}, ValueError),
            ({"allowed_origins": "https://one.example"}, TypeError),
        ],
    )
    def test_bad_options_raise_at_once(self, oplog: rxcs.Oplog, options: dict[str, object], error: type) -> None:
        """create_app() checks its options before anything is served."""
        with pytest.raises(error):
            create_app(oplog, **options)  # type: ignore[arg-type]

    def test_it_needs_an_oplog(self) -> None:
        """Passing something else than an Oplog is a TypeError naming what was given."""
        with pytest.raises(TypeError, match="needs an Oplog"):
            create_app("data/oplog")  # type: ignore[arg-type]


def _nested_match(levels: int) -> str:
    spec = '{"a": 1}'
    for _ in range(levels):
        spec = '{"$and": [' + spec + "]}"
    return '[{"$match": ' + spec + "}]"


class TestLimits:
    @pytest.mark.parametrize("levels", [150, 3000, 50_000])
    def test_a_deeply_nested_pipeline_is_a_400_naming_the_problem(
        self, serve: Callable[..., Served], levels: int
    ) -> None:
        """Nesting past MongoDB's 100 levels: 400 with a message, never a 500, however deep the JSON."""
        served = serve(max_request_bytes=2 * 1024 * 1024)
        # http.client, since httpx refuses URLs this long; the server must answer them all the same.
        connection = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=30)
        try:
            connection.request("GET", "/watch?" + urlencode({"pipeline": _nested_match(levels)}), headers=PROGRAM)
            response = connection.getresponse()
            status, body = response.status, json.loads(response.read())
        finally:
            connection.close()
        assert status == 400
        assert body["error"] == "bad_request"
        assert "nested more than" in body["message"]
        assert served.app.statistics().watchers == 0

    def test_more_than_1000_stages_is_a_400(self, serve: Callable[..., Served]) -> None:
        """MongoDB's pipeline length limit holds over HTTP too."""
        served = serve(max_request_bytes=1024 * 1024)
        pipeline = json.dumps([{"$match": {}}] * 1001)
        response = get(f"{served.url}/watch", params={"pipeline": pipeline}, timeout=30)
        assert response.status_code == 400
        assert "more than the 1000 allowed" in response.json()["message"]

    def test_a_request_over_max_request_bytes_is_a_400(self, serve: Callable[..., Served]) -> None:
        """A query string longer than max_request_bytes is refused before it is parsed."""
        served = serve(max_request_bytes=4096)
        pipeline = json.dumps([{"$match": {"a": {"$in": list(range(2000))}}}])
        response = get(f"{served.url}/watch", params={"pipeline": pipeline}, timeout=30)
        assert response.status_code == 400
        assert "over the limit of 4096" in response.json()["message"]
        small = json.dumps([{"$match": {"a": {"$in": list(range(20))}}}])
        with sse(f"{served.url}/watch", pipeline=small) as reader:
            assert reader.frame().id is not None
