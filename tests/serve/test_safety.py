"""Safety: bearer tokens, the origin allow-list, the watcher cap, slow clients, graceful shutdown."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import rxcs
from rxcs.http import serve as serve_forever
from rxcs.http._server import is_loopback

from .helpers import PROGRAM, Served, get, sse, wait_for

SECRET = "s3cret-token"


class TestBearerToken:
    def test_requests_without_the_token_are_refused_with_401(self, serve: Callable[..., Served]) -> None:
        """With a token configured, /watch and /oplog need it; the answer says how to give it."""
        served = serve(token=SECRET)
        for path in ("/watch", "/oplog"):
            response = get(f"{served.url}{path}", timeout=10)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"
        wrong = get(f"{served.url}/oplog", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        assert served.app.statistics().refused == 3

    def test_the_token_in_a_header_or_as_access_token_is_accepted(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Authorization: Bearer works for programs; access_token= works for EventSource, which sets no headers."""
        served = serve(token=SECRET)
        response = get(f"{served.url}/oplog", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
        assert response.status_code == 200
        with sse(f"{served.url}/watch", access_token=SECRET) as reader:
            oplog.insert("shop", "users", {"_id": 1})
            assert reader.event().event == "insert"

    def test_the_page_itself_needs_no_token(self, serve: Callable[..., Served]) -> None:
        """The page holds no data; it asks for the token and passes it on."""
        served = serve(token=SECRET)
        assert httpx.get(f"{served.url}/", timeout=10).status_code == 200

    def test_websocket_without_the_token_is_refused_at_the_handshake(self, serve: Callable[..., Served]) -> None:
        """A WebSocket handshake without the token gets HTTP 401, never an open socket."""
        served = serve(token=SECRET)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{served.url.replace('http', 'ws')}/ws/watch", additional_headers=PROGRAM, open_timeout=10)
        assert refused.value.response.status_code == 401


class TestServe:
    def test_serving_beyond_loopback_needs_a_token(self, oplog: rxcs.Oplog) -> None:
        """serve() refuses a non-loopback address without a token, before binding anything."""
        with pytest.raises(ValueError, match="needs a bearer token"):
            serve_forever(oplog, host="0.0.0.0", port=0)

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
         ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("example.org", False)],
    )
    def test_loopback_addresses_are_recognised(self, host: str, loopback: bool) -> None:
        """Only 127.0.0.0/8, ::1 and localhost count as loopback."""
        assert is_loopback(host) is loopback


