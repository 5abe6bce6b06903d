"""Rows to documents and changes, shared by every capture; PostgreSQL's text values to Python values.

A table is a namespace, a row a document, the primary key the ``documentKey``:
for a one-column key, ``_id`` is that column's value; for a composite key,
``_id`` is a document of the key's columns, in key order. The document holds
``_id`` first, then every column under its own name (the key columns too), so
``fullDocument.id`` and ``documentKey._id`` both work.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Final, final

from rxcs.errors import CaptureError
from rxcs.events import OperationType
from rxcs.oplog.entry import Change, check_namespace

__all__ = [
    "PgType",
    "TableMapping",
    "hashable",
    "pg_parser",
    "truncate_change",
]

Parser = Callable[[str], Any]


@final
@dataclass(frozen=True, slots=True)
class TableMapping:
    """How one table's rows become documents: its namespace, columns, converters and key.

    ``convert[i]`` turns column ``i``'s source value into the document's
    value (None: taken as it is); ``key`` holds the key columns' positions.
    ``name`` is the table as the source names it, for error messages.
    """

    name: str
    db: str
    coll: str
    columns: tuple[str, ...]
    key: tuple[int, ...]
    convert: tuple[Parser | None, ...]

    def values(self, row: Sequence[Any], positions: Sequence[int] | None = None) -> list[Any]:
        """The converted values of ``row`` (all columns, or those at ``positions``); None stays None."""
        out: list[Any] = []
        convert, columns = self.convert, self.columns
        for index in range(len(columns)) if positions is None else positions:
            value = row[index]
            parse = convert[index]
            if value is not None and parse is not None:
                try:
                    value = parse(value)
                except (ValueError, ArithmeticError, TypeError) as exc:
                    shown = value if len(value) <= 60 else value[:57] + "..."
                    raise CaptureError(
                        f"{self.name}.{columns[index]}: cannot map the value {shown!r} ({exc})"
                    ) from None
            out.append(value)
        return out

    def key_of(self, row: Sequence[Any]) -> Any:
        """The ``_id`` of a row (a source tuple): the key column's value, or a document of the key's columns."""
        values = self.values(row, self.key)
        if len(values) == 1:
            if values[0] is None:
                raise CaptureError(f"{self.name}: the row's key {self.columns[self.key[0]]} is NULL")
            return values[0]
        return {self.columns[index]: value for index, value in zip(self.key, values, strict=True)}

    def document(self, row: Sequence[Any]) -> dict[str, Any]:
        """The row as a document: ``_id`` first, then every column."""
        values = self.values(row)
        if len(self.key) == 1:
            key: Any = values[self.key[0]]
        else:
            key = {self.columns[index]: values[index] for index in self.key}
        document: dict[str, Any] = {"_id": key}
        document.update(zip(self.columns, values, strict=True))
        return document

    def insert(self, row: Sequence[Any], txn: int | None) -> Change:
        return Change.insert(self.db, self.coll, self.document(row), txn=txn)

    def delete(self, key: Any, before: dict[str, Any] | None, txn: int | None) -> Change:
        return Change.delete(self.db, self.coll, {"_id": key}, full_document_before_change=before, txn=txn)


def truncate_change(
    db: str, coll: str, *, cascade: bool = False, restart_identity: bool = False, txn: int | None = None
) -> Change:
    """A TRUNCATE of one table: a ``drop`` of its namespace, marked as a truncate in ``operationDescription``."""
    description = {"truncate": {"cascade": cascade, "restartIdentity": restart_identity}}
    check_namespace(db, coll)
    return Change(OperationType.DROP, db, coll, operation_description=description, txn_number=txn)


def hashable(value: Any) -> Any:
    """A value as a dict key: documents and lists become tuples (documents in key order)."""
    if isinstance(value, Mapping):
        return tuple((key, hashable(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(hashable(item) for item in value)
    return value


# -- PostgreSQL ---------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class PgType:
    """A row of ``pg_type``: what a value's text form is parsed by."""

    oid: int
    name: str
    kind: str  # typtype: b(ase), d(omain), e(num), c(omposite), r(ange), m(ultirange), p(seudo)
    category: str  # typcategory: A for arrays
    element: int  # typelem
    base: int  # typbasetype (domains)
    delimiter: str  # typdelim


def _bool(text: str) -> bool:
    if text == "t":
        return True
    if text == "f":
        return False
    raise ValueError("not t or f")


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError("not in hex form (bytea_output=hex)")
    return bytes.fromhex(text[2:])


