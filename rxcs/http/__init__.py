"""Change streams over HTTP: Server-Sent Events, WebSocket and a live page (``rxcs[http]``).

``create_app(oplog)`` builds the ASGI app; ``serve(oplog)`` runs it with
uvicorn, as ``rxcs serve`` does. Endpoints: ``GET /watch`` (SSE, resumable
with ``Last-Event-ID``), ``GET /ws/watch`` (WebSocket), ``GET /oplog``
(the oplog's range as JSON), ``GET /consumers`` (named consumers and groups
as JSON) and ``GET /`` (a page showing events live).
"""

from rxcs.http._app import ChangeStreamApp, ServerStatistics, create_app
from rxcs.http._server import ChangeStreamServer, serve

__all__ = ["ChangeStreamApp", "ChangeStreamServer", "ServerStatistics", "create_app", "serve"]
