"""A small runner for MongoDB's unified test format, as its change-stream cases use it, over an rxcs oplog.

A case is a list of operations named as the format names them
(``insertOne``, ``createChangeStream``, ``iterateUntilDocumentOrError``, ...)
on entities named as the spec file names them. ``Deployment`` plays the
database: it keeps the documents of each collection, finds them with the
filter compiled by ``rxcs.query``, works out what each write changed, and
records that through the oplog's producer API, as an application would.
``match`` compares a change event with an expected document by the format's
rules ("Evaluating Matches"): extra fields allowed in the root document only,
flexible numbers, and the ``$$exists``, ``$$type`` and ``$$unsetOrMatches``
operators.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import itertools
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import rxcs
from rxcs.events import ClusterTime

__all__ = ["Case", "Deployment", "Entity", "Op", "match", "run_case"]

_INDEX = re.compile(r"0|[1-9][0-9]*")


# -- matching ------------------------------------------------------------------------------------------------


class Mismatch(AssertionError):
    """An actual value that does not match the expected one; the message names the path."""


_TYPES: dict[str, Callable[[Any], bool]] = {
    "double": lambda v: type(v) is float,
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, (list, tuple)) and not isinstance(v, ClusterTime),
    "binData": lambda v: isinstance(v, (bytes, uuid.UUID)),
    "bool": lambda v: type(v) is bool,
    "date": lambda v: isinstance(v, datetime.datetime),
    "null": lambda v: v is None,
    "int": lambda v: type(v) is int and -(2**31) <= v < 2**31,
    "long": lambda v: type(v) is int,
    "timestamp": lambda v: isinstance(v, ClusterTime),
    "decimal": lambda v: isinstance(v, decimal.Decimal),
}


def _operator(value: Any) -> str | None:
    """The special operator ``value`` is (``$$exists``, ...), or None: a document whose only key starts with $$."""
    if isinstance(value, Mapping) and len(value) == 1:
        (key,) = value
        if isinstance(key, str) and key.startswith("$$"):
            return key
    return None


def match(expected: Any, actual: Any, path: str = "", *, root: bool = True) -> None:
    """Raise ``Mismatch`` unless ``actual`` matches ``expected`` by the unified format's rules."""
    operator = _operator(expected)
    if operator == "$$type":
        names = expected[operator]
        names = [names] if isinstance(names, str) else list(names)
        if not any(_TYPES[name](actual) for name in names):
            raise Mismatch(f"{path or '<root>'}: {actual!r} is not of type {names}")
        return
    if operator == "$$unsetOrMatches":
        match(expected[operator], actual, path, root=root)
        return
    if operator == "$$exists":  # reached through $$unsetOrMatches: the value is there
        if not expected[operator]:
            raise Mismatch(f"{path or '<root>'}: expected absent, got {actual!r}")
        return
    if operator is not None:
        raise ValueError(f"{path}: {operator} is not an operator this runner knows here")
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            raise Mismatch(f"{path or '<root>'}: expected a document, got {actual!r}")
        for key, value in expected.items():
            where = f"{path}.{key}" if path else key
            inner = _operator(value)
            if inner == "$$exists":
                if value[inner] != (key in actual):
                    raise Mismatch(f"{where}: expected {'present' if value[inner] else 'absent'}")
                continue
            if inner == "$$unsetOrMatches" and key not in actual:
                continue
            if key not in actual:
                raise Mismatch(f"{where}: missing (actual has {sorted(actual)})")
            match(value, actual[key], where, root=False)
        if not root:
            extra = set(actual) - set(expected)
            if extra:
                raise Mismatch(f"{path}: unexpected fields {sorted(extra)} in a nested document")
        return
    if isinstance(expected, list):
        if not isinstance(actual, (list, tuple)):
            raise Mismatch(f"{path}: expected an array, got {actual!r}")
        if len(actual) != len(expected):
            raise Mismatch(f"{path}: expected {len(expected)} elements, got {len(actual)}: {actual!r}")
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            match(want, got, f"{path}.{index}", root=False)
        return
    numbers = (int, float)
    same_kind = (
        type(expected) is bool) == (type(actual) is bool) and (
        isinstance(expected, numbers) == isinstance(actual, numbers))
    if not same_kind or (not isinstance(expected, numbers) and type(expected) is not type(actual)):
        raise Mismatch(f"{path or '<root>'}: expected {expected!r}, got {actual!r} (another type)")
    if expected != actual:
        raise Mismatch(f"{path or '<root>'}: expected {expected!r}, got {actual!r}")


