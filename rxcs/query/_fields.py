"""Which top-level fields of a document a filter reads, found without running it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["top_level_fields"]


def top_level_fields(spec: Any) -> frozenset[str] | None:
    """The top-level field names a valid filter reads, or None when that cannot be told.

    ``{"fullDocument.status": "paid", "$or": [{"ns.coll": "a"}]}`` reads
    ``fullDocument`` and ``ns``. A filter with ``$expr`` may read anything
    (``$$ROOT``), so it gives None. Call it on a filter that compiles.

    Examples:
        >>> sorted(top_level_fields({"fullDocument.status": "paid", "$or": [{"ns.coll": "a"}]}))
        ['fullDocument', 'ns']
        >>> top_level_fields({"$expr": {"$eq": ["$a", 1]}}) is None
        True
    """
    if not isinstance(spec, Mapping):
        return None
    fields: set[str] = set()
    for key, value in spec.items():
        if not isinstance(key, str):
            return None
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                return None
            for part in value:
                inner = top_level_fields(part)
                if inner is None:
                    return None
                fields |= inner
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            return None
        else:
            fields.add(key.split(".", 1)[0])
    return frozenset(fields)
