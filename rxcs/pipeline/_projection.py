"""Field specifications of ``$project``, ``$addFields``/``$set`` and ``$unset``, compiled to trees.

A specification becomes a tree keyed by field name; dotted paths and nested
documents both become sub-trees. A leaf is ``INCLUDE``, ``EXCLUDE`` or an
evaluator (a computed field). Applying a tree follows MongoDB:

- inclusion keeps included fields in the document's order, then appends
  computed fields in the specification's order; ``_id`` is kept unless
  excluded; through arrays, only documents are kept;
- exclusion removes fields and keeps everything else where it was;
- added fields replace a field in place or append a new one, reach into
  every document of an array, and ``$$REMOVE`` removes the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final, final

from rxcs.errors import PipelineError
from rxcs.query import MISSING, Evaluator, compile_expression

__all__ = [
    "EXCLUDE",
    "INCLUDE",
    "Tree",
    "compile_added_fields",
    "compile_exclusion",
    "compile_inclusion",
    "parse_added_fields",
    "parse_projection",
    "parse_unset",
]

Document = Mapping[str, Any]


@final
class _Flag:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INCLUDE: Final = _Flag("INCLUDE")
EXCLUDE: Final = _Flag("EXCLUDE")
Tree = dict[str, Any]  # field name -> INCLUDE | EXCLUDE | Evaluator | Tree


def _is_operator_document(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(key, str) and key.startswith("$") for key in value)


def _check_field(key: Any, where: str) -> list[str]:
    if not isinstance(key, str):
        raise PipelineError(f"{where}: field name {key!r} is not a string")
    parts = key.split(".")
    if not key or any(not part for part in parts):
        raise PipelineError(f"{where}.{key}: bad field path")
    if any(part.startswith("$") for part in parts):
        raise PipelineError(f"{where}.{key}: field names may not start with '$'")
    return parts


def _place(tree: Tree, parts: list[str], leaf: Any, where: str) -> None:
    """Put ``leaf`` at ``parts`` in ``tree``; a path set twice, or through a leaf, is a collision."""
    node = tree
    for index, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PipelineError(f"{where}.{'.'.join(parts)}: path collision at {'.'.join(parts[: index + 1])}")
        node = child
    last = parts[-1]
    if last not in node:
        node[last] = leaf
        return
    existing = node[last]
    if isinstance(existing, dict) and isinstance(leaf, dict):  # {"a.b": 1, "a": {"c": 1}}: one sub-tree
        for key, child in leaf.items():
            _place(existing, [key], child, f"{where}.{'.'.join(parts)}")
        return
    raise PipelineError(f"{where}.{'.'.join(parts)}: path collision at {'.'.join(parts)}")


def _parse(spec: Mapping[str, Any], where: str, relative: str, leaf: Callable[[Any, str], Any]) -> Tree:
    tree: Tree = {}
    for key, value in spec.items():
        parts = _check_field(key, where)
        path = f"{relative}.{key}" if relative else key
        if isinstance(value, Mapping) and value and not _is_operator_document(value):
            _place(tree, parts, _parse(value, f"{where}.{key}", path, leaf), where)
        else:
            _place(tree, parts, leaf(value, path), where)
    return tree


def _flags(tree: Tree) -> set[str]:
    """Which kinds of leaves a tree holds: include, exclude, computed."""
    kinds: set[str] = set()
    for node in tree.values():
        if node is INCLUDE:
            kinds.add("include")
        elif node is EXCLUDE:
            kinds.add("exclude")
        elif isinstance(node, dict):
            kinds |= _flags(node)
        else:
            kinds.add("computed")
    return kinds


def _first(tree: Tree, wanted: Callable[[Any], bool], prefix: str = "") -> str:
    for key, node in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(node, dict):
            found = _first(node, wanted, path)
            if found:
                return found
        elif wanted(node):
            return path
    return ""


def parse_projection(spec: Any, where: str) -> tuple[Tree, bool]:
    """Parse a ``$project`` specification into its tree and whether it is an inclusion."""
    if not isinstance(spec, Mapping):
        raise PipelineError(f"{where}: expected a document of fields, got {type(spec).__name__}")
    if not spec:
        raise PipelineError(f"{where}: a projection needs at least one field")

    def leaf(value: Any, path: str) -> Any:
        if isinstance(value, (bool, int, float, Decimal)):
            return INCLUDE if value else EXCLUDE
        if isinstance(value, Mapping) and not value:
            raise PipelineError(f"{where}.{path}: an empty sub-projection is not allowed")
        return compile_expression(value, path)

    tree = _parse(spec, where, "", leaf)
    # A top-level _id of 0 or 1 fits either kind of projection; only the other fields decide.
    id_node = tree.get("_id")
    id_flag = id_node is INCLUDE or id_node is EXCLUDE
    rest = {key: node for key, node in tree.items() if key != "_id" or not id_flag}
    kinds = _flags(rest)
    if "exclude" in kinds or (not kinds and id_node is EXCLUDE):
        if "include" in kinds:
            field = _first(rest, lambda node: node is INCLUDE)
            raise PipelineError(f"{where}.{field}: cannot do inclusion in an exclusion projection")
        if "computed" in kinds:
            field = _first(rest, lambda node: node is not INCLUDE and node is not EXCLUDE)
            raise PipelineError(f"{where}.{field}: cannot compute a field in an exclusion projection")
        if id_node is INCLUDE:  # kept anyway
            del tree["_id"]
        return tree, False
    if id_node is EXCLUDE:
        del tree["_id"]
    elif "_id" not in tree:
        tree = {"_id": INCLUDE, **tree}
    return tree, True


def parse_unset(spec: Any, where: str) -> Tree:
    """Parse ``$unset``: a field path or a non-empty list of them."""
    fields = [spec] if isinstance(spec, str) else spec
    if not isinstance(fields, list) or not fields:
        raise PipelineError(f"{where}: expected a field path or a non-empty list of field paths")
    tree: Tree = {}
    for index, field in enumerate(fields):
        if not isinstance(field, str):
            raise PipelineError(f"{where}.{index}: expected a field path, got {field!r}")
        _place(tree, _check_field(field, where), EXCLUDE, where)
    return tree


def parse_added_fields(spec: Any, where: str) -> Tree:
    """Parse ``$addFields``/``$set``: every leaf is an expression (``1`` is the number one)."""
    if not isinstance(spec, Mapping):
        raise PipelineError(f"{where}: expected a document of fields, got {type(spec).__name__}")
    if not spec:
        raise PipelineError(f"{where}: needs at least one field")

    def leaf(value: Any, path: str) -> Evaluator:
        return compile_expression(value, path)

    return _parse(spec, where, "", leaf)


# -- compiling trees into closures ------------------------------------------------------

Project = Callable[[Document], dict[str, Any]]
Reshape = Callable[[Document, Document], dict[str, Any]]  # (document, root) -> new document
_Compute = Callable[[dict[str, Any], Document], None]  # adds computed fields into a new document


def compile_inclusion(tree: Tree) -> Reshape:
    """An inclusion: included fields in the document's order, then computed ones in the spec's."""
    project = _projector(tree)
    compute = _computer(tree)
    if compute is None:
        return lambda document, _root: project(document)

    def include(document: Document, root: Document) -> dict[str, Any]:
        out = project(document)
        compute(out, root)
        return out

    return include


def _projector(tree: Tree) -> Project:
    children: dict[str, Callable[[Any], Any] | None] = {}
    for key, node in tree.items():
        if node is INCLUDE:
            children[key] = None
        elif type(node) is dict:
            children[key] = _value_projector(_projector(node))

    def project(document: Document) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in document.items():
            if key in children:
                child = children[key]
                if child is None:
                    out[key] = value
                else:
                    kept = child(value)
                    if kept is not MISSING:
                        out[key] = kept
        return out

    return project


def _value_projector(project: Project) -> Callable[[Any], Any]:
    """Through a sub-tree: a document is projected, an array element-wise (documents only)."""

    def project_value(value: Any) -> Any:
        if isinstance(value, Mapping):
            return project(value)
        if isinstance(value, list):
            return [project_value(item) for item in value if isinstance(item, (Mapping, list))]
        return MISSING

    return project_value


def _computer(tree: Tree) -> _Compute | None:
    steps: list[tuple[str, Evaluator | None, _Compute | None]] = []
    for key, node in tree.items():
        if node is INCLUDE or node is EXCLUDE:
            continue
        if type(node) is dict:
            nested = _computer(node)
            if nested is not None:
                steps.append((key, None, nested))
        else:
            steps.append((key, node, None))
    if not steps:
        return None

    def compute(out: dict[str, Any], root: Document) -> None:
        for key, evaluate, nested in steps:
            if evaluate is not None:
                value = evaluate(root)
                if value is not MISSING:
                    out[key] = value
            else:
                assert nested is not None
                out[key] = _compute_into(out.get(key, MISSING), nested, root)

    return compute


def _compute_into(value: Any, compute: _Compute, root: Document) -> Any:
    """Computed fields under a path reach every document of an array; a non-document becomes one."""
    if isinstance(value, list):
        return [_compute_into(item, compute, root) for item in value]
    out = dict(value) if isinstance(value, Mapping) else {}
    compute(out, root)
    return out


def compile_exclusion(tree: Tree) -> Project:
    """An exclusion: every field not excluded stays where it was."""
    children: dict[str, Callable[[Any], Any] | None] = {}
    for key, node in tree.items():
        children[key] = None if node is EXCLUDE else _value_excluder(compile_exclusion(node))

    def exclude(document: Document) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in document.items():
            if key in children:
                child = children[key]
                if child is not None:
                    out[key] = child(value)
            else:
                out[key] = value
        return out

    return exclude


def _value_excluder(exclude: Project) -> Callable[[Any], Any]:
    def exclude_value(value: Any) -> Any:
        if isinstance(value, Mapping):
            return exclude(value)
        if isinstance(value, list):
            return [exclude_value(item) for item in value]
        return value

    return exclude_value


def compile_added_fields(tree: Tree) -> Reshape:
    """``$addFields``: set a field in place or append it; ``$$REMOVE`` removes it."""
    steps: list[tuple[str, Evaluator | None, Reshape | None]] = [
        (key, None, compile_added_fields(node)) if type(node) is dict else (key, node, None)
        for key, node in tree.items()
    ]

    def add(document: Document, root: Document) -> dict[str, Any]:
        out = dict(document)
        for key, evaluate, nested in steps:
            if evaluate is not None:
                value = evaluate(root)
                if value is MISSING:
                    out.pop(key, None)
                else:
                    out[key] = value
            else:
                assert nested is not None
                out[key] = _add_into(out.get(key, MISSING), nested, root)
        return out

    return add


def _add_into(value: Any, add: Reshape, root: Document) -> Any:
    if isinstance(value, list):
        return [_add_into(item, add, root) for item in value]
    return add(value if isinstance(value, Mapping) else {}, root)
