"""Who may use the API (``/watch``, ``/ws/watch``, ``/oplog``): hosts, the bearer token, origins, same-origin proof.

A request that opens a watcher costs the server work, so it must show it
was not made by some other web page the user happens to have open: a page
can make the browser send ``GET /watch?pipeline=...`` with an ``<img>``,
``<script>`` or ``<iframe>``, and those carry no ``Origin``. The proofs, in
the order they are checked:

1. ``Host`` names this server (on loopback: a loopback name), against DNS rebinding.
2. With a token configured: the token (``Authorization: Bearer`` or ``access_token=``).
3. ``Origin``, when sent (always on WebSocket handshakes and cross-origin
   ``fetch``/``EventSource``): the server's own origin or an allowed one.
4. ``Sec-Fetch-Site``, when sent (every current browser sends it on every
   request, ``<img>`` included): ``same-origin`` or ``none`` (typed by the
   user); ``cross-site`` and ``same-site`` (another port of this host) are refused.
5. Neither header (a program, or a browser too old to send ``Sec-Fetch-Site``):
   the token, the ``Rxcs-Client`` header (any value: no page can make a
   browser send it to another origin without a CORS preflight, which this
   server never grants), or the page's key (``page_key=``, a per-server
   secret only same-origin scripts can read from the page).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

__all__ = [
    "ACCESS_TOKEN_PARAMETER", "CLIENT_HEADER", "PAGE_KEY_PARAMETER", "AccessPolicy", "Refusal", "host_name",
]

# RFC 6750 section 2.3: browsers cannot set headers on EventSource or WebSocket. A name, not a secret.
ACCESS_TOKEN_PARAMETER: Final = "access_token"  # noqa: S105
PAGE_KEY_PARAMETER: Final = "page_key"
CLIENT_HEADER: Final = "rxcs-client"
_SAME_ORIGIN_SITES: Final = frozenset({"same-origin", "none"})


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """A request turned away: the HTTP status, an error code, a sentence, extra headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] | None = None

    def response(self) -> JSONResponse:
        """The JSON answer ``{"error": code, "message": ...}``."""
        return JSONResponse(
            {"error": self.code, "message": self.message}, status_code=self.status, headers=self.headers
        )


@final
class AccessPolicy:
    """The checks every API request passes before anything else is done for it.

    Examples:
        >>> policy = AccessPolicy(token=None, allowed_origins=["https://dash.example.org"], allowed_hosts=None)
        >>> policy.origin_allowed("https://dash.example.org", host="127.0.0.1:8765", secure=False)
        True
        >>> policy.origin_allowed("http://127.0.0.1:8765", host="127.0.0.1:8765", secure=False)
        True
        >>> policy.origin_allowed("http://evil.example", host="127.0.0.1:8765", secure=False)
        False
    """

    def __init__(
        self, *, token: str | None, allowed_origins: Iterable[str] | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self._token = token
        self._origins = frozenset(origin.rstrip("/") for origin in allowed_origins or ())
        self._hosts = None if allowed_hosts is None else frozenset(host.lower() for host in allowed_hosts)
        self.page_key = secrets.token_urlsafe(24)
        """The key the page hands its scripts: proof that a request comes from this server's own page."""

    def host_refusal(self, connection: HTTPConnection) -> Refusal | None:
        """Why this server does not answer for the request's ``Host`` (the page as well as the API), or None."""
        if self._hosts is not None:
            host = host_name(connection.headers.get("host", ""))
            if host not in self._hosts:
                return Refusal(421, "host_not_allowed", f"this server does not answer for host {host!r}")
        return None

    def refusal(self, connection: HTTPConnection, *, proof: bool = True) -> Refusal | None:
        """Why this request may not use the API, or None when it may.

        ``proof=False`` (``/metrics``: read-only, no CORS headers, so another
        site's page cannot read it) waives the last rule, a token-less
        request's proof that it is a program or the server's own page, so a
        scraper needs no extra header; the Host, token and origin rules hold.
        """
        headers = connection.headers
        refused = self.host_refusal(connection)
        if refused is not None:
            return refused
        if self._token is not None and not self._has_token(connection):
            return Refusal(
                401, "unauthorized",
                "a bearer token is required (Authorization: Bearer TOKEN, or access_token=TOKEN)",
                {"www-authenticate": 'Bearer realm="rxcs"'},
            )
        origin = headers.get("origin")
        if origin is not None:
            secure = connection.url.scheme in ("https", "wss")
            if not self.origin_allowed(origin, host=headers.get("host"), secure=secure):
                return Refusal(403, "origin_not_allowed", f"origin {origin} is not allowed")
            return None
        site = headers.get("sec-fetch-site")
        if site is not None:
            if site.lower() not in _SAME_ORIGIN_SITES:
                return Refusal(
                    403, "cross_site_request",
                    f"the browser made this request for a page of another origin (Sec-Fetch-Site: {site}); "
                    "only this server's own page, and origins allowed with --allow-origin, may watch",
                )
            return None
        if not proof or self._token is not None or headers.get(CLIENT_HEADER) or self._has_page_key(connection):
            return None
        return Refusal(
            403, "client_header_required",
            "a request without a token must show it comes from a program or from this server's page: "
            "send the header 'Rxcs-Client: <your program's name>' (curl -H 'Rxcs-Client: curl' ...)",
        )

    def origin_allowed(self, origin: str, *, host: str | None, secure: bool) -> bool:
        """True for the server's own origin (as the ``Host`` names it) and for allowed origins."""
        origin = origin.rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        scheme = "https" if secure else "http"
        return host is not None and origin == f"{scheme}://{host}"

    def _has_token(self, connection: HTTPConnection) -> bool:
        assert self._token is not None
        given = connection.query_params.get(ACCESS_TOKEN_PARAMETER)
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credentials.strip()
        return given is not None and hmac.compare_digest(given.encode(), self._token.encode())

    def _has_page_key(self, connection: HTTPConnection) -> bool:
        given = connection.query_params.get(PAGE_KEY_PARAMETER)
        return given is not None and hmac.compare_digest(given.encode(), self.page_key.encode())


def host_name(host_header: str) -> str:
    """The host of a Host header, without its port: ``[::1]:8765`` -> ``::1``.

    Examples:
        >>> host_name("[::1]:8765"), host_name("LocalHost:1"), host_name("127.0.0.1")
        ('::1', 'localhost', '127.0.0.1')
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
