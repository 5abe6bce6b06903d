"""MongoDB's update semantics for updateDescription (rxcs.oplog.images.apply_update)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxcs.oplog.images import UpdateConflict, apply_update

from .image_model import document_values, random_update


class TestUpdatedFields:
    def test_a_top_level_field_is_set_or_added_at_the_end(self) -> None:
        """updatedFields sets existing fields in place and adds new ones after the others, as $set does."""
        after = apply_update({"_id": 1, "a": 1, "b": 2}, {"updatedFields": {"a": 10, "c": 3}})
        assert after == {"_id": 1, "a": 10, "b": 2, "c": 3}
        assert list(after) == ["_id", "a", "b", "c"]

    def test_a_dotted_path_sets_a_field_of_an_embedded_document(self) -> None:
        """'address.city' sets a field of the embedded document, keeping its other fields."""
        after = apply_update({"_id": 1, "address": {"city": "Paris", "zip": "75001"}},
                             {"updatedFields": {"address.city": "Lyon"}})
        assert after == {"_id": 1, "address": {"city": "Lyon", "zip": "75001"}}

    def test_missing_documents_on_a_path_are_created(self) -> None:
        """Setting 'a.b.c' where 'a' is missing makes the embedded documents, as $set does."""
        assert apply_update({"_id": 1}, {"updatedFields": {"a.b.c": 1}}) == {"_id": 1, "a": {"b": {"c": 1}}}

    def test_a_numeric_part_indexes_an_array_and_names_a_field_of_a_document(self) -> None:
        """'tags.1' is the second element of an array; 'scores.1' is the field '1' of a document."""
        after = apply_update({"_id": 1, "tags": ["a", "b"], "scores": {"1": 5}},
                             {"updatedFields": {"tags.1": "B", "scores.1": 6, "scores.2": 7}})
        assert after == {"_id": 1, "tags": ["a", "B"], "scores": {"1": 6, "2": 7}}

    def test_setting_past_the_end_of_an_array_pads_it_with_nulls(self) -> None:
        """An index past the end extends the array with nulls up to it, as $set does."""
        assert apply_update({"_id": 1, "a": [1]}, {"updatedFields": {"a.3": 4}}) == {"_id": 1, "a": [1, None, None, 4]}

    def test_a_path_through_array_elements(self) -> None:
        """'items.0.qty' sets a field of the document that is the array's first element."""
        after = apply_update({"_id": 1, "items": [{"sku": "x", "qty": 1}, {"sku": "y"}]},
                             {"updatedFields": {"items.0.qty": 2, "items.1.qty": 5}})
        assert after["items"] == [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 5}]

    def test_a_field_of_a_scalar_is_a_conflict_naming_the_path(self) -> None:
        """Setting 'a.b' where 'a' is a string cannot be: UpdateConflict names the path and what is there."""
        with pytest.raises(UpdateConflict, match=r"updatedFields 'a\.b': 'a' holds a str"):
            apply_update({"_id": 1, "a": "text"}, {"updatedFields": {"a.b": 1}})

    def test_a_field_name_of_an_array_is_a_conflict(self) -> None:
        """Setting 'tags.x' where 'tags' is an array cannot be."""
        with pytest.raises(UpdateConflict, match=r"'x' is not an index of the array"):
            apply_update({"_id": 1, "tags": []}, {"updatedFields": {"tags.x": 1}})

    def test_a_field_of_null_is_a_conflict(self) -> None:
        """MongoDB refuses to create a field inside null; so does apply_update."""
        with pytest.raises(UpdateConflict, match="holds null"):
            apply_update({"_id": 1, "a": None}, {"updatedFields": {"a.b": 1}})


class TestRemovedFields:
    def test_fields_are_removed_at_any_depth(self) -> None:
        """removedFields unsets top-level and embedded fields."""
        after = apply_update({"_id": 1, "a": 1, "b": {"c": 2, "d": 3}}, {"removedFields": ["a", "b.c"]})
        assert after == {"_id": 1, "b": {"d": 3}}

    def test_removing_what_is_not_there_does_nothing(self) -> None:
        """Unsetting a missing field, a field of a scalar or of a missing document changes nothing ($unset)."""
        before = {"_id": 1, "a": 5}
        assert apply_update(before, {"removedFields": ["x", "a.b", "y.z", "a.0"]}) == before

    def test_removing_an_array_element_leaves_null(self) -> None:
        """$unset of an array element sets it to null, keeping the array's length."""
        assert apply_update({"_id": 1, "a": [1, 2, 3]}, {"removedFields": ["a.1"]}) == {"_id": 1, "a": [1, None, 3]}


