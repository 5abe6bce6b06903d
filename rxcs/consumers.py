"""Named consumers: a stream whose position the oplog keeps, committed as its events are handled.

``rxcs.watch(oplog, "shop", "orders", consumer="billing")`` starts where the
checkpoint of ``billing`` says, or (the first time, or with
``reset_consumer=True``) where the stream's own start options say, and
records that start at once, so a consumer killed before its first commit
still resumes there. A ``Checkpointer`` then commits the position of the
events its subscriber handled, by the stream's commit policy:

- ``"each"``: after every handled event (an ``on_next`` that returned, an
  iterator advanced past the event);
- ``CommitEvery(events=N, seconds=T)`` (the default: 1,000 events or 1 s):
  when either is reached, checked as events are handled and, for a held
  stream, each time it waits for more; and when the stream ends or closes;
- ``"manual"``: only ``stream.commit()``.

A checkpoint is a record in the oplog's ``checkpoints`` store: its token,
the first op_id it still needs (``needs_op_id``, what retention keeps with
``retain_for_consumers=True``), the stream's scope and pipeline (a start with
other ones is a ``ConsumerMismatchError``), and when it was committed.
``list_consumers``, ``reset_consumer`` and ``delete_consumer`` are the
inspection API, which ``rxcs consumers`` and ``GET /consumers`` use.

The guarantee is at-least-once: an event is committed only after it was
handled, so a crash hands the events after the last commit to the next run
again. A handler that commits its side effects together with the event's
token in one transaction (``examples/sync_to_sqlite.py``) and skips events at
or before the token it stored gets exactly-once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, final

from rxcs import extjson
from rxcs.errors import (
    ChangeStreamHistoryLost,
    ConsumerMismatchError,
    InvalidOptionError,
    InvalidResumeToken,
    RxcsError,
)
from rxcs.oplog.base import Oplog
from rxcs.oplog.checkpoints import Record, check_name
from rxcs.source import Beginning, Start, high_water_token, resolve_start
from rxcs.tokens import ResumeToken

__all__ = [
    "CommitEvery",
    "CommitPolicy",
    "ConsumerInfo",
    "Checkpointer",
    "NamedConsumer",
    "check_commit",
    "delete_consumer",
    "list_consumers",
    "reset_consumer",
]

RECORD_VERSION: Final = 1


@final
@dataclass(frozen=True, slots=True)
class CommitEvery:
    """Commit a named consumer's position every ``events`` handled events or ``seconds`` seconds, whichever first.

    Either may be None (not that rule); not both.

    Examples:
        >>> CommitEvery(events=100, seconds=None)
        CommitEvery(events=100, seconds=None)
        >>> CommitEvery(events=None, seconds=None)
        Traceback (most recent call last):
        ...
        rxcs.errors.InvalidOptionError: CommitEvery needs events or seconds (or both)
    """

    events: int | None = 1000
    seconds: float | None = 1.0

    def __post_init__(self) -> None:
        events, seconds = self.events, self.seconds
        if events is None and seconds is None:
            raise InvalidOptionError("CommitEvery needs events or seconds (or both)")
        if events is not None and (isinstance(events, bool) or not isinstance(events, int) or events < 1):
            raise InvalidOptionError(f"CommitEvery events must be a positive int or None, not {events!r}")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
        ):
            raise InvalidOptionError(f"CommitEvery seconds must be a positive number or None, not {seconds!r}")


CommitPolicy = Literal["each", "manual"] | CommitEvery
"""How a named consumer commits: ``"each"`` handled event, ``"manual"`` (``stream.commit()``), or ``CommitEvery``."""

DEFAULT_COMMIT: Final = CommitEvery()


def check_commit(commit: object) -> CommitPolicy:
    """The commit policy ``commit`` names (None: the default); ``InvalidOptionError`` for anything else."""
    if commit is None:
        return DEFAULT_COMMIT
    if commit in ("each", "manual") or isinstance(commit, CommitEvery):
        return commit
    raise InvalidOptionError(f"commit must be 'each', 'manual' or a CommitEvery(events=, seconds=), not {commit!r}")


def needs_op_id(token: ResumeToken) -> int:
    """The first op_id a stream resuming at ``token`` reads: the token's own entry, unless nothing of it is left."""
    return token.op_id + 1 if token.high_water or token.invalidate else token.op_id


