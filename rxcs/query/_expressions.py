"""Aggregation expressions, compiled once into closures over a document.

An expression is a literal, a field path (``"$a.b"``), a system variable
(``"$$ROOT"``, ``"$$CURRENT"``, ``"$$REMOVE"``, and ``$redact``'s
``"$$DESCEND"``, ``"$$PRUNE"``, ``"$$KEEP"``), a document of expressions, a
list of them, or an operator document ``{"$op": args}``. ``OPERATORS`` maps
each operator to the function that compiles it, so adding an operator is
adding one entry (the ``_operators_*`` modules register theirs).

An evaluator takes the current document. Where the current document is not
the root (``$redact`` descending into sub-documents), it is given a
``Frame`` that carries both, so ``$$ROOT`` still names the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, final

from rxcs.errors import QueryError
from rxcs.query._limits import check_nesting
from rxcs.query._values import MISSING, bson_type_name, compare_values, values_equal

__all__ = [
    "DESCEND",
    "KEEP",
    "OPERATORS",
    "PRUNE",
    "REDACT_VARIABLES",
    "Compiler",
    "Evaluator",
    "Frame",
    "arguments",
    "compile_expression",
    "compile_operand",
    "field_path_value",
    "is_nullish",
    "is_true",
    "join",
    "null_if_missing",
    "type_name",
]

Evaluator = Callable[[Mapping[str, Any]], Any]
Compiler = Callable[[Any, str], Evaluator]


@final
class _RedactVariable:
    """The value of ``$$DESCEND``, ``$$PRUNE`` or ``$$KEEP``: what ``$redact`` does at a level."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"$${self.name}"


DESCEND: Final = _RedactVariable("DESCEND")
PRUNE: Final = _RedactVariable("PRUNE")
KEEP: Final = _RedactVariable("KEEP")
REDACT_VARIABLES: Final = {"DESCEND": DESCEND, "PRUNE": PRUNE, "KEEP": KEEP}


