"""Planning a change stream: its options checked once, its pipeline split once, its steps wired once.

``WatchOptions`` is what ``watch()``, ``rxcs watch`` and ``rxcs serve`` ask
for, validated when it is made: a bad option is an ``RxcsError`` (an
``InvalidOptionError``, ``QueryError``, ``PipelineError`` or
``InvalidResumeToken``) naming what is wrong. ``StreamPlan`` is an oplog's
stream of those options, compiled:

- what its lanes read (``rxcs.source.Reads``): its namespace, and the
  entries its leading ``$match`` stages let through, tested on entries before
  they become events; streams whose reads are alike share one;
- how an entry becomes what the stream delivers: the steps of
  ``rxcs.steps`` (scope, conversion, the rest of the pipeline, the skip of a
  resumed stream) in one function, ``StreamPlan.stepper``;
- where it starts (``rxcs.source.resolve_start``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, final

from reactivex import abc

from rxcs.buffer import Overflow, check_buffer_args
from rxcs.consumers import Checkpointer, CommitPolicy, NamedConsumer, check_commit, pipeline_text
from rxcs.errors import ChangeStreamHistoryLost, InvalidOptionError, InvalidResumeToken
from rxcs.events import ChangeEvent, ClusterTime
from rxcs.groups import GroupMember, check_lease_ttl
from rxcs.log import log
from rxcs.oplog.base import Oplog
from rxcs.oplog.checkpoints import check_name
from rxcs.oplog.entry import OplogEntry
from rxcs.oplog.images import DocumentImages
from rxcs.pipeline import check_max_event_bytes, compile_pipeline
from rxcs.prefilter import EntryFilter, prefilter
from rxcs.source import Beginning, Reads, SelectionError, Start, StartAt, check_reading, resolve_start
from rxcs.steps import (
    END,
    PASS,
    FullDocument,
    FullDocumentBeforeChange,
    Lookup,
    Shaper,
    check_image_modes,
    check_scope,
    endings,
    entry_converter,
    not_split_any_more,
    scope_rule,
    shaper,
    shared_entry_converter,
    within_split,
)
from rxcs.tokens import ResumeToken

__all__ = ["ENDED", "YIELDED", "Skip", "Stepper", "Steps", "StreamPlan", "TokenLike", "WatchOptions"]

TokenLike = ResumeToken | str | Mapping[str, Any]
"""A resume token, its string, or an event's ``_id`` document."""

YIELDED: Final = 1
"""A stepper's answer: the entry gave the stream at least one event."""
ENDED: Final = 2
"""A stepper's answer: the entry ended the stream (an invalidate); nothing follows it."""