# -- the case format ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """A spec file's entity: a client (``db`` None), a database (``coll`` None) or a collection."""

    db: str | None = None
    coll: str | None = None


@dataclass(frozen=True)
class Op:
    """One operation of a case: its name, the entity it runs on, its arguments, and what it must give.

    ``expect_error`` is the rxcs error class that stands for the spec's
    ``expectError`` (the spec's own codes are kept in ``spec_error``).
    """

    name: str
    object: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    expect_result: Any = None
    expect_error: type[BaseException] | None = None
    spec_error: Mapping[str, Any] | None = None
    save_as: str | None = None


@dataclass(frozen=True)
class Case:
    """A unified test case, as ported: the spec file and description it comes from, and its operations."""

    file: str
    description: str
    entities: Mapping[str, Entity]
    operations: Sequence[Op]
    initial_data: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]] = ()
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.file}: {self.description}"


# -- the deployment: documents kept, writes recorded through the producer API -----------------------------------


class Deployment:
    """What a MongoDB deployment keeps of its collections, over an rxcs oplog that records every change.

    The writes behave as the server's: an insert into a collection that does
    not exist creates it first, dropping one that does not exist records
    nothing, an update records the fields it changed (and the arrays it
    truncated), and the change goes to the oplog through its producer API.
    """

    def __init__(self, oplog: rxcs.Oplog) -> None:
        self.oplog = oplog
        self.collections: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    # collections ---------------------------------------------------------------------------

    def create_collection(self, db: str, coll: str, options: Mapping[str, Any] | None = None) -> None:
        self.collections[(db, coll)] = {}
        self.oplog.create_collection(db, coll, dict(options) if options else None)

    def drop_collection(self, db: str, coll: str) -> None:
        if self.collections.pop((db, coll), None) is not None:
            self.oplog.drop_collection(db, coll)

    def rename(self, db: str, coll: str, to_coll: str, *, drop_target: bool | None = None) -> None:
        if (db, to_coll) in self.collections and not drop_target:
            raise AssertionError(f"rename to existing {db}.{to_coll} without dropTarget: the server refuses it")
        self.collections[(db, to_coll)] = self.collections.pop((db, coll))
        extra = {} if drop_target is None else {"drop_target": drop_target}
        self.oplog.rename_collection(db, coll, db, to_coll, **extra)

    def _documents(self, db: str, coll: str) -> dict[Any, dict[str, Any]]:
        if (db, coll) not in self.collections:
            self.create_collection(db, coll)  # as the server does on a first write
        return self.collections[(db, coll)]

    def _find(self, db: str, coll: str, filter: Mapping[str, Any]) -> dict[str, Any]:
        test = rxcs.query.compile_filter(filter)
        for document in self._documents(db, coll).values():
            if test(document):
                return document
        raise AssertionError(f"no document of {db}.{coll} matches {filter!r}")

    # documents -------------------------------------------------------------------------------------

    def insert_one(self, db: str, coll: str, document: Mapping[str, Any]) -> None:
        stored = copy.deepcopy(dict(document))
        stored.setdefault("_id", f"{next(self._ids):024x}")  # as a driver adds an ObjectId
        self._documents(db, coll)[stored["_id"]] = stored
        self.oplog.insert(db, coll, copy.deepcopy(stored))

    def update_one(self, db: str, coll: str, filter: Mapping[str, Any], update: Any) -> None:
        before = self._find(db, coll, filter)
        after = copy.deepcopy(before)
        updated: dict[str, Any] = {}
        removed: list[str] = []
        truncated: list[dict[str, Any]] = []
        if isinstance(update, list):  # an update pipeline: the server diffs the documents
            for stage in update:
                (name, fields), = stage.items()
                assert name == "$set", f"update pipeline stage {name} is not modelled"
                for key, value in fields.items():
                    old = after.get(key)
                    if isinstance(old, list) and isinstance(value, list) and len(value) < len(old) \
                            and old[: len(value)] == value:
                        truncated.append({"field": key, "newSize": len(value)})
                    else:
                        updated[key] = value
                    after[key] = copy.deepcopy(value)
        else:
            for operator, fields in update.items():
                assert operator in ("$set", "$unset"), f"update operator {operator} is not modelled"
                for path in fields:
                    if operator == "$set":
                        updated[path] = fields[path]
                        _set_path(after, path.split("."), copy.deepcopy(fields[path]))
                    else:
                        removed.append(path)
                        _unset_path(after, path.split("."))
        extra: dict[str, Any] = {}
        spelled = {
            path: components
            for path in (*updated, *removed)
            if _ambiguous(components := _spell(after if path in updated else before, path.split(".")))
        }
        if any(isinstance(part, int) for components in spelled.values() for part in components):
            # Which components are array indices only the document tells (the server has it); a producer that
            # records no images says so. Field names rxcs spells out by itself.
            extra["disambiguated_paths"] = spelled
        self._documents(db, coll)[before["_id"]] = after
        self.oplog.update(
            db, coll, before["_id"], updated_fields=updated, removed_fields=removed, truncated_arrays=truncated,
            **extra,
        )

    def replace_one(self, db: str, coll: str, filter: Mapping[str, Any], replacement: Mapping[str, Any]) -> None:
        before = self._find(db, coll, filter)
        after = {"_id": before["_id"], **copy.deepcopy(dict(replacement))}
        self._documents(db, coll)[before["_id"]] = after
        self.oplog.replace(db, coll, before["_id"], copy.deepcopy(after))

    def delete_one(self, db: str, coll: str, filter: Mapping[str, Any]) -> None:
        before = self._find(db, coll, filter)
        del self._documents(db, coll)[before["_id"]]
        self.oplog.delete(db, coll, before["_id"])