@final
class Frame(Mapping[str, Any]):
    """A current document that is not the root: reads go to ``current``, ``$$ROOT`` to ``root``."""

    __slots__ = ("current", "root")

    def __init__(self, current: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        self.current = current
        self.root = root

    def __getitem__(self, key: str) -> Any:
        return self.current[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.current.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)


def is_nullish(value: Any) -> bool:
    """Null or missing: what most operators answer with null."""
    return value is None or value is MISSING


def type_name(value: Any) -> str:
    """``$type``'s name for a value: the BSON alias, ``"missing"``, or the Python type's name."""
    name = bson_type_name(value)
    if name is not None:
        return name
    return "missing" if value is MISSING else type(value).__name__


def is_true(value: Any) -> bool:
    """Aggregation truthiness: false, null, missing and zero are false; all else is true."""
    if value is None or value is MISSING or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return True


def field_path_value(value: Any, parts: Sequence[str]) -> Any:
    """Resolve a field path as aggregation does: arrays of documents map to arrays of values."""
    for index, part in enumerate(parts):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            rest = parts[index:]
            values = [field_path_value(item, rest) for item in value if isinstance(item, (Mapping, list))]
            return [item for item in values if item is not MISSING]
        else:
            return MISSING
    return value


def compile_expression(expression: Any, path: str = "") -> Evaluator:
    """Compile an aggregation expression; a bad one raises ``QueryError`` naming ``path``.

    The result evaluates the expression on a document; ``MISSING`` means it
    gave nothing (a missing field, ``$$REMOVE``).

    Examples:
        >>> total = compile_expression({"$multiply": ["$qty", {"$ifNull": ["$price", 0]}]})
        >>> total({"qty": 3, "price": 2.5}), total({"qty": 3})
        (7.5, 0)
        >>> compile_expression({"$sum": "$qty"}, "total")
        Traceback (most recent call last):
        ...
        rxcs.errors.QueryError: total.$sum: unknown expression operator
    """
    check_nesting(expression, path)
    return compile_operand(expression, path)


def compile_operand(expression: Any, path: str) -> Evaluator:
    """Compile a part of an expression ``compile_expression`` has checked: what operator compilers call."""
    if isinstance(expression, str) and expression.startswith("$"):
        return _compile_path(expression, path)
    if isinstance(expression, Mapping):
        if len(expression) == 1:
            ((key, argument),) = expression.items()
            if isinstance(key, str) and key.startswith("$"):
                compiler = OPERATORS.get(key)
                if key in ("$function", "$accumulator"):
                    raise QueryError(f"{join(path, key)}: JavaScript is not supported")
                if compiler is None:
                    raise QueryError(f"{join(path, key)}: unknown expression operator")
                return compiler(argument, join(path, key))
        for key in expression:
            if not isinstance(key, str):
                raise QueryError(f"{path or '(expression)'}: field name {key!r} is not a string")
            if key.startswith("$"):
                raise QueryError(f"{join(path, key)}: an operator must be the only field of its document")
        fields = {key: compile_operand(value, join(path, key)) for key, value in expression.items()}

        def document(doc: Mapping[str, Any]) -> Any:
            result = {}
            for key, evaluate in fields.items():
                value = evaluate(doc)
                if value is not MISSING:
                    result[key] = value
            return result

        return document
    if isinstance(expression, list):
        items = [compile_operand(item, join(path, str(i))) for i, item in enumerate(expression)]
        return lambda doc: [null_if_missing(evaluate(doc)) for evaluate in items]
    return lambda _doc: expression


def null_if_missing(value: Any) -> Any:
    """Missing becomes null (inside arrays, and where MongoDB compares values)."""
    return None if value is MISSING else value


def join(path: str, key: str) -> str:
    """The path of ``key`` inside ``path``, for error messages."""
    return f"{path}.{key}" if path else key


def _root(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.root if type(doc) is Frame else doc


def _current(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.current if type(doc) is Frame else doc


def _compile_path(expression: str, path: str) -> Evaluator:
    if expression.startswith("$$"):
        name, _, rest = expression[2:].partition(".")
        if name in ("REMOVE", *REDACT_VARIABLES):
            if rest:
                raise QueryError(f"{path or expression}: $${name} has no fields ({expression!r})")
            value = MISSING if name == "REMOVE" else REDACT_VARIABLES[name]
            return lambda _doc: value
        if name not in ("ROOT", "CURRENT"):
            raise QueryError(f"{path or expression}: unknown variable $${name}")
        parts = rest.split(".") if rest else []
        if any(not part for part in parts):
            raise QueryError(f"{path or expression}: bad field path {expression!r}")
        start = _root if name == "ROOT" else _current
        if not parts:
            return start
        return lambda doc: field_path_value(start(doc), parts)
    parts = expression[1:].split(".")
    if any(not part for part in parts):
        raise QueryError(f"{path or expression}: bad field path {expression!r}")
    if len(parts) == 1:
        (only,) = parts

        def single(doc: Mapping[str, Any]) -> Any:
            return doc.get(only, MISSING)

        return single
    return lambda doc: field_path_value(doc, parts)


def arguments(argument: Any, path: str, count: int | None = None) -> list[Evaluator]:
    """Compile an operator's arguments: a list of expressions, or one expression alone."""
    items = argument if isinstance(argument, list) else [argument]
    if count is not None and len(items) != count:
        raise QueryError(f"{path}: expected {count} argument{'s' if count != 1 else ''}, got {len(items)}")
    return [compile_operand(item, f"{path}.{i}") for i, item in enumerate(items)]


def _comparison(test: Callable[[int], bool]) -> Compiler:
    def compile_comparison(argument: Any, path: str) -> Evaluator:
        left, right = arguments(argument, path, 2)
        return lambda doc: test(compare_values(left(doc), right(doc)))

    return compile_comparison


def _compile_eq(argument: Any, path: str) -> Evaluator:
    left, right = arguments(argument, path, 2)
    return lambda doc: values_equal(null_if_missing(left(doc)), null_if_missing(right(doc)))


def _compile_ne(argument: Any, path: str) -> Evaluator:
    left, right = arguments(argument, path, 2)
    return lambda doc: not values_equal(null_if_missing(left(doc)), null_if_missing(right(doc)))


def _compile_cmp(argument: Any, path: str) -> Evaluator:
    left, right = arguments(argument, path, 2)
    return lambda doc: compare_values(left(doc), right(doc))


def _compile_and(argument: Any, path: str) -> Evaluator:
    parts = arguments(argument, path)
    return lambda doc: all(is_true(part(doc)) for part in parts)


def _compile_or(argument: Any, path: str) -> Evaluator:
    parts = arguments(argument, path)
    return lambda doc: any(is_true(part(doc)) for part in parts)


def _compile_not(argument: Any, path: str) -> Evaluator:
    (part,) = arguments(argument, path, 1)
    return lambda doc: not is_true(part(doc))


def _compile_in(argument: Any, path: str) -> Evaluator:
    needle, haystack = arguments(argument, path, 2)

    def contains(doc: Mapping[str, Any]) -> bool:
        values = haystack(doc)
        if not isinstance(values, list):
            raise QueryError(f"{path}: the second argument must be an array, got {values!r}")
        value = null_if_missing(needle(doc))
        return any(values_equal(value, item) for item in values)

    return contains


def _compile_literal(argument: Any, _path: str) -> Evaluator:
    return lambda _doc: argument


OPERATORS: Final[dict[str, Compiler]] = {
    "$eq": _compile_eq,
    "$ne": _compile_ne,
    "$gt": _comparison(lambda order: order > 0),
    "$gte": _comparison(lambda order: order >= 0),
    "$lt": _comparison(lambda order: order < 0),
    "$lte": _comparison(lambda order: order <= 0),
    "$cmp": _compile_cmp,
    "$and": _compile_and,
    "$or": _compile_or,
    "$not": _compile_not,
    "$in": _compile_in,
    "$literal": _compile_literal,
}
