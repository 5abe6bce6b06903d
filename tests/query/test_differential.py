"""Differential testing against montydb, an independent implementation of MongoDB's queries.

Where the two disagree and montydb departs from MongoDB's documented
behaviour, the case is listed in docs/query.md and excluded here by name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from rxcs.query import compile_filter

from .strategies import documents, filters

montydb_queries = pytest.importorskip("montydb.engine.queries")


def _null_range(spec: Any) -> bool:
    """$gte/$lte null or $all [null]: MongoDB matches null and missing there, montydb null only."""
    if isinstance(spec, dict):
        return any(
            (k in ("$gte", "$lte") and v is None) or (k == "$all" and None in v) or _null_range(v)
            for k, v in spec.items()
        )
    if isinstance(spec, list):
        return any(_null_range(item) for item in spec)
    return False


def _nested_arrays(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_nested_arrays(v) for v in value.values())
    if isinstance(value, list):
        return any(isinstance(v, list) or _nested_arrays(v) for v in value)
    return False


def montydb_matches(spec: dict[str, Any], doc: dict[str, Any]) -> bool | None:
    try:
        return bool(montydb_queries.QueryFilter(spec)(doc))
    except Exception:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(documents, filters)
def test_agrees_with_montydb(doc: dict[str, Any], spec: dict[str, Any]) -> None:
    """rxcs and montydb agree on every generated filter and document, outside the documented divergences."""
    # Documented divergences (docs/query.md): montydb lacks $type "number" (not generated),
    # matches $gte/$lte null and $all [null] against null only, where MongoDB also matches
    # missing, and does not expand an array reached by a numeric path part ("a.0" on [[x]]).
    assume(not _null_range(spec))
    assume(not ("a.0" in json.dumps(spec) and _nested_arrays(doc)))
    expected = montydb_matches(spec, doc)
    assume(expected is not None)
    assert compile_filter(spec)(doc) is expected, f"filter {spec} on {doc}"