def _numeric(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None


_INFINITE: Final = ("infinity", "-infinity")


def _checked_calendar(text: str, what: str) -> None:
    if text in _INFINITE:
        raise ValueError(f"{text} has no Python {what}")
    if text.endswith(" BC"):
        raise ValueError(f"a date before year 1 has no Python {what}")


def _date(text: str) -> date:
    _checked_calendar(text, "date")
    return date.fromisoformat(text)


def _timestamp(text: str) -> datetime:
    # A timestamp without time zone is taken as UTC: rxcs records instants, as MongoDB does.
    _checked_calendar(text, "datetime")
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _timestamptz(text: str) -> datetime:
    _checked_calendar(text, "datetime")
    value = datetime.fromisoformat(text)  # TimeZone=UTC: "2024-01-02 03:04:05.678+00"
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value.astimezone(UTC)


_OFFSET: Final = re.compile(r"([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?$")


def _time(text: str) -> time:
    if text.startswith("24:"):
        raise ValueError("24:00:00 has no Python time")
    return time.fromisoformat(text)


def _timetz(text: str) -> time:
    match = _OFFSET.search(text)
    if match is None:
        raise ValueError("no time zone")
    sign, hours, minutes, seconds = match.groups()
    offset = f"{sign}{hours}:{minutes or '00'}" + (f":{seconds}" if seconds else "")
    return _time(text[: match.start()] + offset)


def _json(text: str) -> Any:
    return json.loads(text)


_SCALARS: Final[dict[str, Parser | None]] = {
    "bool": _bool, "int2": int, "int4": int, "int8": int, "oid": int,
    "numeric": _numeric, "float4": float, "float8": float,
    "text": None, "varchar": None, "bpchar": None, "name": None, "char": None, "citext": None,
    "xml": None, "inet": None, "cidr": None, "macaddr": None, "macaddr8": None,
    "bytea": _bytea, "uuid": uuid.UUID,
    "date": _date, "time": _time, "timetz": _timetz, "timestamp": _timestamp, "timestamptz": _timestamptz,
    "json": _json, "jsonb": _json,
}
SUPPORTED_TYPES: Final = tuple(sorted(_SCALARS))
"""The PostgreSQL base types a capture maps; also their arrays, domains over them, and enums (as strings)."""


def pg_parser(type_oid: int, types: Mapping[int, PgType]) -> Parser | None:
    """The parser of a column's text values (None: the text is the value), or ``LookupError`` naming the type.

    ``types`` holds the ``pg_type`` rows of the type, its element type and
    its domain's base type.
    """
    found = types.get(type_oid)
    if found is None:
        raise LookupError(f"type oid {type_oid}")
    if found.kind == "d":
        return pg_parser(found.base, types)
    if found.kind == "e":
        return None
    if found.category == "A" and found.element:
        element = types.get(found.element)
        parse_element = pg_parser(found.element, types)
        return _array_parser(parse_element, element.delimiter if element else ",")
    if found.kind == "b" and found.name in _SCALARS:
        return _SCALARS[found.name]
    raise LookupError(found.name)


def _array_parser(parse: Parser | None, delimiter: str) -> Parser:
    def parse_array(text: str) -> list[Any]:
        return _convert_nested(_array_literal(text, delimiter), parse)

    return parse_array


def _convert_nested(items: list[Any], parse: Parser | None) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, list):
            out.append(_convert_nested(item, parse))
        elif item is None or parse is None:
            out.append(item)
        else:
            out.append(parse(item))
    return out


def _array_literal(text: str, delimiter: str = ",") -> list[Any]:
    """An array's text form as nested lists of element texts (None for NULL).

    ``{1,2,NULL}``, ``{{1,2},{3,4}}``, ``{"a b","x\\"y"}``; a dimension
    decoration (``[0:1]={7,8}``) is dropped, the elements kept.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    position = 0

    def parse_level() -> list[Any]:
        nonlocal position
        if text[position] != "{":
            raise ValueError("not an array literal")
        position += 1
        items: list[Any] = []
        if text[position] == "}":
            position += 1
            return items
        while True:
            char = text[position]
            if char == "{":
                items.append(parse_level())
            elif char == '"':
                position += 1
                chunk: list[str] = []
                while text[position] != '"':
                    if text[position] == "\\":
                        position += 1
                    chunk.append(text[position])
                    position += 1
                position += 1
                items.append("".join(chunk))
            else:
                end = position
                while text[end] not in (delimiter, "}"):
                    end += 1
                word = text[position:end]  # the server quotes any element with blanks: nothing to strip
                items.append(None if word == "NULL" else word)
                position = end
            if text[position] == delimiter:
                position += 1
            elif text[position] == "}":
                position += 1
                return items
            else:
                raise ValueError("malformed array literal")

    try:
        result = parse_level()
    except IndexError:
        raise ValueError("array literal ends early") from None
    if position != len(text):
        raise ValueError("text after the array literal")
    return result


# -- SQLite -----------------------------------------------------------------------------------


def sqlite_value(value: Any) -> Any:
    """A value from the outbox's JSON: tagged reals and blobs back to float and bytes, the rest as it is."""
    if isinstance(value, dict):
        if "r" in value:
            return float(value["r"])
        if "b" in value:
            return base64.b16decode(value["b"])
        raise ValueError(f"unknown tagged value {value!r}")
    return value