def pipeline_text(pipeline: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The pipeline as a checkpoint records it (Extended JSON), to tell whether a later start has the same one."""
    if pipeline is None:
        return None
    try:
        return extjson.dumps(list(pipeline))
    except (TypeError, ValueError):
        return repr(list(pipeline))


# -- a named consumer's start and commits ---------------------------------------------------------


@final
class NamedConsumer:
    """What a stream with ``consumer=`` knows of itself: its name, scope and pipeline, and its commit policy."""

    __slots__ = ("_reset_pending", "collection", "db", "name", "oplog", "pipeline", "policy")

    def __init__(
        self,
        oplog: Oplog,
        name: str,
        db: str | None,
        collection: str | None,
        pipeline: Sequence[Mapping[str, Any]] | None,
        policy: CommitPolicy,
        *,
        reset: bool,
    ) -> None:
        self.oplog = oplog
        self.name = name
        self.db = db
        self.collection = collection
        self.pipeline = pipeline_text(pipeline)
        self.policy = policy
        self._reset_pending = reset

    def checkpoint(self) -> ResumeToken | None:
        """The consumer's checkpoint, checked against this stream (None: none yet, or a reset is pending).

        Raises ``ConsumerMismatchError`` when it was made by a stream of
        another scope or pipeline, ``InvalidResumeToken`` when it is another
        oplog's, and ``ChangeStreamHistoryLost`` when the oplog no longer
        holds what it needs.
        """
        if self._reset_pending:
            return None
        record = self.oplog.checkpoints.load(self.name)
        if record is None:
            return None
        token = record_token(self.oplog, self.name, record, kind="consumer")
        found = (record.get("db"), record.get("collection"), record.get("pipeline"))
        if found != (self.db, self.collection, self.pipeline):
            raise ConsumerMismatchError(
                f"consumer {self.name!r} was committed by a stream of {_scope(found[0], found[1])} with pipeline "
                f"{found[2] or '[]'}, not of {_scope(self.db, self.collection)} with pipeline {self.pipeline or '[]'}: "
                "give reset_consumer=True to start it over with this stream, or use another name"
            )
        return token

    def start(self, token: ResumeToken) -> Start:
        """Where a stream resuming from checkpoint ``token`` starts."""
        try:
            return resolve_start(self.oplog, token=token, start_after=token.invalidate)
        except (ChangeStreamHistoryLost, InvalidResumeToken) as exc:
            raise type(exc)(f"consumer {self.name!r}: {exc}") from None

    def register(self, start: Start) -> Checkpointer:
        """Record ``start`` as the consumer's checkpoint when it had none (or is reset) and return its committer."""
        existing = self.oplog.checkpoints.load(self.name) if not self._reset_pending else None
        checkpointer = Checkpointer(self, start.token, existing)
        if existing is None:
            checkpointer.write(start.token)
        self._reset_pending = False
        return checkpointer

    def record(self, token: ResumeToken, created_at: float, commits: int) -> Record:
        """The checkpoint record of this consumer at ``token``."""
        return {
            "kind": "consumer", "version": RECORD_VERSION, "oplog_id": str(self.oplog.oplog_id),
            "token": str(token), "op_id": token.op_id, "needs_op_id": needs_op_id(token),
            "db": self.db, "collection": self.collection, "pipeline": self.pipeline,
            "created_at": created_at, "committed_at": time.time(), "commits": commits,
        }


@final
class Checkpointer:
    """Commits one subscription's handled position for its named consumer, by the consumer's policy.

    ``handled(token)`` is called after each event is handled, on the thread
    that handled it; ``moved(token)`` when the stream went past entries that
    gave it nothing (a held stream's post-batch token); ``commit()`` commits
    now; ``close()`` commits what was handled (unless the policy is manual)
    and stops. Commits only move forward.

    Under ``CommitEvery`` the writes happen on a thread of their own
    (``rxcs-commit``), the latest position first, so a slow disk or a Redis
    round trip never holds up the events: a commit that fails is raised on
    the stream's thread at the next event. ``"each"``, ``commit()`` and
    ``close()`` write before they return.
    """

    __slots__ = (
        "_closed", "_commits", "_committed", "_consumer", "_count", "_created_at", "_due", "_each", "_every_events",
        "_every_seconds", "_handled", "_limit", "_lock", "_off_thread", "_writer",
    )

    def __init__(self, consumer: NamedConsumer, start: ResumeToken, existing: Record | None) -> None:
        self._consumer = consumer
        self._handled = start
        self._committed = start
        self._lock = threading.Lock()
        self._closed = False
        created = existing.get("created_at") if existing is not None else None
        self._created_at = float(created) if isinstance(created, (int, float)) else time.time()
        commits = existing.get("commits") if existing is not None else None
        self._commits = commits if isinstance(commits, int) else 0
        policy = consumer.policy
        self._each = policy == "each"
        self._every_events = policy.events if isinstance(policy, CommitEvery) else None
        self._every_seconds = policy.seconds if isinstance(policy, CommitEvery) else None
        # Events before a commit is due by count: 1 for "each", none for "manual" (a plain compare per event).
        self._limit = 1 if self._each else self._every_events if self._every_events is not None else 1 << 62
        self._count = 0
        self._due = self._next_due()
        self._writer: _Writer | None = None
        self._off_thread = False

    def write_off_thread(self) -> None:
        """Write ``"each"`` commits on the commit thread too: the stream's thread is an event loop's."""
        self._off_thread = True

    @property
    def name(self) -> str:
        return self._consumer.name

    @property
    def committed(self) -> ResumeToken:
        """The position last committed (or found at the start)."""
        return self._committed

    def _next_due(self) -> float:
        return time.monotonic() + self._every_seconds if self._every_seconds is not None else float("inf")

    def handled(self, token: ResumeToken) -> None:
        """An event was handled: its token is the position to commit next."""
        self._handled = token
        self._count += 1
        if self._count >= self._limit or (self._every_seconds is not None and time.monotonic() >= self._due):
            self._commit_handled()

    def moved(self, token: ResumeToken) -> None:
        """The stream went past entries that gave it nothing: committed when a commit is due."""
        if token <= self._handled:
            return
        self._handled = token
        if self._each or time.monotonic() >= self._due:
            self._commit_handled()

    def commit(self, token: ResumeToken | None = None) -> ResumeToken:
        """Commit ``token`` (default: the last handled position) now; return the committed position."""
        if token is not None and token > self._handled:
            self._handled = token
        self._commit_handled(explicit=True)
        return self._committed

    def close(self, *, handled: ResumeToken | None = None) -> None:
        """Commit what was handled (also ``handled``, when given), unless the policy is manual; then stop."""
        if handled is not None and handled > self._handled:
            self._handled = handled
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.stop()
            if self._consumer.policy != "manual":
                self._commit_handled(now=True)
        finally:
            self._closed = True

    def _commit_handled(self, *, explicit: bool = False, now: bool = False) -> None:
        if not (explicit or now or (self._each and not self._off_thread) or self._closed):  # on the commit thread
            self._count = 0
            self._due = self._next_due()
            writer = self._writer
            if writer is None:
                writer = self._writer = _Writer(self)
            writer.offer(self._handled)
            return
        with self._lock:
            if self._closed and not explicit:
                return
            token = self._handled
            self._count = 0
            self._due = self._next_due()
            if token <= self._committed:
                return
            self.write(token)

    def write(self, token: ResumeToken) -> None:
        """Store ``token`` as the consumer's checkpoint."""
        self._commits += 1
        self._consumer.oplog.checkpoints.save(
            self._consumer.name, self._consumer.record(token, self._created_at, self._commits)
        )
        self._committed = token

    def write_forward(self, token: ResumeToken) -> None:
        """Store ``token`` unless a later position was committed meanwhile."""
        with self._lock:
            if token > self._committed and not self._closed:
                self.write(token)


@final
class _Writer:
    """A checkpointer's thread for periodic commits: it writes the latest position offered, then waits for more."""

    __slots__ = ("_changed", "_checkpointer", "_failure", "_pending", "_stopping", "_thread")

    def __init__(self, checkpointer: Checkpointer) -> None:
        self._checkpointer = checkpointer
        self._changed = threading.Condition()
        self._pending: ResumeToken | None = None
        self._stopping = False
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"rxcs-commit-{checkpointer.name}", daemon=True)
        self._thread.start()

    def offer(self, token: ResumeToken) -> None:
        """Commit ``token`` soon; raise the error a previous commit failed with."""
        failure = self._failure
        if failure is not None:
            self._failure = None
            raise failure
        with self._changed:
            self._pending = token
            self._changed.notify()

    def stop(self) -> None:
        """Write what is pending, stop the thread; raise the error a commit failed with."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._stopping:
                    self._changed.wait()
                token, self._pending = self._pending, None
                stopping = self._stopping
            if token is not None:
                try:
                    self._checkpointer.write_forward(token)
                except Exception as exc:  # noqa: BLE001 - handed to the stream's thread, raised there
                    self._failure = exc
                    return
            if stopping:
                return


# -- inspection ------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A named consumer as ``rxcs consumers`` lists it.

    ``lag_entries``: entries in the oplog after its position.
    ``lag_seconds``: how much older its position is than the newest entry
    (None when not known). ``history_lost``: the oplog no longer holds what
    it needs (it will fail with ``ChangeStreamHistoryLost``). A group
    (``kind="group"``) is at its lowest partition checkpoint; ``members``
    maps each live member to the partitions it owns.
    """

    name: str
    kind: str
    token: str
    op_id: int
    lag_entries: int
    lag_seconds: float | None
    committed_at: datetime | None
    db: str | None
    collection: str | None
    pipeline: str | None
    history_lost: bool
    members: dict[str, list[int]] | None = None

    def to_document(self) -> dict[str, Any]:
        """A JSON-able document (``committed_at`` in ISO 8601)."""
        return {
            "name": self.name, "kind": self.kind, "token": self.token, "op_id": self.op_id,
            "lag_entries": self.lag_entries, "lag_seconds": self.lag_seconds,
            "committed_at": None if self.committed_at is None else self.committed_at.isoformat(),
            "db": self.db, "collection": self.collection,
            "pipeline": None if self.pipeline is None else json.loads(self.pipeline),
            "history_lost": self.history_lost, "members": self.members,
        }


