"""MongoDB's event fields and visibility rules (the conformance issue's items 3 to 6), on every backend.

Collection identity (``collectionUUID``, ``nsType``, the default ``idIndex``),
renames (``operationDescription``, ``dropTarget``, the target's streams
invalidated), index and update details (``dropIndexes``' key,
``disambiguatedPaths``) and which namespaces broad streams show.
"""

from __future__ import annotations

import uuid
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import rxcs
from rxcs.oplog.entry import OplogEntry
from rxcs.steps import entry_converter

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def replay(oplog: rxcs.Oplog, db: str | None = None, collection: str | None = None, **options: Any) -> list[Any]:
    """Every event a stream of these options gives over the whole oplog, to its end (or its invalidate)."""
    options.setdefault("show_expanded_events", True)
    options.setdefault("max_await_time", 0.05)
    last = oplog.last_op_id
    events: list[Any] = []
    with rxcs.watch(oplog, db, collection, start_at_operation_time=rxcs.BEGINNING, **options).iterate() as stream:
        while stream.alive:
            try:
                event = stream.try_next()
            except StopIteration:  # ended by an invalidate
                break
            if event is None:
                if stream.resume_token.op_id >= last:
                    break
                continue
            events.append(event)
    return events


def documents(events: list[Any]) -> list[dict[str, Any]]:
    return [event.to_document() for event in events]


def kinds(events: list[Any]) -> list[str]:
    return [str(event.operation_type) for event in events]


class TestCollectionUUID:
    def test_every_expanded_event_of_a_collection_carries_its_uuid(self, oplog: rxcs.Oplog) -> None:
        """insert, update, replace, delete, create, index events, rename and drop all show the collection's UUID."""
        oplog.create_collection("shop", "users")
        oplog.insert("shop", "users", {"_id": 1})
        oplog.update("shop", "users", 1, updated_fields={"a": 1})
        oplog.replace("shop", "users", 1, {"_id": 1, "b": 1})
        oplog.delete("shop", "users", 1)
        oplog.create_index("shop", "users", {"key": {"a": 1}})
        oplog.drop_index("shop", "users", "a_1")
        oplog.rename_collection("shop", "users", "shop", "people")
        oplog.drop_collection("shop", "people")
        events = replay(oplog)
        assert kinds(events) == [
            "create", "insert", "update", "replace", "delete", "createIndexes", "dropIndexes", "rename", "drop"]
        identities = {event.collection_uuid for event in events}
        assert len(identities) == 1
        assert isinstance(identities.pop(), uuid.UUID)
        assert all(list(doc)[3] == "collectionUUID" for doc in documents(events))

    def test_a_collection_made_again_is_told_apart(self, oplog: rxcs.Oplog) -> None:
        """Dropped and created again, a collection shows a new UUID: its streams can tell the two apart."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.drop_collection("shop", "users")
        oplog.create_collection("shop", "users")
        oplog.insert("shop", "users", {"_id": 1})
        before, dropped, created, after = replay(oplog, "shop")
        assert before.collection_uuid == dropped.collection_uuid
        assert created.collection_uuid == after.collection_uuid
        assert created.collection_uuid != before.collection_uuid

    def test_only_expanded_events_show_it_and_never_on_database_events(self, oplog: rxcs.Oplog) -> None:
        """Without show_expanded_events no event has collectionUUID; dropDatabase and invalidate never do."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.drop_database("shop")
        plain = documents(replay(oplog, show_expanded_events=False))
        assert [doc["operationType"] for doc in plain] == ["insert", "dropDatabase"]
        assert not any("collectionUUID" in doc for doc in plain)
        insert, dropped, invalidate = replay(oplog, "shop")
        assert insert.collection_uuid is not None
        assert (dropped.operation_type, dropped.collection_uuid) == ("dropDatabase", None)
        assert (invalidate.operation_type, invalidate.collection_uuid) == ("invalidate", None)

    def test_a_dropped_database_shows_a_collection_stream_the_drop_of_that_collection(self, oplog: rxcs.Oplog) -> None:
        """The drop a collection stream sees when its database goes carries the collection's UUID, as MongoDB's does."""
        users = oplog.read(oplog.insert("shop", "users", {"_id": 1}) - 1, 1)[0].collection_uuid
        oplog.insert("shop", "orders", {"_id": 1})
        oplog.drop_database("shop")
        insert, drop, invalidate = replay(oplog, "shop", "users")
        assert kinds([insert, drop, invalidate]) == ["insert", "drop", "invalidate"]
        assert drop.collection_uuid == insert.collection_uuid == users