@final
@dataclass(frozen=True, slots=True)
class WatchOptions:
    """The options of a change stream, checked when made; see ``rxcs.watch`` for what each means.

    Tokens may be given as strings or ``_id`` documents: they are parsed
    here. A bad option raises an ``RxcsError`` naming it.

    Examples:
        >>> WatchOptions(db="shop", collection="users", full_document="updateLookup").full_document
        'updateLookup'
        >>> WatchOptions(collection="users")
        Traceback (most recent call last):
        ...
        rxcs.errors.InvalidOptionError: collection 'users' needs its database: give db too
    """

    db: str | None = None
    collection: str | None = None
    pipeline: Sequence[Mapping[str, Any]] | None = None
    resume_after: ResumeToken | None = field(default=None)
    start_after: ResumeToken | None = field(default=None)
    start_at_operation_time: StartAt | None = None
    full_document: FullDocument = "default"
    full_document_before_change: FullDocumentBeforeChange = "off"
    show_expanded_events: bool = False
    batch_size: int = 100
    max_await_time: float = 1.0
    buffer_size: int = 1000
    overflow: Overflow = "block"
    scheduler: abc.SchedulerBase | None = None
    lookup: Lookup | None = None
    max_event_bytes: int | None = None
    consumer: str | None = None
    commit: CommitPolicy | None = None
    reset_consumer: bool = False
    group: str | None = None
    member: str | None = None
    lease_ttl: float | None = None

    def __post_init__(self) -> None:
        check_scope(self.db, self.collection)
        if self.consumer is not None and self.group is not None:
            raise InvalidOptionError("give consumer= (one reader) or group= with member= (shared work), not both")
        if (self.group is None) != (self.member is None):
            raise InvalidOptionError("a group member needs both group= and member=")
        if self.group is not None:
            check_name(self.group, "group")
            check_name(self.member, "member")
            object.__setattr__(self, "lease_ttl", check_lease_ttl(10.0 if self.lease_ttl is None else self.lease_ttl))
            if self.reset_consumer:
                raise InvalidOptionError("reset_consumer= is for a named consumer; reset a group with rxcs consumers")
            if self.overflow != "block":
                raise InvalidOptionError(
                    f"a group member reads as it is iterated: overflow={self.overflow!r} does not apply"
                )
        elif self.lease_ttl is not None:
            raise InvalidOptionError("lease_ttl= is an option of a group member: give group= and member= too")
        if self.consumer is not None or self.group is not None:
            if self.consumer is not None:
                check_name(self.consumer)
            object.__setattr__(self, "commit", check_commit(self.commit))
        elif self.commit is not None or self.reset_consumer:
            raise InvalidOptionError("commit= and reset_consumer= are options of a named consumer: give consumer= too")
        if not isinstance(self.reset_consumer, bool):
            raise InvalidOptionError(f"reset_consumer must be True or False, not {self.reset_consumer!r}")
        given = [
            name for name in ("resume_after", "start_after", "start_at_operation_time")
            if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise InvalidOptionError(
                f"give at most one of resume_after, start_after, start_at_operation_time, not {given}"
            )
        pipeline = self.pipeline
        if pipeline is not None and (isinstance(pipeline, (str, bytes, Mapping)) or not isinstance(pipeline, Sequence)):
            raise InvalidOptionError(f"pipeline must be a list of stages, not {type(pipeline).__name__}")
        for name in ("resume_after", "start_after"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, ResumeToken.parse(value))
        if self.resume_after is not None and self.resume_after.invalidate:
            raise InvalidResumeToken(
                f"resume token {self.resume_after} is an invalidate event's: a stream cannot resume after it; "
                "use start_after= to start a new stream there"
            )
        at = self.start_at_operation_time
        if at is not None and not isinstance(at, (Beginning, datetime, ClusterTime)):
            raise InvalidOptionError(
                f"start_at_operation_time must be a datetime, a ClusterTime or rxcs.BEGINNING, not {at!r}"
            )
        check_image_modes(self.full_document, self.full_document_before_change, self.lookup)
        if not isinstance(self.show_expanded_events, bool):
            raise InvalidOptionError(f"show_expanded_events must be True or False, not {self.show_expanded_events!r}")
        check_reading(self.batch_size, self.max_await_time)
        check_buffer_args(self.buffer_size, self.overflow)
        if self.max_event_bytes is not None:
            check_max_event_bytes(self.max_event_bytes)
        if self.scheduler is not None and not isinstance(self.scheduler, abc.SchedulerBase):
            raise InvalidOptionError(f"scheduler must be a reactivex scheduler, not {self.scheduler!r}")

    @property
    def description(self) -> str:
        """The stream's namespace as logs and errors name it: ``the whole deployment``, ``db`` or ``db.collection``."""
        if self.db is None:
            return "the whole deployment"
        return self.db if self.collection is None else f"{self.db}.{self.collection}"


@final
class Skip:
    """What a subscription passes over before its first event: the events up to ``token`` (a resumed
    stream), or those recorded before ``not_before`` (a start at a time); each is None once passed."""

    __slots__ = ("not_before", "token")

    def __init__(self, token: ResumeToken | None, not_before: ClusterTime | None = None) -> None:
        self.token = token
        self.not_before = not_before

    @property
    def passed(self) -> bool:
        """True once nothing is left to pass over."""
        return self.token is None and self.not_before is None


Stepper = Callable[[OplogEntry, Callable[[Any], None], Skip | None], int]
"""``step(entry, emit, skip)``: emits what the stream delivers for the entry; answers ``YIELDED``/``ENDED`` bits."""


@final
class Steps:
    """What alike streams compile once and share: what they read, and their steps in one function.

    ``step`` converts through the converter alike streams share, which
    remembers the latest conversions for the next stream fed the same entry
    (the shared tailer feeds one batch to each of its streams in turn).
    ``own_step`` is the same steps with a converter of their own, for a
    stream that reads with its own cursor (``iterate()``): no other stream
    is ever fed its entries, so remembering them would only keep a batch of
    entries and events alive for the garbage collector to walk.
    """

    __slots__ = ("__weakref__", "_own_step", "_pieces", "reads", "step")

    def __init__(self, oplog_id: Hashable, options: WatchOptions, images: DocumentImages | None = None) -> None:
        stages = compile_pipeline(options.pipeline) if options.pipeline is not None else None
        full_document, before_change = options.full_document, options.full_document_before_change
        if images is not None:
            # The images an event gets may come from the oplog's document images, not from its entry: the
            # prefilter reads them from entries only where it cannot be otherwise ("required": never).
            full_document = "required" if full_document == "whenAvailable" else full_document
            before_change = "required" if before_change == "whenAvailable" else before_change
        found = prefilter(
            stages.leading_matches if stages is not None else (),
            full_document=full_document, full_document_before_change=before_change,
            show_expanded_events=options.show_expanded_events,
        )
        rule = scope_rule(options.db, options.collection)
        scope = None if options.db is None else (options.db, options.collection)
        key = (oplog_id, scope, found.key)
        self.reads = Reads.interned(key, lambda: Reads(key, scope, _selection(rule, found.entry_filter), found.sift))
        shape = shaper(stages.after(found.covered) if stages is not None else None, options.max_event_bytes)
        self.step = _stepper(
            rule, options.collection, found.entry_filter,
            shared_entry_converter(
                oplog_id, options.full_document, options.full_document_before_change,  # type: ignore[arg-type]
                options.show_expanded_events, options.lookup, images,
            ),
            shape, options.description,
        )
        self._pieces = (oplog_id, options, images, rule, found.entry_filter, shape)
        self._own_step: Stepper | None = None

    @property
    def own_step(self) -> Stepper:
        """The steps with a converter of their own (made when first asked for, then kept)."""
        own = self._own_step
        if own is None:
            oplog_id, options, images, rule, entry_filter, shape = self._pieces
            convert = entry_converter(
                oplog_id, options.full_document, options.full_document_before_change,  # type: ignore[arg-type]
                options.show_expanded_events, options.lookup, images,
            )
            own = self._own_step = _stepper(rule, options.collection, entry_filter, convert, shape, options.description)
        return own


_shared_steps: weakref.WeakValueDictionary[Hashable, Steps] = weakref.WeakValueDictionary()
_shared_steps_lock = threading.Lock()


def _steps_of(oplog_id: Any, options: WatchOptions, images: DocumentImages | None) -> Steps:
    """The compiled steps of these options: shared with every live stream of the same oplog and options."""
    if options.lookup is not None:  # a lookup may answer differently each time: its stream converts alone
        return Steps(oplog_id, options, images)
    key = (
        oplog_id, options.db, options.collection, repr(options.pipeline), options.full_document,
        options.full_document_before_change, options.show_expanded_events, options.max_event_bytes, images,
    )
    with _shared_steps_lock:
        steps = _shared_steps.get(key)
    if steps is None:
        steps = Steps(oplog_id, options, images)  # compiled outside the lock: a bad pipeline raises here
        with _shared_steps_lock:
            steps = _shared_steps.setdefault(key, steps)
    return steps


@final
class StreamPlan:
    """A stream of one oplog with one set of options, compiled once: what it reads, how it steps, where it starts."""

    __slots__ = ("_steps", "consumer", "oplog", "options")

    def __init__(self, oplog: Oplog, options: WatchOptions) -> None:
        token = options.resume_after or options.start_after
        if token is not None and token.oplog_id != oplog.oplog_id:
            raise InvalidResumeToken(
                f"resume token {token} comes from oplog {token.oplog_id}, not from this one ({oplog.oplog_id})"
            )
        self.oplog = oplog
        self.options = options
        # The images the oplog keeps now, if any is asked for: a stream planned before they were turned on has none.
        wants_images = options.full_document != "default" or options.full_document_before_change != "off"
        self._steps = _steps_of(oplog.oplog_id, options, oplog.document_images if wants_images else None)
        self.consumer: NamedConsumer | None = None
        if options.consumer is not None:
            assert options.commit is not None  # WatchOptions made it the policy
            self.consumer = NamedConsumer(
                oplog, options.consumer, options.db, options.collection, options.pipeline, options.commit,
                reset=options.reset_consumer,
            )

    @property
    def reads(self) -> Reads:
        """What the stream's lanes read of each batch."""
        return self._steps.reads

    @property
    def steps(self) -> Steps:
        """The stream's compiled steps, shared by every subscription of alike streams while one of them holds it."""
        return self._steps

    def begin(self) -> tuple[Start, Checkpointer | None]:
        """Resolve where a subscription starts, now, and (for a named consumer) what commits its position.

        A named consumer starts at its checkpoint; without one (or when reset)
        at the stream's own start, which is recorded as its checkpoint now.
        """
        consumer = self.consumer
        if consumer is None:
            return self.start(), None
        token = consumer.checkpoint()
        start = consumer.start(token) if token is not None else self.start()
        return start, consumer.register(start)

    def group_member(self) -> GroupMember | None:
        """A new member of the stream's group (one per held stream), or None when it is not a group's."""
        options = self.options
        if options.group is None:
            return None
        assert options.member is not None
        assert options.commit is not None
        assert options.lease_ttl is not None
        return GroupMember(
            self.oplog, options.group, options.member, options.db, options.collection,
            pipeline_text(options.pipeline), options.commit, options.lease_ttl,
        )

    def check_consumer(self) -> None:
        """Raise now what a named consumer's start would raise at subscribe: a mismatch, a lost history."""
        consumer = self.consumer
        if consumer is not None:
            token = consumer.checkpoint()
            if token is not None:
                consumer.start(token)

    def start(self) -> Start:
        """Resolve where a subscription starts, now (by its start options, not a named consumer's checkpoint)."""
        options = self.options
        token = options.resume_after or options.start_after
        try:
            return resolve_start(
                self.oplog, at=options.start_at_operation_time, token=token,
                start_after=options.start_after is not None,
            )
        except (ChangeStreamHistoryLost, InvalidResumeToken) as exc:
            raise type(exc)(f"watching {options.description}: {exc}") from None


def _stepper(
    rule: Callable[[OplogEntry], str],
    collection: str | None,
    ending_filter: EntryFilter | None,
    convert: Callable[[OplogEntry], ChangeEvent | None],
    shape: Shaper | None,
    description: str,
) -> Stepper:
    """The steps of ``rxcs.steps`` for one set of options, in one function: scope, conversion, skip, shaping."""

    def one(event: ChangeEvent | None, emit: Callable[[Any], None], skip: Skip | None) -> int:
        if event is None:
            return 0
        after_fragment = 0
        if skip is not None and skip.not_before is not None:
            if event.cluster_time < skip.not_before:
                return 0
            skip.not_before = None
        if skip is not None and skip.token is not None:
            token = skip.token
            if event.id <= token:
                if not within_split(event, token):
                    return 0
                after_fragment = token.fragment
            skip.token = None
            if after_fragment and shape is None:
                raise not_split_any_more(event, after_fragment)
        if shape is None:
            emit(event)
            return YIELDED
        outputs = shape(event)
        if after_fragment:
            if len(outputs) < 2:
                raise not_split_any_more(event, after_fragment)
            outputs = outputs[after_fragment:]
        for output in outputs:
            emit(output)
        return YIELDED if outputs else 0

    def step(entry: OplogEntry, emit: Callable[[Any], None], skip: Skip | None) -> int:
        verdict = rule(entry)
        if verdict is PASS:
            event = convert(entry)
            if skip is None and shape is None and event is not None:  # most entries: the event as it is
                emit(event)
                return YIELDED
            return one(event, emit, skip)
        if verdict is not END:
            return 0
        result = ENDED
        for ending in endings(entry, collection):
            if ending_filter is None or ending_filter(ending):
                result |= one(convert(ending), emit, skip)
        log.info("change stream invalidated", stream=description, op=entry.op, op_id=entry.op_id)
        return result

    return step


def _selection(
    rule: Callable[[OplogEntry], str], entry_filter: EntryFilter | None
) -> Callable[[list[OplogEntry]], list[OplogEntry]] | None:
    """What a stream reads of its namespace's entries: those its entry filter passes, and those that end it."""
    if entry_filter is None:
        return None

    def select(entries: list[OplogEntry]) -> list[OplogEntry]:
        kept: list[OplogEntry] = []
        keep = kept.append
        try:
            for entry in entries:
                if entry_filter(entry) or rule(entry) is END:
                    keep(entry)
        except Exception as exc:
            raise SelectionError(kept, exc) from exc
        return kept

    return select
