"""Every test of MongoDB's change-stream specification is ported or left out for a stated reason, and the docs agree.

Also the runner's matcher, held to the unified format's rules ("Evaluating
Matches"), so a ported case cannot pass by a matcher that lets anything by.
"""

from __future__ import annotations

import datetime
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from rxcs.events import ClusterTime

from . import test_spec_prose, test_spec_unified
from .spec_catalog import LEFT_OUT, PROSE_TESTS, SPEC_COMMIT, UNIFIED_CASES
from .unified import Mismatch, match

CONFORMANCE = Path(__file__).parents[2] / "docs" / "conformance.md"


def ported_unified() -> set[tuple[str, str]]:
    return {(case.file, case.description) for case in map(test_spec_unified.case_of, test_spec_unified.CASES)}


def ported_prose() -> set[tuple[str, str]]:
    names = [name for cls in vars(test_spec_prose).values() if isinstance(cls, type) for name in vars(cls)]
    return {("prose", found.group(1)) for name in names if (found := re.match(r"test_prose_(\d+)_", name))}


class TestCatalog:
    def test_every_unified_case_is_ported_or_left_out(self) -> None:
        """Each case of each unified file at the pinned commit is either ported or left out, never both."""
        every = {(file, name) for file, names in UNIFIED_CASES.items() for name in names}
        ported, left_out = ported_unified(), {key for key in LEFT_OUT if key[0] != "prose"}
        assert ported <= every, f"ported cases the spec does not have: {ported - every}"
        assert not ported & left_out, f"both ported and left out: {ported & left_out}"
        assert ported | left_out == every, f"neither ported nor left out: {every - ported - left_out}"
        assert len(every) == 89

    def test_every_prose_test_is_ported_or_left_out(self) -> None:
        """Each prose test not marked Removed is either ported (a test_prose_<n>_ test) or left out."""
        every = {("prose", str(number)) for number in PROSE_TESTS}
        ported, left_out = ported_prose(), {key for key in LEFT_OUT if key[0] == "prose"}
        assert not ported & left_out
        assert ported | left_out == every, f"neither ported nor left out: {every - ported - left_out}"

    def test_every_left_out_case_has_a_reason(self) -> None:
        """A reason says what the case needs that rxcs has no counterpart for, in more than a word."""
        assert all(len(reason.split()) >= 8 for reason in LEFT_OUT.values())

    def test_the_docs_list_the_same_left_out_cases_and_the_pinned_commit(self) -> None:
        """docs/conformance.md names the pinned commit and every left-out case, and counts them as ported here."""
        text = CONFORMANCE.read_text()
        assert SPEC_COMMIT in text
        unified_left_out = [(file, name) for file, name in LEFT_OUT if file != "prose"]
        missing = [key for key in unified_left_out if f"| {key[0]} | {key[1]} |" not in text]
        assert not missing, f"docs/conformance.md does not list: {missing}"
        for number in (name for file, name in LEFT_OUT if file == "prose"):
            assert f"| prose test {number} |" in text
        counts = re.search(r"(\d+) of the 89 unified cases are\s+ported", text)
        assert counts is not None
        assert int(counts.group(1)) == len(ported_unified())


class TestMatcher:
    def test_extra_fields_are_allowed_at_the_root_only(self) -> None:
        """A root document may hold fields the expectation does not name; a nested one may not."""
        match({"x": 1}, {"x": 1, "y": 2})
        with pytest.raises(Mismatch, match="unexpected fields"):
            match({"x": {"y": 1}}, {"x": {"y": 1, "z": 1}})
        with pytest.raises(Mismatch, match="missing"):
            match({"x": 1, "y": 1}, {"x": 1})

    def test_exists(self) -> None:
        """$$exists true needs the key (any value, null too); false needs it absent."""
        match({"a": {"$$exists": True}}, {"a": None})
        match({"a": {"$$exists": False}}, {"b": 1})
        with pytest.raises(Mismatch):
            match({"a": {"$$exists": True}}, {"b": 1})
        with pytest.raises(Mismatch):
            match({"a": {"$$exists": False}}, {"a": 1})

    def test_unset_or_matches(self) -> None:
        """$$unsetOrMatches: absent, or present and matching."""
        match({"a": {"$$unsetOrMatches": {"$$exists": True}}}, {})
        match({"a": {"$$unsetOrMatches": 2}}, {"a": 2})
        with pytest.raises(Mismatch):
            match({"a": {"$$unsetOrMatches": 2}}, {"a": 3})

    @pytest.mark.parametrize(
        ("name", "good", "bad"),
        [
            ("int", 3, True), ("int", 0, 2**40), ("long", 2**40, 1.0), ("double", 1.5, 1), ("string", "s", b"s"),
            ("object", {}, []), ("array", [], {}), ("bool", False, 0), ("null", None, 0),
            ("date", datetime.datetime.now(datetime.UTC), "2026"), ("timestamp", ClusterTime(1, 1), (1, 1)),
            ("binData", uuid.uuid4(), "x"),
        ],
    )
    def test_type(self, name: str, good: Any, bad: Any) -> None:
        """$$type checks the BSON type by its $type name."""
        match({"$$type": name}, good)
        with pytest.raises(Mismatch):
            match({"$$type": name}, bad)
        match({"$$type": [name, "null"]}, None)

    def test_numbers_are_flexible_but_not_bools_or_strings(self) -> None:
        """1 matches 1.0; it does not match True or "1"; arrays must have as many elements."""
        match(1, 1.0)
        for wrong in (True, "1", 2):
            with pytest.raises(Mismatch):
                match(1, wrong)
        with pytest.raises(Mismatch, match="expected 2 elements"):
            match([1, 2], [1, 2, 3])