class TestCreate:
    @pytest.mark.parametrize(
        ("options", "ns_type", "description"),
        [
            (None, "collection", {"idIndex": ID_INDEX}),
            ({"capped": True, "size": 4096}, "collection", {"capped": True, "size": 4096, "idIndex": ID_INDEX}),
            ({"idIndex": {"v": 1, "key": {"_id": 1}, "name": "_id_"}}, "collection",
             {"idIndex": {"v": 1, "key": {"_id": 1}, "name": "_id_"}}),
            ({"clusteredIndex": {"key": {"_id": 1}, "unique": True}}, "collection",
             {"clusteredIndex": {"key": {"_id": 1}, "unique": True}}),
            ({"viewOn": "users", "pipeline": []}, "view", {"viewOn": "users", "pipeline": []}),
            ({"timeseries": {"timeField": "at"}}, "timeseries", {"timeseries": {"timeField": "at"}}),
        ],
    )
    def test_create_says_what_it_made(
        self, oplog: rxcs.Oplog, options: dict[str, Any] | None, ns_type: str, description: dict[str, Any]
    ) -> None:
        """create has nsType, and a collection's operationDescription its default _id index, as MongoDB's does."""
        oplog.create_collection("shop", "things", options)
        (created,) = documents(replay(oplog))
        assert created["nsType"] == ns_type
        assert created["operationDescription"] == description


class TestRename:
    def test_an_expanded_rename_describes_its_target_and_what_it_dropped(self, oplog: rxcs.Oplog) -> None:
        """operationDescription is {to: {db, coll}}, with dropTarget: the UUID of the collection it replaced."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("shop", "people", {"_id": 1})
        oplog.rename_collection("shop", "users", "shop", "people", drop_target=True)
        oplog.rename_collection("shop", "people", "archive", "people")
        users, people, replacing, moving = replay(oplog)
        assert replacing.operation_description == {
            "to": {"db": "shop", "coll": "people"}, "dropTarget": people.collection_uuid}
        assert replacing.collection_uuid == users.collection_uuid
        assert moving.to_document()["operationDescription"] == {"to": {"db": "archive", "coll": "people"}}
        plain = documents(replay(oplog, show_expanded_events=False))[2]
        assert plain["to"] == {"db": "shop", "coll": "people"}
        assert "operationDescription" not in plain

    def test_match_reads_the_description_the_event_has(self, oplog: rxcs.Oplog) -> None:
        """$match on operationDescription or disambiguatedPaths (tested on entries before they become events)
        sees them as the event shows them: expanded, or absent without expanded events."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.update("shop", "users", 1, updated_fields={"a.b": 1}, disambiguated_paths={"a.b": ["a.b"]})
        oplog.rename_collection("shop", "users", "shop", "people", drop_target=True)
        renamed = [{"$match": {"operationDescription.to.coll": "people"}}]
        told = [{"$match": {"operationDescription.dropTarget": {"$exists": True}}}]
        spelled = [{"$match": {"updateDescription.disambiguatedPaths": {"a.b": ["a.b"]}}}]
        assert kinds(replay(oplog, pipeline=renamed)) == ["rename"]
        assert kinds(replay(oplog, pipeline=told)) == ["rename"]
        assert kinds(replay(oplog, pipeline=spelled)) == ["update"]
        for pipeline in (renamed, told, spelled):
            assert replay(oplog, pipeline=pipeline, show_expanded_events=False) == []

    def test_a_stream_on_the_target_gets_the_rename_then_invalidate(self, oplog: rxcs.Oplog) -> None:
        """A collection renamed onto a watched one ends that stream too: the rename, then an invalidate."""
        with rxcs.watch(oplog, "shop", "people").iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.insert("shop", "people", {"_id": 1})
            oplog.rename_collection("shop", "users", "shop", "people", drop_target=True)
            events = [stream.next(timeout=10) for _ in range(3)]
        assert kinds(events) == ["insert", "rename", "invalidate"]
        assert events[1].ns == rxcs.Namespace("shop", "users")
        assert events[1].to == rxcs.Namespace("shop", "people")
        oplog.insert("shop", "people", {"_id": 2})
        with rxcs.watch(oplog, "shop", "people", start_after=events[2].id).iterate() as after:
            assert after.next(timeout=10).document_key == {"_id": 2}

    def test_a_rename_into_another_database_reaches_that_databases_streams(self, oplog: rxcs.Oplog) -> None:
        """A database stream sees collections renamed into it from another database (without being ended)."""
        oplog.insert("shop", "users", {"_id": 1})
        oplog.rename_collection("shop", "users", "archive", "users")
        oplog.insert("archive", "users", {"_id": 2})
        events = replay(oplog, "archive")
        assert kinds(events) == ["rename", "insert"]
        assert events[0].collection_uuid == events[1].collection_uuid
        assert kinds(replay(oplog, "archive", "users")) == ["rename", "invalidate"]


