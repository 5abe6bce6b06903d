"""The ASGI application: change streams over Server-Sent Events and WebSocket, a live page.

Each watcher is one ``AsyncChangeStream`` (``watch(...).aiterate()``): its
bounded buffer is the client's buffer, with the stream's own backpressure
(``overflow="block"``: when the client falls behind, the stream stops reading
the durable log and reads on once the client has caught up, so memory stays
bounded and nothing is lost). Events leave in batches of what is buffered,
at most ``MAX_WRITE_BYTES`` a write, and a write waits until the connection
has taken the one before: a client that stops reading holds at most
``buffer_size`` events and one write (docs/http.md states the bound). A
write the client does not take within ``send_timeout`` seconds marks it too
slow: it gets an ``error`` event with
the resumable code ``slow_client`` and its last id (as soon as it reads
again), and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from rxcs import extjson
from rxcs.consumers import list_consumers
from rxcs.errors import (
    ChangeStreamHistoryLost,
    EventTooLargeError,
    InvalidResumeToken,
    PipelineError,
    QueryError,
    RxcsError,
)
from rxcs.http._access import AccessPolicy, Refusal
from rxcs.http._headers import PAGE_POLICY, SecurityHeaders
from rxcs.http._params import BadRequest, from_message, from_query
from rxcs.http._sse import (
    SSE_HEARTBEAT,
    FrameCache,
    StreamEnd,
    sse_end,
    sse_event,
    sse_moved,
    sse_position,
    ws_end,
    ws_event,
    ws_moved,
    ws_position,
)
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.oplog.health import check_oplog
from rxcs.plan import WatchOptions
from rxcs.source import tailers_alive
from rxcs.stream import AsyncChangeStream, watch_with

__all__ = ["ChangeStreamApp", "ServerStatistics", "create_app"]



MAX_BATCH: Final = 512  # events per write: large enough to amortise a write, small enough to stay fair
MAX_WRITE_BYTES: Final = 256 * 1024
"""The most one write adds to a connection's send buffer: uvicorn waits for the buffer to drain below its
high-water mark (64 KiB) before a write, never within one, so this bounds what a stalled client holds."""
_WS_CLOSE_CODES: Final = {
    "invalidated": 1000, "shutting_down": 1001, "history_lost": 1011, "stream_failed": 1011,
    "slow_client": 1013, "too_many_watchers": 1013, "bad_request": 1008, "invalid_resume_token": 1008,
    "pipeline_failed": 1008,
}
_MAX_CLOSE_REASON: Final = 123
_GONE: Final = StreamEnd("client_gone", "the client went away", True, "")


@final
@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """The server's counters at one moment.

    ``watchers``: streams open now. ``served``: streams opened since start.
    ``refused``: requests turned away (auth, origin, bad parameters, the cap).
    ``slow_clients``: watchers disconnected because they did not keep up.
    ``sent_bytes``: bytes of event frames sent to watchers.
    """

    watchers: int
    max_watchers: int
    served: int
    refused: int
    slow_clients: int
    sent_bytes: int = 0


class _Sink(Protocol):
    """Where a session's events go: an SSE response or a WebSocket."""

    async def open(self, token: str) -> None: ...
    def render(self, event: Any) -> Any: ...
    async def events(self, batch: list[Any]) -> None: ...
    async def heartbeat(self) -> None: ...
    async def moved(self, token: str) -> None: ...
    async def close(self, end: StreamEnd | None) -> None: ...


class _ClientGone(Exception):
    """The client's connection is gone; nothing more can be sent."""


