"""Where streams start, and the tailer that feeds them: ``oplog_entries()``, lanes, reads.

Each subscription to an oplog is a *lane*: the op_id of the last entry it
went past, what it *reads* (a ``Reads``: a namespace and an entry filter, and
the cursor sift they allow) and its *delivery*, a function that takes the
lane's entries of a batch and says how many it took. Lanes of one oplog share
one tailer thread: lanes at the same position share one cursor, so an entry
is read and decoded once however many streams watch it, lanes that read alike
share one selection of each batch, and a thousand idle streams cost one
waiting thread. Lanes behind the live end (resuming, or released by
backpressure) read from their own position in the same thread until they
catch up and merge.

Demand is explicit. A delivery that takes fewer entries than it was given
(its stream's buffer is full) has paused its lane: the tailer stops feeding
it, keeps the entries it read and did not deliver, and, once whoever drains
the buffer calls ``lane.resume()``, feeds it again from there, reading on
from the durable log. Nothing is lost and no other lane waits.

``resolve_start`` is the one place a start (now, an op_id, a time, the
beginning, a resume token) becomes a position. A subscription given a
``scheduler`` runs its own tailer on that scheduler, which is how operators
are driven in virtual time.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, final

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.scheduler import VirtualTimeScheduler

from rxcs.errors import ChangeStreamHistoryLost, InvalidOptionError, InvalidResumeToken, OplogClosedError
from rxcs.events import ClusterTime
from rxcs.log import log
from rxcs.oplog.base import Oplog, OplogCursor, Sift
from rxcs.oplog.entry import OplogEntry
from rxcs.tokens import ResumeToken

__all__ = [
    "ALL",
    "BEGINNING",
    "DECODING_READ",
    "Beginning",
    "Delivery",
    "Lane",
    "Reads",
    "Scope",
    "SelectionError",
    "Start",
    "StartAt",
    "check_token_history",
    "feed",
    "high_water_token",
    "oplog_entries",
    "resolve_start",
    "tailers_alive",
]


@final
class Beginning:
    """The type of ``rxcs.BEGINNING``: the oldest entry still retained."""

    _instance: Beginning | None = None

    def __new__(cls) -> Beginning:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "rxcs.BEGINNING"


BEGINNING: Final = Beginning()

StartAt = Beginning | datetime | ClusterTime

Scope = tuple[str, str | None]
"""A namespace: ``(db, None)`` takes the database's entries, ``(db, coll)`` the collection's
and its database's ``dropDatabase``; both take the renames into them."""

Delivery = Callable[[list[OplogEntry]], int]
"""Takes a lane's entries of a batch, in order, and returns how many it took: all of them, or
fewer when its stream has no room for more (it then paused the lane)."""


