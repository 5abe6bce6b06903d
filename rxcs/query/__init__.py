"""MongoDB's query language, compiled once into predicates (``$match`` semantics).

``compile_filter(spec)`` validates a filter completely and returns a
``Callable[[Mapping], bool]``; errors are ``QueryError`` naming the path in
the filter. ``compile_expression`` compiles aggregation expressions (used by
``$expr`` and by pipeline stages); ``OPERATORS`` is their registry. The comparison helpers implement BSON's
type order so other modules compare values the way MongoDB does.
"""

from collections.abc import Mapping
from typing import Any, Final

from rxcs.query._compiler import Filter, compile_filter
from rxcs.query._expressions import (
    DESCEND,
    KEEP,
    OPERATORS,
    PRUNE,
    Evaluator,
    Frame,
    compile_expression,
    field_path_value,
    is_true,
    type_name,
)
from rxcs.query._fields import top_level_fields
from rxcs.query._limits import MAX_NESTING, check_nesting
from rxcs.query._operators_arithmetic import ARITHMETIC_OPERATORS
from rxcs.query._operators_conditional import CONDITIONAL_OPERATORS
from rxcs.query._operators_documents import DOCUMENT_OPERATORS
from rxcs.query._operators_strings import STRING_OPERATORS
from rxcs.query._regex import REGEX_TIME_LIMIT
from rxcs.query._values import MISSING, bson_type_name, compare_values, type_rank, values_equal

__all__ = [
    "DESCEND",
    "KEEP",
    "MAX_NESTING",
    "MISSING",
    "OPERATORS",
    "PRUNE",
    "REGEX_TIME_LIMIT",
    "Evaluator",
    "Filter",
    "Frame",
    "bson_type_name",
    "check_nesting",
    "compare_values",
    "compile_expression",
    "compile_filter",
    "field_path_value",
    "is_true",
    "rewrite_event_aliases",
    "top_level_fields",
    "type_name",
    "type_rank",
    "values_equal",
]

# The registry starts with the comparison and boolean operators; each family adds its own.
OPERATORS.update(ARITHMETIC_OPERATORS)
OPERATORS.update(CONDITIONAL_OPERATORS)
OPERATORS.update(DOCUMENT_OPERATORS)
OPERATORS.update(STRING_OPERATORS)

EVENT_ALIASES: Final = {"database": "ns.db", "db": "ns.db", "collection": "ns.coll", "coll": "ns.coll"}


def rewrite_event_aliases(spec: Any) -> Any:
    """Rename LauraDB's event filter fields to the MongoDB event's: ``db`` → ``ns.db``, ...

    ``database``/``db`` become ``ns.db`` and ``collection``/``coll`` become
    ``ns.coll``, at the top level and inside ``$and``/``$or``/``$nor``.
    Anything else is left as it is (and validated by ``compile_filter``);
    a filter nested past ``MAX_NESTING`` levels is refused first.

    Examples:
        >>> rewrite_event_aliases({"collection": "users", "$or": [{"db": "shop"}]})
        {'ns.coll': 'users', '$or': [{'ns.db': 'shop'}]}
    """
    check_nesting(spec)
    return _rewrite(spec)


def _rewrite(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    rewritten: dict[Any, Any] = {}
    for key, value in spec.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, list):
            rewritten[key] = [_rewrite(item) for item in value]
        else:
            rewritten[EVENT_ALIASES.get(key, key) if isinstance(key, str) else key] = value
    return rewritten
