"""Change-stream pipelines: MongoDB aggregation stages compiled once into closures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from rxcs.errors import PipelineError, QueryError
from rxcs.query import compile_filter, rewrite_event_aliases

__all__ = ["CompiledPipeline", "compile_pipeline"]

Document = Mapping[str, Any]


@final
@dataclass(frozen=True, slots=True)
class CompiledPipeline:
    """A compiled pipeline: ``run(document)`` returns the output document or None.

    ``reshapes`` is False when every stage only filters (the event passes
    through unchanged), True when a stage builds new documents.
    """

    run: Callable[[Document], Document | None]
    reshapes: bool


def compile_pipeline(stages: Sequence[Mapping[str, Any]]) -> CompiledPipeline:
    """Compile a list of stages; a bad one raises ``PipelineError`` naming its index.

    Examples:
        >>> compiled = compile_pipeline([{"$match": {"operationType": "insert"}}])
        >>> compiled.run({"operationType": "insert"}) is not None, compiled.reshapes
        (True, False)
    """
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence):
        raise PipelineError(f"pipeline: expected a list of stages, got {type(stages).__name__}")
    filters: list[Callable[[Document], bool]] = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise PipelineError(f"pipeline.{index}: a stage is a document with exactly one field")
        (name, spec), = stage.items()
        if name != "$match":
            raise PipelineError(f"pipeline.{index}.{name}: unsupported stage")
        if not isinstance(spec, Mapping):
            raise PipelineError(f"pipeline.{index}.$match: expected a filter document")
        try:
            filters.append(compile_filter(rewrite_event_aliases(spec)))
        except QueryError as exc:
            raise PipelineError(f"pipeline.{index}.$match.{exc}") from None

    def run(document: Document) -> Document | None:
        for predicate in filters:
            if not predicate(document):
                return None
        return document

    return CompiledPipeline(run, reshapes=False)
