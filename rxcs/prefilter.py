"""``$match`` on oplog entries, before they become change events.

Most change-stream filters read a few fields that an oplog entry already
holds as they will appear in the event: ``operationType``, ``ns``,
``documentKey``, ``fullDocument``, ``updateDescription``... Evaluating such a
filter on those fields, taken straight from the entry, gives the same answer
as evaluating it on the event's document, and an entry that fails it is
never turned into an event, never given a resume token, never shaped into a
document. Filters that read anything else (``_id``, ``wallTime``, a looked-up
post-image, ``$expr``) are not pre-filtered: ``entry_filter`` says None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from rxcs.events import OperationType
from rxcs.oplog.entry import OplogEntry
from rxcs.query import MISSING, compile_filter, rewrite_event_aliases, top_level_fields

__all__ = ["EntryFilter", "entry_filter", "leading_match_filter"]

EntryFilter = Callable[[OplogEntry], bool]
Getter = Callable[[OplogEntry], Any]

_WITH_PRE_IMAGE: Final = frozenset({"update", "replace", "delete"})
_KNOWN_OPERATIONS: Final = frozenset(str(op) for op in OperationType)


def _ns(entry: OplogEntry) -> Any:
    if entry.op == "invalidate":
        return MISSING
    return {"db": entry.db} if entry.coll is None else {"db": entry.db, "coll": entry.coll}


def _optional(name: str) -> Getter:
    def get(entry: OplogEntry) -> Any:
        value = getattr(entry, name)
        return MISSING if value is None else value

    return get


def _to(entry: OplogEntry) -> Any:
    return MISSING if entry.to is None else entry.to.to_document()


def _full_document(mode: str) -> Getter | None:
    if mode == "default":  # updates carry no document; inserts and replaces theirs
        return lambda entry: (
            MISSING if entry.op == "update" or entry.full_document is None else entry.full_document
        )
    if mode == "whenAvailable":  # updates: the post-image or null
        return lambda entry: (
            entry.full_document if entry.op == "update"
            else MISSING if entry.full_document is None else entry.full_document
        )
    return None  # updateLookup calls the user's lookup; required may fail: only the event knows


def _before_change(mode: str) -> Getter | None:
    if mode == "off":
        return lambda _entry: MISSING
    if mode == "whenAvailable":
        return lambda entry: entry.full_document_before_change if entry.op in _WITH_PRE_IMAGE else MISSING
    return None


def _getters(full_document: str, full_document_before_change: str) -> dict[str, Getter | None]:
    """How each event field is read from an entry under these image modes (None: it cannot be)."""
    return {
        "operationType": lambda entry: entry.op,
        "ns": _ns,
        "clusterTime": lambda entry: entry.cluster_time,
        "documentKey": _optional("document_key"),
        "updateDescription": _optional("update_description"),
        "fullDocument": _full_document(full_document),
        "fullDocumentBeforeChange": _before_change(full_document_before_change),
        "to": _to,
        "operationDescription": _optional("operation_description"),
        "txnNumber": _optional("txn_number"),
    }


def entry_filter(
    spec: Mapping[str, Any], *, full_document: str = "default", full_document_before_change: str = "off"
) -> EntryFilter | None:
    """A predicate on entries equal to ``spec`` on their events' documents, or None.

    ``spec`` is a filter on change-event documents (LauraDB's ``db``/``coll``
    aliases allowed). None when it reads a field an entry does not hold as
    the event will show it. An entry whose operation is unknown passes, so
    the conversion that follows reports it.

    Examples:
        >>> from rxcs.oplog import Change, MemoryOplog
        >>> oplog = MemoryOplog()
        >>> _ = oplog.insert("shop", "users", {"_id": 1, "status": "paid"})
        >>> paid = entry_filter({"fullDocument.status": "paid"})
        >>> [paid(entry) for entry in oplog.cursor(0).read(10)]
        [True]
        >>> entry_filter({"wallTime": {"$gt": 0}}) is None
        True
    """
    spec = rewrite_event_aliases(spec)
    fields = top_level_fields(spec)
    if fields is None:
        return None
    available = _getters(full_document, full_document_before_change)
    getters: list[tuple[str, Getter]] = []
    for name in sorted(fields):
        getter = available.get(name)
        if getter is None:
            return None
        getters.append((name, getter))
    predicate = compile_filter(spec)
    known = _KNOWN_OPERATIONS

    if len(getters) == 1:
        ((name, get),) = getters

        def one_field(entry: OplogEntry) -> bool:
            if entry.op not in known:
                return True
            value = get(entry)
            return predicate({} if value is MISSING else {name: value})

        return one_field

    def fields_of(entry: OplogEntry) -> bool:
        if entry.op not in known:
            return True
        document = {}
        for key, get in getters:
            value = get(entry)
            if value is not MISSING:
                document[key] = value
        return predicate(document)

    return fields_of


def leading_match_filter(
    stages: Sequence[Mapping[str, Any]], *, full_document: str = "default", full_document_before_change: str = "off"
) -> tuple[EntryFilter | None, int]:
    """The entry filter of a pipeline's leading ``$match`` stages, and how many stages it covers.

    Call it on a pipeline that compiles. ``(None, 0)`` when the first stage
    cannot be evaluated on entries; when it covers every stage, the pipeline
    needs no other evaluation.

    Examples:
        >>> check, covered = leading_match_filter(
        ...     [{"$match": {"operationType": "insert"}}, {"$match": {"ns.coll": "users"}}])
        >>> covered
        2
    """
    filters: list[EntryFilter] = []
    for stage in stages:
        spec = stage.get("$match") if len(stage) == 1 else None
        if not isinstance(spec, Mapping):
            break
        check = entry_filter(spec, full_document=full_document, full_document_before_change=full_document_before_change)
        if check is None:
            break
        filters.append(check)
    if not filters:
        return None, 0
    if len(filters) == 1:
        return filters[0], 1
    return (lambda entry: all(check(entry) for check in filters)), len(filters)
