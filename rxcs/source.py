"""``oplog_entries()``: the tailing Observable source of an oplog.

Each subscription is a *lane*: an observer and the op_id of the last entry it
was given. Lanes of one oplog share one tailer thread: lanes at the same
position share one cursor, so an entry is read and decoded once however many
streams watch it, and a thousand idle streams cost one waiting thread.
Lanes behind the live end (resuming, or released by backpressure) read from
their own position in the same thread until they catch up and merge.

Backpressure is cooperative: an operator downstream that cannot take more
(a full buffer) calls ``current_lane().pause()`` while it is being fed; the
tailer stops feeding that lane after the current entry, keeps its position,
and, once ``resume()`` is called, reads again from the log (which is durable)
from where the lane stopped. Nothing is lost and no other lane waits.

A subscription given a ``scheduler`` instead runs its own tailer on that
scheduler, which is how the operators are driven in virtual time.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, final

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.scheduler import VirtualTimeScheduler

from rxcs.errors import ChangeStreamHistoryLost, InvalidResumeToken
from rxcs.events import ClusterTime
from rxcs.log import log
from rxcs.oplog.base import Oplog, OplogCursor, Sift
from rxcs.oplog.entry import OplogEntry
from rxcs.tokens import ResumeToken

__all__ = ["BEGINNING", "Beginning", "EntrySource", "Lane", "Scope", "current_lane", "oplog_entries"]



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

_delivery = threading.local()

Scope = tuple[str, str | None]
"""A lane's namespace: ``(db, None)`` takes the database's entries, ``(db, coll)`` the collection's
and its database's ``dropDatabase``. A lane with a scope is fed only those entries of a batch."""


def _in_scope(entries: list[OplogEntry], scope: Scope) -> list[OplogEntry]:
    db, coll = scope
    if coll is None:
        return [entry for entry in entries if entry.db == db]
    return [entry for entry in entries if entry.db == db and (entry.coll == coll or entry.op == "dropDatabase")]


def current_lane() -> Lane | None:
    """The lane being fed on this thread right now, if any (for backpressure)."""
    lane: Lane | None = getattr(_delivery, "lane", None)
    return lane


@final
class Lane:
    """One subscription's place in the oplog and its observer."""

    __slots__ = (
        "_after_feed", "_resume", "_start", "attached", "disposed", "leftover", "observer", "oplog", "paused",
        "position", "scope", "sift",
    )

    def __init__(
        self,
        oplog: Oplog,
        observer: abc.ObserverBase[OplogEntry],
        position: int,
        scope: Scope | None = None,
        sift: Sift | None = None,
    ) -> None:
        self.oplog = oplog
        self.scope = scope
        self.sift = sift  # the observer wants no entry whose record fails it (see rxcs.prefilter)
        self.observer = observer
        self.position = position
        self._start = position
        self.paused = False
        self.disposed = False
        self.attached = True  # fed by its tailer; a paused lane is detached, and re-attached on resume
        self._resume: Callable[[Lane], None] = _noop
        self._after_feed: list[Callable[[], None]] = []
        # Entries read for this lane but not fed because it paused: fed first when it resumes, so
        # a pause costs no second read and a cursor that moved past them loses nothing.
        self.leftover: list[OplogEntry] = []

    def pause(self) -> None:
        """Stop feeding this lane after the entry being delivered; idempotent."""
        self.paused = True

    def resume(self) -> None:
        """Feed this lane again from its position; idempotent.

        The tailer decides, under its lock, whether the lane is still being fed
        or must rejoin from its position: a lane is never fed twice.
        """
        self._resume(self)

    def after_feed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the batch being fed is delivered (once, however often asked).

        A buffer wakes its consumer this way: once per batch rather than once
        per event, so a consumer thread is not woken, and the GIL not handed
        over, for every event of a catch-up.
        """
        if callback not in self._after_feed:
            self._after_feed.append(callback)

    @property
    def entries_seen(self) -> int:
        """Entries this lane has read past: fed, out of its scope or sifted out (op_ids rise by one)."""
        return self.position - self._start

    @property
    def lag(self) -> int:
        """Entries in the oplog after this lane's position."""
        return max(0, self.oplog.last_op_id - self.position)

    def feed(self, entries: list[OplogEntry]) -> bool:
        """Give entries to the observer until the lane pauses, ends or fails.

        Returns False when the lane failed (its observer got ``on_error``).
        """
        observer = self.observer
        _delivery.lane = self
        try:
            for entry in entries:
                if self.paused or self.disposed:
                    if not self.disposed:  # stopped short: keep the rest for when it resumes
                        position = self.position
                        self.leftover = [entry for entry in entries if entry.op_id > position]
                    break
                observer.on_next(entry)
                self.position = entry.op_id
        except Exception as exc:  # noqa: BLE001 - routed to the observer, never lost
            self.fail(exc)
            return False
        finally:
            _delivery.lane = None
            if self._after_feed:
                callbacks, self._after_feed = self._after_feed, []
                for callback in callbacks:
                    callback()
        return True

    def fail(self, exc: Exception) -> None:
        """End the lane with ``exc``; an observer that raises again is logged."""
        if self.disposed:
            return
        self.disposed = True
        log.error("change stream error", op_id=self.position, error=repr(exc))
        try:
            self.observer.on_error(exc)
        except Exception as again:  # noqa: BLE001 - a thread must not die silently
            log.error("subscriber raised from on_error", error=repr(again))


