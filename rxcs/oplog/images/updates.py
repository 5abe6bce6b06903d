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
  in which MongoDB applies a diff; the three never touch the same path);
- a path listed in ``disambiguatedPaths`` is read from its components
  instead (MongoDB 6.1's field for dotted and numeric-looking field names): a
  string names a document's field only, an integer indexes an array only.

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
    copy = _Copy(document, update_description.get("disambiguatedPaths"))
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
            parent.pop(str(last), None)
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

Part = str | int
"""A path component: a dotted path's part (numeric ones index arrays and name fields), or a component of
``disambiguatedPaths``: a ``_Field`` (a field name only) or an int (an array index only)."""


class _Field(str):
    """A path component that names a document's field, never an array's element (from ``disambiguatedPaths``)."""

    __slots__ = ()


def _index(part: Part) -> int | None:
    if isinstance(part, int):
        return part
    return int(part) if part.isdigit() and type(part) is not _Field else None


def _fits(container: dict[str, Any] | list[Any], part: Part) -> bool:
    """Whether ``part`` can address something in ``container``: a field of a document, an index of an array."""
    if isinstance(container, dict):
        return not isinstance(part, int)
    return _index(part) is not None


def _child(container: dict[str, Any] | list[Any], part: Part) -> Any:
    """The value at ``part`` of a document or an array; ``_MISSING`` when there is none."""
    if isinstance(container, dict):
        return _MISSING if isinstance(part, int) else container.get(part, _MISSING)
    index = _index(part)
    return container[index] if index is not None and index < len(container) else _MISSING


def _components(disambiguated: Any) -> dict[str, list[Part]]:
    """``disambiguatedPaths`` as path components; a malformed one is an ``UpdateConflict`` naming it."""
    if not disambiguated:
        return {}
    if not isinstance(disambiguated, Mapping):
        raise UpdateConflict(f"disambiguatedPaths: expected a document, got {disambiguated!r}")
    found: dict[str, list[Part]] = {}
    for path, components in disambiguated.items():
        if not isinstance(components, list) or not components or not all(
            (isinstance(c, int) and not isinstance(c, bool) and c >= 0) or isinstance(c, str) for c in components
        ):
            raise UpdateConflict(f"disambiguatedPaths {path!r}: expected field names and indexes, got {components!r}")
        found[path] = [c if isinstance(c, int) else _Field(c) for c in components]
    return found


class _Copy:
    """A document being updated: containers on the paths walked are copied once, the rest is shared."""

    __slots__ = ("disambiguated", "owned", "root")

    def __init__(self, document: Mapping[str, Any], disambiguated: Any = None) -> None:
        self.root = dict(document)
        self.owned = {id(self.root)}
        self.disambiguated = _components(disambiguated)

    def own_child(self, container: dict[str, Any] | list[Any], part: Part) -> Any:
        """The child at ``part``, replaced by a copy of itself unless it is one already."""
        child = _child(container, part)
        if isinstance(child, (dict, list)) and id(child) not in self.owned:
            child = dict(child) if isinstance(child, dict) else list(child)
            self.put(container, part, child)
        return child

    def put(self, container: dict[str, Any] | list[Any], part: Part, value: Any) -> None:
        """Set ``part`` of a copied container; past an array's end, the array is padded with nulls."""
        if isinstance(container, dict):
            assert isinstance(part, str)  # parent() checked it
            container[str(part)] = value
        else:
            index = _index(part)
            assert index is not None  # parent() checked it
            if index >= len(container):
                container.extend([None] * (index + 1 - len(container)))
            container[index] = value
        if isinstance(value, (dict, list)):
            self.owned.add(id(value))

    def parent(self, path: str, what: str, *, create: bool) -> tuple[dict[str, Any] | list[Any] | None, Part]:
        """The (copied) container that holds the last part of ``path``, and that part.

        With ``create`` (``$set``), documents missing on the way are made, and
        a path that cannot be made (through a value that is not a container,
        or a field name of an array) is an ``UpdateConflict``. Without it
        (``$unset``, truncation), a path that does not lead anywhere gives None.
        """
        if "." not in path and path not in self.disambiguated:
            return self.root, path  # a top-level field, the most common update: no walk
        parts: list[Part] = self.disambiguated.get(path) or path.split(".")  # type: ignore[assignment]
        container: dict[str, Any] | list[Any] = self.root
        for position, part in enumerate(parts):
            if not _fits(container, part):
                if not create:
                    return None, parts[-1]
                where = ".".join(map(str, parts[:position])) or path
                kind = "an index of the array" if isinstance(container, list) else "a field of the document"
                raise UpdateConflict(f"{what} {path!r}: {part!r} is not {kind} at {where!r}")
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
                where = ".".join(map(str, parts[: position + 1]))
                raise UpdateConflict(
                    f"{what} {path!r}: {where!r} holds {'null' if child is None else 'a ' + type(child).__name__}, "
                    "not a document or an array"
                )
            container = child
        raise AssertionError("unreachable: a path has at least one part")
