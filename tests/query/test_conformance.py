"""The conformance table: MongoDB's documented query behaviour, case by case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rxcs.query import compile_filter

CASES: list[dict[str, Any]] = json.loads((Path(__file__).parent / "conformance.json").read_text())


def test_the_table_is_large_enough() -> None:
    """The conformance table holds at least 150 cases, each with a unique name."""
    assert len(CASES) >= 150
    assert len({case["name"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(case: dict[str, Any]) -> None:
    """Each document matches the filter exactly when the table says it does."""
    predicate = compile_filter(case["filter"])
    got = [index for index, document in enumerate(case["documents"]) if predicate(document)]
    assert got == case["matches"], f"filter {case['filter']}"
