"""Expression operators on documents, arrays and types.

``$getField $mergeObjects $size $arrayElemAt $type``, with MongoDB's null
and missing rules: ``$arrayElemAt`` out of range is missing (the field is
left out), ``$size`` of anything but an array is an error, ``$mergeObjects``
skips null and missing arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.query._expressions import (
    Compiler,
    Evaluator,
    arguments,
    compile_operand,
    is_nullish,
    join,
    type_name,
)
from rxcs.query._values import MISSING, is_number

__all__ = ["DOCUMENT_OPERATORS"]

_GET_FIELD_PARAMETERS: Final = frozenset({"field", "input"})


def _compile_type(argument: Any, path: str) -> Evaluator:
    (part,) = arguments(argument, path, 1)
    return lambda doc: type_name(part(doc))


def _compile_size(argument: Any, path: str) -> Evaluator:
    (part,) = arguments(argument, path, 1)

    def size(doc: Mapping[str, Any]) -> int:
        value = part(doc)
        if not isinstance(value, (list, tuple)):
            raise QueryError(f"{path}: the argument to $size must be an array, not {type_name(value)}")
        return len(value)

    return size


def _index(value: Any, path: str) -> int:
    if is_number(value) and not isinstance(value, Decimal) and float(value).is_integer():
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise QueryError(f"{path}: $arrayElemAt's second argument must be an integer, not {value!r}")


def _compile_array_elem_at(argument: Any, path: str) -> Evaluator:
    array, position = arguments(argument, path, 2)

    def element(doc: Mapping[str, Any]) -> Any:
        values, where = array(doc), position(doc)
        if is_nullish(values) or is_nullish(where):
            return None
        if not isinstance(values, (list, tuple)):
            raise QueryError(f"{path}: $arrayElemAt's first argument must be an array, not {type_name(values)}")
        index = _index(where, path)
        if -len(values) <= index < len(values):
            return values[index]
        return MISSING

    return element


def _field_name(spec: Any, path: str) -> str:
    """``$getField``'s ``field``: a string constant, written plainly or as ``$literal``."""
    if isinstance(spec, Mapping) and len(spec) == 1 and "$literal" in spec:
        spec = spec["$literal"]
    elif isinstance(spec, str) and spec.startswith("$"):
        raise QueryError(f"{path}: a field name starting with '$' must be written {{$literal: {spec!r}}}")
    if not isinstance(spec, str):
        raise QueryError(f"{path}: 'field' must be a string constant, not {spec!r}")
    return spec


def _compile_get_field(argument: Any, path: str) -> Evaluator:
    """``{$getField: name}`` reads the current document; ``{field, input}`` reads ``input``."""
    if isinstance(argument, Mapping) and not any(isinstance(k, str) and k.startswith("$") for k in argument):
        unknown = set(argument) - _GET_FIELD_PARAMETERS
        if unknown:
            raise QueryError(f"{join(path, str(sorted(map(str, unknown))[0]))}: unrecognized parameter to $getField")
        if "field" not in argument:
            raise QueryError(f"{path}: missing 'field' parameter to $getField")
        name = _field_name(argument["field"], join(path, "field"))
        source = compile_operand(argument.get("input", "$$CURRENT"), join(path, "input"))
    else:
        name = _field_name(argument, path)
        source = compile_operand("$$CURRENT", path)

    def get_field(doc: Mapping[str, Any]) -> Any:
        value = source(doc)
        if is_nullish(value):
            return None
        if not isinstance(value, Mapping):
            raise QueryError(f"{path}: $getField's input must be a document, not {type_name(value)}")
        return value.get(name, MISSING)

    return get_field


def _compile_merge_objects(argument: Any, path: str) -> Evaluator:
    parts = arguments(argument, path)

    def merge(doc: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for index, part in enumerate(parts):
            value = part(doc)
            if is_nullish(value):
                continue
            if not isinstance(value, Mapping):
                raise QueryError(
                    f"{join(path, str(index))}: $mergeObjects requires documents, not {type_name(value)}"
                )
            merged.update(value)
        return merged

    return merge


DOCUMENT_OPERATORS: Final[dict[str, Compiler]] = {
    "$type": _compile_type,
    "$size": _compile_size,
    "$arrayElemAt": _compile_array_elem_at,
    "$getField": _compile_get_field,
    "$mergeObjects": _compile_merge_objects,
}