@final
class _Session:
    """One watcher: its change stream, the deadline of what it waits for, and why it ends."""

    def __init__(
        self, app: ChangeStreamApp, stream: AsyncChangeStream[Any], *, shape: Hashable, client: str, description: str
    ) -> None:
        self._app = app
        self.stream = stream
        self.shape = shape
        self.client = client
        self.description = description
        self.last_event_id = str(stream.resume_token)
        self.delivered = 0
        self._ending: StreamEnd | None = None
        self._deadline: asyncio.Timeout | None = None
        self._finished = asyncio.Event()
        self.frames = app.frames

    def stop(self, end: StreamEnd) -> None:
        """Ask the session to end with ``end``; it wakes from whatever it waits for."""
        if self._ending is None:
            self._ending = end
        deadline = self._deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    async def finished(self) -> None:
        """Wait until the session has ended and released its stream."""
        await self._finished.wait()

    async def run(self, sink: _Sink) -> None:
        """Stream events to ``sink`` until the stream ends, the client goes, or ``stop()``."""
        app = self._app
        end: StreamEnd | None = None
        try:
            if await self._send(sink.open(self.last_event_id)):
                end = await self._pump(sink)
            else:
                end = self._ending or self._too_slow()
            if end is not _GONE:
                await self._send(sink.close(end), app.send_timeout if end.code != "shutting_down" else 1.0)
        except _ClientGone:
            end = _GONE
        finally:
            # Shielded: a cancelled request (a forced shutdown) must still release its stream.
            await asyncio.shield(self.stream.close())
            app._sessions.discard(self)
            self._finished.set()
            log.info(
                "http watcher closed", stream=self.description, client=self.client,
                reason=end.code if end is not None else "cancelled", delivered=self.delivered,
                token=self.last_event_id,
            )

    async def _pump(self, sink: _Sink) -> StreamEnd:
        while True:
            if (requested := self._requested_end()) is not None:
                return requested
            try:
                batch = await self._take(sink.render)
            except StopAsyncIteration:
                self.last_event_id = str(self.stream.resume_token)  # past a hidden invalidate, if there was one
                return self._ending or StreamEnd(
                    "invalidated",
                    "the stream was invalidated (its collection or database was dropped or renamed); "
                    "start_after its last id to watch what comes next",
                    False, self.last_event_id,
                )
            except ChangeStreamHistoryLost as exc:
                return StreamEnd("history_lost", str(exc), False, self.last_event_id)
            except (QueryError, PipelineError, EventTooLargeError) as exc:
                # The client's pipeline cannot run on an event (a $regex past its time bound, a $divide by
                # zero...): resuming would meet the same event again.
                return StreamEnd("pipeline_failed", str(exc), False, self.last_event_id)
            except RxcsError as exc:
                return StreamEnd("stream_failed", f"{type(exc).__name__}: {exc}", True, self.last_event_id)
            if (requested := self._requested_end()) is not None:
                return requested  # stop() woke the wait: what it asked for goes first
            if batch is None:
                position = str(self.stream.resume_token)  # moved past entries the stream filtered out
                if position != self.last_event_id:
                    sent = await self._send(sink.moved(position))
                    if sent:
                        self.last_event_id = position
                else:
                    sent = await self._send(sink.heartbeat())
            else:
                sent = await self._send(sink.events(batch))
                self._app.sent_bytes += sum(len(f) if isinstance(f, bytes) else len(f.encode()) for f in batch)
                if sent:
                    self.last_event_id = str(self.stream.resume_token)
                    self.delivered += len(batch)
            if not sent:
                return self._ending or self._too_slow()

    def _requested_end(self) -> StreamEnd | None:
        """The end ``stop()`` asked for, if any (a call, so that checks after an await are not narrowed away)."""
        return self._ending

    def _too_slow(self) -> StreamEnd:
        self._app._slow_clients += 1
        log.warning("http watcher too slow, disconnecting", stream=self.description, client=self.client)
        return StreamEnd(
            "slow_client",
            f"the client did not take the events sent within {self._app.send_timeout} s; "
            "reconnect with the last id to resume",
            True, self.last_event_id,
        )

    async def _take(self, render: Callable[[Any], Any]) -> list[Any] | None:
        """The next batch of rendered frames, or None when no event came within the heartbeat interval.

        Buffered events are handed over without suspending; a batch stops at ``MAX_BATCH`` events or
        ``MAX_WRITE_BYTES``, so that taking events out of the stream's bounded buffer never makes a
        second, unbounded buffer of them here.
        """
        stream = self.stream
        if not stream.statistics().buffered:
            try:
                async with asyncio.timeout(self._app.heartbeat) as deadline:
                    self._deadline = deadline
                    first = await anext(stream)
            except TimeoutError:
                return None
            finally:
                self._deadline = None
        else:
            first = await anext(stream)
        batch = [render(first)]
        size = len(batch[0])
        available = stream.statistics().buffered
        while available and size < MAX_WRITE_BYTES and len(batch) < MAX_BATCH:
            frame = render(await anext(stream))
            batch.append(frame)
            size += len(frame)
            available -= 1
        return batch

    async def _send(self, sending: Awaitable[None], timeout: float | None = None) -> bool:
        """Await a write within the send timeout; False when it timed out or ``stop()`` cut it short."""
        try:
            async with asyncio.timeout(self._app.send_timeout if timeout is None else timeout) as deadline:
                self._deadline = deadline
                await sending
        except TimeoutError:
            return False
        except (OSError, WebSocketDisconnect, WebSocketDisconnected):
            raise _ClientGone from None
        finally:
            self._deadline = None
        return True


