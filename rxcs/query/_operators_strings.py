"""String expression operators: ``$concat $toUpper $toLower``.

``$concat`` is null when any argument is null or missing and refuses
anything but strings, and strings over MongoDB's 16 MiB document limit.
``$toUpper``/``$toLower`` give ``""`` for null or missing, change ASCII
letters only (MongoDB's documented behaviour), and take numbers and dates as their string forms.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from rxcs.errors import QueryError
from rxcs.limits import MAX_DOCUMENT_BYTES
from rxcs.query._expressions import Compiler, Evaluator, arguments, is_nullish, type_name

__all__ = ["STRING_OPERATORS"]

MAX_STRING_LENGTH: Final = MAX_DOCUMENT_BYTES
"""The longest string ``$concat`` builds: MongoDB's document limit (16 MiB)."""
_UPPER: Final = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _compile_concat(argument: Any, path: str) -> Evaluator:
    parts = arguments(argument, path)

    def concat(doc: Mapping[str, Any]) -> Any:
        pieces: list[str] = []
        for part in parts:
            value = part(doc)
            if is_nullish(value):
                return None
            if not isinstance(value, str):
                raise QueryError(f"{path}: $concat only supports strings, not {type_name(value)}")
            pieces.append(value)
        length = sum(map(len, pieces))
        if length > MAX_STRING_LENGTH:
            raise QueryError(
                f"{path}: $concat would make a string of {length} characters, over MongoDB's 16 MiB limit"
            )
        return "".join(pieces)

    return concat


def _as_string(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    raise QueryError(f"{path}: can't convert from {type_name(value)} to string")


def _case(table: dict[int, int]) -> Compiler:
    def compile_case(argument: Any, path: str) -> Evaluator:
        (part,) = arguments(argument, path, 1)

        def convert(doc: Mapping[str, Any]) -> str:
            value = part(doc)
            if is_nullish(value):
                return ""
            return _as_string(value, path).translate(table)

        return convert

    return compile_case


STRING_OPERATORS: Final[dict[str, Compiler]] = {
    "$concat": _compile_concat,
    "$toUpper": _case(_UPPER),
    "$toLower": _case(_LOWER),
}
