"""Aggregation expressions, compiled once into closures over a document.

An expression is a literal, a field path (``"$a.b"``), a system variable
(``"$$ROOT"``, ``"$$CURRENT"``), a document of expressions, a list of them,
or an operator document ``{"$op": args}``. ``OPERATORS`` maps each operator
to the function that compiles it, so adding an operator is adding one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.query._values import MISSING, compare_values, values_equal

__all__ = [
    "OPERATORS",
    "Evaluator",
    "compile_expression",
    "field_path_value",
    "is_true",
]

Evaluator = Callable[[Mapping[str, Any]], Any]
Compiler = Callable[[Any, str], Evaluator]


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
    """Compile an aggregation expression; a bad one raises ``QueryError`` naming ``path``."""
    if isinstance(expression, str) and expression.startswith("$"):
        return _compile_path(expression, path)
    if isinstance(expression, Mapping):
        if len(expression) == 1:
            ((key, argument),) = expression.items()
            if isinstance(key, str) and key.startswith("$"):
                compiler = OPERATORS.get(key)
                if key in ("$function", "$accumulator"):
                    raise QueryError(f"{_join(path, key)}: JavaScript is not supported")
                if compiler is None:
                    raise QueryError(f"{_join(path, key)}: unknown expression operator")
                return compiler(argument, _join(path, key))
        for key in expression:
            if not isinstance(key, str):
                raise QueryError(f"{path or '(expression)'}: field name {key!r} is not a string")
            if key.startswith("$"):
                raise QueryError(f"{_join(path, key)}: an operator must be the only field of its document")
        fields = {key: compile_expression(value, _join(path, key)) for key, value in expression.items()}

        def document(doc: Mapping[str, Any]) -> Any:
            result = {}
            for key, evaluate in fields.items():
                value = evaluate(doc)
                if value is not MISSING:
                    result[key] = value
            return result

        return document
    if isinstance(expression, list):
        items = [compile_expression(item, _join(path, str(i))) for i, item in enumerate(expression)]
        return lambda doc: [_null_if_missing(evaluate(doc)) for evaluate in items]
    return lambda _doc: expression


def _null_if_missing(value: Any) -> Any:
    return None if value is MISSING else value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compile_path(expression: str, path: str) -> Evaluator:
    if expression.startswith("$$"):
        name, _, rest = expression[2:].partition(".")
        if name not in ("ROOT", "CURRENT"):
            raise QueryError(f"{path or expression}: unknown variable $${name}")
        parts = rest.split(".") if rest else []
    else:
        parts = expression[1:].split(".")
    if any(not part for part in parts) or (not expression.startswith("$$") and not parts):
        raise QueryError(f"{path or expression}: bad field path {expression!r}")
    if not parts:
        return lambda doc: doc
    if len(parts) == 1:
        (only,) = parts

        def single(doc: Mapping[str, Any]) -> Any:
            return doc.get(only, MISSING)

        return single
    return lambda doc: field_path_value(doc, parts)


def _arguments(argument: Any, path: str, count: int | None = None) -> list[Evaluator]:
    items = argument if isinstance(argument, list) else [argument]
    if count is not None and len(items) != count:
        raise QueryError(f"{path}: expected {count} arguments, got {len(items)}")
    return [compile_expression(item, f"{path}.{i}") for i, item in enumerate(items)]


def _comparison(test: Callable[[int], bool]) -> Compiler:
    def compile_comparison(argument: Any, path: str) -> Evaluator:
        left, right = _arguments(argument, path, 2)
        return lambda doc: test(compare_values(left(doc), right(doc)))

    return compile_comparison


def _compile_eq(argument: Any, path: str) -> Evaluator:
    left, right = _arguments(argument, path, 2)
    return lambda doc: values_equal(_null_if_missing(left(doc)), _null_if_missing(right(doc)))


def _compile_ne(argument: Any, path: str) -> Evaluator:
    left, right = _arguments(argument, path, 2)
    return lambda doc: not values_equal(_null_if_missing(left(doc)), _null_if_missing(right(doc)))


def _compile_cmp(argument: Any, path: str) -> Evaluator:
    left, right = _arguments(argument, path, 2)
    return lambda doc: compare_values(left(doc), right(doc))


def _compile_and(argument: Any, path: str) -> Evaluator:
    parts = _arguments(argument, path)
    return lambda doc: all(is_true(part(doc)) for part in parts)


def _compile_or(argument: Any, path: str) -> Evaluator:
    parts = _arguments(argument, path)
    return lambda doc: any(is_true(part(doc)) for part in parts)


def _compile_not(argument: Any, path: str) -> Evaluator:
    (part,) = _arguments(argument, path, 1)
    return lambda doc: not is_true(part(doc))


def _compile_in(argument: Any, path: str) -> Evaluator:
    needle, haystack = _arguments(argument, path, 2)

    def contains(doc: Mapping[str, Any]) -> bool:
        values = haystack(doc)
        if not isinstance(values, list):
            raise QueryError(f"{path}: the second argument must be an array, got {values!r}")
        value = _null_if_missing(needle(doc))
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
