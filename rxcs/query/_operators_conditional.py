"""Conditional expression operators: ``$cond`` and ``$ifNull``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.query._expressions import Compiler, Evaluator, compile_operand, is_nullish, is_true, join

__all__ = ["CONDITIONAL_OPERATORS"]

_COND_FIELDS: Final = ("if", "then", "else")


def _compile_cond(argument: Any, path: str) -> Evaluator:
    """``{$cond: {if, then, else}}`` or ``{$cond: [if, then, else]}``: only the branch taken runs."""
    if isinstance(argument, Mapping):
        for key in argument:
            if key not in _COND_FIELDS:
                raise QueryError(f"{join(path, str(key))}: unrecognized parameter to $cond")
        for key in _COND_FIELDS:
            if key not in argument:
                raise QueryError(f"{path}: missing '{key}' parameter to $cond")
        specs = [argument[key] for key in _COND_FIELDS]
    elif isinstance(argument, list) and len(argument) == 3:
        specs = argument
    else:
        raise QueryError(f"{path}: expected {{if, then, else}} or a list of 3 expressions")
    test, then, otherwise = (
        compile_operand(spec, join(path, key)) for spec, key in zip(specs, _COND_FIELDS, strict=True)
    )
    return lambda doc: then(doc) if is_true(test(doc)) else otherwise(doc)


def _compile_if_null(argument: Any, path: str) -> Evaluator:
    """``{$ifNull: [input..., replacement]}``: the first input neither null nor missing, else the replacement."""
    if not isinstance(argument, list) or len(argument) < 2:
        raise QueryError(f"{path}: expected a list of at least 2 expressions (inputs, then the replacement)")
    *inputs, replacement = [compile_operand(item, join(path, str(i))) for i, item in enumerate(argument)]

    def if_null(doc: Mapping[str, Any]) -> Any:
        for evaluate in inputs:
            value = evaluate(doc)
            if not is_nullish(value):
                return value
        return replacement(doc)

    return if_null


CONDITIONAL_OPERATORS: Final[dict[str, Compiler]] = {
    "$cond": _compile_cond,
    "$ifNull": _compile_if_null,
}