class TestTruncatedArrays:
    def test_arrays_are_truncated_before_fields_are_set(self) -> None:
        """truncatedArrays cuts the array to newSize; updatedFields then set elements within it."""
        after = apply_update({"_id": 1, "a": [1, 2, 3, 4]}, {
            "truncatedArrays": [{"field": "a", "newSize": 2}], "updatedFields": {"a.1": 9},
        })
        assert after == {"_id": 1, "a": [1, 9]}

    def test_an_embedded_array_is_truncated(self) -> None:
        """The field of a truncation is a dotted path."""
        after = apply_update({"_id": 1, "x": {"a": [1, 2, 3]}}, {"truncatedArrays": [{"field": "x.a", "newSize": 0}]})
        assert after == {"_id": 1, "x": {"a": []}}

    def test_truncating_what_is_not_an_array_is_a_conflict(self) -> None:
        """A truncation of a string means the document is not the one the update was made to."""
        with pytest.raises(UpdateConflict, match=r"truncatedArrays 'a': holds a str"):
            apply_update({"_id": 1, "a": "abc"}, {"truncatedArrays": [{"field": "a", "newSize": 1}]})


class TestDisambiguatedPaths:
    def test_a_dotted_field_name_is_one_field(self) -> None:
        """disambiguatedPaths {"a.b": ["a.b"]}: the update sets the top-level field named "a.b", not a.b."""
        after = apply_update({"_id": 1, "a.b": 1, "a": {"b": 1}},
                             {"updatedFields": {"a.b": 2}, "disambiguatedPaths": {"a.b": ["a.b"]}})
        assert after == {"_id": 1, "a.b": 2, "a": {"b": 1}}

    def test_a_numeric_looking_field_of_a_document_is_a_field(self) -> None:
        """A string component names a field even when it looks like an index; an int indexes an array."""
        after = apply_update(
            {"_id": 1, "a": [{"1": "x"}, "y"]},
            {"updatedFields": {"a.0.1": "z"}, "removedFields": ["a.1"],
             "disambiguatedPaths": {"a.0.1": ["a", 0, "1"], "a.1": ["a", 1]}},
        )
        assert after == {"_id": 1, "a": [{"1": "z"}, None]}

    def test_a_field_name_where_an_array_is_is_a_conflict(self) -> None:
        """A component that says field where the document holds an array: not the document updated."""
        with pytest.raises(UpdateConflict, match=r"updatedFields 'a.0': '0' is not an index of the array at 'a'"):
            apply_update({"_id": 1, "a": [1]},
                         {"updatedFields": {"a.0": 2}, "disambiguatedPaths": {"a.0": ["a", "0"]}})

    def test_an_index_where_a_document_is_is_a_conflict(self) -> None:
        """An int component where the document holds a document: not the document updated."""
        with pytest.raises(UpdateConflict, match=r"0 is not a field of the document at 'a'"):
            apply_update({"_id": 1, "a": {"0": 1}},
                         {"updatedFields": {"a.0": 2}, "disambiguatedPaths": {"a.0": ["a", 0]}})

    def test_a_malformed_entry_is_a_conflict_naming_it(self) -> None:
        """Components that are neither field names nor indexes are refused, naming the path."""
        with pytest.raises(UpdateConflict, match=r"disambiguatedPaths 'a.b': expected field names and indexes"):
            apply_update({"_id": 1}, {"updatedFields": {"a.b": 1}, "disambiguatedPaths": {"a.b": [1.5]}})


class TestCopies:
    def test_the_document_and_the_description_are_left_unchanged(self) -> None:
        """apply_update copies what it changes: the document before and the description's values stay as they were."""
        before = {"_id": 1, "a": {"b": [1, 2, {"c": 3}]}, "d": [1, 2, 3]}
        value = {"e": [1]}
        description = {"updatedFields": {"a.b.2.c": 4, "a.x": value}, "removedFields": ["d.0"],
                       "truncatedArrays": [{"field": "a.b", "newSize": 3}]}
        kept_before, kept_description = copy.deepcopy(before), copy.deepcopy(description)
        after = apply_update(before, description)
        assert before == kept_before
        assert description == kept_description
        assert after == {"_id": 1, "a": {"b": [1, 2, {"c": 4}], "x": {"e": [1]}}, "d": [None, 2, 3]}


@settings(max_examples=300)
@given(st.data(), document_values(dotted=True))
def test_apply_update_agrees_with_the_model(data: st.DataObject, document: dict[str, Any]) -> None:
    """For random documents and random valid updates (sets at any depth, array elements past the end,
    unsets, truncations, through field names with dots or digits, listed in disambiguatedPaths), apply_update
    of the update's description gives the document the model made by carrying out the update directly."""
    description, expected = random_update(data, document)
    assert apply_update(document, description) == expected
