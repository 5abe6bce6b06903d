"""MongoDB's update semantics for a change event's ``updateDescription``, applied to a document.

An update entry records what changed, as MongoDB's change events describe
it: ``updatedFields`` (dotted paths to their new values), ``removedFields``
(dotted paths that went) and ``truncatedArrays`` (arrays cut to a new size).
``apply_update`` gives the document after such an update from the document
before it, by MongoDB's rules:

- a path's numeric part indexes an array and names a field of a document
  (``"a.0"`` is the first element of ``a: [...]``, the field ``"0"`` of
  ``a: {...}``);
- setting a path creates the documents missing on its way, and setting an
  array element past the end pads the array with nulls (``$set``);
- removing an array element sets it to null, removing what is not there
  does nothing (``$unset``);
- arrays are truncated first, then fields removed, then fields set (the order
  in which MongoDB applies a diff; the three never touch the same path).

A path that cannot be applied (a field of a string, an array truncated that
is not an array) means the document is not the one the update was made to:
``UpdateConflict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["UpdateConflict", "apply_update"]


class UpdateConflict(ValueError):
    """An update's description does not fit the document it is applied to; the message names the path."""


def apply_update(document: Mapping[str, Any], update_description: Mapping[str, Any]) -> dict[str, Any]:
    """The document after an update described as MongoDB's ``updateDescription``; ``document`` is not changed.

    Only the containers on the updated paths are copied; the rest is shared
    with ``document`` and the description's values.

    Examples:
        >>> before = {"_id": 1, "name": "Ada", "tags": ["a", "b", "c"], "address": {"city": "London"}}
        >>> apply_update(before, {
        ...     "updatedFields": {"address.zip": "N1", "tags.1": "B", "visits": 1},
        ...     "removedFields": ["name"],
        ...     "truncatedArrays": [{"field": "tags", "newSize": 2}],
        ... })
        {'_id': 1, 'tags': ['a', 'B'], 'address': {'city': 'London', 'zip': 'N1'}, 'visits': 1}
        >>> apply_update({"_id": 1, "a": [1]}, {"updatedFields": {"a.3": 4}})
        {'_id': 1, 'a': [1, None, None, 4]}
        >>> apply_update({"_id": 1, "a": "text"}, {"updatedFields": {"a.b": 1}})
        Traceback (most recent call last):
        ...
        rxcs.oplog.images.updates.UpdateConflict: updatedFields 'a.b': 'a' holds a str, not a document or an array
    """
    copy = _Copy(document)
    for truncated in update_description.get("truncatedArrays") or ():
        path, size = truncated["field"], truncated["newSize"]
        parent, last = copy.parent(path, "truncatedArrays", create=False)
        array = _MISSING if parent is None else _child(parent, last)
        if array is _MISSING or array is None:
            continue  # nothing there to truncate
        if not isinstance(array, list):
            raise UpdateConflict(f"truncatedArrays {path!r}: holds a {type(array).__name__}, not an array")
        del copy.own_child(parent, last)[size:]  # type: ignore[arg-type]
    for path in update_description.get("removedFields") or ():
        parent, last = copy.parent(path, "removedFields", create=False)
        if isinstance(parent, dict):
            parent.pop(last, None)
        elif parent is not None:
            index = _index(last)
            if index is not None and index < len(parent):
                parent[index] = None  # $unset of an array element leaves a null in its place
    for path, value in (update_description.get("updatedFields") or {}).items():
        parent, last = copy.parent(path, "updatedFields", create=True)
        assert parent is not None
        copy.put(parent, last, value)
    return copy.root


_MISSING: Any = object()


def _index(part: str) -> int | None:
    return int(part) if part.isdigit() else None


def _child(container: dict[str, Any] | list[Any], part: str) -> Any:
    """The value at ``part`` of a document or an array; ``_MISSING`` when there is none."""
    if isinstance(container, dict):
        return container.get(part, _MISSING)
    index = _index(part)
    return container[index] if index is not None and index < len(container) else _MISSING


class _Copy:
    """A document being updated: containers on the paths walked are copied once, the rest is shared."""

    __slots__ = ("owned", "root")

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.root = dict(document)
        self.owned = {id(self.root)}

    def own_child(self, container: dict[str, Any] | list[Any], part: str) -> Any:
        """The child at ``part``, replaced by a copy of itself unless it is one already."""
        child = _child(container, part)
        if isinstance(child, (dict, list)) and id(child) not in self.owned:
            child = dict(child) if isinstance(child, dict) else list(child)
            self.put(container, part, child)
        return child

    def put(self, container: dict[str, Any] | list[Any], part: str, value: Any) -> None:
        """Set ``part`` of a copied container; past an array's end, the array is padded with nulls."""
        if isinstance(container, dict):
            container[part] = value
        else:
            index = _index(part)
            assert index is not None  # parent() checked it
            if index >= len(container):
                container.extend([None] * (index + 1 - len(container)))
            container[index] = value
        if isinstance(value, (dict, list)):
            self.owned.add(id(value))

    def parent(self, path: str, what: str, *, create: bool) -> tuple[dict[str, Any] | list[Any] | None, str]:
        """The (copied) container that holds the last part of ``path``, and that part.

        With ``create`` (``$set``), documents missing on the way are made, and
        a path that cannot be made (through a value that is not a container,
        or a field name of an array) is an ``UpdateConflict``. Without it
        (``$unset``, truncation), a path that does not lead anywhere gives None.
        """
        parts = path.split(".")
        container: dict[str, Any] | list[Any] = self.root
        for position, part in enumerate(parts):
            if isinstance(container, list) and _index(part) is None:
                if not create:
                    return None, parts[-1]
                where = ".".join(parts[:position]) or path
                raise UpdateConflict(f"{what} {path!r}: {part!r} is not an index of the array at {where!r}")
            if position == len(parts) - 1:
                return container, part
            child = self.own_child(container, part)
            if child is _MISSING:
                if not create:
                    return None, parts[-1]
                child = {}
                self.put(container, part, child)
            elif not isinstance(child, (dict, list)):
                if not create:
                    return None, parts[-1]
                where = ".".join(parts[: position + 1])
                raise UpdateConflict(
                    f"{what} {path!r}: {where!r} holds {'null' if child is None else 'a ' + type(child).__name__}, "
                    "not a document or an array"
                )
            container = child
        raise AssertionError("unreachable: a path has at least one part")
