"""Security headers on every response the server sends, errors and WebSocket refusals included.

The page gets its own ``Content-Security-Policy`` (scripts and styles only
from this server, no inline code); every other response gets one that
allows nothing at all. Every response forbids framing, MIME sniffing and
cross-origin embedding, and sends no referrer.
"""

from __future__ import annotations

from typing import Final, final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_POLICY", "PAGE_POLICY", "SECURITY_HEADERS", "SecurityHeaders"]

PAGE_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page's policy: its script and style are files of this server, it talks to this server only."""
API_POLICY: Final = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS: Final = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
_STARTS: Final = frozenset({"http.response.start", "websocket.http.response.start"})


@final
class SecurityHeaders:
    """ASGI middleware: adds ``SECURITY_HEADERS``, and ``API_POLICY`` where a response set no policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in _STARTS:
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "content-security-policy" not in headers:
                    headers["content-security-policy"] = API_POLICY
            await send(message)

        await self.app(scope, receive, send_with_headers)