def list_consumers(oplog: Oplog) -> list[ConsumerInfo]:
    """Every named consumer the oplog keeps a checkpoint for, by name, with its position and lag.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "orders", {"_id": 1})
        >>> with rxcs.watch(oplog, "shop", "orders", consumer="billing",
        ...                 start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
        ...     _ = stream.next(timeout=5)
        ...     _ = oplog.insert("shop", "orders", {"_id": 2})
        >>> [(info.name, info.op_id, info.lag_entries) for info in rxcs.list_consumers(oplog)]
        [('billing', 1, 1)]
    """
    last = oplog.last_op_id
    first = oplog.first_op_id
    newest = _wall_time_ms(oplog, last)
    found = []
    for name, record in oplog.checkpoints.load_all().items():
        kind = record.get("kind")
        members: dict[str, list[int]] | None = None
        if kind == "group":
            checkpoints = [ResumeToken.parse(token) for token in record.get("checkpoints", {}).values()]
            if not checkpoints:
                continue
            token = record_token(oplog, name, {**record, "token": str(min(checkpoints))}, kind="group")
            members = {member: [] for member in sorted(record.get("members", {}))}
            for partition, owner in sorted(record.get("owners", {}).items(), key=lambda item: int(item[0])):
                members.setdefault(owner["member"], []).append(int(partition))
        elif kind == "consumer":
            token = record_token(oplog, name, record, kind="consumer")
        else:
            continue
        lag = max(0, last - token.op_id)
        lag_seconds: float | None = None
        if lag == 0:
            lag_seconds = 0.0
        elif token.wall_time_ms is not None and newest is not None:
            lag_seconds = max(0.0, (newest - token.wall_time_ms) / 1000)
        committed = record.get("committed_at")
        found.append(ConsumerInfo(
            name=name, kind=kind, token=str(token), op_id=token.op_id, lag_entries=lag,
            lag_seconds=lag_seconds,
            committed_at=datetime.fromtimestamp(committed, UTC) if isinstance(committed, (int, float)) else None,
            db=record.get("db"), collection=record.get("collection"), pipeline=record.get("pipeline"),
            history_lost=needs_op_id(token) < first and last >= first, members=members,
        ))
    return found