# -- where a stream starts -----------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts: after op_id ``after``, which ``token`` names; events up to ``skip`` are passed over.

    ``skip`` is set when a stream resumes after an event token: the token's
    entry is read again, since more events may follow it (an ``invalidate``
    after a ``drop``, the later fragments of a split event). ``not_before``
    is set for a start at a time: entries recorded before it are passed over
    (a time after the newest entry starts at the end of the log, and the
    entries appended until that time comes are not the stream's).
    """

    after: int
    token: ResumeToken
    skip: ResumeToken | None = None
    not_before: ClusterTime | None = None


def high_water_token(oplog: Oplog, op_id: int) -> ResumeToken:
    """The token of the position after every event of entry ``op_id``, stamped with that entry when it is retained."""
    if op_id < oplog.first_op_id:
        return ResumeToken(oplog.oplog_id, op_id, high_water=True)
    entries = oplog.read(op_id - 1, 1)
    if not entries or entries[0].op_id != op_id:
        return ResumeToken(oplog.oplog_id, op_id, high_water=True)
    entry = entries[0]
    return ResumeToken(
        oplog.oplog_id, op_id, high_water=True, cluster_time=entry.cluster_time, wall_time_ms=entry.wall_time_ms
    )


def check_token_history(oplog: Oplog, token: ResumeToken) -> None:
    """Raise ``ChangeStreamHistoryLost`` when the oplog's history was rewritten under ``token``.

    The oplog must still hold the entry the token was taken at, or have
    trimmed it: a token past the end of the oplog, or an entry at its op_id
    with another stamp (cluster time and wall time), means the history that
    token belongs to is gone (a Redis restored from an older snapshot, a
    failover to a lagging replica, a FileOplog copied back from a backup).
    Resuming there would silently skip the entries written since.
    """
    last = oplog.last_op_id
    if token.op_id > last:
        raise ChangeStreamHistoryLost(
            f"resume token {token} names op_id {token.op_id}, but this oplog ends at op_id {last}: "
            "the history it was taken from was rewritten (restored from an older copy, or entries lost "
            "in a crash or failover)"
        )
    stamp = token.stamp
    if stamp is None or token.op_id < oplog.first_op_id:
        return
    entries = oplog.read(token.op_id - 1, 1)
    if not entries or entries[0].op_id != token.op_id:
        return  # trimmed meanwhile: the start position check says so
    entry = entries[0]
    found = (entry.cluster_time.time, entry.cluster_time.inc, entry.wall_time_ms)
    if found != stamp:
        raise ChangeStreamHistoryLost(
            f"resume token {token} was taken at op_id {token.op_id} recorded at cluster time "
            f"{stamp[0]}.{stamp[1]}, but op_id {token.op_id} is now an entry recorded at {found[0]}.{found[1]}: "
            "the history it was taken from was rewritten (restored from an older copy, or entries lost "
            "in a crash or failover), and the entries written since cannot be placed after it"
        )


def resolve_start(
    oplog: Oplog,
    *,
    after: int | None = None,
    at: StartAt | None = None,
    token: ResumeToken | None = None,
    start_after: bool = False,
) -> Start:
    """Fix a start position now: after an op_id, at a time or ``BEGINNING``, after a resume token, or (none) now.

    Raises ``ChangeStreamHistoryLost`` when the position is older than the
    oldest retained entry or the token's history was rewritten, and
    ``InvalidResumeToken`` for an op_id past the end of the oplog.
    ``start_after`` lets a token of an ``invalidate`` start after that event.
    """
    if token is not None:
        check_token_history(oplog, token)
        first = oplog.first_op_id
        if token.fragment and token.op_id < first:
            raise ChangeStreamHistoryLost(
                f"resume token {token} names fragment {token.fragment} of op_id {token.op_id}, but that entry "
                f"is gone (the oldest retained is {first}): its later fragments cannot be delivered"
            )
        if token.high_water or (start_after and token.invalidate) or token.op_id < first:
            start = Start(token.op_id, token)
        else:  # re-read the token's entry: its later events (an invalidate, fragments) may follow
            start = Start(token.op_id - 1, token, token)
    else:
        not_before = None
        if after is not None:
            position = after
            if position > oplog.last_op_id:
                raise InvalidResumeToken(
                    f"position op_id {position} is ahead of the oplog, which ends at {oplog.last_op_id}"
                )
        elif at is None:
            position = oplog.last_op_id
        elif isinstance(at, Beginning):
            position = oplog.first_op_id - 1
        else:
            not_before = at if isinstance(at, ClusterTime) else ClusterTime(int(at.timestamp()), 0)
            position = oplog.op_id_at(not_before)
        start = Start(position, high_water_token(oplog, position), None, not_before)
    if start.after < oplog.first_op_id - 1:
        raise ChangeStreamHistoryLost(
            f"the stream must start after op_id {start.after}, but the oldest retained entry is {oplog.first_op_id}"
        )
    return start


# -- what a lane reads -----------------------------------------------------------------------


@final
class Reads:
    """What a lane reads of each batch: a namespace, a selection beyond it, the cursor sift they allow.

    ``select`` takes the batch's entries in the namespace and returns those
    the lane wants (it must keep the entries that end the namespace's
    streams). Lanes with equal ``key`` get the same ``Reads`` object
    (``Reads.interned``) for as long as one of them lives: the tailer selects
    once per batch for all of them, and their cursor may use the sift.
    """

    __slots__ = ("__weakref__", "_passed", "_resting", "_sifted", "key", "scope", "select", "sift")

    def __init__(
        self,
        key: Hashable,
        scope: Scope | None = None,
        select: Callable[[list[OplogEntry]], list[OplogEntry]] | None = None,
        sift: Sift | None = None,
    ) -> None:
        self.key = key
        self.scope = scope
        self.select = select
        self.sift = sift
        self._sifted = 0  # entries read with the sift lately, and how many it let through
        self._passed = 0
        self._resting = 0  # entries to read without the sift before it is tried again

    def sift_now(self) -> Sift | None:
        """The sift for the next read: None while it rests, having let nearly everything through lately.

        A sift costs a search of each record; when (almost) every record
        holds what it looks for, that search is all it does. It then rests
        for ten times the span it was judged on, and is tried again.
        """
        return None if self._resting > 0 else self.sift

    def read_past(self, count: int, passed: int, sifted: bool) -> None:
        """Note a read of ``count`` entries, ``passed`` of which the sift let through (when ``sifted``)."""
        if not sifted:
            if self._resting > 0:
                self._resting -= count
            return
        self._sifted += count
        self._passed += passed
        if self._sifted >= _SIFT_SPAN:
            if self._passed > _SIFT_PAYS_BELOW * self._sifted:
                self._resting = 10 * _SIFT_SPAN
            self._sifted = self._passed = 0

    def read_size(self, batch_size: int, sifting: bool) -> int:
        """How many entries to read at a time for one stream alone: about ``DECODING_READ`` decoded ones.

        Without a sift every entry read is decoded; with one, as many as its
        share let through lately (all of ``batch_size`` while it lets none).
        """
        if not sifting:
            return min(batch_size, DECODING_READ)
        if self._passed == 0:
            return batch_size
        return max(DECODING_READ, min(batch_size, DECODING_READ * self._sifted // self._passed))

    @staticmethod
    def interned(key: Hashable, build: Callable[[], Reads]) -> Reads:
        """The live ``Reads`` of ``key``, or the one ``build()`` makes, kept for as long as one is used."""
        with _interning:
            reads = _interned.get(key)
            if reads is None:
                reads = _interned[key] = build()
            return reads

    def of(self, entries: list[OplogEntry]) -> list[OplogEntry]:
        """The entries of a batch this lane reads: its namespace's, and the renames into it."""
        if self.scope is not None:
            db, coll = self.scope
            if coll is None:
                entries = [
                    entry for entry in entries
                    if entry.db == db or (entry.to is not None and entry.to.db == db)
                ]
            else:
                target = (db, coll)
                entries = [
                    entry for entry in entries
                    if (entry.db == db and (entry.coll == coll or entry.op == "dropDatabase"))
                    or (entry.to is not None and entry.to == target)
                ]
        if self.select is not None and entries:
            entries = self.select(entries)
        return entries


class SelectionError(Exception):
    """A ``Reads.select`` that failed partway (a filter raised): the entries it kept before, and the error.

    The lane takes those entries first, then ends with the error: nothing
    before the entry that failed is lost.
    """

    def __init__(self, kept: list[OplogEntry], error: Exception) -> None:
        super().__init__(str(error))
        self.kept = kept
        self.error = error


DECODING_READ: Final = 100
"""About how many decoded entries a read for one stream alone takes (``Reads.read_size``).

A read's entries and their events then die before the garbage collector's
youngest generation fills (700 objects, about six per entry), instead of
being walked and moved to the older generations, which costs about 15 % of
a catch-up read 1,000 at a time. A read shared by several streams is worth
its size to each, and keeps it.
"""
_SIFT_SPAN: Final = 20_000  # entries a sift is judged on
_SIFT_PAYS_BELOW: Final = 0.8  # a sift that lets through more than this share of what it reads rests
_interned: weakref.WeakValueDictionary[Hashable, Reads] = weakref.WeakValueDictionary()
_interning = threading.Lock()

ALL: Final = Reads("all")
"""Every entry: what ``oplog_entries()`` reads."""


# -- lanes -------------------------------------------------------------------------------------


@final
class Lane:
    """One subscription's place in the oplog, what it reads, and where its entries go.

    ``deliver`` takes the lane's entries of each batch; ``finish`` hears how
    the lane ended (None: completed), once. The stream that made the lane
    wires both, and calls ``pause()`` (from inside ``deliver``) and
    ``resume()`` (when its buffer has room again): demand is the stream's to say.
    """

    __slots__ = (
        "_finish", "_leave", "_rejoin", "alone", "attached", "deliver", "disposed", "leftover", "oplog", "paused",
        "position", "reads", "start", "yielded",
    )

    def __init__(self, oplog: Oplog, position: int, reads: Reads, finish: Callable[[Exception | None], None]) -> None:
        self.oplog = oplog
        self.reads = reads
        self.position = position
        self.start = position
        self.deliver: Delivery = _take_all
        self._finish = finish
        self.paused = False
        self.disposed = False
        self.attached = True  # fed by its tailer; a paused lane is detached, and re-attached on resume
        self._rejoin: Callable[[Lane], None] = _unpause
        self._leave: Callable[[Lane], None] = _stay  # the tailer feeding it lets it go when it ends
        # Entries read for this lane but not delivered because it paused: delivered first when it
        # resumes, so a pause costs no second read and a cursor that moved past them loses nothing.
        self.leftover: list[OplogEntry] = _NOTHING_LEFT
        self.yielded = 0  # entries that gave the stream at least one event (the delivery counts them)
        # True while its batches are read for it alone: no other lane is fed the same entries
        self.alone = False

    def pause(self) -> None:
        """Stop feeding this lane after what the delivery takes now; idempotent."""
        self.paused = True

    def resume(self) -> None:
        """Feed this lane again from where it stopped; idempotent.

        The tailer decides, under its lock, whether the lane is still being fed
        or must rejoin from its position: a lane is never fed twice.
        """
        self._rejoin(self)

    @property
    def entries_seen(self) -> int:
        """Entries this lane has gone past: delivered, out of its namespace, filtered or sifted out."""
        return self.position - self.start

    @property
    def lag(self) -> int:
        """Entries in the oplog after this lane's position."""
        return max(0, self.oplog.last_op_id - self.position)

    def take(self, entries: list[OplogEntry]) -> bool:
        """Deliver entries until the lane pauses, ends or fails; False when it failed."""
        try:
            taken = self.deliver(entries)
        except Exception as exc:  # noqa: BLE001 - routed to the stream, never lost
            self.end(exc)
            return False
        if taken:
            self.position = entries[taken - 1].op_id
        if taken < len(entries) and not self.disposed:
            # Stopped short: the delivery paused the lane (and may have been resumed already, from
            # another thread). The rest is kept for when it goes on.
            self.leftover = entries[taken:]
        return True

    def end(self, error: Exception | None = None) -> None:
        """End the lane: completed (None) or failed; the stream hears of it once."""
        if self.disposed:
            return
        self.disposed = True
        try:
            self._finish(error)
        finally:  # an ended lane is no member of its tailer: the last one out stops the thread
            self._leave(self)


_NOTHING_LEFT: Final[list[OplogEntry]] = []  # shared by every lane with nothing left over: never changed in place


def _take_all(entries: list[OplogEntry]) -> int:
    return len(entries)


def _unpause(lane: Lane) -> None:
    lane.paused = False


def _stay(_lane: Lane) -> None:
    pass


def feed(lane: Lane, entries: list[OplogEntry], new_position: int, mine: list[OplogEntry] | None = None) -> bool:
    """Give a lane its entries of a batch read up to ``new_position``; False when it failed.

    ``mine`` is the lane's selection of the batch when already made. A lane
    that takes all of it has gone past the whole batch: its position moves to
    ``new_position`` (entries out of its namespace or sifted out lie behind
    it too).
    """
    if lane.disposed or lane.paused:
        return True
    if mine is None:
        try:
            mine = lane.reads.of(entries) if entries else entries
        except SelectionError as failed:  # a filter that fails ends this lane, not the tailer
            mine = _Failed(failed)
    if isinstance(mine, _Failed):
        if mine:
            if not lane.take(mine):
                return False
            if lane.position != mine[-1].op_id:
                return True  # paused short of the failure: it meets it again when it goes on
        lane.end(mine.error)
        return False
    if mine:
        if not lane.take(mine):
            return False
        if lane.position != mine[-1].op_id:
            return True  # it stopped short (paused, or ended): it goes on from there when resumed
    if not lane.disposed:
        lane.position = new_position
    return True


# -- oplog_entries() ---------------------------------------------------------------------------


class OplogEntries(reactivex.Observable[OplogEntry]):
    """The Observable ``oplog_entries()`` returns: the oplog's entries from a start, tailing forever.

    ``oplog_id`` names the oplog, for the operators that make resume tokens.
    """

    def __init__(
        self,
        oplog: Oplog,
        *,
        after: int | None,
        start: StartAt | None,
        resume: ResumeToken | None,
        batch_size: int,
        max_await_time: float,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        super().__init__(self._subscribe)
        self.oplog = oplog
        self.oplog_id = oplog.oplog_id
        self._after = after
        self._start = start
        self._resume = resume
        self._batch_size = batch_size
        self._max_await_time = max_await_time
        self._scheduler = scheduler

    def _subscribe(
        self, observer: abc.ObserverBase[OplogEntry], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        start = resolve_start(self.oplog, after=self._after, at=self._start, token=self._resume)
        on_next = observer.on_next

        def finish(error: Exception | None) -> None:
            try:
                if error is None:
                    observer.on_completed()
                else:
                    observer.on_error(error)
            except Exception as again:  # noqa: BLE001 - the tailer must not die: said once, here
                if again is not error:
                    log.error("subscriber raised at the end of its stream", error=repr(again))
                elif isinstance(error, OplogClosedError):
                    log.debug("oplog entries ended: the oplog closed")
                else:
                    log.error("oplog entries failed; the subscriber has no on_error", error=repr(error))

        lane = Lane(self.oplog, start.after, ALL, finish)

        not_before = start.not_before

        def deliver(entries: list[OplogEntry]) -> int:
            nonlocal not_before
            for taken, entry in enumerate(entries, 1):
                if not_before is not None:
                    if entry.cluster_time < not_before:
                        continue  # recorded before the start time (which was after the end of the log)
                    not_before = None
                on_next(entry)
                if lane.disposed:  # the subscriber ended it (take(n)) while it was fed
                    return taken
            return len(entries)

        lane.deliver = deliver
        return open_lane(lane, self._batch_size, self._max_await_time, self._scheduler)


def oplog_entries(
    oplog: Oplog,
    after: int | ResumeToken | None = None,
    *,
    start: StartAt | None = None,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    scheduler: abc.SchedulerBase | None = None,
) -> OplogEntries:
    """A cold Observable of the oplog's entries, in op_id order, tailing forever.

    The start is fixed when a subscription is made: after ``after`` (an op_id,
    or a ``ResumeToken``: a seek in O(log n), nothing before it is read), or
    at ``start`` (``rxcs.BEGINNING``, a ``datetime`` or a ``ClusterTime``),
    or, with neither, at the present (only entries appended after
    subscribing). A start older than the oldest retained entry makes the
    subscription fail with ``ChangeStreamHistoryLost`` at once.

    Entries are read ``batch_size`` at a time and emitted synchronously on the
    tailer thread, shared by the oplog's subscriptions (see the module
    docstring), or on ``scheduler`` when one is given. ``max_await_time``
    bounds each wait for new entries. A subscriber that takes its time holds
    back the tailer it runs on, as any synchronous Rx subscriber does; a
    chain that must not, hops threads with ``operators.buffer`` or is given
    its own ``scheduler``.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> got = []
        >>> sub = rxcs.oplog_entries(oplog, after=0).subscribe(got.append)
        >>> _ = oplog.insert("shop", "users", {"_id": 2})
        >>> import time; time.sleep(0.2); sub.dispose()
        >>> [entry.op_id for entry in got]
        [1, 2]
    """
    resume = None
    if isinstance(after, ResumeToken):
        if after.oplog_id != oplog.oplog_id:
            raise InvalidResumeToken(
                f"resume token {after} comes from oplog {after.oplog_id}, not from this one ({oplog.oplog_id})"
            )
        resume, after = after, None
    if after is not None and start is not None:
        raise InvalidOptionError("give at most one of after= and start=")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise InvalidOptionError(f"after must be an op_id (int >= 0) or a ResumeToken, not {after!r}")
    if start is not None and not isinstance(start, (Beginning, datetime, ClusterTime)):
        raise InvalidOptionError(f"start must be rxcs.BEGINNING, a datetime or a ClusterTime, not {start!r}")
    check_reading(batch_size, max_await_time)
    return OplogEntries(
        oplog, after=after, start=start, resume=resume, batch_size=batch_size,
        max_await_time=max_await_time, scheduler=scheduler,
    )


def check_reading(batch_size: object, max_await_time: object) -> None:
    """Validate how a stream reads: ``batch_size`` entries at a time, waiting at most ``max_await_time`` seconds."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidOptionError(f"batch_size must be a positive int, not {batch_size!r}")
    if isinstance(max_await_time, bool) or not isinstance(max_await_time, (int, float)) or not max_await_time > 0:
        raise InvalidOptionError(f"max_await_time must be a positive number of seconds, not {max_await_time!r}")


def open_lane(
    lane: Lane, batch_size: int, max_await_time: float, scheduler: abc.SchedulerBase | None
) -> abc.DisposableBase:
    """Start feeding a lane (on the oplog's shared tailer, or on ``scheduler``); dispose to stop."""
    cursor = lane.oplog.cursor(lane.position)  # raises ChangeStreamHistoryLost now, not later
    if scheduler is not None:
        return _ScheduledTailer(lane, cursor, batch_size, max_await_time, scheduler).start()
    tailer = _Tailer.for_oplog(lane.oplog, batch_size, max_await_time)
    tailer.add(lane, cursor)
    return _Removal(tailer, lane)


@final
class _Removal(abc.DisposableBase):
    """Disposing a lane's subscription: a slotted object, not a closure and a lock per stream."""

    __slots__ = ("_lane", "_tailer")

    def __init__(self, tailer: _Tailer, lane: Lane) -> None:
        self._tailer = tailer
        self._lane = lane

    def dispose(self) -> None:
        self._tailer.remove(self._lane)


# -- the shared tailer -------------------------------------------------------------------------


class _Group:
    """Lanes at one position, reading through one cursor."""

    __slots__ = ("cursor", "lanes")

    def __init__(self, cursor: OplogCursor, lanes: list[Lane]) -> None:
        self.cursor = cursor
        self.lanes = lanes


_registry: weakref.WeakKeyDictionary[Oplog, dict[tuple[int, float], _Tailer]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def tailers_alive(oplog: Oplog) -> bool:
    """False when a shared tailer of ``oplog`` has lanes to feed and no running thread (for health probes)."""
    with _registry_lock:
        tailers = list(_registry.get(oplog, {}).values())
    return all(tailer.alive for tailer in tailers)


@final
class _Tailer:
    """One thread that feeds every lane of one oplog.

    The thread runs while the tailer has member lanes (paused ones included)
    and stops, joined, when the last one is disposed.
    """

    def __init__(self, oplog: Oplog, batch_size: int, max_await_time: float) -> None:
        self._oplog = oplog
        self._batch_size = batch_size
        self._max_await_time = max_await_time
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._arrivals: list[tuple[Lane, OplogCursor | None]] = []
        self._members: set[Lane] = set()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """True while the tailer has no lanes, or a running thread to feed them."""
        with self._lock:
            thread = self._thread
            return not self._members or (thread is not None and thread.is_alive())

    @classmethod
    def for_oplog(cls, oplog: Oplog, batch_size: int, max_await_time: float) -> _Tailer:
        with _registry_lock:
            tailers = _registry.setdefault(oplog, {})
            tailer = tailers.get((batch_size, max_await_time))
            if tailer is None:
                tailer = tailers[(batch_size, max_await_time)] = cls(oplog, batch_size, max_await_time)
            return tailer

    def add(self, lane: Lane, cursor: OplogCursor) -> None:
        lane._rejoin = self._rejoin
        lane._leave = self.remove
        with self._lock:
            self._members.add(lane)
            self._arrive_locked(lane, cursor)
        self._oplog.wake_waiters()

    def _rejoin(self, lane: Lane) -> None:
        with self._lock:
            lane.paused = False
            if lane.attached or lane.disposed or lane not in self._members:
                return  # still in a group (the tailer keeps feeding it), or gone
            lane.attached = True
            self._arrive_locked(lane, None)
        self._oplog.wake_waiters()

    def _arrive_locked(self, lane: Lane, cursor: OplogCursor | None) -> None:
        self._arrivals.append((lane, cursor))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"rxcs-tailer-{self._oplog.oplog_id.hex[:8]}", daemon=True
            )
            self._thread.start()
        self._idle.notify()

    def remove(self, lane: Lane) -> None:
        """Dispose a lane, or let an ended one go; the last one out stops the thread (and waits for it)."""
        with self._lock:
            lane.disposed = True
            if lane not in self._members:
                return
            self._members.discard(lane)
            thread = self._thread if not self._members else None
            if thread is not None:
                self._thread = None
                self._idle.notify()
        if thread is not None:
            self._oplog.wake_waiters()
            if thread is not threading.current_thread():
                thread.join()

    def _run(self) -> None:
        me = threading.current_thread()
        groups: dict[int, _Group] = {}
        log.debug("tailer started", oplog_id=str(self._oplog.oplog_id))
        try:
            while self._thread is me:
                self._take_arrivals(groups)
                if not self._step(groups) and self._thread is me:
                    self._wait(groups)
        except Exception as exc:  # noqa: BLE001 - logged, every lane hears of it, the thread ends cleanly
            self._end_all(exc)
        finally:
            for group in groups.values():
                group.cursor.close()
            with self._lock:
                if self._thread is me:
                    self._thread = None
                if self._thread is None:  # no successor: nobody will read these
                    for _, cursor in self._arrivals:
                        if cursor is not None:
                            cursor.close()
                    self._arrivals.clear()
            log.debug("tailer stopped", oplog_id=str(self._oplog.oplog_id))

    def _end_all(self, exc: Exception) -> None:
        """End every lane with the error that stopped the tailer, said once for the oplog."""
        with self._lock:
            lanes = list(self._members)
        if isinstance(exc, OplogClosedError):
            log.info("oplog closed under its streams", oplog_id=str(self._oplog.oplog_id), streams=len(lanes))
        else:
            log.error("tailer failed", oplog_id=str(self._oplog.oplog_id), streams=len(lanes), error=repr(exc))
        for lane in lanes:
            lane.end(exc)

    def _take_arrivals(self, groups: dict[int, _Group]) -> None:
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
        for lane, given in arrivals:
            if lane.disposed:
                if given is not None:
                    given.close()
                continue
            group = groups.get(lane.position)
            if group is not None:  # that group reads on from here: what the lane held is read again
                lane.leftover = _NOTHING_LEFT
                for member in (*group.lanes[:1], lane):  # they are fed the same entries now
                    member.alone = False
                group.lanes.append(lane)
                if given is not None:
                    given.close()
                continue
            try:
                if given is not None:
                    cursor = given
                elif lane.leftover:
                    cursor, lane.leftover = _LeftoverCursor(self._oplog, lane.leftover), _NOTHING_LEFT
                else:
                    cursor = self._oplog.continuing_cursor(lane.position)
            except OplogClosedError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. history trimmed while paused
                lane.end(exc)
                continue
            groups[lane.position] = _Group(cursor, [lane])

    def _step(self, groups: dict[int, _Group]) -> bool:
        """Read one batch for every group; False when all are caught up."""
        progressed = False
        for position, group in list(groups.items()):
            sift = _group_sift(group.lanes)
            alone = len(group.lanes) == 1
            if alone:
                group.lanes[0].alone = True  # and False again when another lane joins its group
            try:
                size = group.lanes[0].reads.read_size(self._batch_size, sift is not None) if alone else self._batch_size
                entries = group.cursor.read(size, sift)
            except OplogClosedError:
                raise  # the whole oplog is gone: every lane ends, said once
            except Exception as exc:  # noqa: BLE001 - the group's lanes get on_error
                del groups[position]
                group.cursor.close()
                for lane in group.lanes:
                    lane.end(exc)
                continue
            new_position = group.cursor.position  # past the entries, and any it sifted out after them
            if new_position == position:
                group.lanes = [lane for lane in group.lanes if not lane.disposed]
                if not group.lanes:
                    del groups[position]
                    group.cursor.close()
                continue
            progressed = True
            if group.lanes:
                group.lanes[0].reads.read_past(new_position - position, len(entries), sift is not None)
            selections: dict[Reads, list[OplogEntry]] = {}  # lanes that read alike select once
            fed = [lane for lane in group.lanes if _feed_shared(lane, entries, new_position, selections)]
            kept = []
            with self._lock:  # decided against resume(), which runs on the consumer's thread
                for lane in fed:
                    if lane.disposed:
                        continue
                    if lane.paused:
                        lane.attached = False  # resume() brings it back at its own position
                    elif lane.position == new_position:
                        kept.append(lane)
                    else:  # paused mid-batch and already resumed: rejoin where it stopped
                        self._arrivals.append((lane, None))
            del groups[position]
            existing = groups.get(new_position)
            if existing is not None:
                for lane in (*existing.lanes[:1], *kept):
                    lane.alone = False
                existing.lanes.extend(kept)
                group.cursor.close()
            elif kept:
                group.lanes = kept
                groups[new_position] = group
            else:
                group.cursor.close()
        return progressed

    def _wait(self, groups: dict[int, _Group]) -> None:
        if groups:
            # Every group is caught up, so they sit at the end, at one position.
            self._oplog.wait(min(groups), self._max_await_time)
            return
        with self._lock:
            if not self._arrivals and self._thread is threading.current_thread():
                self._idle.wait(self._max_await_time)


def _feed_shared(
    lane: Lane, entries: list[OplogEntry], new_position: int, selections: dict[Reads, list[OplogEntry]]
) -> bool:
    """``feed`` for a lane of the shared tailer: the batch is selected once per ``Reads``."""
    if lane.disposed or lane.paused:
        return True
    mine = selections.get(lane.reads)
    if mine is None:
        try:
            mine = lane.reads.of(entries) if entries else entries
        except SelectionError as failed:  # a filter that fails (a $regex past its time) ends its own lanes
            mine = _Failed(failed)
        selections[lane.reads] = mine
    return feed(lane, entries, new_position, mine)


class _Failed(list[OplogEntry]):
    """A selection that raised partway: the entries before the failure, then every lane reading alike ends."""

    def __init__(self, failed: SelectionError) -> None:
        super().__init__(failed.kept)
        self.error = failed.error


def _group_sift(lanes: list[Lane]) -> Sift | None:
    """The sift a group's cursor may use: one its every lane would apply, else none."""
    sift: Sift | None = None
    for lane in lanes:
        if lane.disposed:
            continue
        candidate = lane.reads.sift_now()
        if candidate is None or (sift is not None and candidate is not sift):
            return None
        sift = candidate
    return sift


@final
class _LeftoverCursor(OplogCursor):
    """A resumed lane's cursor: the entries it was not fed when it paused, then the oplog after them."""

    def __init__(self, oplog: Oplog, leftover: list[OplogEntry]) -> None:
        self._oplog = oplog
        self._leftover = leftover
        self._cursor: OplogCursor | None = None
        self.position = leftover[0].op_id - 1

    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        if self._leftover:
            batch, self._leftover = self._leftover[:limit], self._leftover[limit:]
            self.position = batch[-1].op_id
            return batch
        if self._cursor is None:
            self._cursor = self._oplog.continuing_cursor(self.position)
        batch = self._cursor.read(limit, sift)
        self.position = self._cursor.position
        return batch

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()


@final
class _ScheduledTailer:
    """A lane's own tailer, run as a chain of actions on a scheduler."""

    def __init__(
        self,
        lane: Lane,
        cursor: OplogCursor,
        batch_size: int,
        max_await_time: float,
        scheduler: abc.SchedulerBase,
    ) -> None:
        self._lane = lane
        self._cursor = cursor
        self._batch_size = batch_size
        self._max_await_time = max_await_time
        self._scheduler = scheduler
        self._virtual = isinstance(scheduler, VirtualTimeScheduler)
        self._pending: abc.DisposableBase | None = None
        self._lock = threading.Lock()
        self._active = False
        lane._rejoin = self._resumed

    def start(self) -> abc.DisposableBase:
        self._active = True
        self._schedule(0.0)
        return Disposable(self._dispose)

    def _schedule(self, delay: float) -> None:
        with self._lock:
            if self._lane.disposed:
                return
            if delay:
                self._pending = self._scheduler.schedule_relative(delay, self._step)
            else:
                self._pending = self._scheduler.schedule(self._step)

    def _resumed(self, lane: Lane) -> None:
        with self._lock:
            lane.paused = False
            if self._active:
                return  # the chain of actions is still running: it carries on
            self._active = True
        self._schedule(0.0)

    def _halted(self) -> bool:
        """True when the lane is paused; the chain of actions then ends until resume()."""
        with self._lock:
            if self._lane.paused:
                self._active = False
                return True
            return False

    def _step(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        lane = self._lane
        if lane.disposed or self._halted():
            return
        if lane.leftover:  # what it read before it paused: its own selection already
            leftover, lane.leftover = lane.leftover, _NOTHING_LEFT
            lane.take(leftover)
            if not self._halted():
                self._schedule(0.0)
            return
        sift = lane.reads.sift_now()
        position = self._cursor.position
        try:
            entries = self._cursor.read(self._batch_size, sift)
        except Exception as exc:  # noqa: BLE001 - the lane's stream gets on_error
            lane.end(exc)
            self._cursor.close()
            return
        if self._cursor.position > lane.position:
            lane.reads.read_past(self._cursor.position - position, len(entries), sift is not None)
            feed(lane, entries, self._cursor.position)
            if self._halted():
                return
            self._schedule(0.0)
        elif self._virtual:
            self._schedule(self._max_await_time)
        else:
            lane.oplog.wait(lane.position, self._max_await_time)
            self._schedule(0.0)

    def _dispose(self) -> None:
        with self._lock:
            self._lane.disposed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.dispose()
        with contextlib.suppress(Exception):
            self._cursor.close()