class TestDropIndexes:
    def test_a_dropped_index_is_described_by_its_version_key_and_name(self, oplog: rxcs.Oplog) -> None:
        """dropIndexes gives {v, key, name} of the index dropped, from the createIndexes that made it."""
        oplog.create_index("shop", "users", {"key": {"email": 1, "at": -1}, "unique": True})
        oplog.drop_index("shop", "users", "email_1_at_-1")
        oplog.drop_index("shop", "users", "never_made")
        _, dropped, unknown = documents(replay(oplog))
        assert dropped["operationDescription"] == {
            "indexes": [{"v": 2, "key": {"email": 1, "at": -1}, "name": "email_1_at_-1"}]}
        assert list(dropped["operationDescription"]["indexes"][0]["key"]) == ["email", "at"]
        assert unknown["operationDescription"] == {"indexes": [{"name": "never_made"}]}


class TestDisambiguatedPaths:
    def test_the_spec_cases(self, oplog: rxcs.Oplog) -> None:
        """As the spec's tests: absent without expanded events; 'a.1' on a document is ['a', '1']; indices are ints."""
        oplog.update("db", "coll", 1, updated_fields={"a.1": 2})
        oplog.update("db", "coll", 1, updated_fields={"a.0.1": 2}, full_document={"_id": 1, "a": [{"1": 2}]})
        plain = documents(replay(oplog, show_expanded_events=False))
        assert all("disambiguatedPaths" not in doc["updateDescription"] for doc in plain)
        first, second = documents(replay(oplog))
        assert first["updateDescription"]["disambiguatedPaths"] == {"a.1": ["a", "1"]}
        assert second["updateDescription"]["disambiguatedPaths"] == {"a.0.1": ["a", 0, "1"]}

    def test_plain_paths_and_array_indices_are_not_listed(self, oplog: rxcs.Oplog) -> None:
        """Paths of plain field names and array indices are unambiguous: disambiguatedPaths is there, and empty."""
        image = {"_id": 1, "a": 2, "top": [{"sub": [0, [0, [{"bottom": [1, 2, 3]}]]]}], "arr": [0]}
        oplog.update("db", "coll", 1, updated_fields={"a": 2, "top.0.sub.1.1.0.bottom.2": 3, "arr": [0]},
                     removed_fields=["gone"], truncated_arrays=[{"field": "arr", "newSize": 1}], full_document=image)
        (update,) = documents(replay(oplog))
        assert update["updateDescription"]["disambiguatedPaths"] == {}

    def test_dotted_and_numeric_field_names_from_the_images(self, oplog: rxcs.Oplog) -> None:
        """Field names holding dots are spelled whole, numeric field names stay strings, from post- or pre-image."""
        after = {"_id": 1, "obj": {"sub.obj": {"d.o.t": [[{"a": {"b.c": 2}}]]}}, "n": {"0": {"1": "x"}},
                 "arr": [[{"0": [{"1.2": {"a.b": True}}]}]]}
        before = {"_id": 1, "old.field": 1, "keep": [{"7": 1}]}
        oplog.update(
            "db", "coll", 1,
            updated_fields={"obj.sub.obj.d.o.t.0.0.a.b.c": 2, "n.0.1": "x", "arr.0.0.0.0.1.2.a.b": True},
            removed_fields=["old.field", "keep.0.7"],
            truncated_arrays=[{"field": "obj.sub.obj.d.o.t.0", "newSize": 1}],
            full_document=after, full_document_before_change=before,
        )
        (update,) = documents(replay(oplog))
        assert update["updateDescription"]["disambiguatedPaths"] == {
            "obj.sub.obj.d.o.t.0.0.a.b.c": ["obj", "sub.obj", "d.o.t", 0, 0, "a", "b.c"],
            "n.0.1": ["n", "0", "1"],
            "arr.0.0.0.0.1.2.a.b": ["arr", 0, 0, "0", 0, "1.2", "a.b"],
            "old.field": ["old.field"],
            "keep.0.7": ["keep", 0, "7"],
            "obj.sub.obj.d.o.t.0": ["obj", "sub.obj", "d.o.t", 0],
        }

    def test_the_producer_can_spell_paths_out(self, oplog: rxcs.Oplog) -> None:
        """disambiguated_paths= given with the update wins over the images, and only ambiguous ones are listed."""
        oplog.update("db", "coll", 1, updated_fields={"a.b": 1, "c.0": 2},
                     disambiguated_paths={"a.b": ["a.b"], "c.0": ["c", 0]}, full_document={"_id": 1, "a": {"b": 1}})
        (update,) = documents(replay(oplog))
        assert update["updateDescription"]["disambiguatedPaths"] == {"a.b": ["a.b"]}


