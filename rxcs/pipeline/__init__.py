"""Change-stream pipelines: MongoDB aggregation stages compiled once into closures.

The stages a MongoDB change stream allows are supported: ``$match``,
``$project``, ``$addFields``/``$set``, ``$unset``, ``$replaceRoot``/
``$replaceWith``, ``$redact`` and, last, ``$changeStreamSplitLargeEvent``.
Expressions are ``rxcs.query``'s (one engine for ``$expr`` and for stages).

A pipeline of ``$match`` stages only filters: events pass through as they
are. Any other stage reshapes: the output is a new document, and it must keep
the event's ``_id`` (its resume token) unchanged, or the event fails the
stream with ``PipelineError``, as in MongoDB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from rxcs.errors import PipelineError, QueryError
from rxcs.pipeline._amplification import (
    AMPLIFICATION_LIMIT,
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_DEPTH,
    amplification,
    measure,
)
from rxcs.pipeline._split import DEFAULT_MAX_EVENT_BYTES, check_max_event_bytes, event_limit, event_size
from rxcs.pipeline._stages import FILTERS, SPLIT_STAGE, STAGES, Stage, compile_match
from rxcs.query import MISSING, check_nesting, rewrite_event_aliases
from rxcs.tokens import ResumeToken

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_STAGES",
    "SPLIT_STAGE",
    "CompiledPipeline",
    "check_max_event_bytes",
    "compile_pipeline",
    "event_limit",
    "event_size",
]

Document = Mapping[str, Any]
MAX_STAGES: Final = 1000
"""The most stages a pipeline may have (MongoDB's limit)."""


Predicate = Callable[[Document], bool]


@final
@dataclass(frozen=True, slots=True)
class _Compiled:
    """One compiled stage: where it is, what it does, and its predicate when it is a ``$match``."""

    where: str
    stage: Stage
    predicate: Predicate | None


@final
@dataclass(frozen=True, slots=True)
class CompiledPipeline:
    """A compiled pipeline: ``run(document)`` returns the output document or None.

    ``reshapes`` is False when every stage only filters (the event passes
    through unchanged), True when a stage builds new documents. ``split`` is
    True when the pipeline ends with ``$changeStreamSplitLargeEvent``: the
    stream then splits events over its size cap into fragments.
    ``leading_matches`` are the pipeline's first ``$match`` stages, each as its
    filter (LauraDB's aliases rewritten) and compiled predicate, for the
    stream to test on entries before they become events (``rxcs.prefilter``).
    """

    run: Callable[[Document], Document | None]
    reshapes: bool
    split: bool = False
    leading_matches: tuple[tuple[Mapping[str, Any], Predicate], ...] = ()
    _stages: tuple[_Compiled, ...] = ()
    _measured: bool = False

    def after(self, count: int) -> CompiledPipeline | None:
        """The pipeline without its first ``count`` stages, compiled as it is; None when that leaves nothing to do.

        A stream whose leading ``$match`` stages already ran on its entries
        runs only the rest on its events.

        Examples:
            >>> compiled = compile_pipeline([{"$match": {"operationType": "insert"}}, {"$project": {"ns": 1}}])
            >>> compiled.after(1).run({"_id": 1, "operationType": "insert", "ns": {}})
            {'_id': 1, 'ns': {}}
            >>> compiled.after(2) is None
            True
        """
        if count == 0:
            return self
        rest = self._stages[count:]
        if not rest and not self.split:
            return None
        return _assembled(rest, self.split, (), measured=self._measured)


def compile_pipeline(stages: Sequence[Mapping[str, Any]]) -> CompiledPipeline:
    """Compile a list of stages; a bad one raises ``PipelineError`` naming its index.

    As in MongoDB, a pipeline has at most ``MAX_STAGES`` stages, and nothing
    in it nests more than ``rxcs.query.MAX_NESTING`` levels deep.

    Examples:
        >>> compiled = compile_pipeline([{"$match": {"operationType": "insert"}}])
        >>> compiled.run({"operationType": "insert"}) is not None, compiled.reshapes
        (True, False)
        >>> compiled = compile_pipeline([{"$project": {"operationType": 1}}])
        >>> compiled.run({"_id": 1, "operationType": "insert", "ns": {}}), compiled.reshapes
        ({'_id': 1, 'operationType': 'insert'}, True)
    """
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence):
        raise PipelineError(f"pipeline: expected a list of stages, got {type(stages).__name__}")
    if len(stages) > MAX_STAGES:
        raise PipelineError(f"pipeline: {len(stages)} stages, more than the {MAX_STAGES} allowed")
    check_nesting(list(stages), "pipeline", PipelineError)
    compiled: list[_Compiled] = []
    leading: list[tuple[Mapping[str, Any], Predicate]] = []
    named: list[tuple[str, Any]] = []
    reshapes = split = False
    for index, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise PipelineError(f"pipeline.{index}: a stage is a document with exactly one field")
        ((name, spec),) = stage.items()
        named.append((name, spec))
        where = f"pipeline.{index}.{name}"
        compiler = STAGES.get(name)
        if compiler is None:
            raise PipelineError(
                f"{where}: unsupported stage; a change stream allows {', '.join(STAGES)}"
            )
        if name == SPLIT_STAGE and index != len(stages) - 1:
            raise PipelineError(f"{where}: must be the last stage of the pipeline")
        try:
            if name == "$match":
                predicate = compile_match(spec, where, aliases=not reshapes)
                compiled.append(_Compiled(where, _as_stage(predicate), predicate))
                if len(leading) == index:
                    leading.append((rewrite_event_aliases(spec), predicate))
            elif name == SPLIT_STAGE:
                compiler(spec, where)  # checked here; the split itself follows the pipeline (event_limit)
            else:
                compiled.append(_Compiled(where, compiler(spec, where), None))
        except QueryError as exc:
            raise PipelineError(f"{where}.{exc}") from None
        reshapes = reshapes or name not in FILTERS
        split = split or name == SPLIT_STAGE
    # Pipelines that can copy fields many times have their stages' outputs measured (_amplification).
    measured = reshapes and amplification(named) > AMPLIFICATION_LIMIT
    return _assembled(tuple(compiled), split, tuple(leading), measured=measured)


