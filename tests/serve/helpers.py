"""Helpers for the HTTP tests: a real server on a free loopback port, and a small SSE reader over httpx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

import rxcs
from rxcs.http import ChangeStreamApp, ChangeStreamServer
from rxcs.http._server import listen

PROGRAM: Final = {"Rxcs-Client": "rxcs-tests"}
"""What a program sends to show it is not another site's web page (docs/http.md, Security model)."""


def get(url: str, *, headers: dict[str, str] | None = None, **options: Any) -> httpx.Response:
    """``httpx.get`` as a program calls the API: with the Rxcs-Client header."""
    return httpx.get(url, headers={**PROGRAM, **(headers or {})}, **options)


def head(url: str, *, headers: dict[str, str] | None = None, **options: Any) -> httpx.Response:
    """``httpx.head`` as a program calls the API: with the Rxcs-Client header."""
    return httpx.head(url, headers={**PROGRAM, **(headers or {})}, **options)


@dataclass
class Served:
    """A running server: its base URL, its app and the oplog it serves."""

    url: str
    app: ChangeStreamApp
    oplog: rxcs.Oplog
    server: ChangeStreamServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the server did not shut down"


@contextmanager
def running(app: ChangeStreamApp, *, send_buffer: int | None = None) -> Iterator[Served]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; stop it and check it stopped.

    ``send_buffer`` fixes the kernel's send buffer of every accepted connection (they inherit it
    from the listening socket), so that a client that stops reading stalls the server quickly.
    """
    sock = listen("127.0.0.1", 0)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    port = sock.getsockname()[1]
    server = ChangeStreamServer(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-http-server")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the server thread died"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    served = Served(f"http://127.0.0.1:{port}", app, app.oplog, server, thread)
    try:
        yield served
    finally:
        if thread.is_alive():
            served.stop()
        sock.close()


@dataclass
class Frame:
    """One SSE frame: its fields (``id``, ``event``, ``data``, ``retry``) and its comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def id(self) -> str | None:
        return self.fields.get("id")

    @property
    def event(self) -> str:
        return self.fields.get("event", "message")

    @property
    def data(self) -> Any:
        import json

        return json.loads(self.fields["data"])


class SSEReader:
    """Reads frames from an httpx streaming response, as an EventSource would parse them."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self.last_event_id: str | None = None

    def frame(self) -> Frame:
        """The next frame (an event, an id-only frame, or comments); StopIteration at the end."""
        frame = Frame()
        for line in self._lines:
            if line == "":
                if frame.fields or frame.comments:
                    if "id" in frame.fields:
                        self.last_event_id = frame.fields["id"]
                    return frame
                continue
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            frame.fields[name] = value if name != "data" or name not in frame.fields else frame.fields[name] + value
        raise StopIteration

    def event(self) -> Frame:
        """The next frame that is an event (has data); skips position frames and heartbeats."""
        while True:
            frame = self.frame()
            if "data" in frame.fields:
                return frame

    def events(self, count: int) -> list[Frame]:
        return [self.event() for _ in range(count)]

    def rest(self) -> list[Frame]:
        """Every remaining event, until the server ends the response."""
        frames = []
        while True:
            try:
                frames.append(self.event())
            except StopIteration:
                return frames


@contextmanager
def sse(url: str, *, headers: dict[str, str] | None = None, client: httpx.Client | None = None,
        **params: str) -> Iterator[SSEReader]:
    """Open ``GET url`` as an event stream, as a program (``PROGRAM``); the response must be 200 text/event-stream."""
    owner = client is None
    http = client if client is not None else httpx.Client(timeout=httpx.Timeout(15.0))
    try:
        with http.stream("GET", url, params=params, headers={**PROGRAM, **(headers or {})}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SSEReader(response)
    finally:
        if owner:
            http.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