@final
class _SSESink:
    """Events as ``text/event-stream`` on a raw ASGI ``send``."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]], frames: FrameCache, shape: Hashable) -> None:
        self._send = send
        self._headers = headers
        self._frames = frames
        self._shape = ("sse", shape)

    async def open(self, token: str) -> None:
        await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
        await self._body(sse_position(token))

    def render(self, event: Any) -> bytes:
        frame: bytes = self._frames.frame(self._shape, event, sse_event)
        return frame

    async def events(self, batch: list[Any]) -> None:
        body = b"".join(batch)
        for offset in range(0, len(body), MAX_WRITE_BYTES):  # a large event goes out a bounded slice at a time
            await self._body(body[offset:offset + MAX_WRITE_BYTES])

    async def heartbeat(self) -> None:
        await self._body(SSE_HEARTBEAT)

    async def moved(self, token: str) -> None:
        await self._body(sse_moved(token))

    async def close(self, end: StreamEnd | None) -> None:
        if end is not None:
            await self._body(sse_end(end))
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _body(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})


@final
class _EventStreamResponse(Response):
    """The response of ``GET /watch``: runs the session, and stops it when the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self, session: _Session, headers: dict[str, str]) -> None:
        self.session = session
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.session

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            session.stop(_GONE)

        listener = asyncio.create_task(listen())
        try:
            await session.run(_SSESink(send, self.raw_headers, session.frames, session.shape))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


@final
class _WebSocketSink:
    """Events as one JSON message each on a WebSocket."""

    def __init__(self, websocket: WebSocket, frames: FrameCache, shape: Hashable) -> None:
        self._websocket = websocket
        self._frames = frames
        self._shape = ("ws", shape)

    async def open(self, token: str) -> None:
        await self._websocket.send_text(ws_position(token))

    def render(self, event: Any) -> str:
        message: str = self._frames.frame(self._shape, event, ws_event)
        return message

    async def events(self, batch: list[Any]) -> None:
        send = self._websocket.send_text
        for message in batch:
            await send(message)

    async def heartbeat(self) -> None:
        await self._websocket.send_text('{"type": "heartbeat"}')

    async def moved(self, token: str) -> None:
        await self._websocket.send_text(ws_moved(token))

    async def close(self, end: StreamEnd | None) -> None:
        if end is not None:
            await self._websocket.send_text(ws_end(end))
            await self._websocket.close(_WS_CLOSE_CODES.get(end.code, 1011), _close_reason(end.message))