def _noop(lane: Lane) -> None:
    lane.paused = False


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


class EntrySource(reactivex.Observable[OplogEntry]):
    """The Observable ``oplog_entries()`` returns; knows its oplog and start.

    Operators read ``oplog_id`` from it (to make resume tokens) and ``seek``
    moves its start instead of skipping entries.
    """

    def __init__(
        self,
        oplog: Oplog,
        *,
        after: int | None,
        start: StartAt | None,
        batch_size: int,
        max_await_time: float,
        scheduler: abc.SchedulerBase | None,
        scope: Scope | None = None,
        sift: Sift | None = None,
        resume: ResumeToken | None = None,
    ) -> None:
        super().__init__(self._subscribe)
        self.oplog = oplog
        self.oplog_id = oplog.oplog_id
        self.after = after
        self.start = start
        self.batch_size = batch_size
        self.max_await_time = max_await_time
        self.scheduler = scheduler
        self.scope = scope
        self.sift = sift
        self.resume = resume  # the token ``after`` came from: checked against the oplog's history

    def starting_after(self, op_id: int, resume: ResumeToken | None = None) -> EntrySource:
        """The same source, starting after ``op_id``, which ``resume`` (when given) names."""
        return EntrySource(
            self.oplog, after=op_id, start=None, batch_size=self.batch_size,
            max_await_time=self.max_await_time, scheduler=self.scheduler, scope=self.scope, sift=self.sift,
            resume=resume,
        )

    def within(self, db: str, collection: str | None = None) -> EntrySource:
        """The same source, giving only the entries of a database or a collection.

        A collection's source also gives its database's ``dropDatabase``. The
        shared tailer then hands each subscription only its namespace's
        entries of a batch: a thousand streams on different collections cost
        one pass over the batch per namespace, not one call per stream per
        entry. ``scope()`` applied to a source does this.
        """
        return EntrySource(
            self.oplog, after=self.after, start=self.start, batch_size=self.batch_size,
            max_await_time=self.max_await_time, scheduler=self.scheduler, scope=(db, collection), sift=self.sift,
            resume=self.resume,
        )

    def sifted(self, sift: Sift) -> EntrySource:
        """The same source, free to leave out the entries whose records fail ``sift``.

        The subscriber must want none of them: ``rxcs.prefilter.leading_match_sift``
        gives such a test for a stream's leading ``$match``. A cursor the
        shared tailer reads for several subscriptions sifts only when they
        all carry this same sift.
        """
        return EntrySource(
            self.oplog, after=self.after, start=self.start, batch_size=self.batch_size,
            max_await_time=self.max_await_time, scheduler=self.scheduler, scope=self.scope, sift=sift,
            resume=self.resume,
        )

    def start_position(self) -> int:
        """Resolve the start to an op_id, now; raises if that history is gone."""
        oplog = self.oplog
        if self.after is not None:
            position = self.after
            if self.resume is not None:
                check_token_history(oplog, self.resume)
            elif position > oplog.last_op_id:
                raise InvalidResumeToken(
                    f"position op_id {position} is ahead of the oplog, which ends at {oplog.last_op_id}"
                )
        elif self.start is None:
            position = oplog.last_op_id
        elif isinstance(self.start, Beginning):
            position = oplog.first_op_id - 1
        else:
            position = oplog.op_id_at(self.start)
        return position

    def _subscribe(
        self, observer: abc.ObserverBase[OplogEntry], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        position = self.start_position()
        cursor = self.oplog.cursor(position)  # raises ChangeStreamHistoryLost now, not later
        lane = Lane(self.oplog, observer, position, self.scope, self.sift)
        chosen = self.scheduler
        if chosen is not None:
            return _ScheduledTailer(lane, cursor, self.batch_size, self.max_await_time, chosen).start()
        tailer = _Tailer.for_oplog(self.oplog, self.batch_size, self.max_await_time)
        tailer.add(lane, cursor)
        return Disposable(lambda: tailer.remove(lane))


def oplog_entries(
    oplog: Oplog,
    after: int | None = None,
    *,
    start: StartAt | None = None,
    batch_size: int = 100,
    max_await_time: float = 1.0,
    scheduler: abc.SchedulerBase | None = None,
) -> EntrySource:
    """A cold Observable of the oplog's entries, in op_id order, tailing forever.

    The start is fixed when a subscription is made: after ``after`` (an
    op_id), or at ``start`` (``rxcs.BEGINNING``, a ``datetime`` or a
    ``ClusterTime``), or, with neither, at the present (only entries appended
    after subscribing). A start older than the oldest retained entry makes
    the subscription fail with ``ChangeStreamHistoryLost`` at once.

    Entries are read ``batch_size`` at a time and emitted synchronously on the
    tailer thread, shared by the oplog's subscriptions (see the module
    docstring), or on ``scheduler`` when one is given. ``max_await_time``
    bounds each wait for new entries.

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
    if after is not None and start is not None:
        raise ValueError("give at most one of after= and start=")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise ValueError(f"after must be an op_id (int >= 0), not {after!r}")
    if start is not None and not isinstance(start, (Beginning, datetime, ClusterTime)):
        raise TypeError(f"start must be rxcs.BEGINNING, a datetime or a ClusterTime, not {start!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    if not max_await_time > 0:
        raise ValueError(f"max_await_time must be a positive number of seconds, not {max_await_time!r}")
    return EntrySource(
        oplog, after=after, start=start, batch_size=batch_size,
        max_await_time=max_await_time, scheduler=scheduler,
    )


class _Group:
    """Lanes at one position, reading through one cursor."""

    __slots__ = ("cursor", "lanes")

    def __init__(self, cursor: OplogCursor, lanes: list[Lane]) -> None:
        self.cursor = cursor
        self.lanes = lanes


_registry: weakref.WeakKeyDictionary[Oplog, dict[tuple[int, float], _Tailer]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


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

    @classmethod
    def for_oplog(cls, oplog: Oplog, batch_size: int, max_await_time: float) -> _Tailer:
        with _registry_lock:
            tailers = _registry.setdefault(oplog, {})
            tailer = tailers.get((batch_size, max_await_time))
            if tailer is None:
                tailer = tailers[(batch_size, max_await_time)] = cls(oplog, batch_size, max_await_time)
            return tailer

    def add(self, lane: Lane, cursor: OplogCursor) -> None:
        lane._resume = self._rejoin
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
        """Dispose a lane; the last one out stops the thread (and waits for it)."""
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
            log.exception("tailer failed", oplog_id=str(self._oplog.oplog_id))
            with self._lock:
                lanes = list(self._members)
            for lane in lanes:
                lane.fail(exc)
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
                lane.leftover = []
                group.lanes.append(lane)
                if given is not None:
                    given.close()
                continue
            try:
                if given is not None:
                    cursor = given
                elif lane.leftover:
                    cursor, lane.leftover = _LeftoverCursor(self._oplog, lane.leftover), []
                else:
                    cursor = self._oplog.cursor(lane.position)
            except Exception as exc:  # noqa: BLE001 - e.g. history trimmed while paused
                lane.fail(exc)
                continue
            groups[lane.position] = _Group(cursor, [lane])

    def _step(self, groups: dict[int, _Group]) -> bool:
        """Read one batch for every group; False when all are caught up."""
        progressed = False
        for position, group in list(groups.items()):
            try:
                entries = group.cursor.read(self._batch_size, _group_sift(group.lanes))
            except Exception as exc:  # noqa: BLE001 - the group's lanes get on_error
                del groups[position]
                group.cursor.close()
                for lane in group.lanes:
                    lane.fail(exc)
                continue
            new_position = group.cursor.position  # past the entries, and any it sifted out after them
            if new_position == position:
                group.lanes = [lane for lane in group.lanes if not lane.disposed]
                if not group.lanes:
                    del groups[position]
                    group.cursor.close()
                continue
            progressed = True
            scoped: dict[Scope, list[OplogEntry]] = {}
            fed = [lane for lane in group.lanes if self._feed(lane, entries, new_position, scoped)]
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
                existing.lanes.extend(kept)
                group.cursor.close()
            elif kept:
                group.lanes = kept
                groups[new_position] = group
            else:
                group.cursor.close()
        return progressed

    @staticmethod
    def _feed(lane: Lane, entries: list[OplogEntry], new_position: int, scoped: dict[Scope, list[OplogEntry]]) -> bool:
        """Feed a lane its entries of the batch; False when it failed."""
        if lane.disposed or lane.paused:
            return True
        scope = lane.scope
        mine: list[OplogEntry] | None = entries
        if scope is not None:
            mine = scoped.get(scope)
            if mine is None:
                mine = scoped[scope] = _in_scope(entries, scope)
        if mine:
            if not lane.feed(mine):
                return False
            if lane.position != mine[-1].op_id:
                return True  # it stopped short (paused): it goes on from there when resumed
        if not lane.disposed:  # it had all it wants of the batch: the rest is behind it too
            lane.position = new_position
        return True

    def _wait(self, groups: dict[int, _Group]) -> None:
        if groups:
            # Every group is caught up, so they sit at the end, at one position.
            self._oplog.wait(min(groups), self._max_await_time)
            return
        with self._lock:
            if not self._arrivals and self._thread is threading.current_thread():
                self._idle.wait(self._max_await_time)


def _group_sift(lanes: list[Lane]) -> Sift | None:
    """The sift a group's cursor may use: one its every lane would apply, else none.

    Streams with the same leading ``$match`` share one sift (``rxcs.prefilter``
    keeps them), so a crowd of alike streams still sifts.
    """
    sift: Sift | None = None
    for lane in lanes:
        if lane.disposed:
            continue
        if lane.sift is None or (sift is not None and lane.sift is not sift):
            return None
        sift = lane.sift
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
            self._cursor = self._oplog.cursor(self.position)
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
        lane._resume = self._resumed

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
        try:
            entries, lane.leftover = lane.leftover or self._cursor.read(self._batch_size), []
        except Exception as exc:  # noqa: BLE001 - the lane's observer gets on_error
            lane.fail(exc)
            self._cursor.close()
            return
        if entries:
            lane.feed(entries)
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
