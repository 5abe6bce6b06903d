"""The change-event model: frozen, slotted, and MongoDB-shaped."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

import rxcs
from rxcs.events import ChangeEvent, ClusterTime, Namespace, OperationType, UpdateDescription

TOKEN = rxcs.ResumeToken(uuid.UUID(int=1), 7)
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def event(op: OperationType, **fields: object) -> ChangeEvent:
    return ChangeEvent(TOKEN, op, ClusterTime(100, 1), WHEN, Namespace("shop", "users"), **fields)  # type: ignore[arg-type]


class TestChangeEvent:
    def test_frozen_and_slotted(self) -> None:
        """Events cannot be changed and carry no __dict__."""
        e = event(OperationType.INSERT)
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.operation_type = OperationType.DELETE  # type: ignore[misc]
        assert not hasattr(e, "__dict__")

    def test_insert_document(self) -> None:
        """An insert has _id, operationType, clusterTime, wallTime, ns, documentKey, fullDocument."""
        doc = event(OperationType.INSERT, document_key={"_id": 1}, full_document={"_id": 1, "a": 2}).to_document()
        assert list(doc) == ["_id", "operationType", "clusterTime", "wallTime", "ns", "documentKey", "fullDocument"]
        assert doc["_id"] == {"_data": str(TOKEN)}
        assert doc["operationType"] == "insert"
        assert doc["ns"] == {"db": "shop", "coll": "users"}

    def test_update_document(self) -> None:
        """An update carries updateDescription and, by default, no fullDocument field at all."""
        update = UpdateDescription({"a": 1}, ["b"], [{"field": "c", "newSize": 2}])
        doc = event(OperationType.UPDATE, document_key={"_id": 1}, update_description=update).to_document()
        assert doc["updateDescription"] == {
            "updatedFields": {"a": 1}, "removedFields": ["b"], "truncatedArrays": [{"field": "c", "newSize": 2}]
        }
        assert "fullDocument" not in doc

    def test_null_fields_are_present_as_null(self) -> None:
        """null_fields makes fullDocument present with a null value (whenAvailable without an image)."""
        doc = event(OperationType.UPDATE, null_fields=frozenset({"fullDocument"})).to_document()
        assert doc["fullDocument"] is None

    def test_rename_and_drop_database_and_invalidate(self) -> None:
        """rename has `to`; dropDatabase's ns has no coll; invalidate has no ns."""
        renamed = event(OperationType.RENAME, to=Namespace("shop", "people")).to_document()
        assert renamed["to"] == {"db": "shop", "coll": "people"}
        dropped = ChangeEvent(TOKEN, OperationType.DROP_DATABASE, ClusterTime(1, 1), WHEN, Namespace("shop"))
        assert dropped.to_document()["ns"] == {"db": "shop"}
        assert "ns" not in event(OperationType.INVALIDATE).to_document()

    def test_expanded_and_transaction_fields(self) -> None:
        """createIndexes has operationDescription; a transaction number shows as txnNumber."""
        doc = event(OperationType.CREATE_INDEXES, operation_description={"indexes": [{"name": "a_1"}]},
                    txn_number=3).to_document()
        assert doc["operationDescription"] == {"indexes": [{"name": "a_1"}]}
        assert doc["txnNumber"] == 3

    def test_op_id(self) -> None:
        """op_id is the token's."""
        assert event(OperationType.DELETE).op_id == 7

    def test_collection_uuid_follows_cluster_time_as_in_mongodb(self) -> None:
        """collectionUUID, when the event has one, comes right after clusterTime; absent, there is no such key."""
        identity = uuid.UUID(int=5)
        doc = event(OperationType.INSERT, document_key={"_id": 1}, full_document={"_id": 1},
                    collection_uuid=identity).to_document()
        assert list(doc)[:5] == ["_id", "operationType", "clusterTime", "collectionUUID", "wallTime"]
        assert doc["collectionUUID"] == identity
        assert "collectionUUID" not in event(OperationType.INSERT).to_document()

    @pytest.mark.parametrize(
        ("options", "ns_type"),
        [
            ({"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}, "collection"),
            ({"viewOn": "users", "pipeline": []}, "view"),
            ({"viewOn": "system.buckets.weather", "pipeline": []}, "timeseries"),
            ({"timeseries": {"timeField": "at"}}, "timeseries"),
        ],
    )
    def test_create_has_ns_type_from_its_options(self, options: dict[str, object], ns_type: str) -> None:
        """A create event's nsType says what it made: viewOn a view, timeseries (or system.buckets) a time series."""
        created = event(OperationType.CREATE, operation_description=options)
        assert created.ns_type == ns_type
        assert created.to_document()["nsType"] == ns_type
        assert list(created.to_document())[-1] == "nsType"
        assert event(OperationType.INSERT).ns_type is None
        assert "nsType" not in event(OperationType.DROP).to_document()

    def test_disambiguated_paths_only_when_given(self) -> None:
        """updateDescription has disambiguatedPaths exactly when the event carries them (expanded events)."""
        plain = UpdateDescription({"a.1": 2}, (), ())
        spelled = UpdateDescription({"a.1": 2}, (), (), {"a.1": ("a", "1")})
        assert "disambiguatedPaths" not in plain.to_document()
        assert spelled.to_document()["disambiguatedPaths"] == {"a.1": ["a", "1"]}


class TestTrustedConstruction:
    def test_the_fast_constructor_builds_what_the_checked_one_builds(self) -> None:
        """ChangeEvent._trusted puts every value in its own field, exactly as the dataclass constructor does."""
        values = (
            rxcs.ResumeToken(uuid.UUID(int=1), 9), OperationType.UPDATE, ClusterTime(5, 1),
            datetime(2026, 1, 1, tzinfo=UTC), Namespace("shop", "users"), {"_id": 1}, {"_id": 1, "a": 2},
            {"_id": 1, "a": 1}, UpdateDescription({"a": 2}, (), ()), Namespace("shop", "archive"),
            {"indexes": []}, 7, frozenset({"fullDocument"}), uuid.UUID(int=99),
        )
        fast = ChangeEvent._trusted(*values)
        assert fast == ChangeEvent(*values)
        assert [getattr(fast, f.name) for f in dataclasses.fields(ChangeEvent)] == list(values)
        assert type(fast) is ChangeEvent
        assert hash(fast.id) == hash(values[0])

    def test_what_the_fast_constructors_build_is_frozen(self) -> None:
        """Events and tokens built through their twin classes (rxcs.frozen) refuse changes as any others do."""
        token = rxcs.ResumeToken._trusted(uuid.UUID(int=1), 9, False, (5, 1), 1000)
        assert type(token) is rxcs.ResumeToken
        assert token == rxcs.ResumeToken(uuid.UUID(int=1), 9, cluster_time=(5, 1), wall_time_ms=1000)
        assert rxcs.ResumeToken.parse(token.to_document()) == token
        event = ChangeEvent._trusted(
            token, OperationType.INSERT, ClusterTime(5, 1), datetime(2026, 1, 1, tzinfo=UTC),
            Namespace("shop", "users"), {"_id": 1}, {"_id": 1}, None, None, None, None, None, frozenset(), None,
        )
        for target, name in ((token, "op_id"), (event, "id"), (event, "full_document")):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(target, name, None)
        assert event.to_document()["_id"] == token.to_document()


class TestSmallTypes:
    def test_operation_types_are_mongodb_spellings(self) -> None:
        """OperationType values are MongoDB's strings and compare equal to them."""
        assert [str(op) for op in OperationType] == [
            "insert", "update", "replace", "delete", "drop", "rename", "dropDatabase", "invalidate",
            "create", "createIndexes", "dropIndexes", "modify",
        ]
        assert OperationType.DROP_DATABASE == "dropDatabase"

    def test_namespace_and_cluster_time(self) -> None:
        """Namespaces print as db.coll; cluster times order by (time, inc)."""
        assert str(Namespace("shop", "users")) == "shop.users"
        assert str(Namespace("shop")) == "shop"
        assert ClusterTime(5, 2) < ClusterTime(5, 3) < ClusterTime(6, 1)
