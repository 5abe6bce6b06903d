"""How much a pipeline can copy: stages that reference fields more often have their outputs measured.

Stages build documents by reference: ``{"$set": {"copies": ["$$ROOT",
"$$ROOT"]}}`` costs nothing to evaluate, but its output, written out or
walked (serialized, matched, redacted), is twice the event; thirty such
stages make it 2^30 times. A stage's output is at most ``1 + references``
times its input, where ``references`` counts its field paths and variables,
so a pipeline whose product of those factors stays within
``AMPLIFICATION_LIMIT`` makes outputs at most that many times the event and
is not measured at all. Other pipelines have each reshaping stage's output
measured, each shared part once, and one over ``MAX_DOCUMENT_BYTES`` (16 MiB,
MongoDB's document limit) or nested deeper than ``MAX_DOCUMENT_DEPTH`` is a
``PipelineError``: each such stage can also wrap the document once more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from rxcs.limits import MAX_DOCUMENT_BYTES

__all__ = ["AMPLIFICATION_LIMIT", "MAX_DOCUMENT_BYTES", "MAX_DOCUMENT_DEPTH", "amplification", "expanded_size",
           "measure"]

AMPLIFICATION_LIMIT: Final = 16
"""Pipelines that can make an event's output at most this many times its size are not measured."""
MAX_DOCUMENT_DEPTH: Final = 200
"""The deepest output a measured stage may make (MongoDB's limit on nesting in a BSON object)."""
_COPYING_STAGES: Final = frozenset({"$project", "$set", "$addFields", "$replaceRoot", "$replaceWith"})
_NOT_REFERENCES: Final = frozenset({"$$REMOVE", "$$DESCEND", "$$PRUNE", "$$KEEP"})
_SCALAR: Final = 8  # what a number, a boolean, null or a key's framing adds


def amplification(stages: list[tuple[str, Any]]) -> float:
    """The most times a pipeline's output can be its input's size: the product of its stages' factors.

    Examples:
        >>> round(amplification([("$match", {"a": "$b"}), ("$set", {"x": "$a", "y": "$b"})]))
        3
        >>> amplification([("$set", {"copies": ["$$ROOT", "$$ROOT"]})] * 30) > AMPLIFICATION_LIMIT
        True
    """
    log_factor = 0.0
    for name, spec in stages:
        if name in _COPYING_STAGES:
            log_factor += math.log(1 + _references(spec))
    return math.exp(min(log_factor, 700.0))


def _references(spec: Any) -> int:
    """Field paths and variables in a stage: each can bring a copy of (a part of) its input."""
    if isinstance(spec, str):
        return int(spec.startswith("$") and spec not in _NOT_REFERENCES)
    if isinstance(spec, Mapping):
        return sum(_references(value) for key, value in spec.items() if key != "$literal")
    if isinstance(spec, list):
        return sum(_references(item) for item in spec)
    return 0


def expanded_size(document: Any, limit: float = math.inf) -> int:
    """About the bytes of ``document`` written out, shared parts counted each time; stops past ``limit``.

    Each container is measured once (it may appear many times): the cost is
    that of the distinct parts, however many times they are shared.

    Examples:
        >>> part = {"text": "x" * 100}
        >>> expanded_size({"a": part, "b": part}) > 200
        True
    """
    return measure(document, limit)[0]


def measure(document: Any, limit: float = math.inf) -> tuple[int, int]:
    """``expanded_size`` and the nesting depth of ``document``; the size stops growing past ``limit``."""
    if _items(document) is None:
        return _leaf_size(document), 0
    shapes: dict[int, tuple[int, int]] = {}
    pending: list[tuple[Any, bool]] = [(document, False)]
    while pending:  # post-order without recursion: documents may nest as deep as the pipeline made them
        value, children_done = pending.pop()
        if id(value) in shapes:
            continue
        items = _items(value)
        assert items is not None
        if not children_done:
            pending.append((value, True))
            pending.extend((child, False) for _, child in items if _items(child) is not None)
            continue
        total, depth = 2, 1
        for key, child in items:
            total += _SCALAR + (len(key) if isinstance(key, str) else 0)
            shape = shapes.get(id(child))
            if shape is None:
                total += _leaf_size(child)
            else:
                total += shape[0]
                depth = max(depth, shape[1] + 1)
            if total > limit:
                return total, depth
        shapes[id(value)] = (total, depth)
    return shapes[id(document)]


def _items(value: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    return None


def _leaf_size(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 2
    return _SCALAR
