"""The stages a change stream allows, each compiled once into a closure over a document.

A compiled stage takes the event document and returns the next document,
or None to drop the event. ``STAGES`` maps each stage name to its compiler;
a compiler takes the stage's specification and its path in the pipeline
(``pipeline.2.$project``) for error messages. Expressions inside a stage are
compiled with paths relative to the stage; the pipeline prefixes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from rxcs.errors import PipelineError
from rxcs.pipeline._projection import (
    compile_added_fields,
    compile_exclusion,
    compile_inclusion,
    parse_added_fields,
    parse_projection,
    parse_unset,
)
from rxcs.query import (
    DESCEND,
    KEEP,
    MISSING,
    PRUNE,
    Frame,
    compile_expression,
    compile_filter,
    rewrite_event_aliases,
    type_name,
)

__all__ = ["FILTERS", "STAGES", "SPLIT_STAGE", "Stage", "StageCompiler"]

Document = Mapping[str, Any]
Stage = Callable[[Document], Document | None]
StageCompiler = Callable[[Any, str], Stage]

SPLIT_STAGE: Final = "$changeStreamSplitLargeEvent"
_REDACT_NAMES: Final = frozenset({"$$DESCEND", "$$PRUNE", "$$KEEP"})


def _refuse_redact_variables(spec: Any, where: str) -> None:
    """$$DESCEND, $$PRUNE and $$KEEP mean something only inside ``$redact``."""
    if isinstance(spec, str):
        if spec in _REDACT_NAMES:
            raise PipelineError(f"{where}: {spec} is only allowed in $redact")
    elif isinstance(spec, Mapping):
        for key, value in spec.items():
            if key != "$literal":
                _refuse_redact_variables(value, f"{where}.{key}")
    elif isinstance(spec, list):
        for index, item in enumerate(spec):
            _refuse_redact_variables(item, f"{where}.{index}")


def compile_match(spec: Any, where: str, *, aliases: bool = True) -> Callable[[Document], bool]:
    """``$match``: MongoDB's query language; on an event, with LauraDB's ``db``/``coll`` aliases.

    ``aliases`` is False after a reshaping stage: the document is no longer an
    event, and its own ``db`` or ``coll`` fields mean themselves.
    """
    if not isinstance(spec, Mapping):
        raise PipelineError(f"{where}: expected a filter document")
    return compile_filter(rewrite_event_aliases(spec) if aliases else spec)


def _compile_match_stage(spec: Any, where: str) -> Stage:
    predicate = compile_match(spec, where)
    return lambda document: document if predicate(document) else None


def _compile_project(spec: Any, where: str) -> Stage:
    _refuse_redact_variables(spec, where)
    tree, inclusion = parse_projection(spec, where)
    if not inclusion:
        return compile_exclusion(tree)
    include = compile_inclusion(tree)
    return lambda document: include(document, document)


def _compile_add_fields(spec: Any, where: str) -> Stage:
    _refuse_redact_variables(spec, where)
    add = compile_added_fields(parse_added_fields(spec, where))
    return lambda document: add(document, document)


def _compile_unset(spec: Any, where: str) -> Stage:
    return compile_exclusion(parse_unset(spec, where))


def _new_root(expression: Any, where: str, relative: str, name: str) -> Stage:
    _refuse_redact_variables(expression, where)
    evaluate = compile_expression(expression, relative)

    def replace(document: Document) -> Document:
        root = evaluate(document)
        if not isinstance(root, Mapping):
            raise PipelineError(
                f"{where}: {name} must evaluate to a document, got {type_name(root)}"
                + ("" if root is MISSING else f" {root!r}")
            )
        return root if type(root) is dict else dict(root)

    return replace


def _compile_replace_root(spec: Any, where: str) -> Stage:
    if not isinstance(spec, Mapping) or set(spec) != {"newRoot"}:
        raise PipelineError(f"{where}: expected {{newRoot: <expression>}}")
    return _new_root(spec["newRoot"], where, "newRoot", "'newRoot'")


def _compile_replace_with(spec: Any, where: str) -> Stage:
    return _new_root(spec, where, "", "the replacement")


def _compile_redact(spec: Any, where: str) -> Stage:
    """``$redact``: each level answers $$DESCEND (look inside), $$PRUNE (drop) or $$KEEP (keep whole)."""
    decide = compile_expression(spec, "")

    def decision(current: Document, root: Document) -> Any:
        verdict = decide(current if current is root else Frame(current, root))
        if verdict is DESCEND or verdict is PRUNE or verdict is KEEP:
            return verdict
        raise PipelineError(
            f"{where}: the expression must return $$DESCEND, $$PRUNE or $$KEEP, not "
            + (type_name(verdict) if verdict is MISSING else repr(verdict))
        )

    def level(current: Document, root: Document) -> Document | None:
        verdict = decision(current, root)
        if verdict is KEEP:
            return current
        if verdict is PRUNE:
            return None
        out: dict[str, Any] = {}
        for key, value in current.items():
            if isinstance(value, Mapping):
                kept = level(value, root)
                if kept is not None:
                    out[key] = kept
            elif isinstance(value, list):
                out[key] = array(value, root)
            else:
                out[key] = value
        return out

    def array(values: list[Any], root: Document) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if isinstance(value, Mapping):
                kept = level(value, root)
                if kept is not None:
                    out.append(kept)
            elif isinstance(value, list):
                out.append(array(value, root))
            else:
                out.append(value)
        return out

    return lambda document: level(document, document)


def _compile_split(spec: Any, where: str) -> Stage:
    if not isinstance(spec, Mapping) or spec:
        raise PipelineError(f"{where}: expected an empty document, {{}}")
    return lambda document: document  # the splitting itself happens after the pipeline


STAGES: Final[dict[str, StageCompiler]] = {
    "$match": _compile_match_stage,
    "$project": _compile_project,
    "$addFields": _compile_add_fields,
    "$set": _compile_add_fields,
    "$unset": _compile_unset,
    "$replaceRoot": _compile_replace_root,
    "$replaceWith": _compile_replace_with,
    "$redact": _compile_redact,
    SPLIT_STAGE: _compile_split,
}
FILTERS: Final = frozenset({"$match", SPLIT_STAGE})
"""Stages that never reshape an event: a pipeline of only these passes ChangeEvents through."""