def reset_consumer(oplog: Oplog, name: str, to: ResumeToken | str | Beginning | Literal["now"]) -> ResumeToken:
    """Move consumer ``name`` to ``to``: a resume token (of this oplog), ``rxcs.BEGINNING`` or ``"now"``.

    Its scope and pipeline stay; the next run resumes there. For a group,
    every partition moves there (reset a group while its members are
    stopped: a running member goes on from what it holds). Raises
    ``RxcsError`` when there is no such consumer, ``InvalidResumeToken``
    for a token of another oplog or past its end; nothing is written then.
    Returns the new position.
    """
    check_name(name)
    if isinstance(to, Beginning):
        token = high_water_token(oplog, oplog.first_op_id - 1)
    elif isinstance(to, str) and to.lower() == "now":
        token = high_water_token(oplog, oplog.last_op_id)
    else:
        token = ResumeToken.parse(to)
        if token.oplog_id != oplog.oplog_id:
            raise InvalidResumeToken(
                f"resume token {token} comes from oplog {token.oplog_id}, not from this one ({oplog.oplog_id})"
            )
        resolve_start(oplog, token=token, start_after=True)  # a lost or rewritten history refuses it here

    def moved(record: Record | None) -> Record:
        if record is not None and record.get("kind") == "group":  # every partition there
            first = next(iter(record.get("checkpoints", {}).values()), None)
            record_token(oplog, name, {**record, "token": first}, kind="group")
            return {
                **record, "checkpoints": dict.fromkeys(record["checkpoints"], str(token)),
                "needs_op_id": needs_op_id(token), "committed_at": time.time(),
            }
        if record is None or record.get("kind") != "consumer":
            raise RxcsError(f"no consumer named {name!r} in this oplog")
        record_token(oplog, name, record, kind="consumer")
        commits = record.get("commits")
        return {
            **record, "token": str(token), "op_id": token.op_id, "needs_op_id": needs_op_id(token),
            "committed_at": time.time(), "commits": (commits if isinstance(commits, int) else 0) + 1,
        }

    oplog.checkpoints.update(name, moved)
    return token