@final
class ChangeStreamApp(Starlette):
    """The ASGI app ``create_app()`` returns: a Starlette app that also tracks its watchers.

    ``statistics()`` reports them; ``close_streams()`` ends every stream with
    a resumable ``shutting_down`` error, for a graceful shutdown.
    """

    def __init__(
        self,
        oplog: Oplog,
        *,
        token: str | None,
        allowed_origins: Sequence[str] | None,
        allowed_hosts: Sequence[str] | None,
        max_watchers: int,
        buffer_size: int,
        heartbeat: float,
        send_timeout: float,
        max_request_bytes: int,
        ready_max_lag: int | None = None,
    ) -> None:
        super().__init__(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/", self._page, methods=["GET"]),
                Route("/page.js", self._page_script, methods=["GET"]),
                Route("/page.css", self._page_style, methods=["GET"]),
                Route("/oplog", self._oplog_info, methods=["GET"]),
                Route("/consumers", self._consumers, methods=["GET"]),
                Route("/watch", self._watch_sse, methods=["GET"]),
                WebSocketRoute("/ws/watch", self._watch_ws),
            ],
            middleware=[Middleware(SecurityHeaders)],
        )
        self.oplog = oplog
        self.max_watchers = max_watchers
        self.max_request_bytes = max_request_bytes
        self.ready_max_lag = ready_max_lag
        self.buffer_size = buffer_size
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.access = AccessPolicy(token=token, allowed_origins=allowed_origins, allowed_hosts=allowed_hosts)
        self._sessions: set[_Session] = set()
        self._closing = False
        self._served = 0
        self._refused = 0
        self._slow_clients = 0
        self.sent_bytes = 0
        self.frames = FrameCache()
        self._metrics_registry: Any = None  # made at the first GET /metrics (needs rxcs[metrics])
        self._metrics_collector: Any = None
        self._page_html = _asset("_page.html").replace("{{page_key}}", self.access.page_key)
        self._page_assets = {"page.js": _asset("_page.js"), "page.css": _asset("_page.css")}

    def statistics(self) -> ServerStatistics:
        """A frozen record of the server's counters."""
        return ServerStatistics(
            watchers=len(self._sessions), max_watchers=self.max_watchers, served=self._served,
            refused=self._refused, slow_clients=self._slow_clients, sent_bytes=self.sent_bytes,
        )

    async def close_streams(self, timeout: float = 5.0) -> None:
        """End every stream with a resumable ``shutting_down`` error; refuse new ones from now on."""
        self._closing = True
        sessions = list(self._sessions)
        for session in sessions:
            session.stop(StreamEnd(
                "shutting_down", "the server is shutting down; reconnect with the last id to resume",
                True, session.last_event_id,
            ))
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.finished()) for s in sessions], timeout=timeout)
            log.info("http watchers closed for shutdown", watchers=len(sessions))

    # -- checks ------------------------------------------------------------------------

    def _refusal(self, connection: HTTPConnection, *, proof: bool = True) -> Refusal | None:
        """The response refusing this connection (host, token, origin, same-origin proof), or None."""
        refusal = self.access.refusal(connection, proof=proof)
        if refusal is not None:
            self._refused += 1
        return refusal

    def _cors_headers(self, connection: HTTPConnection) -> dict[str, str]:
        origin = connection.headers.get("origin")
        if origin is None:
            return {}
        return {"access-control-allow-origin": origin, "vary": "Origin"}

    def _refuse(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Refusal:
        self._refused += 1
        return Refusal(status, code, message, headers)

    def _open_stream(self, options: WatchOptions, client: str) -> _Session | Refusal:
        """Open the change stream a request asks for, or the response saying why not."""
        if self._closing:
            return self._refuse(503, "shutting_down", "the server is shutting down", {"retry-after": "1"})
        if len(self._sessions) >= self.max_watchers:
            return self._refuse(
                503, "too_many_watchers", f"the server already serves {self.max_watchers} watchers; try again later",
                {"retry-after": "5"},
            )
        try:
            stream = watch_with(self.oplog, options).aiterate()
        except RxcsError as exc:
            return self._refusal_for(exc)
        description = options.description
        shape = extjson.dumps([  # what shapes the events: streams alike share their frames
            options.db, options.collection, options.pipeline, options.full_document,
            options.full_document_before_change, options.show_expanded_events,
        ])
        session = _Session(self, stream, shape=shape, client=client, description=description)
        self._sessions.add(session)
        self._served += 1
        if self._metrics_registry is not None:
            self._metrics_collector.track(stream, "http")
        log.info("http watcher opened", stream=description, client=client, token=session.last_event_id)
        return session

    def _refusal_for(self, exc: RxcsError) -> Refusal:
        """What a request whose options or start cannot be had is told."""
        if isinstance(exc, ChangeStreamHistoryLost):
            return self._refuse(410, "history_lost", str(exc))
        if isinstance(exc, InvalidResumeToken):
            return self._refuse(400, "invalid_resume_token", str(exc))
        return self._refuse(400, "bad_request", str(exc))

    # -- endpoints -----------------------------------------------------------------------

    def _host_refusal(self, connection: HTTPConnection) -> Refusal | None:
        """The page answers only for this server's names, as the API does (a rebinding page gets nothing)."""
        refusal = self.access.host_refusal(connection)
        if refusal is not None:
            self._refused += 1
        return refusal

    async def _page(self, request: Request) -> Response:
        refusal = self._host_refusal(request)
        if refusal is not None:
            return refusal.response()
        return HTMLResponse(
            self._page_html, headers={"content-security-policy": PAGE_POLICY, "cache-control": "no-cache"}
        )

    async def _page_script(self, request: Request) -> Response:
        refusal = self._host_refusal(request)
        if refusal is not None:
            return refusal.response()
        return Response(
            self._page_assets["page.js"], media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    async def _page_style(self, request: Request) -> Response:
        refusal = self._host_refusal(request)
        if refusal is not None:
            return refusal.response()
        return Response(
            self._page_assets["page.css"], media_type="text/css; charset=utf-8", headers={"cache-control": "no-cache"}
        )

    async def _healthz(self, request: Request) -> Response:
        """The process is up and answering."""
        refusal = self._host_refusal(request)
        if refusal is not None:
            return refusal.response()
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def _readyz(self, request: Request) -> Response:
        """Ready to serve: the oplog open and readable (Redis reachable), tailers alive, watchers' lag in bounds."""
        refusal = self._host_refusal(request)
        if refusal is not None:
            return refusal.response()
        problems = list((await run_in_threadpool(check_oplog, self.oplog)).problems)
        if not tailers_alive(self.oplog):
            problems.append("a tailer stopped while streams still need it")
        lag = max((session.stream.statistics().lag for session in self._sessions), default=0)
        if self.ready_max_lag is not None and lag > self.ready_max_lag:
            problems.append(f"a watcher lags {lag} entries behind, more than {self.ready_max_lag}")
        body = {"status": "unready" if problems else "ready", "problems": problems, "lag": lag}
        return JSONResponse(body, status_code=503 if problems else 200, headers={"cache-control": "no-store"})

    async def _metrics(self, request: Request) -> Response:
        """Prometheus metrics of the oplog, the watchers (stream="http") and the server.

        Protected like the API (Host, token, origins), except that a scraper
        without a token needs no ``Rxcs-Client`` header: the response is
        read-only and carries no CORS headers, so another site cannot read it.
        """
        refusal = self._refusal(request, proof=False)
        if refusal is not None:
            return refusal.response()
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

            from rxcs.metrics import register
        except ImportError:
            return JSONResponse(
                {"error": "metrics_unavailable", "message": "metrics need prometheus_client: install rxcs[metrics]"},
                status_code=501,
            )
        if self._metrics_registry is None:
            registry = CollectorRegistry()
            collector = register(self.oplog, registry)
            collector.watch_server(self.statistics)
            self._metrics_registry, self._metrics_collector = registry, collector
            for session in self._sessions:
                collector.track(session.stream, "http")
        body = await run_in_threadpool(generate_latest, self._metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})

    async def _oplog_info(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal.response()
        return JSONResponse(
            {**self.oplog.describe(), "watchers": len(self._sessions), "maxWatchers": self.max_watchers},
            headers=self._cors_headers(request),
        )

    async def _consumers(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal.response()
        found = await asyncio.to_thread(list_consumers, self.oplog)  # files or Redis: off the event loop
        return JSONResponse({"consumers": [info.to_document() for info in found]}, headers=self._cors_headers(request))

    async def _watch_sse(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal.response()
        query_bytes = len(request.scope["query_string"])
        if query_bytes > self.max_request_bytes:
            limit = self.max_request_bytes
            message = f"the query string is {query_bytes} bytes, over the limit of {limit}"
            return self._refuse(400, "bad_request", message).response()
        names = [name for name, _ in request.query_params.multi_items()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            return self._refuse(400, "bad_request", f"parameter {repeated[0]!r} is given more than once").response()
        try:
            wanted = from_query(
                request.query_params, request.headers.get("last-event-id"), buffer_size=self.buffer_size
            )
        except RxcsError as exc:
            return self._refusal_for(exc).response()
        if request.method == "HEAD":  # the headers a stream would have, and no stream
            return Response(media_type="text/event-stream", headers={"cache-control": "no-cache"})
        opened = self._open_stream(wanted, _client_name(request))
        if isinstance(opened, Refusal):
            return opened.response()
        return _EventStreamResponse(opened, self._cors_headers(request))

    async def _watch_ws(self, websocket: WebSocket) -> None:
        refusal = self._refusal(websocket)
        if refusal is not None:
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(refusal.response())
            else:
                await websocket.close(1008)
            return
        await websocket.accept()
        try:
            async with asyncio.timeout(self.send_timeout):
                first = await websocket.receive_text()
            if len(first) > self.max_request_bytes:
                raise BadRequest(
                    f"the watch request is {len(first)} characters, over the limit of {self.max_request_bytes}"
                )
            wanted = from_message(first, buffer_size=self.buffer_size)
        except (TimeoutError, WebSocketDisconnect, KeyError):
            # KeyError: a binary frame, which receive_text cannot read; either way no request came
            await _ws_fail(websocket, "bad_request", "send the watch request as the first (text) message")
            return
        except RxcsError as exc:
            refused = self._refusal_for(exc)
            await _ws_fail(websocket, refused.code, refused.message)
            return
        opened = self._open_stream(wanted, _client_name(websocket))
        if isinstance(opened, Refusal):
            await _ws_fail(websocket, opened.code, opened.message, resumable=opened.status == 503)
            return
        session = opened

        async def listen() -> None:
            with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
            session.stop(_GONE)

        listener = asyncio.create_task(listen())
        try:
            await session.run(_WebSocketSink(websocket, session.frames, session.shape))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def _ws_fail(websocket: WebSocket, code: str, message: str, *, resumable: bool = False) -> None:
    with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
        await websocket.send_text(ws_end(StreamEnd(code, message, resumable, "")))
        await websocket.close(_WS_CLOSE_CODES.get(code, 1008), _close_reason(message))


def _close_reason(message: str) -> str:
    """A close frame's reason: the message, cut to the 123 bytes of UTF-8 a close frame holds."""
    reason = message.encode()[:_MAX_CLOSE_REASON]
    return reason.decode(errors="ignore")


def _asset(name: str) -> str:
    return importlib.resources.files("rxcs.http").joinpath(name).read_text(encoding="utf-8")


def _client_name(connection: HTTPConnection) -> str:
    client = connection.client
    return "?" if client is None else f"{client.host}:{client.port}"


def create_app(
    oplog: Oplog,
    *,
    token: str | None = None,
    allowed_origins: Sequence[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_watchers: int = 256,
    buffer_size: int = 100,
    heartbeat: float = 15.0,
    send_timeout: float = 10.0,
    max_request_bytes: int = 65536,
    ready_max_lag: int | None = None,
) -> ChangeStreamApp:
    """Build the ASGI app serving ``oplog``'s change streams; run it with any ASGI server.

    ``token``: when given, every request but the page needs it, as
    ``Authorization: Bearer TOKEN`` or ``access_token=TOKEN`` (browsers
    cannot set headers on EventSource or WebSocket). ``allowed_origins``:
    browser origins besides the server's own that may watch (``"*"``: any).
    ``allowed_hosts``: when given, the only names the ``Host`` header may
    carry (a defence against DNS rebinding; ``serve()`` sets the loopback
    names when it binds to loopback).
    ``max_watchers``: streams served at once; beyond, 503. ``buffer_size``:
    events buffered per watcher (what a client that stops reading holds). ``heartbeat``: seconds of quiet before a
    keep-alive. ``send_timeout``: seconds a client may take to accept a
    write before it is disconnected as too slow. ``max_request_bytes``: the
    longest query string of ``GET /watch`` and first WebSocket message
    accepted; longer ones are a 400 (WebSocket: close 1008).
    ``ready_max_lag``: ``GET /readyz`` answers 503 while a watcher lags more
    than this many entries behind the oplog's end (None: lag never does).
    ``GET /healthz`` and ``GET /readyz`` need no token (probes carry none);
    they check the ``Host`` like every path and tell only health.

    Examples:
        >>> import rxcs
        >>> from rxcs.http import create_app
        >>> app = create_app(rxcs.open_oplog(":memory:"), max_watchers=10)
        >>> app.statistics().max_watchers
        10
    """
    if not isinstance(oplog, Oplog):
        raise TypeError(f"create_app() needs an Oplog (rxcs.open_oplog), not {type(oplog).__name__}")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError("token must be a non-empty string")
    for name, names in (("allowed_origins", allowed_origins), ("allowed_hosts", allowed_hosts)):
        if isinstance(names, str):
            raise TypeError(f"{name} must be a list of strings, not one string ({names!r})")
    for name, value in (
        ("max_watchers", max_watchers), ("buffer_size", buffer_size), ("max_request_bytes", max_request_bytes)
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    if ready_max_lag is not None and (
        isinstance(ready_max_lag, bool) or not isinstance(ready_max_lag, int) or ready_max_lag < 0
    ):
        raise ValueError(f"ready_max_lag must be an int >= 0 or None, not {ready_max_lag!r}")
    for name, seconds in (("heartbeat", heartbeat), ("send_timeout", send_timeout)):
        if not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
            raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
    return ChangeStreamApp(
        oplog, token=token.strip() if token is not None else None, allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
        max_watchers=max_watchers, buffer_size=buffer_size, heartbeat=float(heartbeat),
        send_timeout=float(send_timeout), max_request_bytes=max_request_bytes, ready_max_lag=ready_max_lag,
    )
