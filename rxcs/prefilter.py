"""``$match`` on oplog entries, before they become change events.

Most change-stream filters read a few fields that an oplog entry already
holds as they will appear in the event: ``operationType``, ``ns``,
``documentKey``, ``fullDocument``, ``updateDescription``... Evaluating such a
filter on those fields, taken straight from the entry, gives the same answer
as evaluating it on the event's document, and an entry that fails it is
never turned into an event, never given a resume token, never shaped into a
document. Filters that read anything else (``_id``, ``wallTime``, a looked-up
post-image, ``$expr``) are not pre-filtered: ``entry_filter`` says None.

A filter that can be pre-filtered and asks for strings (``{"fullDocument.status":
"paid"}``, ``$eq``, ``$in``, ``$all``) also gives a ``Sift`` for the cursor: an
entry that holds such a string holds its UTF-8 bytes, so a record in which
none of a required string's bytes occur cannot match, and the cursor leaves
it undecoded. Only records of inserts, updates, replaces and deletes are left
out that way: the records that end a stream (drop, rename, dropDatabase), and
any the conversion would refuse, always reach it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from rxcs.events import OperationType
from rxcs.expanded import operation_description, update_description_document
from rxcs.oplog.base import Sift
from rxcs.oplog.codec import DATA_CHANGE_HEAD, needle_sift
from rxcs.oplog.entry import OplogEntry
from rxcs.pipeline import compile_pipeline
from rxcs.query import MISSING, compile_filter, rewrite_event_aliases, top_level_fields

__all__ = ["EntryFilter", "Prefilter", "entry_filter", "leading_match_filter", "leading_match_sift", "prefilter"]

EntryFilter = Callable[[OplogEntry], bool]
Getter = Callable[[OplogEntry], Any]
Predicate = Callable[[Mapping[str, Any]], bool]
Match = tuple[Mapping[str, Any], Predicate]
"""A ``$match`` stage: its filter (LauraDB's aliases rewritten) and its compiled predicate."""


@final
@dataclass(frozen=True, slots=True)
class Prefilter:
    """What a stream's leading ``$match`` stages let it do before entries become events.

    ``entry_filter`` answers as the first ``covered`` stages would on the
    events (None: none can be tested on entries); ``sift`` leaves out
    records that cannot match, undecoded; ``key`` is equal for streams whose
    prefilters are alike, so they can share one selection of each batch.
    """

    entry_filter: EntryFilter | None
    covered: int
    sift: Sift | None
    key: Hashable


def prefilter(
    matches: Sequence[Match],
    *,
    full_document: str = "default",
    full_document_before_change: str = "off",
    show_expanded_events: bool = False,
) -> Prefilter:
    """The prefilter of a pipeline's leading ``$match`` stages, already compiled (``CompiledPipeline.leading_matches``).

    Examples:
        >>> from rxcs.pipeline import compile_pipeline
        >>> stages = compile_pipeline([{"$match": {"fullDocument.status": "paid"}}, {"$match": {"wallTime": 1}}])
        >>> found = prefilter(stages.leading_matches)
        >>> found.covered, found.sift is not None
        (1, True)
    """
    usable: list[tuple[Mapping[str, Any], Predicate, list[tuple[str, Getter]]]] = []
    for spec, predicate in matches:
        getters = _entry_getters(spec, full_document, full_document_before_change, show_expanded_events)
        if getters is None:
            break
        usable.append((spec, predicate, getters))
    if not usable:
        return Prefilter(None, 0, None, None)
    filters = [_on_entries(predicate, getters) for _, predicate, getters in usable]
    check = filters[0] if len(filters) == 1 else (lambda entry: all(test(entry) for test in filters))
    groups = tuple(group for spec, _, _ in usable for group in _required_strings(spec))
    key = (
        tuple(repr(spec) for spec, _, _ in usable), full_document, full_document_before_change, show_expanded_events
    )
    return Prefilter(check, len(usable), _sift(groups) if groups else None, key)

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


def _update_description(expanded: bool) -> Getter:
    def get(entry: OplogEntry) -> Any:
        document = update_description_document(entry, expanded)
        return MISSING if document is None else document

    return get


def _operation_description(expanded: bool) -> Getter:
    def get(entry: OplogEntry) -> Any:
        description = operation_description(entry, expanded)
        return MISSING if description is None else description

    return get


def _getters(full_document: str, full_document_before_change: str, expanded: bool) -> dict[str, Getter | None]:
    """How each event field is read from an entry under these modes (None: it cannot be).

    ``updateDescription`` and ``operationDescription`` are read as
    ``rxcs.expanded`` makes them for the event, with or without expanded
    events, so the entry filter and the event agree.
    """
    return {
        "operationType": lambda entry: entry.op,
        "ns": _ns,
        "clusterTime": lambda entry: entry.cluster_time,
        "documentKey": _optional("document_key"),
        "updateDescription": _update_description(expanded),
        "fullDocument": _full_document(full_document),
        "fullDocumentBeforeChange": _before_change(full_document_before_change),
        "to": _to,
        "operationDescription": _operation_description(expanded),
        "txnNumber": _optional("txn_number"),
    }


def entry_filter(
    spec: Mapping[str, Any],
    *,
    full_document: str = "default",
    full_document_before_change: str = "off",
    show_expanded_events: bool = False,
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
    getters = _entry_getters(spec, full_document, full_document_before_change, show_expanded_events)
    return None if getters is None else _on_entries(compile_filter(spec), getters)


def _on_entries(predicate: Predicate, getters: list[tuple[str, Getter]]) -> EntryFilter:
    """A filter's ``predicate`` on entries, reading the fields it needs with ``getters``."""
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


def _entry_getters(
    spec: Mapping[str, Any], full_document: str, full_document_before_change: str, expanded: bool
) -> list[tuple[str, Getter]] | None:
    """How to read from an entry each top-level field ``spec`` (aliases rewritten) reads; None if one cannot be."""
    fields = top_level_fields(spec)
    if fields is None:
        return None
    available = _getters(full_document, full_document_before_change, expanded)
    getters: list[tuple[str, Getter]] = []
    for name in sorted(fields):
        getter = available.get(name)
        if getter is None:
            return None
        getters.append((name, getter))
    return getters


def leading_match_filter(
    stages: Sequence[Mapping[str, Any]],
    *,
    full_document: str = "default",
    full_document_before_change: str = "off",
    show_expanded_events: bool = False,
) -> tuple[EntryFilter | None, int]:
    """The entry filter of a pipeline's leading ``$match`` stages, and how many stages it covers.

    ``(None, 0)`` when the first stage cannot be evaluated on entries; when
    it covers every stage, the pipeline needs no other evaluation.

    Examples:
        >>> check, covered = leading_match_filter(
        ...     [{"$match": {"operationType": "insert"}}, {"$match": {"ns.coll": "users"}}])
        >>> covered
        2
    """
    found = prefilter(
        compile_pipeline(stages).leading_matches,
        full_document=full_document, full_document_before_change=full_document_before_change,
        show_expanded_events=show_expanded_events,
    )
    return found.entry_filter, found.covered


def leading_match_sift(
    stages: Sequence[Mapping[str, Any]],
    *,
    full_document: str = "default",
    full_document_before_change: str = "off",
    show_expanded_events: bool = False,
) -> Sift | None:
    """A cursor's ``Sift`` for the strings the leading ``$match`` stages require, or None if they require none.

    It passes every record the stages' entry filter (``leading_match_filter``)
    could pass, so leaving out what it fails changes no stream's events.

    Examples:
        >>> from rxcs.oplog.codec import encode_entry
        >>> from rxcs.events import ClusterTime
        >>> from rxcs.oplog import Change
        >>> sift = leading_match_sift([{"$match": {"fullDocument.status": "paid"}}])
        >>> def record(status):
        ...     change = Change.insert("shop", "users", {"_id": 1, "status": status})
        ...     return encode_entry(1, ClusterTime(1, 1), 0, change)
        >>> [sift(data, 0, len(data)) for data in (record("paid"), record("new"))]
        [True, False]
    """
    return prefilter(
        compile_pipeline(stages).leading_matches,
        full_document=full_document, full_document_before_change=full_document_before_change,
        show_expanded_events=show_expanded_events,
    ).sift


def _required_strings(spec: Mapping[str, Any]) -> list[tuple[bytes, ...]]:
    """Groups of UTF-8 strings: a document matching ``spec`` holds at least one string of every group."""
    groups: list[tuple[bytes, ...]] = []
    for key, value in spec.items():
        if key == "$and":
            for clause in value:
                groups.extend(_required_strings(clause))
        elif not key.startswith("$"):  # $or, $nor, $expr, $comment...: nothing every match must hold
            group = _strings_of_condition(value)
            if group:
                groups.append(group)
    return groups


def _strings_of_condition(condition: Any) -> tuple[bytes, ...] | None:
    """The strings one of which a field's value (or an element of it) equals when ``condition`` holds."""
    if isinstance(condition, str):
        return _encoded((condition,))
    if not (isinstance(condition, Mapping) and condition and all(str(op).startswith("$") for op in condition)):
        return None  # a whole embedded document, a number, null...: no string to look for
    for operator, argument in condition.items():
        if operator == "$eq" and isinstance(argument, str):
            return _encoded((argument,))
        if (operator in ("$in", "$all") and isinstance(argument, (list, tuple)) and argument
                and all(isinstance(item, str) for item in argument)):
            # $in: the value equals one of them; $all: it holds each of them, so the first will do.
            return _encoded(tuple(argument) if operator == "$in" else (argument[0],))
    return None


def _encoded(strings: tuple[str, ...]) -> tuple[bytes, ...] | None:
    try:
        needles = tuple(dict.fromkeys(string.encode("utf-8") for string in strings))
    except UnicodeEncodeError:  # a lone surrogate: no entry can hold it, but say nothing rather than guess
        return None
    return None if b"" in needles else needles


_sifts: weakref.WeakValueDictionary[tuple[tuple[bytes, ...], ...], Sift] = weakref.WeakValueDictionary()
_sifts_lock = threading.Lock()


def _sift(groups: tuple[tuple[bytes, ...], ...]) -> Sift:
    """The sift for these groups: alike streams get the same one (while one lives), so a shared cursor uses it."""
    with _sifts_lock:
        found = _sifts.get(groups)
        if found is None:
            found = _sifts[groups] = _make_sift(groups)
        return found


def _make_sift(groups: tuple[tuple[bytes, ...], ...]) -> Sift:
    if len(groups) == 1 and len(groups[0]) == 1:
        return needle_sift(groups[0][0])
    data_change = DATA_CHANGE_HEAD.match

    def sift(data: bytes, start: int, end: int) -> bool:
        for group in groups:
            for needle in group:
                if data.find(needle, start, end) >= 0:
                    break
            else:
                return data_change(data, start, end) is None
        return True

    return sift
