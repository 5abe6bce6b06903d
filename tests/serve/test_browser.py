"""The live page in a real headless Chromium: events written after it loaded appear, coloured, filterable.

Needs a Chromium executable (Debian: ``apt-get install chromium``) and the
``playwright`` package (the test extra), which drives that executable; no
browser download. Without them the test is skipped, except under CI=true,
where it fails: CI installs Chromium, so its absence there is a broken setup.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import rxcs

from .helpers import Served

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but {reason}")
    pytest.skip(reason)


@pytest.fixture
def page() -> Iterator[Any]:
    """A Playwright page in headless Chromium (the system's executable)."""
    executable = next((found for name in _CANDIDATES if (found := shutil.which(name))), None)
    if executable is None:
        _unavailable("no Chromium executable on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import expect as playwright_expect
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install rxcs[test])")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        playwright_expect.set_options(timeout=15_000)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 720})
        finally:
            browser.close()


def expect(target: Any) -> Any:
    """Playwright's auto-retrying assertions (they poll without eval, which the page's CSP forbids)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _rows(page: Any) -> list[str]:
    rows: list[str] = page.locator("#events tr:visible").all_inner_texts()
    return rows


class TestLivePage:
    def test_events_written_after_load_appear_coloured_filterable_and_pausable(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog, page: Any, tmp_path: Path
    ) -> None:
        """The page connects, shows new events at the top coloured by type; filter and pause work; a screenshot."""
        served = serve()
        page.goto(f"{served.url}/")
        page.wait_for_selector("#status[data-state='live']", timeout=15_000)

        oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        oplog.insert("shop", "orders", {"_id": 10, "user": 1, "total": 42.5})
        oplog.update("shop", "orders", 10, updated_fields={"status": "paid"})
        oplog.replace("shop", "users", 1, {"_id": 1, "name": "Ada Lovelace", "vip": True})
        oplog.delete("shop", "users", 1)
        oplog.drop_collection("shop", "sessions")
        expect(page.locator("#events tr")).to_have_count(6)

        rows = _rows(page)
        assert rows[0].split("\t")[1].strip() == "drop"  # newest first
        assert [row.split("\t")[1].strip() for row in rows] == [
            "drop", "delete", "replace", "update", "insert", "insert",
        ]
        assert '"$set"' in rows[3]
        assert "paid" in rows[3]
        colour = "(op) => getComputedStyle(document.querySelector('.op-' + op)).backgroundColor"
        colours = {op: page.evaluate(colour, op) for op in ("insert", "update", "delete")}
        assert len(set(colours.values())) == 3, colours

        page.fill("#filter", "orders")
        assert [row.split("\t")[1].strip() for row in _rows(page)] == ["update", "insert"]
        page.fill("#filter", "")

        page.click("#pause")
        oplog.insert("shop", "users", {"_id": 2, "name": "Grace"})
        expect(page.locator("#counts")).to_contain_text("1 waiting")
        assert len(_rows(page)) == 6
        page.click("#pause")
        expect(page.locator("#events tr")).to_have_count(7)
        assert "Grace" in _rows(page)[0]

        for i in range(3, 9):
            oplog.insert("shop", "users", {"_id": i, "name": f"user{i}", "email": f"user{i}@example.org"})
        oplog.update("shop", "users", 3, updated_fields={"email": "ada@example.org"}, removed_fields=["name"])
        expect(page.locator("#events tr")).to_have_count(14)
        assert '"$unset"' in _rows(page)[0]
        assert '"$set"' in _rows(page)[0]
        page.wait_for_timeout(1300)  # let the fresh-row highlight fade before the picture
        screenshot = tmp_path / "rxcs-live-page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot of the live page: {screenshot}")
        assert screenshot.stat().st_size > 10_000

    def test_a_server_with_a_token_makes_the_page_ask_for_it(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog, page: Any
    ) -> None:
        """Without a token the stream is refused; the page asks for it, then streams with it."""
        served = serve(token="page-s3cret")
        asked: list[str] = []

        def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept("page-s3cret")

        page.on("dialog", answer)
        page.goto(f"{served.url}/")
        page.wait_for_selector("#status[data-state='live']", timeout=15_000)
        oplog.insert("shop", "users", {"_id": "with-token"})
        expect(page.locator("#events tr")).to_have_count(1)
        assert asked == ["This server needs a bearer token:"]
        assert "with-token" in _rows(page)[0]
        assert served.app.statistics().refused >= 1


@contextmanager
def _another_site(html: str) -> Iterator[str]:
    """A second web server, another origin on this machine, serving one page: ``html``."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, name="another-site")
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class TestAnotherSitesPage:
    def test_img_script_iframe_and_no_cors_fetch_from_another_page_open_no_watcher(
        self, serve: Callable[..., Served], page: Any
    ) -> None:
        """Another local page cannot make the browser open watchers: <img>, <script>, <iframe>, fetch(no-cors)."""
        served = serve()
        hostile = quote(json.dumps([{"$match": {"fullDocument.name": {"$regex": "^(a|aa)+$"}}}]))
        target = f"{served.url}/watch?pipeline={hostile}"
        html = (
            f'<img src="{target}&db=n1"><script src="{target}&db=n2"></script><iframe src="{target}&db=n3"></iframe>'
            f'<script>fetch("{target}&db=n4", {{mode: "no-cors"}}).catch(() => null);'
            f'fetch("{served.url}/oplog", {{mode: "no-cors"}}).catch(() => null);</script>'
        )
        with _another_site(html) as url:
            page.goto(url, wait_until="commit")  # the page never finishes loading if a stream opens
            deadline = time.monotonic() + 10
            while served.app.statistics().refused < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        statistics = served.app.statistics()
        assert statistics.served == 0
        assert statistics.refused >= 5

    def test_a_websocket_from_another_page_is_refused(self, serve: Callable[..., Served], page: Any) -> None:
        """The browser sends Origin on every WebSocket handshake: another page's socket never opens."""
        served = serve()
        with _another_site("<p>another site</p>") as url:
            page.goto(url)
            outcome = page.evaluate(_OPEN_SOCKET, served.url.replace("http", "ws") + "/ws/watch")
        assert outcome == "closed before opening"
        assert served.app.statistics().served == 0

    def test_an_allowed_origins_page_watches_with_event_source(
        self, serve: Callable[..., Served], oplog: rxcs.Oplog, page: Any
    ) -> None:
        """A dashboard on an origin listed in allowed_origins reads the stream across origins (CORS)."""
        with _another_site("<p>dashboard</p>") as url:
            served = serve(allowed_origins=[url.rstrip("/")])
            page.goto(url)
            page.evaluate(
                "(url) => { window.got = []; const s = new EventSource(url);"
                " s.addEventListener('insert', (e) => window.got.push(JSON.parse(e.data).documentKey._id)); }",
                f"{served.url}/watch?db=shop",
            )
            deadline = time.monotonic() + 15
            while served.app.statistics().watchers < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            oplog.insert("shop", "users", {"_id": "across-origins"})
            page.wait_for_function("window.got.length > 0")
            assert page.evaluate("window.got") == ["across-origins"]


_OPEN_SOCKET = """(url) => new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.send("{}"); };
    socket.onmessage = (message) => { resolve(JSON.parse(message.data).type); socket.close(); };
    socket.onclose = () => resolve("closed before opening");
})"""


class TestOwnPageWebSocket:
    def test_a_websocket_from_the_servers_own_page_is_served(self, serve: Callable[..., Served], page: Any) -> None:
        """The page's own origin opens a WebSocket: the handshake's Origin is the proof."""
        served = serve()
        page.goto(f"{served.url}/")
        page.wait_for_selector("#status[data-state='live']", timeout=15_000)
        assert page.evaluate(_OPEN_SOCKET, served.url.replace("http", "ws") + "/ws/watch") == "started"
