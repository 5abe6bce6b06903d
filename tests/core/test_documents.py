"""The typed event document: ``ChangeStreamDocument`` and the JSON Schema generated from it, held to real events."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_type_hints

import jsonschema
import pytest

import rxcs
from rxcs import extjson
from rxcs.documents import REQUIRED_BY_OPERATION, ChangeStreamDocument, json_schema

DOCS = Path(__file__).parents[2] / "docs"
PUBLISHED = DOCS / "change-event.schema.json"
REGENERATE = (
    "python -c 'import json, rxcs; print(json.dumps(rxcs.documents.json_schema(), indent=2))' "
    "> docs/change-event.schema.json"
)


def produce_every_kind(oplog: rxcs.Oplog) -> None:
    """One change of every kind rxcs records, with images, a transaction, a view and a rename dropping its target."""
    oplog.create_collection("shop", "users")
    oplog.create_collection("shop", "active", {"viewOn": "users", "pipeline": [{"$match": {"on": True}}]})
    oplog.insert("shop", "users", {"_id": 1, "name": "ada", "tags": ["a", "b"]}, txn=7)
    oplog.update("shop", "users", 1, updated_fields={"name": "Ada", "tags.1": "c"}, removed_fields=["x.y"],
                 truncated_arrays=[{"field": "tags", "newSize": 2}],
                 full_document={"_id": 1, "name": "Ada", "tags": ["a", "c"]},
                 full_document_before_change={"_id": 1, "name": "ada", "tags": ["a", "b"], "x": {"y": 1}})
    oplog.replace("shop", "users", 1, {"_id": 1, "name": "A"}, full_document_before_change={"_id": 1})
    oplog.create_index("shop", "users", {"key": {"name": 1}, "unique": True})
    oplog.drop_index("shop", "users", "name_1")
    oplog.delete("shop", "users", 1)
    oplog.insert("shop", "people", {"_id": 2})
    oplog.rename_collection("shop", "users", "shop", "people", drop_target=True)
    oplog.drop_collection("shop", "people")
    oplog.drop_database("shop")


def documents_of(oplog: rxcs.Oplog, collection: str | None, **options: Any) -> list[dict[str, Any]]:
    """The documents a stream of these options gives over the whole oplog, as ``rxcs watch`` writes them."""
    last = oplog.last_op_id
    found: list[dict[str, Any]] = []
    stream = rxcs.watch(oplog, "shop", collection, start_at_operation_time=rxcs.BEGINNING, max_await_time=0.05,
                        **options)
    with stream.iterate() as events:
        while events.alive:
            event = events.try_next()
            if event is None:
                if events.resume_token.op_id >= last:
                    break
                continue
            found.append(json.loads(extjson.dumps(event)))
    return found


@pytest.fixture
def validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class TestPublishedSchema:
    def test_the_schema_in_the_docs_is_the_one_generated(self) -> None:
        """docs/change-event.schema.json is json_schema() as it is now (regenerate it when the types change)."""
        assert json.loads(PUBLISHED.read_text()) == json_schema(), f"regenerate it: {REGENERATE}"

    def test_every_key_of_the_typed_document_is_in_the_schema(self) -> None:
        """The schema's properties are the TypedDict's keys, and it requires exactly the TypedDict's required keys."""
        definition = json_schema()["$defs"]["ChangeStreamDocument"]
        assert list(definition["properties"]) == list(get_type_hints(ChangeStreamDocument))
        assert set(definition["required"]) == set(ChangeStreamDocument.__required_keys__)
        assert set(REQUIRED_BY_OPERATION) == {str(op) for op in rxcs.OperationType}