def _set_path(document: Any, parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        document = document[int(part)] if isinstance(document, list) else document.setdefault(part, {})
    if isinstance(document, list):
        document[int(parts[-1])] = value
    else:
        document[parts[-1]] = value


def _unset_path(document: Any, parts: list[str]) -> None:
    for part in parts[:-1]:
        document = document[int(part)] if isinstance(document, list) else document.get(part, {})
    if isinstance(document, dict):
        document.pop(parts[-1], None)


def _spell(document: Any, parts: list[str]) -> list[str | int]:
    """A dotted path's components as the document holds them: array indices as ints."""
    spelled: list[str | int] = []
    for part in parts:
        if isinstance(document, list) and _INDEX.fullmatch(part):
            spelled.append(int(part))
            document = document[int(part)] if int(part) < len(document) else None
        else:
            spelled.append(part)
            document = document.get(part) if isinstance(document, Mapping) else None
    return spelled


def _ambiguous(components: list[str | int]) -> bool:
    """MongoDB's rule: a path needs spelling out when a field name looks like an array index."""
    return any(isinstance(part, str) and _INDEX.fullmatch(part) for part in components)


# -- running a case ------------------------------------------------------------------------------------------------

_WATCH_OPTIONS = {
    "fullDocument": "full_document",
    "fullDocumentBeforeChange": "full_document_before_change",
    "showExpandedEvents": "show_expanded_events",
    "batchSize": "batch_size",
}


def _document(item: Any) -> Any:
    """What the stream returned, as the document a driver would hand back."""
    return item.to_document() if isinstance(item, rxcs.ChangeEvent) else item


def run_case(case: Case, oplog: rxcs.Oplog) -> list[Any]:
    """Run ``case`` on ``oplog``; return the documents its streams returned. Raises on any mismatch."""
    deployment = Deployment(oplog)
    for db, coll, documents in case.initial_data:
        deployment.create_collection(db, coll)
        for document in documents:
            deployment.insert_one(db, coll, document)
    streams: dict[str, rxcs.ChangeStream] = {}
    returned: list[Any] = []
    with ExitStack() as stack:
        for op in case.operations:
            outcome = _run(op, case, deployment, streams, stack)
            if op.name == "iterateUntilDocumentOrError" and op.expect_error is None:
                returned.append(outcome)
                if op.expect_result is not None:
                    match(op.expect_result, outcome)
    return returned


def _run(
    op: Op, case: Case, deployment: Deployment, streams: dict[str, rxcs.ChangeStream], stack: ExitStack
) -> Any:
    args = dict(op.arguments)
    if op.expect_error is not None:
        try:
            _perform(op, args, case, deployment, streams, stack)
        except op.expect_error:
            return None
        raise AssertionError(f"{op.name}: expected {op.expect_error.__name__} ({op.spec_error}), nothing raised")
    return _perform(op, args, case, deployment, streams, stack)


def _perform(
    op: Op, args: dict[str, Any], case: Case, deployment: Deployment, streams: dict[str, rxcs.ChangeStream],
    stack: ExitStack,
) -> Any:
    if op.name == "iterateUntilDocumentOrError":
        return _document(streams[op.object].next(timeout=10))
    target = case.entities[op.object]
    db, coll = target.db, target.coll
    if op.name == "createChangeStream":
        options = {_WATCH_OPTIONS[k]: v for k, v in args.items() if k != "pipeline"}
        stream = rxcs.watch(deployment.oplog, db, coll, args.get("pipeline", []), **options).iterate()
        stack.enter_context(stream)
        if op.save_as:
            streams[op.save_as] = stream
        return stream
    assert db is not None
    if op.name in ("dropCollection", "createCollection"):
        name = args.pop("collection")
        if op.name == "dropCollection":
            deployment.drop_collection(db, name)
        else:
            deployment.create_collection(db, name, args)
        return None
    if op.name == "runCommand":
        command = dict(args["command"])
        assert args["commandName"] == "collMod", f"command {args['commandName']} is not modelled"
        name = command.pop("collMod")
        deployment.oplog.modify_collection(db, name, command)  # type: ignore[attr-defined]
        return None
    assert coll is not None
    if op.name == "insertOne":
        deployment.insert_one(db, coll, args["document"])
    elif op.name == "updateOne":
        deployment.update_one(db, coll, args["filter"], args["update"])
    elif op.name == "replaceOne":
        deployment.replace_one(db, coll, args["filter"], args["replacement"])
    elif op.name == "deleteOne":
        deployment.delete_one(db, coll, args["filter"])
    elif op.name == "rename":
        deployment.rename(db, coll, args["to"], drop_target=args.get("dropTarget"))
    elif op.name == "createIndex":
        deployment.oplog.create_index(db, coll, {"v": 2, "key": args["keys"], "name": args["name"]})
    elif op.name == "dropIndex":
        deployment.oplog.drop_index(db, coll, args["name"])
    else:
        raise AssertionError(f"operation {op.name} is not modelled")
    return None


def iter_ops(cases: Sequence[Case]) -> Iterator[str]:
    """Every operation name the cases use (the runner must know each)."""
    for case in cases:
        for op in case.operations:
            yield op.name
