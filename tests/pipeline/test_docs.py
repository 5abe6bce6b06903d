"""The examples of docs/pipeline.md are true: every table row is run and its output compared."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rxcs.pipeline import compile_pipeline
from rxcs.pipeline._stages import STAGES
from rxcs.query import MISSING, compile_expression

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"
_CELL = re.compile(r"^`(.*)`$")
_RESULTS = {"(dropped)": None, "(missing)": MISSING}


def examples() -> list[tuple[str, Any, Any, Any]]:
    """Table rows of the page whose example, input and output cells are JSON (or a marker)."""
    rows = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.startswith("|"):
            continue
        name, example, given, expected = cells
        if not (_is_json(example) and _is_json(given) and (_is_json(expected) or expected in _RESULTS)):
            continue
        result = _RESULTS[expected] if expected in _RESULTS else _json(expected)
        rows.append((name, _json(example), _json(given), result))
    return rows


def _is_json(cell: str) -> bool:
    return _CELL.match(cell) is not None


def _json(cell: str) -> Any:
    return json.loads(cell[1:-1])


EXAMPLES = examples()


class TestPipelinePage:
    def test_the_page_has_examples_of_every_stage_and_operator(self) -> None:
        """Every stage (bar the split stage, shown in prose) and every listed operator has a checked example."""
        names = {name.strip("`") for name, *_ in EXAMPLES}
        assert set(STAGES) - {"$changeStreamSplitLargeEvent"} <= names
        operators = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$cmp", "$and", "$or", "$not", "$in", "$cond",
                     "$ifNull", "$concat", "$toUpper", "$toLower", "$add", "$subtract", "$multiply", "$divide",
                     "$size", "$arrayElemAt", "$type", "$getField", "$mergeObjects", "$literal", "$$ROOT",
                     "$$CURRENT", "$$REMOVE"}
        assert operators <= names

    @pytest.mark.parametrize(("name", "example", "given", "expected"), EXAMPLES, ids=[row[0] for row in EXAMPLES])
    def test_example(self, name: str, example: Any, given: Any, expected: Any) -> None:
        """The example gives what the page says it gives."""
        if isinstance(example, dict) and len(example) == 1 and next(iter(example)) in STAGES:
            result = compile_pipeline([example]).run(given)
        else:
            result = compile_expression(example)(given)
        if expected is MISSING or expected is None:
            assert result is expected
        else:
            assert result == expected
            assert type(result) is type(expected) or {type(result), type(expected)} <= {int, float}
