"""A straightforward model of MongoDB documents under updates, for the document image tests.

``random_update`` carries out a random update directly on a copy of a
document (sets at any depth, array elements past the end, unsets,
truncations, as MongoDB's ``$set``/``$unset``/``$push``... leave them) and
returns the ``updateDescription`` a change stream would show for it, with the
document it made: the store, given only the description, must arrive at the
same document. The model never interprets a description; it only ever edits
a document it knows.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

__all__ = ["document_values", "random_update", "scalars"]

FIELDS = ["a", "b", "c", "d", "e"]


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.booleans(), st.none())


def values(*, dotted: bool = False) -> st.SearchStrategy[Any]:
    """Values of any shape; with ``dotted``, embedded documents may have a field named "s.t"."""
    names = ["p", "q", "r", "1", *(["s.t"] if dotted else [])]
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(names), inner, max_size=3)
        ),
        max_leaves=8,
    )


def document_values(key: Any = 1, *, dotted: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Documents with ``_id`` and a few fields of any shape (``dotted``: see ``values``)."""
    return st.dictionaries(st.sampled_from(FIELDS), values(dotted=dotted), max_size=4).map(
        lambda fields: {"_id": key, **fields}
    )


def random_update(data: st.DataObject, document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random update of ``document``: its ``updateDescription`` and the document after it (a new one).

    Each of one to three top-level fields gets one change, so no two paths of
    the description overlap (as in MongoDB's). A path through a field whose
    name has a dot is listed in ``disambiguatedPaths``, as MongoDB lists it;
    one through a numeric-looking field name sometimes is (producers before
    MongoDB 6.1 never list them).
    """
    after = copy.deepcopy(document)
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    disambiguated: dict[str, list[str | int]] = {}
    fields = data.draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    for field in fields:
        path = [field]
        components: list[str | int] = [field]
        container: Any = after
        # Walk down into existing containers for a while, so changes land at any depth.
        while isinstance(_at(container, path[-1]), (dict, list)) and data.draw(st.booleans()):
            container = _at(container, path[-1])
            if isinstance(container, dict):
                part = data.draw(st.sampled_from(sorted({*container, "p", "q"})))
                components.append(part)
            else:
                index = data.draw(st.integers(0, len(container) + 2))
                part = str(index)
                components.append(index)
            path.append(part)
        name = ".".join(path)
        named = [c for c in components if isinstance(c, str)]
        if any("." in c for c in named) or (any(c.isdigit() for c in named) and data.draw(st.booleans())):
            disambiguated[name] = components
        target = _at(container, path[-1])
        choices = ["set"]
        if target is not _MISSING:
            choices.append("unset")
        if isinstance(target, list) and target:
            choices.append("truncate")
        action = data.draw(st.sampled_from(choices))
        if action == "set":
            value = data.draw(values())
            _set(container, path[-1], copy.deepcopy(value))
            updated[name] = value
        elif action == "unset":
            if isinstance(container, list):
                container[int(path[-1])] = None  # $unset of an element leaves a null
            else:
                del container[path[-1]]
            removed.append(name)
        else:
            size = data.draw(st.integers(0, len(target) - 1))
            del target[size:]
            truncated.append({"field": name, "newSize": size})
            if size and data.draw(st.booleans()):  # and an element within the new size changed too
                index = data.draw(st.integers(0, size - 1))
                value = data.draw(scalars())
                target[index] = value
                updated[f"{name}.{index}"] = value
                if name in disambiguated:
                    disambiguated[f"{name}.{index}"] = [*components, index]
    description: dict[str, Any] = {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}
    if disambiguated:
        description["disambiguatedPaths"] = disambiguated
    return description, after


_MISSING: Any = object()


def _at(container: Any, part: str) -> Any:
    if isinstance(container, dict):
        return container.get(part, _MISSING)
    index = int(part)
    return container[index] if index < len(container) else _MISSING


def _set(container: Any, part: str, value: Any) -> None:
    if isinstance(container, dict):
        container[part] = value
        return
    index = int(part)
    while len(container) <= index:
        container.append(None)
    container[index] = value
