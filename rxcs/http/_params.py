"""What a client asks to watch: read from a query string or a WebSocket message.

``GET /watch`` (query parameters, the ``Last-Event-ID`` header) and the first
message of ``/ws/watch`` (a JSON object) name the same fields. What only the
transport knows is read here: JSON, the names of the fields, ``true`` and
``false``; what is wrong with it raises ``BadRequest``. The options
themselves are checked by ``rxcs.plan.WatchOptions``, as ``watch()`` checks
them: a bad one raises its ``RxcsError`` (``InvalidOptionError``,
``InvalidResumeToken``...), and filters and stages are compiled when the
stream is planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rxcs import extjson
from rxcs.errors import RxcsError
from rxcs.http._access import ACCESS_TOKEN_PARAMETER, PAGE_KEY_PARAMETER
from rxcs.plan import WatchOptions

__all__ = ["BadRequest", "from_message", "from_query"]

WATCH_FIELDS: Final = (
    "db", "collection", "pipeline", "full_document", "full_document_before_change",
    "show_expanded_events", "resume_after", "start_after",
)
_TRUE = {"true": True, "1": True, "false": False, "0": False}


class BadRequest(RxcsError, ValueError):
    """A watch request that cannot be read as given (not JSON, an unknown field); the message says why."""


def _options(fields: dict[str, Any], defaults: Mapping[str, Any]) -> WatchOptions:
    """The request's fields as ``WatchOptions``, which check them (``rxcs.plan``: the one validator)."""
    try:
        return WatchOptions(**fields, **defaults)
    except TypeError as exc:  # a field given twice, or of a name WatchOptions does not take
        raise BadRequest(str(exc)) from None


def _json(text: str, name: str) -> Any:
    try:
        return extjson.loads(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: not valid JSON ({exc})") from None


def from_query(
    query: Mapping[str, str], last_event_id: str | None = None, **defaults: Any
) -> WatchOptions:
    """Read a watch request from ``GET /watch`` query parameters and the ``Last-Event-ID`` header.

    ``defaults`` are the server's own options (``buffer_size``...).

    ``Last-Event-ID`` (sent by a reconnecting EventSource) is the newest
    position the client has, so it wins over the ``resume_after`` and
    ``start_after`` of the URL it reconnects to.

    Examples:
        >>> from_query({"db": "shop", "pipeline": '[{"$match": {"operationType": "insert"}}]'}).pipeline
        [{'$match': {'operationType': 'insert'}}]
        >>> from_query({"pipeline": "[{oops"})
        Traceback (most recent call last):
        ...
        rxcs.http._params.BadRequest: pipeline: not valid JSON (Expecting property name enclosed in double quotes: \
line 1 column 3 (char 2))
    """
    unknown = sorted(set(query) - {*WATCH_FIELDS, ACCESS_TOKEN_PARAMETER, PAGE_KEY_PARAMETER})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; known: {', '.join(WATCH_FIELDS)}")
    fields: dict[str, Any] = {
        name: query[name] for name in WATCH_FIELDS if name in query and name != "pipeline"
    }
    if "pipeline" in query:
        fields["pipeline"] = _json(query["pipeline"], "pipeline")
    for name in ("db", "collection"):
        if fields.get(name) == "":
            del fields[name]  # an empty form field means "any"
    if "show_expanded_events" in fields:
        flag = _TRUE.get(fields["show_expanded_events"].lower())
        if flag is None:
            raise BadRequest("show_expanded_events must be true or false")
        fields["show_expanded_events"] = flag
    if last_event_id and last_event_id != fields.get("start_after"):
        # Equal to start_after, it is the opening frame's id of a stream started there: keep start_after,
        # since resume_after an invalidate token is refused.
        fields.pop("start_after", None)
        fields["resume_after"] = last_event_id
    return _options(fields, defaults)


def from_message(text: str, **defaults: Any) -> WatchOptions:
    """Read a watch request from the first WebSocket message, a JSON object of the same fields.

    Examples:
        >>> from_message('{"db": "shop", "collection": "users"}').collection
        'users'
        >>> from_message('[1]')
        Traceback (most recent call last):
        ...
        rxcs.http._params.BadRequest: the watch request must be a JSON object, like {"db": "shop"}
    """
    message = _json(text, "watch request")
    if not isinstance(message, dict):
        raise BadRequest('the watch request must be a JSON object, like {"db": "shop"}')
    unknown = sorted(set(message) - set(WATCH_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; known: {', '.join(WATCH_FIELDS)}")
    return _options(message, defaults)