class TestOrigins:
    def test_a_foreign_origin_is_refused(self, serve: Callable[..., Served]) -> None:
        """A browser page from another origin cannot watch: 403, for SSE and WebSocket alike."""
        served = serve()
        evil = {"Origin": "http://evil.example"}
        response = get(f"{served.url}/watch", headers=evil, timeout=10)
        assert response.status_code == 403
        assert response.json()["error"] == "origin_not_allowed"
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{served.url.replace('http', 'ws')}/ws/watch", origin="http://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403

    def test_the_servers_own_origin_and_listed_origins_are_allowed(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """Same-origin requests pass; a listed origin passes and gets CORS headers."""
        served = serve(allowed_origins=["https://dash.example.org"])
        with connect(f"{served.url.replace('http', 'ws')}/ws/watch", origin=served.url, open_timeout=10) as ws:
            ws.send("{}")
            assert '"started"' in str(ws.recv(timeout=10))
        response = get(f"{served.url}/oplog", headers={"Origin": "https://dash.example.org"}, timeout=10)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://dash.example.org"


class TestHosts:
    def test_a_rebound_dns_name_is_refused_on_loopback(self, serve: Callable[..., Served]) -> None:
        """With allowed_hosts (as serve() sets on loopback), a foreign Host header gets 421, even same-origin."""
        served = serve(allowed_hosts=["localhost", "127.0.0.1", "::1"])
        rebound = {"Host": "attacker.example:8765", "Origin": "http://attacker.example:8765"}
        response = get(f"{served.url}/oplog", headers=rebound, timeout=10)
        assert response.status_code == 421
        assert response.json()["error"] == "host_not_allowed"
        assert get(f"{served.url}/oplog", timeout=10).status_code == 200
        named = get(f"{served.url}/oplog", headers={"Host": "localhost:1"}, timeout=10)
        assert named.status_code == 200

    def test_the_live_page_checks_the_host_as_the_api_does(self, serve: Callable[..., Served]) -> None:
        """The page and its script and style answer only for the allowed names: a rebound name gets 421 there too."""
        served = serve(allowed_hosts=["localhost", "127.0.0.1", "::1"])
        for path in ("/", "/page.js", "/page.css"):
            refused = get(f"{served.url}{path}", headers={"Host": "attacker.example:8765"}, timeout=10)
            assert refused.status_code == 421, path
            assert refused.json()["error"] == "host_not_allowed"
            assert "<html" not in refused.text.lower()  # none of the page itself
            assert get(f"{served.url}{path}", timeout=10).status_code == 200


class TestWatcherCap:
    def test_watchers_beyond_the_cap_get_503(self, serve: Callable[..., Served], oplog: rxcs.Oplog) -> None:
        """max_watchers streams are served at once; one more is told to retry later, and served after."""
        served = serve(max_watchers=2)
        with sse(f"{served.url}/watch") as first, sse(f"{served.url}/watch") as second:
            first.frame()
            second.frame()
            response = get(f"{served.url}/watch", timeout=10)
            assert response.status_code == 503
            assert response.json()["error"] == "too_many_watchers"
            assert "retry-after" in response.headers
        wait_for(lambda: served.app.statistics().watchers == 0, what="the watchers to be released")
        with sse(f"{served.url}/watch") as third:
            oplog.insert("shop", "users", {"_id": 1})
            assert third.event().event == "insert"


class TestSlowClient:
    def test_a_client_that_stops_reading_is_disconnected_with_a_resumable_error(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A client that does not read gets, once it reads again, its events, then slow_client with its last id.

        Its buffer is bounded (the stream pauses rather than buffering more), and resuming from
        the id in the error gives exactly the events it did not get.
        """
        served = serve(send_timeout=1.0, buffer_size=20, send_buffer=65536)
        small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
        padding = "x" * 4000
        total = 1000  # about 4 MB: far more than the socket buffers hold
        with httpx.Client(transport=small_buffer, timeout=httpx.Timeout(30.0)) as client:
            with sse(f"{served.url}/watch", client=client, db="shop") as reader:
                reader.frame()
                for i in range(total):
                    oplog.insert("shop", "users", {"_id": i, "padding": padding})
                wait_for(lambda: served.app.statistics().slow_clients == 1, timeout=30, what="slow_client")
                frames = reader.rest()
        events, error = frames[:-1], frames[-1]
        assert error.event == "error"
        assert error.data["code"] == "slow_client"
        assert error.data["resumable"] is True
        assert 0 < len(events) < total
        assert error.data["lastEventId"] == events[-1].id
        assert [frame.data["documentKey"]["_id"] for frame in events] == list(range(len(events)))
        wait_for(lambda: served.app.statistics().watchers == 0, what="the slow watcher to be released")

        with sse(f"{served.url}/watch", headers={"Last-Event-ID": error.data["lastEventId"]}) as reader:
            rest = reader.events(total - len(events))
        assert [frame.data["documentKey"]["_id"] for frame in rest] == list(range(len(events), total))


class TestShutdown:
    def test_stopping_the_server_ends_every_stream_with_a_resumable_error(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A graceful shutdown closes every stream (SSE and WebSocket) with shutting_down, then stops promptly."""
        served = serve()
        received: list[str] = []

        def websocket_client() -> None:
            url = f"{served.url.replace('http', 'ws')}/ws/watch"
            with connect(url, additional_headers=PROGRAM, open_timeout=10) as ws:
                ws.send('{"db": "shop"}')
                received.extend(str(message) for message in ws)

        ws_thread = threading.Thread(target=websocket_client)
        ws_thread.start()
        with sse(f"{served.url}/watch") as reader:
            oplog.insert("shop", "users", {"_id": 1})
            first = reader.event()
            wait_for(lambda: served.app.statistics().watchers == 2, what="both watchers")
            stopper = threading.Thread(target=served.stop)
            stopper.start()
            rest = reader.rest()
            stopper.join(15)
        ws_thread.join(15)
        assert not stopper.is_alive()
        assert not ws_thread.is_alive()
        assert first.event == "insert"
        assert [frame.event for frame in rest] == ["error"]
        assert rest[0].data["code"] == "shutting_down"
        assert rest[0].data["resumable"] is True
        assert rest[0].data["lastEventId"] == first.id
        assert '"shutting_down"' in received[-1]
        assert served.app.statistics().watchers == 0


class TestSameOriginProof:
    """Without a token, a request that opens a watcher must show it is not another site's page."""

    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}, "cross_site_request"),
            ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "script"}, "cross_site_request"),
            ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Dest": "iframe"}, "cross_site_request"),
            ({}, "client_header_required"),
            ({"Accept": "text/event-stream"}, "client_header_required"),
        ],
    )
    def test_requests_an_img_script_or_iframe_could_make_open_no_watcher(
        self, serve: Callable[..., Served], headers: dict[str, str], code: str
    ) -> None:
        """What a browser sends for another page's <img>/<script>/<iframe> (no Origin) is refused: 403, no stream."""
        served = serve()
        for path in ("/watch", "/oplog"):
            response = httpx.get(f"{served.url}{path}", headers=headers, params={"db": "shop"}, timeout=10)
            assert response.status_code == 403, path
            assert response.json()["error"] == code
        assert served.app.statistics().served == 0
        assert "Rxcs-Client" in response.json()["message"] or "another origin" in response.json()["message"]

    def test_websocket_without_origin_needs_the_proof_too(self, serve: Callable[..., Served]) -> None:
        """A WebSocket handshake with neither Origin nor the header is refused at the handshake."""
        served = serve()
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{served.url.replace('http', 'ws')}/ws/watch", open_timeout=10)
        assert refused.value.response.status_code == 403

    @pytest.mark.parametrize(
        "headers",
        [
            {"Rxcs-Client": "curl"},
            {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
            {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},
        ],
    )
    def test_programs_the_servers_own_page_and_typed_addresses_are_served(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog, headers: dict[str, str]
    ) -> None:
        """The Rxcs-Client header (programs), Sec-Fetch-Site same-origin (the page) or none (typed) open a stream."""
        served = serve()
        with httpx.Client(timeout=10) as client, client.stream("GET", f"{served.url}/watch", headers=headers) as got:
            assert got.status_code == 200
            lines = got.iter_lines()
            assert next(lines) == "retry: 2000"
        assert served.app.statistics().served == 1

    def test_the_pages_key_is_a_proof_and_a_wrong_key_is_not(self, serve: Callable[..., Served]) -> None:
        """The key the page carries (for browsers without Sec-Fetch-Site) is accepted; any other value is not."""
        served = serve()
        page = httpx.get(f"{served.url}/", timeout=10).text
        key = page.split('name="rxcs-page-key" content="', 1)[1].split('"', 1)[0]
        assert len(key) >= 32
        assert httpx.get(f"{served.url}/oplog", params={"page_key": key}, timeout=10).status_code == 200
        wrong = httpx.get(f"{served.url}/oplog", params={"page_key": key[:-1] + "x"}, timeout=10)
        assert wrong.status_code == 403
        other = serve()
        assert other.app.access.page_key != served.app.access.page_key

    def test_with_a_token_the_token_is_the_proof(self, serve: Callable[..., Served]) -> None:
        """With a token, programs need nothing else; a cross-site browser request is refused even with it."""
        served = serve(token=SECRET)
        bearer = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.get(f"{served.url}/oplog", headers=bearer, timeout=10).status_code == 200
        cross = httpx.get(f"{served.url}/oplog", headers={**bearer, "Sec-Fetch-Site": "cross-site"}, timeout=10)
        assert cross.status_code == 403


class TestSecurityHeaders:
    """Every response forbids framing and sniffing; the page runs no inline code."""

    def test_every_response_carries_the_security_headers(self, serve: Callable[..., Served]) -> None:
        """The page, its files, the API, its refusals and unknown paths: nosniff, no framing, no referrer."""
        served = serve()
        responses = [
            httpx.get(f"{served.url}{path}", headers=PROGRAM, timeout=10)
            for path in ("/", "/page.js", "/page.css", "/oplog", "/nowhere")
        ]
        responses.append(httpx.get(f"{served.url}/watch", params={"pipeline": "[x"}, headers=PROGRAM, timeout=10))
        responses.append(httpx.get(f"{served.url}/oplog", timeout=10))  # refused: no proof
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 400, 403]
        for response in responses:
            assert response.headers["x-content-type-options"] == "nosniff", response.url
            assert response.headers["x-frame-options"] == "DENY", response.url
            assert response.headers["referrer-policy"] == "no-referrer", response.url
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url

    def test_the_page_policy_allows_no_inline_script_or_style(self, serve: Callable[..., Served]) -> None:
        """The page's CSP: scripts and styles from this server only, never inline; it talks to this server only."""
        served = serve()
        policy = httpx.get(f"{served.url}/", timeout=10).headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["default-src"] == "'none'"
        assert directives["connect-src"] == "'self'"
        assert "unsafe-inline" not in policy

    def test_a_refused_websocket_handshake_carries_them_too(self, serve: Callable[..., Served]) -> None:
        """A WebSocket refusal is an HTTP response like any other: the same headers."""
        served = serve()
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{served.url.replace('http', 'ws')}/ws/watch", origin="http://evil.example", open_timeout=10)
        assert refused.value.response.headers["x-content-type-options"] == "nosniff"
        assert refused.value.response.headers["x-frame-options"] == "DENY"


