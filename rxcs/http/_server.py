"""Running the app: a uvicorn server that ends every stream before it shuts down.

uvicorn waits for running requests to finish before it stops, and a change
stream never finishes by itself; so the server first ends each stream with a
resumable ``shutting_down`` error, then shuts down as usual.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any, final

import uvicorn

from rxcs.http._app import ChangeStreamApp, create_app
from rxcs.log import log
from rxcs.oplog.base import Oplog

__all__ = ["LOOPBACK_NAMES", "ChangeStreamServer", "is_loopback", "listen", "serve"]



LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_HEADERS = 16 * 1024  # h11's own default for a whole request head


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost).

    Examples:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@final
class ChangeStreamServer(uvicorn.Server):
    """A ``uvicorn.Server`` for a ``ChangeStreamApp``: a graceful shutdown closes every stream first."""

    def __init__(self, app: ChangeStreamApp, **config: Any) -> None:
        # A request line up to max_request_bytes (and headers besides) reaches the app, which answers a
        # longer query string with a 400 naming the limit. A WebSocket client sends one message, its
        # request: a bigger one is closed with 1009 before it is buffered.
        options: dict[str, Any] = {
            "log_config": None, "access_log": False, "lifespan": "off", "timeout_graceful_shutdown": 5,
            "ws_max_size": app.max_request_bytes, "h11_max_incomplete_event_size": app.max_request_bytes + _HEADERS,
        }
        options.update(config)
        super().__init__(uvicorn.Config(app, **options))
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End every stream with a resumable error, then shut down as uvicorn does."""
        await self.app.close_streams()
        await super().shutdown(sockets)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), IPv4 or IPv6 as the host is."""
    family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    oplog: Oplog,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    allowed_origins: Sequence[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
    **app_options: Any,
) -> None:
    """Serve ``oplog``'s change streams on ``host:port`` until interrupted (SIGINT, SIGTERM).

    Binding anywhere but loopback needs ``token``. ``on_ready(url)`` is
    called once the socket listens. ``app_options`` go to ``create_app()``.
    """
    if token is None and not is_loopback(host):
        raise ValueError(f"serving on {host} (not loopback) needs a bearer token (--token-file)")
    # On loopback, answer only to loopback names: a page whose DNS name was rebound to 127.0.0.1
    # would otherwise pass as same-origin.
    hosts = [*LOOPBACK_NAMES, host.strip("[]").lower()] if is_loopback(host) else None
    app_options.setdefault("allowed_hosts", hosts)
    app = create_app(oplog, token=token, allowed_origins=allowed_origins, **app_options)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/"
    server = ChangeStreamServer(app)
    log.info("http server listening", url=url, auth=token is not None)
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.info("http server stopped", url=url, served=app.statistics().served)
