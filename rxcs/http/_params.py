"""What a client asks to watch: read from a query string or a WebSocket message, checked.

The same ``WatchRequest`` comes from ``GET /watch`` (query parameters, the
``Last-Event-ID`` header) and from the first message of ``/ws/watch`` (a JSON
object). Anything malformed raises ``BadRequest`` with one clear sentence;
deeper checks (filters, stages, tokens) are ``rxcs.watch()``'s, made when the
stream is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

from rxcs import extjson
from rxcs.http._access import ACCESS_TOKEN_PARAMETER, PAGE_KEY_PARAMETER
from rxcs.operators import FULL_DOCUMENT_BEFORE_CHANGE_MODES, FULL_DOCUMENT_MODES

__all__ = ["BadRequest", "WatchRequest", "from_message", "from_query"]

WATCH_FIELDS: Final = (
    "db", "collection", "pipeline", "full_document", "full_document_before_change",
    "show_expanded_events", "resume_after", "start_after",
)
_TRUE = {"true": True, "1": True, "false": False, "0": False}


class BadRequest(ValueError):
    """A watch request that cannot be served as given; the message says why."""


@final
@dataclass(frozen=True, slots=True)
class WatchRequest:
    """A checked watch request: the arguments ``rxcs.watch()`` gets, by name."""

    db: str | None = None
    collection: str | None = None
    pipeline: list[dict[str, Any]] | None = None
    full_document: str = "default"
    full_document_before_change: str = "off"
    show_expanded_events: bool = False
    resume_after: str | None = None
    start_after: str | None = None

    def __post_init__(self) -> None:
        if self.collection is not None and self.db is None:
            raise BadRequest("collection needs db")
        for name in ("db", "collection"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest(f"{name} must be a non-empty string")
        if self.full_document not in FULL_DOCUMENT_MODES:
            raise BadRequest(
                f"full_document must be one of {', '.join(sorted(FULL_DOCUMENT_MODES))}, not {self.full_document!r}"
            )
        if self.full_document_before_change not in FULL_DOCUMENT_BEFORE_CHANGE_MODES:
            modes = ", ".join(sorted(FULL_DOCUMENT_BEFORE_CHANGE_MODES))
            raise BadRequest(
                f"full_document_before_change must be one of {modes}, not {self.full_document_before_change!r}"
            )
        if self.resume_after is not None and self.start_after is not None:
            raise BadRequest("give resume_after or start_after, not both")
        for name in ("resume_after", "start_after"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest(f"{name} must be a resume token string")
        if not isinstance(self.show_expanded_events, bool):
            raise BadRequest("show_expanded_events must be true or false")
        _check_pipeline(self.pipeline)

    def watch_arguments(self) -> dict[str, Any]:
        """The keyword arguments for ``rxcs.watch()`` (the oplog aside)."""
        return {
            "db": self.db, "collection": self.collection, "pipeline": self.pipeline,
            "full_document": self.full_document, "full_document_before_change": self.full_document_before_change,
            "show_expanded_events": self.show_expanded_events,
            "resume_after": self.resume_after, "start_after": self.start_after,
        }


def _check_pipeline(pipeline: object) -> None:
    if pipeline is None:
        return
    if not isinstance(pipeline, list) or not all(isinstance(stage, dict) for stage in pipeline):
        raise BadRequest("pipeline must be a JSON array of stage objects, like [{\"$match\": {...}}]")


def _json(text: str, name: str) -> Any:
    try:
        return extjson.loads(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: not valid JSON ({exc})") from None


def from_query(query: Mapping[str, str], last_event_id: str | None = None) -> WatchRequest:
    """Read a watch request from ``GET /watch`` query parameters and the ``Last-Event-ID`` header.

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
    return WatchRequest(**fields)


def from_message(text: str) -> WatchRequest:
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
    try:
        return WatchRequest(**message)
    except TypeError as exc:
        raise BadRequest(str(exc)) from None