class TestHostilePattern:
    def test_a_catastrophic_regex_costs_other_streams_one_bounded_delay(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A watcher whose $regex backtracks exponentially gets pipeline_failed naming the pattern; others flow on."""
        served = serve()
        hostile = json.dumps([{"$match": {"fullDocument.name": {"$regex": "^(a|aa)+$"}}}])
        with sse(f"{served.url}/watch", db="shop", pipeline=hostile) as attacker, sse(
            f"{served.url}/watch", db="shop"
        ) as bystander:
            attacker.frame()
            bystander.frame()
            written = time.monotonic()
            oplog.insert("shop", "users", {"_id": 1, "name": "a" * 38 + "b"})
            event = bystander.event()
            delay = time.monotonic() - written
            error = attacker.event()
        assert event.data["documentKey"] == {"_id": 1}
        assert delay < 1.0, f"the bystander waited {delay:.2f} s"
        assert error.event == "error"
        assert error.data["code"] == "pipeline_failed"
        assert error.data["resumable"] is False
        assert "^(a|aa)+$" in error.data["message"]
        wait_for(lambda: served.app.statistics().watchers == 0, what="the failed watcher to be released")

    def test_a_pipeline_copying_the_event_2_to_the_30_times_fails_its_stream_at_once(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog
    ) -> None:
        """A 1 KB request whose output would be 2^30 events: pipeline_failed within a moment, the server unharmed."""
        served = serve()
        doubling = json.dumps([{"$set": {"copies": ["$$ROOT", "$$ROOT"]}}] * 30)
        with sse(f"{served.url}/watch", db="shop", pipeline=doubling) as attacker, sse(
            f"{served.url}/watch", db="shop"
        ) as bystander:
            attacker.frame()
            bystander.frame()
            written = time.monotonic()
            oplog.insert("shop", "users", {"_id": 1})
            error = attacker.event()
            event = bystander.event()
            delay = time.monotonic() - written
        assert error.data["code"] == "pipeline_failed"
        assert "16 MiB" in error.data["message"]
        assert event.data["documentKey"] == {"_id": 1}
        assert delay < 2.0
