"""MongoDB Extended JSON (relaxed) for the values change events carry.

``dumps`` writes what ``json`` cannot: dates as ``{"$date": "...Z"}``,
cluster times as ``{"$timestamp": {"t": .., "i": ..}}``, binary and UUIDs as
``{"$binary": ...}``, decimals as ``{"$numberDecimal": "..."}``, regexes, and
non-finite floats. A calendar date or a time of day (captured from SQL), which
MongoDB has no type for, is written as its ISO 8601 string. ``loads`` reads
``$date``, ``$timestamp``, ``$binary``, ``$uuid``, ``$regularExpression``,
``$numberLong``/``$numberInt``/``$numberDouble``/``$numberDecimal`` back, so
filters given on a command line can compare against dates and decimals. As
MongoDB reads JSON, an integer outside the 64-bit range is a double; text
nested deeper than ``MAX_JSON_DEPTH`` is refused before it is parsed.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from rxcs.events import ClusterTime, Namespace

__all__ = ["MAX_JSON_DEPTH", "dumps", "loads", "to_extended"]

MAX_JSON_DEPTH: Final = 200
"""The deepest nesting of arrays and objects ``loads`` parses: past MongoDB's 100, well short of recursion limits."""
_INT64: Final = 2**63
# A string (whose brackets do not count) or a bracket; possessive, so an unclosed quote costs one pass.
_STRUCTURE: Final = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_OPENING: Final = frozenset("[{")

_REGEX_FLAGS = {re.IGNORECASE: "i", re.MULTILINE: "m", re.DOTALL: "s", re.VERBOSE: "x"}


def to_extended(value: Any) -> Any:
    """Turn a value into plain JSON types, using Extended JSON wrappers where needed."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$numberDouble": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, ClusterTime):
        return {"$timestamp": {"t": value.time, "i": value.inc}}
    if isinstance(value, Namespace):
        return value.to_document()
    if isinstance(value, Mapping):
        return {str(key): to_extended(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_extended(item) for item in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        text = aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"$date": text}
    if isinstance(value, Decimal):
        return {"$numberDecimal": str(value)}
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return {"$binary": {"base64": base64.b64encode(value.bytes).decode(), "subType": "04"}}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$binary": {"base64": base64.b64encode(bytes(value)).decode(), "subType": "00"}}
    if isinstance(value, re.Pattern):
        flags = "".join(letter for flag, letter in _REGEX_FLAGS.items() if value.flags & flag)
        return {"$regularExpression": {"pattern": value.pattern, "options": flags}}
    if hasattr(value, "to_document"):
        return to_extended(value.to_document())
    return str(value)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialize a value as relaxed Extended JSON text."""
    return json.dumps(to_extended(value), indent=indent, ensure_ascii=False, allow_nan=False)


def _from_wrapper(document: dict[str, Any]) -> Any:
    if len(document) != 1:
        return document
    ((key, value),) = document.items()
    try:
        return _unwrap(key, value, document)
    except ValueError as exc:  # valid JSON, a bad wrapped value: name the wrapper and the value
        message = str(exc)
        raise ValueError(message if message.startswith(key) else f"{key}: {value!r} is not valid ({message})") from None
    except (KeyError, TypeError, OverflowError, OSError, re.error) as exc:
        raise ValueError(f"bad {key}: {exc!r}") from None


def _unwrap(key: str, value: Any, document: dict[str, Any]) -> Any:
    if key == "$date":
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, Mapping) and "$numberLong" in value:
            return datetime.fromtimestamp(int(value["$numberLong"]) / 1000, UTC)
        if isinstance(value, int):
            return datetime.fromtimestamp(value / 1000, UTC)
    elif key == "$timestamp" and isinstance(value, Mapping):
        return ClusterTime(int(value["t"]), int(value["i"]))
    elif key == "$binary" and isinstance(value, Mapping):
        raw = base64.b64decode(value["base64"])
        return uuid.UUID(bytes=raw) if value.get("subType") in ("04", "4") else raw
    elif key == "$uuid" and isinstance(value, str):
        return uuid.UUID(value)
    elif key == "$regularExpression" and isinstance(value, Mapping):
        flags = 0
        for letter in value.get("options", ""):
            flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}.get(letter, 0)
        return re.compile(value["pattern"], flags)
    elif key in ("$numberLong", "$numberInt") and isinstance(value, str):
        return int(value)
    elif key == "$numberDouble" and isinstance(value, str):
        return float(value)
    elif key == "$numberDecimal" and isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"$numberDecimal: {value!r} is not a decimal") from None
    return document


def loads(text: str) -> Any:
    """Parse relaxed Extended JSON text; raises ``ValueError`` naming the problem.

    Examples:
        >>> loads('{"n": 9223372036854775808, "when": {"$date": "2026-01-02T03:04:05Z"}}')
        {'n': 9.223372036854776e+18, 'when': datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)}
        >>> loads("[" * 1000 + "]" * 1000)
        Traceback (most recent call last):
        ...
        ValueError: JSON nested more than 200 levels deep (at character 200)
    """
    _check_depth(text)
    return json.loads(text, object_hook=_from_wrapper, parse_int=_integer)


def _check_depth(text: str) -> None:
    depth = 0
    for token in _STRUCTURE.finditer(text):
        bracket = token.group()
        if bracket in _OPENING:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep (at character {token.start()})")
        elif len(bracket) == 1:
            depth -= 1


def _integer(text: str) -> int | float:
    value = int(text)
    return value if -_INT64 <= value < _INT64 else float(text)