field_names = st.one_of(
    st.sampled_from(["a", "b", "0", "1", "12", "01", "a.b", "1.2", "x.", ".y", ""]), st.text("ab.01", max_size=4)
)
values: st.SearchStrategy[Any] = st.recursive(
    st.integers(0, 9),
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3),
                            st.dictionaries(field_names, inner, min_size=1, max_size=3)),
    max_leaves=12,
)


def leaf_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path from the top of ``value`` to a value inside it, as components."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += leaf_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += leaf_paths(item, (*prefix, index))
    return paths


def is_index_like(part: str | int) -> bool:
    return isinstance(part, str) and part.isdigit() and (part == "0" or not part.startswith("0"))


class TestDisambiguatedPathsProperty:
    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(field_names, values, min_size=1, max_size=4), st.data())
    def test_a_path_is_listed_exactly_when_ambiguous_and_spelled_as_the_document_holds_it(
        self, document: dict[str, Any], data: st.DataObject
    ) -> None:
        """Over random field names: a path is listed iff a field name has a dot or looks like an index, spelled as held.

        The path is one the post-image holds. When the document could be split
        more ways than one (a key "a.b" beside a key "a" holding "b"), the
        spelling must still be one that leads through the document to the end.
        """
        paths = leaf_paths(document)
        parts = data.draw(st.sampled_from(paths))
        path = ".".join(map(str, parts))
        change = rxcs.Change.update("db", "coll", 1, updated_fields={path: 0}, full_document=document)
        entry = OplogEntry(1, rxcs.ClusterTime(1, 1), 0, *change)
        convert = entry_converter(uuid.UUID(int=1), "default", "off", True, None)
        event = convert(entry)
        assert event is not None
        assert event.update_description is not None
        listed = event.update_description.to_document()["disambiguatedPaths"]
        ambiguous = any(isinstance(part, str) and ("." in part or is_index_like(part)) for part in parts)
        if not any("." in part for part in parts if isinstance(part, str)):  # one spelling only: it must be this
            assert (path in listed) == ambiguous
            if ambiguous:
                assert listed[path] == list(parts)
        if path in listed:
            spelled = listed[path]
            assert ".".join(map(str, spelled)) == path
            value: Any = document
            for part in spelled:  # the spelling walks the document to the end
                value = value[part]


class TestVisibility:
    def test_a_database_stream_leaves_out_system_collections(self, oplog: rxcs.Oplog) -> None:
        """system.* collections are not shown to a database stream; a stream on one by name sees it."""
        oplog.insert("shop", "system.views", {"_id": 1})
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("shop", "systems", {"_id": 1})
        assert [str(event.ns) for event in replay(oplog, "shop")] == ["shop.users", "shop.systems"]
        assert [str(event.ns) for event in replay(oplog, "shop", "system.views")] == ["shop.system.views"]

    def test_a_deployment_stream_leaves_out_internal_databases_and_system_collections(self, oplog: rxcs.Oplog) -> None:
        """admin, config and local, and system.* collections anywhere, are not shown to a deployment stream."""
        for db in ("admin", "config", "local", "shop"):
            oplog.insert(db, "users", {"_id": 1})
        oplog.insert("shop", "system.js", {"_id": 1})
        oplog.drop_database("local")
        oplog.drop_database("shop")
        events = replay(oplog)
        assert [(str(event.operation_type), str(event.ns)) for event in events] == [
            ("insert", "shop.users"), ("dropDatabase", "shop")]
        assert [str(event.ns) for event in replay(oplog, "admin")] == ["admin.users"]

    def test_a_collection_renamed_out_of_a_system_namespace_is_shown(self, oplog: rxcs.Oplog) -> None:
        """A rename whose target is visible reaches broad streams, as MongoDB's $out renames do."""
        oplog.insert("shop", "system.tmp", {"_id": 1})
        oplog.rename_collection("shop", "system.tmp", "shop", "users")
        assert kinds(replay(oplog, "shop")) == ["rename"]
        assert kinds(replay(oplog)) == ["rename"]
