"""The MongoDB query compiler: a filter document becomes one predicate, built from closures."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.query._expressions import compile_expression, is_true
from rxcs.query._limits import check_nesting
from rxcs.query._regex import BoundedPattern
from rxcs.query._values import (
    MISSING,
    bson_type_name,
    compare_values,
    is_number,
    type_rank,
    values_equal,
)

__all__ = ["Filter", "compile_filter"]

Filter = Callable[[Mapping[str, Any]], bool]
Test = Callable[[Any], bool]  # a test of one value (which may be MISSING)

_JAVASCRIPT: Final = frozenset({"$where", "$function", "$accumulator"})
_UNSUPPORTED_TOP: Final = frozenset({"$text", "$jsonSchema", "$near", "$nearSphere", "$geoWithin", "$geoIntersects"})
_TYPE_CODES: Final = {
    1: "double", 2: "string", 3: "object", 4: "array", 5: "binData", 6: "undefined", 7: "objectId",
    8: "bool", 9: "date", 10: "null", 11: "regex", 12: "dbPointer", 13: "javascript", 14: "symbol",
    15: "javascriptWithScope", 16: "int", 17: "timestamp", 18: "long", 19: "decimal", -1: "minKey", 127: "maxKey",
}
_TYPE_NAMES: Final = frozenset(_TYPE_CODES.values()) | {"number"}
_NUMBER_TYPES: Final = frozenset({"double", "int", "long", "decimal"})
_REGEX_OPTIONS: Final = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def compile_filter(spec: Any) -> Filter:
    """Compile a MongoDB query filter into a predicate over documents.

    The filter is validated completely here; a bad one raises ``QueryError``
    whose message starts with the path inside the filter
    (``"a.$in: expected a list, got int"``). Filters nested more than
    ``rxcs.query.MAX_NESTING`` levels deep are refused, as MongoDB refuses them.

    Examples:
        >>> matches = compile_filter({"fullDocument.age": {"$gte": 18}, "operationType": "insert"})
        >>> matches({"operationType": "insert", "fullDocument": {"age": 30}})
        True
        >>> matches({"operationType": "insert", "fullDocument": {"age": [12, 40]}})
        True
    """
    check_nesting(spec)
    return _compile_document(spec, "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "(filter)"


def _compile_document(spec: Any, path: str) -> Filter:
    if not isinstance(spec, Mapping):
        raise QueryError(f"{_where(path)}: a filter must be a document, got {type(spec).__name__}")
    clauses: list[Filter] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise QueryError(f"{_where(path)}: field name {key!r} is not a string")
        if key.startswith("$"):
            clauses.append(_compile_top_operator(key, value, _join(path, key)))
        else:
            if not key or any(not part for part in key.split(".")):
                raise QueryError(f"{_join(path, key)}: bad field path")
            clauses.append(_compile_field(key, value, _join(path, key)))
    if not clauses:
        return lambda _doc: True
    if len(clauses) == 1:
        return clauses[0]
    return lambda doc: all(clause(doc) for clause in clauses)


def _compile_top_operator(name: str, value: Any, path: str) -> Filter:
    if name in ("$and", "$or", "$nor"):
        if not isinstance(value, list) or not value:
            raise QueryError(f"{path}: expected a non-empty list of filters")
        parts = [_compile_document(item, _join(path, str(i))) for i, item in enumerate(value)]
        if name == "$and":
            return lambda doc: all(part(doc) for part in parts)
        if name == "$or":
            return lambda doc: any(part(doc) for part in parts)
        return lambda doc: not any(part(doc) for part in parts)
    if name == "$expr":
        expression = compile_expression(value, path)
        return lambda doc: is_true(expression(doc))
    if name == "$comment":
        return lambda _doc: True
    if name in _JAVASCRIPT:
        raise QueryError(f"{path}: JavaScript is not supported")
    if name in _UNSUPPORTED_TOP:
        raise QueryError(f"{path}: not supported in change stream filters")
    raise QueryError(f"{path}: unknown top-level operator")


# -- paths --------------------------------------------------------------------------


def _candidates(value: Any, parts: tuple[str, ...], index: int) -> Iterator[Any]:
    """The values a dotted path reaches, MongoDB style; MISSING where it reaches nothing."""
    if index == len(parts):
        yield value
        return
    part = parts[index]
    if isinstance(value, Mapping):
        yield from _candidates(value.get(part, MISSING), parts, index + 1) if part in value else (MISSING,)
        return
    if isinstance(value, list):
        # Inside an array the path continues into its documents (and, for a
        # numeric part, the element at that index); an array with neither
        # yields nothing, so {"a.b": null} does not match {"a": [1]}.
        if part.isdigit() and int(part) < len(value):
            yield from _candidates(value[int(part)], parts, index + 1)
        for item in value:
            if isinstance(item, Mapping):
                yield from _candidates(item, parts, index)
        return
    yield MISSING


def _field_matcher(field: str, test: Test, *, expand: bool = True) -> Filter:
    """A predicate: some value the path reaches (or, with ``expand``, an element of it) passes."""
    parts = tuple(field.split("."))

    def any_reached(doc: Mapping[str, Any]) -> bool:
        for value in _candidates(doc, parts, 0):
            if test(value):
                return True
            if expand and isinstance(value, list) and any(test(item) for item in value):
                return True
        return False

    if len(parts) == 1 and expand:
        (name,) = parts

        def top_level(doc: Mapping[str, Any]) -> bool:
            value = doc.get(name, MISSING)
            if test(value):
                return True
            return isinstance(value, list) and any(test(item) for item in value)

        return top_level

    def through_documents(doc: Mapping[str, Any]) -> bool:
        # The common case, a path through plain documents, without the generator;
        # anything else (an array on the way, a scalar) takes the general walk.
        value: Any = doc
        for part in parts:
            if type(value) is not dict:
                return any_reached(doc)
            value = value.get(part, MISSING)
            if value is MISSING:
                return test(MISSING)
        if test(value):
            return True
        return expand and isinstance(value, list) and any(test(item) for item in value)

    return through_documents


# -- field conditions ---------------------------------------------------------------


def _is_operator_document(value: Any) -> bool:
    if not isinstance(value, Mapping) or not value:
        return False
    first = next(iter(value))
    return isinstance(first, str) and first.startswith("$")


def _compile_field(field: str, value: Any, path: str) -> Filter:
    if _is_operator_document(value):
        return _compile_conditions(field, value, path)
    if isinstance(value, re.Pattern):
        return _field_matcher(field, _regex_test(value, path))
    return _equality_filter(field, value)


def _equality_filter(field: str, target: Any) -> Filter:
    if target is None:
        return _field_matcher(field, lambda value: value is None or value is MISSING)
    if type(target) in (str, int, float) and "." not in field and target == target:  # noqa: PLR0124 - not NaN
        scalar_type = type(target)
        numeric = scalar_type is not str

        def fast_equal(doc: Mapping[str, Any]) -> bool:
            value = doc.get(field, MISSING)
            kind = type(value)
            if kind is scalar_type or (numeric and kind in (int, float)):
                return bool(value == target)
            if kind is list:
                return any(values_equal(item, target) for item in value)
            return kind is not bool and kind is not str and values_equal(value, target)

        return fast_equal
    return _field_matcher(field, lambda value: value is not MISSING and values_equal(value, target))


def _compile_conditions(field: str, conditions: Mapping[str, Any], path: str) -> Filter:
    clauses: list[Filter] = []
    options = conditions.get("$options")
    if options is not None and "$regex" not in conditions:
        raise QueryError(f"{path}.$options: needs a $regex beside it")
    for name, argument in conditions.items():
        if not isinstance(name, str) or not name.startswith("$"):
            raise QueryError(f"{path}: {name!r} cannot be mixed with operators")
        where = _join(path, name)
        if name == "$options":
            continue
        if name == "$regex":
            clauses.append(_field_matcher(field, _regex_test(_compile_regex(argument, options, where), where)))
        elif name == "$not":
            clauses.append(_negate(_compile_not(field, argument, where)))
        elif name == "$ne":
            clauses.append(_negate(_equality_or_null(field, argument)))
        elif name == "$nin":
            clauses.append(_negate(_in_filter(field, argument, where)))
        elif name == "$in":
            clauses.append(_in_filter(field, argument, where))
        elif name == "$eq":
            clauses.append(_equality_or_null(field, argument))
        elif name in _COMPARISONS:
            clauses.append(_field_matcher(field, _comparison_test(name, argument)))
        elif name == "$exists":
            wanted = is_true(argument)
            reached = _field_matcher(field, lambda value: value is not MISSING, expand=False)
            clauses.append(reached if wanted else _negate(reached))
        elif name == "$type":
            clauses.append(_type_filter(field, argument, where))
        elif name == "$size":
            clauses.append(_size_filter(field, argument, where))
        elif name == "$mod":
            clauses.append(_field_matcher(field, _mod_test(argument, where)))
        elif name == "$all":
            clauses.append(_all_filter(field, argument, where))
        elif name == "$elemMatch":
            clauses.append(_elem_match_filter(field, argument, where))
        elif name in _JAVASCRIPT:
            raise QueryError(f"{where}: JavaScript is not supported")
        else:
            raise QueryError(f"{where}: unknown operator")
    if len(clauses) == 1:
        return clauses[0]
    return lambda doc: all(clause(doc) for clause in clauses)


def _negate(positive: Filter) -> Filter:
    return lambda doc: not positive(doc)


def _equality_or_null(field: str, target: Any) -> Filter:
    if isinstance(target, re.Pattern):
        return _field_matcher(field, lambda value: value is not MISSING and values_equal(value, target))
    return _equality_filter(field, target)


_COMPARISONS: Final[dict[str, Callable[[int], bool]]] = {
    "$gt": lambda order: order > 0,
    "$gte": lambda order: order >= 0,
    "$lt": lambda order: order < 0,
    "$lte": lambda order: order <= 0,
}


def _comparison_test(name: str, target: Any) -> Test:
    accept = _COMPARISONS[name]
    if target is None:
        # Null compares equal to null and missing only: $gte/$lte match them, $gt/$lt nothing.
        inclusive = name in ("$gte", "$lte")
        return lambda value: inclusive and (value is None or value is MISSING)
    if _is_nan(target):
        # NaN equals NaN and orders against no number.
        inclusive = name in ("$gte", "$lte")
        return lambda value: inclusive and _is_nan(value)
    rank = type_rank(target)
    if is_number(target):

        def numeric(value: Any) -> bool:
            if type(value) in (int, float):
                return value == value and accept((value > target) - (value < target))  # noqa: PLR0124 - NaN
            return is_number(value) and not _is_nan(value) and accept(compare_values(value, target))

        return numeric
    return lambda value: value is not MISSING and type_rank(value) == rank and accept(compare_values(value, target))


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, Decimal)) and value != value  # noqa: PLR0124 - the NaN test


def _compile_not(field: str, argument: Any, path: str) -> Filter:
    if isinstance(argument, re.Pattern):
        return _field_matcher(field, _regex_test(argument, path))
    if not isinstance(argument, Mapping) or not argument:
        raise QueryError(f"{path}: expected an operator document or a regex")
    if not _is_operator_document(argument):
        raise QueryError(f"{path}: expected operators, not a document to compare")
    return _compile_conditions(field, argument, path)


def _in_filter(field: str, argument: Any, path: str) -> Filter:
    if not isinstance(argument, list):
        raise QueryError(f"{path}: expected a list, got {type(argument).__name__}")
    for index, item in enumerate(argument):
        if _is_operator_document(item):
            raise QueryError(f"{_join(path, str(index))}: operators are not allowed inside $in")
    patterns = [item for item in argument if isinstance(item, re.Pattern)]
    values = [item for item in argument if not isinstance(item, re.Pattern)]
    with_null = any(item is None for item in values)
    regex_tests = [_regex_test(pattern, path) for pattern in patterns]

    # Strings and numbers are looked up in sets: no other type equals them (bools are kept apart).
    strings = {item for item in values if type(item) is str}
    numbers = {item for item in values if _plain_number(item)}
    others = [item for item in values if type(item) is not str and not _plain_number(item)]

    def test(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            if value in strings:
                return True
        elif _plain_number(value):
            if value in numbers:
                return True
            return any(values_equal(value, item) for item in others)
        elif value is MISSING:
            return with_null
        elif any(values_equal(value, item) for item in others):
            return True
        return any(regex(value) for regex in regex_tests)

    return _field_matcher(field, test)


def _plain_number(value: Any) -> bool:
    return type(value) in (int, float) and value == value  # noqa: PLR0124 - NaN is not plain


def _regex_test(pattern: re.Pattern[str], path: str) -> Test:
    """A test of one value against a regex: strings are searched within the time bound (``_regex``)."""
    search = BoundedPattern(pattern, path).search

    def test(value: Any) -> bool:
        if isinstance(value, str):
            return search(value)
        if isinstance(value, re.Pattern):
            return value.pattern == pattern.pattern and value.flags == pattern.flags
        return False

    return test


def _compile_regex(argument: Any, options: Any, path: str) -> re.Pattern[str]:
    if options is not None and not isinstance(options, str):
        raise QueryError(f"{path}: $options must be a string")
    flags = 0
    for letter in options or "":
        if letter not in _REGEX_OPTIONS and letter != "u":
            raise QueryError(f"{path}: unknown regex option {letter!r}")
        flags |= _REGEX_OPTIONS.get(letter, 0)
    if isinstance(argument, re.Pattern):
        if options is None:
            return argument
        argument = argument.pattern
    if not isinstance(argument, str):
        raise QueryError(f"{path}: expected a string or a regex, got {type(argument).__name__}")
    try:
        return re.compile(argument, flags)
    except re.error as exc:
        raise QueryError(f"{path}: bad regular expression: {exc}") from None


def _type_filter(field: str, argument: Any, path: str) -> Filter:
    wanted: set[str] = set()
    for index, item in enumerate(argument if isinstance(argument, list) else [argument]):
        where = _join(path, str(index)) if isinstance(argument, list) else path
        if isinstance(item, bool):
            raise QueryError(f"{where}: expected a type name or code, got {item!r}")
        if isinstance(item, (int, float)) and item in _TYPE_CODES:
            wanted.add(_TYPE_CODES[int(item)])
        elif isinstance(item, str) and item in _TYPE_NAMES:
            wanted.add(item)
        else:
            raise QueryError(f"{where}: unknown type {item!r}")
    if "number" in wanted:
        wanted |= _NUMBER_TYPES

    def test(value: Any) -> bool:
        return bson_type_name(value) in wanted

    matcher = _field_matcher(field, test, expand=False)
    elements = _field_matcher(field, lambda value: isinstance(value, list) and any(map(test, value)), expand=False)
    return lambda doc: matcher(doc) or elements(doc)


def _whole_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value == int(value)


def _size_filter(field: str, argument: Any, path: str) -> Filter:
    if not _whole_number(argument):
        raise QueryError(f"{path}: expected an integer, got {argument!r}")
    if argument < 0:
        raise QueryError(f"{path}: expected a non-negative integer, got {argument!r}")
    size = int(argument)
    return _field_matcher(field, lambda value: isinstance(value, list) and len(value) == size, expand=False)


def _mod_test(argument: Any, path: str) -> Test:
    if not isinstance(argument, list) or len(argument) != 2 or not all(
        is_number(x) and math.isfinite(x) for x in argument
    ):
        raise QueryError(f"{path}: expected [divisor, remainder] (two finite numbers)")
    divisor, remainder = (int(x) for x in argument)  # MongoDB truncates both toward zero
    if divisor == 0:
        raise QueryError(f"{path}: divisor must not be zero")

    def test(value: Any) -> bool:
        if not is_number(value) or not math.isfinite(value):
            return False
        number = int(value)
        left = abs(number) % abs(divisor)  # the sign follows the dividend, as in C
        return (left if number >= 0 else -left) == remainder

    return test


def _all_filter(field: str, argument: Any, path: str) -> Filter:
    if not isinstance(argument, list):
        raise QueryError(f"{path}: expected a list, got {type(argument).__name__}")
    if not argument:
        return lambda _doc: False
    clauses: list[Filter] = []
    for index, item in enumerate(argument):
        where = _join(path, str(index))
        if isinstance(item, Mapping) and "$elemMatch" in item:
            if len(item) != 1:
                raise QueryError(f"{where}: $elemMatch must be alone in its document")
            clauses.append(_elem_match_filter(field, item["$elemMatch"], _join(where, "$elemMatch")))
        elif _is_operator_document(item):
            raise QueryError(f"{where}: only $elemMatch is allowed inside $all")
        elif isinstance(item, re.Pattern):
            clauses.append(_field_matcher(field, _regex_test(item, where)))
        else:
            clauses.append(_equality_filter(field, item))
    return lambda doc: all(clause(doc) for clause in clauses)


def _elem_match_filter(field: str, argument: Any, path: str) -> Filter:
    if not isinstance(argument, Mapping):
        raise QueryError(f"{path}: expected a document, got {type(argument).__name__}")
    keys = [key for key in argument if isinstance(key, str)]
    value_form = bool(keys) and all(
        key.startswith("$") and key not in ("$and", "$or", "$nor", "$expr", "$where") for key in keys
    )
    if value_form:
        check = _compile_conditions("value", argument, path)

        def element_matches(item: Any) -> bool:
            return check({"value": item})
    else:
        query = _compile_document(argument, path)

        def element_matches(item: Any) -> bool:
            return isinstance(item, Mapping) and query(item)

    def test(value: Any) -> bool:
        return isinstance(value, list) and any(element_matches(item) for item in value)

    return _field_matcher(field, test, expand=False)