def _assembled(
    stages: tuple[_Compiled, ...],
    split: bool,
    leading: tuple[tuple[Mapping[str, Any], Predicate], ...],
    *,
    measured: bool,
) -> CompiledPipeline:
    """A pipeline of compiled stages: only filters, or reshaping."""
    filters = [(stage.where, stage.predicate) for stage in stages if stage.predicate is not None]
    if len(filters) == len(stages):
        return CompiledPipeline(_filtering(filters), False, split, leading, stages, measured)
    return CompiledPipeline(
        _reshaping([(stage.where, stage.stage) for stage in stages], measured=measured), True, split, leading,
        stages, measured,
    )


def _as_stage(predicate: Callable[[Document], bool]) -> Stage:
    return lambda document: document if predicate(document) else None


def _filtering(filters: list[tuple[str, Callable[[Document], bool]]]) -> Callable[[Document], Document | None]:
    """Filters only: the document itself or None, one predicate call per stage."""

    def run(document: Document) -> Document | None:
        where = "pipeline"
        try:
            for where, predicate in filters:  # noqa: B007 - the except clause names the stage
                if not predicate(document):
                    return None
        except QueryError as exc:
            raise PipelineError(f"{where}.{exc} ({_which(document.get('_id', MISSING))})") from None
        return document

    return run


def _reshaping(stages: list[tuple[str, Stage]], *, measured: bool) -> Callable[[Document], Document | None]:
    """Reshaping stages in turn; then the resume-token rule: ``_id`` must come out unchanged.

    ``measured``: each stage's output must stay within MongoDB's document limit (``_amplification``).
    """

    def run(document: Document) -> Document | None:
        original = document.get("_id", MISSING)
        where = "pipeline"
        result = document
        try:
            for where, stage in stages:
                reshaped = stage(result)
                if reshaped is None:
                    return None
                if measured and reshaped is not result:
                    _check_size(reshaped, where, original)
                result = reshaped
        except QueryError as exc:
            raise PipelineError(f"{where}.{exc} ({_which(original)})") from None
        if original is not MISSING:
            kept = result.get("_id", MISSING)
            if kept is not original and kept != original:
                raise PipelineError(
                    f"pipeline: {_which(original)} came out of the pipeline with its _id (the resume "
                    f"token) {'removed' if kept is MISSING else 'changed'}; a stream cannot resume from "
                    "such an event. Stages may read _id but must leave it as it is"
                )
        return result

    return run


def _check_size(document: Document, where: str, original: Any) -> None:
    size, depth = measure(document, MAX_DOCUMENT_BYTES)
    if size > MAX_DOCUMENT_BYTES:
        raise PipelineError(
            f"{where}: made a document of more than 16 MiB (MongoDB's document limit) from "
            f"{_which(original)}: the pipeline copies fields into it too many times"
        )
    if depth > MAX_DOCUMENT_DEPTH:
        raise PipelineError(
            f"{where}: made a document nested more than {MAX_DOCUMENT_DEPTH} levels deep from {_which(original)}"
        )


def _which(event_id: Any) -> str:
    """Name the event whose document is being run, for error messages."""
    try:
        return f"the event of op_id {ResumeToken.parse(event_id).op_id}"
    except (ValueError, TypeError):
        return f"the document with _id {event_id!r}"


del annotations  # the __future__ import binds this name; it is not part of the package