def delete_consumer(oplog: Oplog, name: str) -> bool:
    """Forget consumer (or group) ``name``: its next run starts afresh; False when there was none."""
    return oplog.checkpoints.delete(check_name(name))


def record_token(oplog: Oplog, name: str, record: Record, *, kind: str) -> ResumeToken:
    """The token of a checkpoint record, checked to be this oplog's."""
    if record.get("kind") != kind:
        raise ConsumerMismatchError(f"{name!r} names a consumer group, not a consumer" if kind == "consumer"
                                    else f"{name!r} names a consumer, not a consumer group")
    try:
        token = ResumeToken.parse(record.get("token"))
    except InvalidResumeToken as exc:
        raise InvalidResumeToken(f"consumer {name!r}: its checkpoint holds no valid token ({exc})") from None
    if token.oplog_id != oplog.oplog_id or record.get("oplog_id") != str(oplog.oplog_id):
        raise InvalidResumeToken(
            f"consumer {name!r}: its checkpoint comes from oplog {token.oplog_id}, not from this one "
            f"({oplog.oplog_id}); was the checkpoint copied from another oplog?"
        )
    return token


def _scope(db: object, collection: object) -> str:
    if db is None:
        return "the whole oplog"
    return f"database {db}" if collection is None else f"{db}.{collection}"


def _wall_time_ms(oplog: Oplog, op_id: int) -> int | None:
    if op_id < oplog.first_op_id:
        return None
    entries = oplog.read(op_id - 1, 1)
    return entries[0].wall_time_ms if entries and entries[0].op_id == op_id else None
