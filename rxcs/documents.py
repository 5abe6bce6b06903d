"""The change-event document, typed: what ``ChangeEvent.to_document()`` returns and pipelines read.

``ChangeStreamDocument`` and its parts are ``TypedDict``s, so code written
against the MongoDB shape is checked by mypy::

    def on_change(change: rxcs.ChangeStreamDocument) -> None:
        if change["operationType"] == "update":
            fields = change["updateDescription"]["updatedFields"]

Keys a document has only for some events (``ns``, ``documentKey``,
``updateDescription``, ...) are ``NotRequired``: which are present follows
MongoDB (docs: Change events). ``json_schema()`` turns the same definitions
into the JSON Schema of the document as ``rxcs watch`` and ``rxcs serve``
write it, in relaxed Extended JSON (``rxcs.extjson``): the schema published
in the docs is generated from here, and tested against real events.
"""

# No ``from __future__ import annotations`` here: TypedDict reads NotRequired from evaluated annotations
# (Python 3.11 takes a string annotation for a required key), and json_schema() relies on it.
import types
import uuid
from datetime import datetime
from typing import (
    Any,
    Literal,
    NotRequired,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from rxcs.cluster_time import ClusterTime

__all__ = [
    "ChangeStreamDocument",
    "NamespaceDocument",
    "NsType",
    "OperationTypeName",
    "REQUIRED_BY_OPERATION",
    "ResumeTokenDocument",
    "TruncatedArrayDocument",
    "UpdateDescriptionDocument",
    "json_schema",
]


NsType = Literal["collection", "view", "timeseries"]
"""What a ``create`` made (``nsType``): a collection, a view, or a time-series collection."""

OperationTypeName = Literal[
    "insert", "update", "replace", "delete", "drop", "rename", "dropDatabase", "invalidate",
    "create", "createIndexes", "dropIndexes", "modify",
]
"""The values of ``operationType``."""


class ResumeTokenDocument(TypedDict):
    """An event's ``_id``: its resume token, as ``{"_data": "<hex>"}``."""

    _data: str


class NamespaceDocument(TypedDict):
    """``ns`` and ``to``: a database, and a collection except for database-wide events."""

    db: str
    coll: NotRequired[str]


class TruncatedArrayDocument(TypedDict):
    """An array an update shortened, and its new length."""

    field: str
    newSize: int


class UpdateDescriptionDocument(TypedDict):
    """What an update changed; ``disambiguatedPaths`` only with ``show_expanded_events``."""

    updatedFields: dict[str, Any]
    removedFields: list[str]
    truncatedArrays: list[TruncatedArrayDocument]
    disambiguatedPaths: NotRequired[dict[str, list[str | int]]]


class ChangeStreamDocument(TypedDict):
    """One change event as MongoDB shapes it.

    ``collectionUUID`` is given with ``show_expanded_events`` (on every event
    but ``dropDatabase`` and ``invalidate``, once its collection has an
    identity); ``nsType`` on ``create`` events.
    """

    _id: ResumeTokenDocument
    operationType: OperationTypeName
    clusterTime: ClusterTime
    collectionUUID: NotRequired[uuid.UUID]
    wallTime: datetime
    ns: NotRequired[NamespaceDocument]
    documentKey: NotRequired[dict[str, Any]]
    updateDescription: NotRequired[UpdateDescriptionDocument]
    fullDocument: NotRequired[dict[str, Any] | None]
    fullDocumentBeforeChange: NotRequired[dict[str, Any] | None]
    to: NotRequired[NamespaceDocument]
    operationDescription: NotRequired[dict[str, Any]]
    txnNumber: NotRequired[int]
    nsType: NotRequired[NsType]


# -- JSON Schema ------------------------------------------------------------------------------

REQUIRED_BY_OPERATION: dict[str, tuple[str, ...]] = {
    "insert": ("ns", "documentKey", "fullDocument"),
    "update": ("ns", "documentKey", "updateDescription"),
    "replace": ("ns", "documentKey", "fullDocument"),
    "delete": ("ns", "documentKey"),
    "drop": ("ns",),
    "rename": ("ns", "to"),
    "dropDatabase": ("ns",),
    "invalidate": (),
    "create": ("ns", "operationDescription", "nsType"),
    "createIndexes": ("ns", "operationDescription"),
    "dropIndexes": ("ns", "operationDescription"),
    "modify": ("ns",),
}
"""The keys a document of each ``operationType`` always has, beside those every document has."""
_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Values without a JSON type, as relaxed Extended JSON writes them (rxcs.extjson).
_EXTENDED: dict[object, dict[str, Any]] = {
    datetime: {
        "type": "object", "properties": {"$date": {"type": "string", "format": "date-time"}},
        "required": ["$date"], "additionalProperties": False,
    },
    ClusterTime: {
        "type": "object",
        "properties": {"$timestamp": {
            "type": "object",
            "properties": {"t": {"type": "integer", "minimum": 0}, "i": {"type": "integer", "minimum": 0}},
            "required": ["t", "i"], "additionalProperties": False,
        }},
        "required": ["$timestamp"], "additionalProperties": False,
    },
    uuid.UUID: {
        "type": "object",
        "properties": {"$binary": {
            "type": "object",
            "properties": {"base64": {"type": "string"}, "subType": {"const": "04"}},
            "required": ["base64", "subType"], "additionalProperties": False,
        }},
        "required": ["$binary"], "additionalProperties": False,
    },
}
_PLAIN: dict[object, dict[str, Any]] = {
    str: {"type": "string"}, int: {"type": "integer"}, bool: {"type": "boolean"}, float: {"type": "number"},
    type(None): {"type": "null"}, Any: {},
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a change-event document in relaxed Extended JSON.

    Generated from ``ChangeStreamDocument``: each ``TypedDict`` becomes a
    definition (required keys, no others), values without a JSON type
    their Extended JSON form (``$date``, ``$timestamp``, ``$binary``), and
    ``REQUIRED_BY_OPERATION`` the keys each kind of event must have.
    Documents (``fullDocument``, ``documentKey``, ...) are any JSON object.

    Examples:
        >>> schema = json_schema()
        >>> schema["$ref"], sorted(schema["$defs"])[:2]
        ('#/$defs/ChangeStreamDocument', ['ChangeStreamDocument', 'NamespaceDocument'])
    """
    definitions: dict[str, Any] = {}
    _schema_of(ChangeStreamDocument, definitions)
    by_operation: list[dict[str, Any]] = [
        {"if": {"properties": {"operationType": {"const": operation}}}, "then": {"required": list(keys)}}
        for operation, keys in REQUIRED_BY_OPERATION.items() if keys
    ]
    by_operation.append(
        {"if": {"properties": {"operationType": {"const": "invalidate"}}}, "then": {"not": {"required": ["ns"]}}}
    )
    return {
        "$schema": _DIALECT,
        "title": "rxcs change event",
        "description": "A change event as `rxcs watch` and `rxcs serve` write it (relaxed Extended JSON).",
        "$ref": "#/$defs/ChangeStreamDocument",
        "allOf": by_operation,
        "$defs": dict(sorted(definitions.items())),
    }


def _schema_of(kind: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if kind in _PLAIN:
        return dict(_PLAIN[kind])
    if kind in _EXTENDED:
        return dict(_EXTENDED[kind])
    if is_typeddict(kind):
        name = kind.__name__
        if name not in definitions:
            definitions[name] = {}  # placed first: a definition that refers to itself ends here
            hints = get_type_hints(kind)
            definitions[name] = {
                "type": "object",
                "description": (kind.__doc__ or "").strip().split("\n")[0],
                "properties": {key: _schema_of(hint, definitions) for key, hint in hints.items()},
                "required": [key for key in hints if key in kind.__required_keys__],
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{name}"}
    origin, arguments = get_origin(kind), get_args(kind)
    if origin is Literal:
        return {"enum": list(arguments)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(argument, definitions) for argument in arguments]}
    if origin is list:
        return {"type": "array", "items": _schema_of(arguments[0], definitions)}
    if origin is dict:
        values = _schema_of(arguments[1], definitions)
        return {"type": "object"} if not values else {"type": "object", "additionalProperties": values}
    raise TypeError(f"no JSON Schema for {kind!r}")  # pragma: no cover - a definition above uses a new type
