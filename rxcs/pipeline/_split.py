"""Event size caps, and ``$changeStreamSplitLargeEvent``: oversize events in fragments.

An event's size is the length of its document encoded with msgpack (the
oplog's own encoding; values msgpack cannot carry are measured by their
string form). Over the cap, a stream without the split stage fails with
``EventTooLargeError`` naming the op_id and the size; with it, the event
comes as fragments, as MongoDB sends them: its top-level fields, smallest
first, packed greedily into documents under the cap, each with
``splitEvent: {fragment, of}`` and a resume token of its own.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import msgpack

from rxcs.errors import EventTooLargeError, PipelineError
from rxcs.limits import MAX_DOCUMENT_BYTES
from rxcs.tokens import ResumeToken

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "MAX_FRAGMENTS", "check_max_event_bytes", "event_limit", "event_size"]

Document = Mapping[str, Any]
DEFAULT_MAX_EVENT_BYTES: Final = MAX_DOCUMENT_BYTES
"""MongoDB's limit on a change event (its BSON document limit), the cap with the split stage."""
MAX_FRAGMENTS: Final = 2**16 - 1  # what a resume token can number
_FRAGMENT_MARGIN: Final = 16  # a fragment's map header, and rounding, over the measured overhead


def _encodable(value: Any) -> Any:
    if isinstance(value, datetime):  # naive datetimes are UTC, as everywhere in rxcs
        return msgpack.Timestamp.from_datetime(value.replace(tzinfo=UTC))
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)


def event_size(document: Document) -> int:
    """The size of a document in bytes, as msgpack encodes it.

    Examples:
        >>> event_size({"a": 1})  # a map of one pair: header, "a", 1
        4
    """
    packed: bytes = msgpack.packb(document, datetime=True, use_bin_type=True, default=_encodable)
    return len(packed)


def event_limit(max_event_bytes: int | None, split: bool) -> Callable[[Document], list[Document]] | None:
    """The size check of a stream: ``fit(document)`` returns the document, or its fragments.

    None when there is nothing to check (no cap and no split stage), so a
    stream without one pays nothing. With the split stage the cap defaults to
    ``DEFAULT_MAX_EVENT_BYTES``. Over the cap without the split stage,
    ``fit`` raises ``EventTooLargeError``.
    """
    if max_event_bytes is None:
        if not split:
            return None
        max_event_bytes = DEFAULT_MAX_EVENT_BYTES
    check_max_event_bytes(max_event_bytes)
    cap = max_event_bytes

    def fit(document: Document) -> list[Document]:
        size = event_size(document)
        if size <= cap:
            return [document]
        if not split:
            token = _token(document)
            raise EventTooLargeError(
                f"op_id {token.op_id if token else '?'}: the change event is {size} bytes, over "
                f"max_event_bytes={cap}; end the pipeline with {{'$changeStreamSplitLargeEvent': {{}}}} "
                "to receive it in fragments, or $project away the fields you do not need",
                op_id=token.op_id if token else None,
                size=size,
            )
        return _fragments(document, size, cap)

    return fit


def check_max_event_bytes(value: object) -> None:
    """A cap is a positive int; ``ValueError``/``TypeError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_event_bytes must be an int or None, not {value!r}")
    if value <= 0:
        raise ValueError(f"max_event_bytes must be positive, not {value}")


def _token(document: Document) -> ResumeToken | None:
    try:
        return ResumeToken.parse(document.get("_id"))
    except ValueError:
        return None


def _fragments(document: Document, size: int, cap: int) -> list[Document]:
    token = _token(document)
    if token is None:
        raise PipelineError(
            f"$changeStreamSplitLargeEvent: cannot split a document whose _id is not a resume token "
            f"({document.get('_id')!r})"
        )
    widest = dataclasses.replace(token, fragment=MAX_FRAGMENTS).to_document()
    overhead = event_size({"_id": widest, "splitEvent": {"fragment": MAX_FRAGMENTS, "of": MAX_FRAGMENTS}})
    overhead += _FRAGMENT_MARGIN
    fields = sorted(
        ((key, value, event_size({key: value}) - 1) for key, value in document.items() if key != "_id"),
        key=lambda field: field[2],
    )
    groups: list[list[tuple[str, Any]]] = []
    group: list[tuple[str, Any]] = []
    used = overhead
    for key, value, field_size in fields:
        if overhead + field_size > cap:
            raise EventTooLargeError(
                f"op_id {token.op_id}: the change event is {size} bytes and its field {key!r} alone is "
                f"{field_size} bytes, over max_event_bytes={cap} even in a fragment of its own; "
                "$project away or trim that field",
                op_id=token.op_id,
                size=size,
            )
        if group and used + field_size > cap:
            groups.append(group)
            group, used = [], overhead
        group.append((key, value))
        used += field_size
    if group:
        groups.append(group)
    if len(groups) > MAX_FRAGMENTS:
        raise EventTooLargeError(
            f"op_id {token.op_id}: the change event is {size} bytes, more than {MAX_FRAGMENTS} fragments "
            f"of max_event_bytes={cap}",
            op_id=token.op_id,
            size=size,
        )
    count = len(groups)
    return [
        {
            "_id": dataclasses.replace(token, fragment=number).to_document(),
            "splitEvent": {"fragment": number, "of": count},
            **dict(fields_of_fragment),
        }
        for number, fields_of_fragment in enumerate(groups, 1)
    ]