class TestRealEvents:
    @pytest.mark.parametrize(
        ("collection", "options"),
        [
            (None, {"show_expanded_events": True, "full_document": "whenAvailable",
                    "full_document_before_change": "whenAvailable"}),
            (None, {}),
            ("users", {"show_expanded_events": True}),
            ("people", {"full_document": "updateLookup"}),
        ],
    )
    def test_every_event_is_valid_and_typed(
        self, oplog: rxcs.Oplog, validator: jsonschema.protocols.Validator, collection: str | None,
        options: dict[str, Any],
    ) -> None:
        """Events of every kind, on every backend, validate against the schema and use only the TypedDict's keys."""
        produce_every_kind(oplog)
        found = documents_of(oplog, collection, **options)
        kinds = {document["operationType"] for document in found}
        if collection is None and options:
            assert kinds == {str(op) for op in rxcs.OperationType} - {"modify"}
        else:
            assert "invalidate" in kinds
        keys = set(get_type_hints(ChangeStreamDocument))
        for document in found:
            errors = [error.message for error in validator.iter_errors(document)]
            assert not errors, (document, errors)
            assert set(document) <= keys

    def test_the_schema_refuses_what_an_event_never_is(
        self, oplog: rxcs.Oplog, validator: jsonschema.protocols.Validator
    ) -> None:
        """An insert without documentKey, an unknown key, a wrong operationType or a bare UUID fail validation."""
        produce_every_kind(oplog)
        found = documents_of(oplog, None, show_expanded_events=True)
        insert = next(document for document in found if document["operationType"] == "insert")
        assert validator.is_valid(insert)
        broken = []
        for change in (
            lambda doc: doc.pop("documentKey"),
            lambda doc: doc.update(surprise=1),
            lambda doc: doc.update(operationType="upsert"),
            lambda doc: doc.update(collectionUUID="0b0e7f5e-0000-4000-8000-000000000000"),
            lambda doc: doc["ns"].update(coll=3),
        ):
            document = copy.deepcopy(insert)
            change(document)
            broken.append(validator.is_valid(document))
        assert broken == [False] * 5


class TestEventsPage:
    def test_the_code_of_the_events_page_runs(self) -> None:
        """Each Python block of docs/events.md runs as it is; the typed handler accepts a real event's document."""
        blocks = re.findall(r"```python\n(.*?)```", (DOCS / "events.md").read_text(), re.DOTALL)
        assert len(blocks) == 2
        namespace: dict[str, Any] = {}
        for block in blocks:
            exec(compile(block, "docs/events.md", "exec"), namespace)
        with rxcs.open_oplog(":memory:") as oplog:
            oplog.update("shop", "users", 1, updated_fields={"a.0": 1})
            (entry,) = oplog.read(0, 1)
        namespace["on_change"](rxcs.steps.entry_converter(oplog.oplog_id, "default", "off", True, None)(entry)
                               .to_document())


class TestForMypyUsers:
    def test_mypy_checks_code_written_against_the_document(self, tmp_path: Path) -> None:
        """mypy --strict accepts code that reads the typed document's keys and names a misspelt one."""
        good = tmp_path / "good.py"
        good.write_text(textwrap.dedent("""
            import rxcs


            def changed(change: rxcs.ChangeStreamDocument) -> dict[str, object]:
                if change["operationType"] == "update" and "updateDescription" in change:
                    return change["updateDescription"]["updatedFields"]
                return {}


            def first(stream: rxcs.ChangeStream[rxcs.ChangeEvent]) -> rxcs.ChangeStreamDocument | None:
                event = stream.try_next()
                return None if event is None else event.to_document()
        """))
        bad = tmp_path / "bad.py"
        bad.write_text(textwrap.dedent("""
            import rxcs


            def kind(change: rxcs.ChangeStreamDocument) -> str:
                return change["operationTyp"]
        """))
        mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--no-error-summary"]
        passed = subprocess.run([*mypy, str(good)], capture_output=True, text=True, timeout=300, check=False)
        assert passed.returncode == 0, passed.stdout
        failed = subprocess.run([*mypy, str(bad)], capture_output=True, text=True, timeout=300, check=False)
        assert failed.returncode == 1
        assert 'TypedDict "ChangeStreamDocument" has no key "operationTyp"' in failed.stdout
