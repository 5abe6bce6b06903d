"""What ``show_expanded_events`` adds to a change event, read from its oplog entry.

MongoDB's expanded events say more than the events every stream gets:

- ``collectionUUID``: the identity the collection had when the entry was
  recorded (``OplogEntry.collection_uuid``; ``rxcs.oplog.catalog``);
- ``operationDescription`` of a ``create`` (its options, with the default
  ``idIndex`` of a collection), a ``rename`` (``to``, and ``dropTarget``:
  the UUID of the collection it dropped), a ``dropIndexes`` (the dropped
  index's ``v``, ``key`` and ``name``), and ``nsType`` of a ``create``
  (``ChangeEvent.ns_type``);
- ``updateDescription.disambiguatedPaths``: for each path of the update
  whose dotted form is ambiguous (a field name holding a dot, or one that
  looks like an array index), its components, array indices as ints.

The conversion of entries into events (``rxcs.steps``) and the filters that
run on entries before they become events (``rxcs.prefilter``) both read
these fields here, so they agree.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rxcs.events import ns_type_of
from rxcs.oplog.entry import OplogEntry

__all__ = [
    "disambiguated_paths",
    "operation_description",
    "update_description_document",
]

_INDEX: Final = re.compile(r"0|[1-9][0-9]*")  # what MongoDB takes for an array index in a path: no leading zero


def operation_description(entry: OplogEntry, expanded: bool) -> Mapping[str, Any] | None:
    """The event's ``operationDescription``: only expanded events show one (a rename's too, as in MongoDB).

    Examples:
        >>> from rxcs.events import ClusterTime
        >>> from rxcs.oplog import Change
        >>> renamed = OplogEntry(1, ClusterTime(1, 1), 0, *Change.rename_collection("shop", "a", "shop", "b"))
        >>> operation_description(renamed, True), operation_description(renamed, False)
        ({'to': {'db': 'shop', 'coll': 'b'}}, None)
    """
    op = entry.op
    if not expanded:
        return None if op == "rename" else entry.operation_description
    if op == "create":
        return _create_description(entry.operation_description)
    if op == "rename" and entry.to is not None:
        described: dict[str, Any] = {"to": entry.to.to_document()}
        if isinstance(entry.dropped, uuid.UUID):
            described["dropTarget"] = entry.dropped
        return described
    if op == "dropIndexes":
        return _dropped_index(entry)
    return entry.operation_description


def _create_description(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A create's options, with the ``_id`` index a collection is made with when they name none (MongoDB's)."""
    described = dict(options or {})
    if ns_type_of(described) == "collection" and "idIndex" not in described and "clusteredIndex" not in described:
        described["idIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    return described


def _dropped_index(entry: OplogEntry) -> Mapping[str, Any] | None:
    """A dropIndexes' description: the index as it was created (``v``, ``key``, ``name``) when the catalog knew it."""
    described = entry.operation_description
    dropped = entry.dropped
    if not isinstance(dropped, Mapping) or "key" not in dropped or not described:
        return described
    indexes = described.get("indexes")
    if not isinstance(indexes, list) or not indexes or not isinstance(indexes[0], Mapping):
        return described
    return {"indexes": [{"v": dropped.get("v", 2), "key": dropped["key"], "name": indexes[0].get("name")}]}


# -- disambiguatedPaths ------------------------------------------------------------------------


def update_description_document(entry: OplogEntry, expanded: bool) -> dict[str, Any] | None:
    """The event's ``updateDescription`` document: with ``disambiguatedPaths`` when expanded, never without."""
    update = entry.update_description
    if update is None:
        return None
    document = {
        "updatedFields": update["updatedFields"],
        "removedFields": update["removedFields"],
        "truncatedArrays": update["truncatedArrays"],
    }
    if expanded:
        document["disambiguatedPaths"] = disambiguated_paths(entry)
    return document


def disambiguated_paths(entry: OplogEntry) -> dict[str, list[str | int]]:
    """The ambiguous paths of an update entry, each spelled out component by component.

    A path is ambiguous when one of its field names holds a dot or looks
    like an array index (``0``, ``12``; not ``01``). A path's components are
    those the producer gave (``Change.update(disambiguated_paths=...)``),
    else those of the recorded document it walks through: the post-image for
    updated fields and truncated arrays, the pre-image for removed fields,
    either when only one was recorded. Indices of arrays in the document
    are ints. Without either image a component is a field name.

    Examples:
        >>> from rxcs.events import ClusterTime
        >>> from rxcs.oplog import Change
        >>> change = Change.update("shop", "users", 1, updated_fields={"a.0.1": 2, "b.c": 3},
        ...                        full_document={"_id": 1, "a": [{"1": 2}], "b.c": 3})
        >>> disambiguated_paths(OplogEntry(1, ClusterTime(1, 1), 0, *change))
        {'a.0.1': ['a', 0, '1'], 'b.c': ['b.c']}
    """
    update = entry.update_description
    if not update:
        return {}
    given: Mapping[str, Sequence[str | int]] = update.get("disambiguatedPaths") or {}
    post, pre = entry.full_document, entry.full_document_before_change
    found: dict[str, list[str | int]] = {}
    groups: tuple[tuple[Any, tuple[Any, Any]], ...] = (
        (update["updatedFields"], (post, pre)),
        (update["removedFields"], (pre, post)),
        ((truncated["field"] for truncated in update["truncatedArrays"]), (post, pre)),
    )
    for paths, documents in groups:
        for path in paths:
            if path in found:
                continue
            spelled = given.get(path)
            if spelled is None:
                if "." not in path and not _INDEX.fullmatch(path):
                    continue  # one plain field name: nothing to spell out
                spelled = _spell(path, documents)
            if _ambiguous(spelled):
                found[path] = list(spelled)
    return found


def _ambiguous(components: Sequence[str | int]) -> bool:
    return any(type(part) is str and ("." in part or _INDEX.fullmatch(part)) for part in components)


def _spell(path: str, documents: tuple[Any, Any]) -> list[str | int]:
    parts = path.split(".")
    for document in documents:
        if isinstance(document, Mapping):
            return _walk(document, parts, 0)[0]
    return list(parts)


def _walk(value: Any, parts: list[str], at: int) -> tuple[list[str | int], bool]:
    """``parts[at:]`` as the document spells them from ``value`` on, and whether the document holds the whole path.

    Keys the document holds are field names, even with dots in them; indices
    of its arrays are ints. Where the document ends before the path does (a
    removed field, a value the image no longer holds), the rest are field
    names. Of the ways a mapping's keys can split the path, one the document
    holds to its end wins.
    """
    if at == len(parts):
        return [], True
    if isinstance(value, Mapping):
        partial: list[str | int] | None = None
        for end in range(at + 1, len(parts) + 1):  # "a.b.c" may be a field "a", or "a.b", or "a.b.c"
            key = ".".join(parts[at:end])
            if key in value:
                rest, whole = _walk(value[key], parts, end)
                if whole:
                    return [key, *rest], True
                if partial is None:
                    partial = [key, *rest]
        if partial is not None:
            return partial, False
    elif isinstance(value, (list, tuple)) and _INDEX.fullmatch(parts[at]):
        index = int(parts[at])
        if index < len(value):
            rest, whole = _walk(value[index], parts, at + 1)
            return [index, *rest], whole
        return [index, *parts[at + 1:]], False
    return list(parts[at:]), False
