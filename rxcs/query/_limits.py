"""How deep a filter, an expression or a pipeline may nest: MongoDB's limit, checked before compiling.

MongoDB refuses queries and expressions nested past 100 levels. Checking
the whole input first, without recursing past the limit, means no deeper
recursion (compiling, rewriting aliases, comparing against a literal) ever
meets input deep enough to reach Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.limits import MAX_NESTING

__all__ = ["MAX_NESTING", "check_nesting"]

_KEYS_SHOWN: Final = 6


def check_nesting(value: Any, path: str = "", error: type[ValueError] = QueryError) -> None:
    """Raise ``error`` naming the path where ``value`` nests more than ``MAX_NESTING`` levels deep.

    Each document or array is one level.

    Examples:
        >>> check_nesting({"$and": [{"a": 1}]})
        >>> deep = {"a": 1}
        >>> for _ in range(200):
        ...     deep = {"$or": [deep]}
        >>> check_nesting(deep, "filter")
        Traceback (most recent call last):
        ...
        rxcs.errors.QueryError: filter.$or.0.$or.0...: nested more than 100 levels deep (MongoDB's limit)
    """
    found = _too_deep(value, MAX_NESTING)
    if found is not None:
        # The first keys name the place; a hundred of them would drown the message.
        where = ".".join([*([path] if path else []), *found[:_KEYS_SHOWN]])
        raise error(f"{where or '(root)'}...: nested more than {MAX_NESTING} levels deep (MongoDB's limit)")


def _too_deep(value: Any, levels_left: int) -> list[str] | None:
    """The keys leading to a container past the limit, or None."""
    children: Iterable[tuple[Any, Any]]
    if isinstance(value, Mapping):
        children = value.items()
    elif isinstance(value, (list, tuple)):
        children = enumerate(value)
    else:
        return None
    if levels_left == 0:
        return []
    for key, child in children:
        found = _too_deep(child, levels_left - 1)
        if found is not None:
            found.insert(0, str(key))
            return found
    return None
