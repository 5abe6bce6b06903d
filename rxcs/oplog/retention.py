"""Retention that runs by itself: a keeper thread per writing oplog drops what its limits let go.

A limit is a floor, "at least this much is kept": ``retain_entries=N`` never
drops one of the newest N entries, ``retain_bytes=B`` never leaves less
than B bytes, ``retain_age=S`` never drops an entry younger than S
seconds. When several are set, each lets go on its own: an entry goes as
soon as one limit lets it go.

FileOplog drops whole segments, the oldest first: a segment goes when every
entry in it is beyond a limit, so what remains is at most one segment more
than the limit (the newest segment, being written, always stays). The
writer tells the keeper of each append with a comparison against
precomputed thresholds; the keeper deletes one segment per hold of the
oplog's lock, so an append waits at most for one segment delete. While the
writer is idle, the keeper sleeps until the oldest segment's newest entry
reaches ``retain_age`` and drops it then.

RedisOplog trims entries one by one, exactly (``XTRIM MAXLEN`` and, by the
server's clock, ``XTRIM MINID``), from the keeper of each process that
appends: after appends, and while idle every quarter of ``retain_age``
(between 0.05 and 1 s).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol, final

from rxcs.errors import InvalidOptionError, OplogClosedError, RxcsError
from rxcs.log import log

__all__ = ["Retention", "RetentionKeeper", "RetentionStatistics", "SegmentedLog", "StreamLog"]

IDLE_RECHECK: Final = 5.0
"""Seconds a keeper sleeps at most without being told of an append (a floor against clock jumps)."""

_RETRY_AFTER_ERROR: Final = 1.0


@final
@dataclass(frozen=True, slots=True)
class Retention:
    """An oplog's retention limits; ``None`` for a limit not set.

    Examples:
        >>> Retention.of(retain_entries=1000, retain_age=timedelta(hours=1))
        Retention(entries=1000, bytes=None, age=3600.0)
        >>> Retention.of(retain_entries=0)
        Traceback (most recent call last):
        ...
        rxcs.errors.InvalidOptionError: retain_entries must be a positive int or None, not 0
    """

    entries: int | None = None
    bytes: int | None = None
    age: float | None = None  # seconds

    @classmethod
    def of(
        cls,
        *,
        retain_entries: int | None = None,
        retain_bytes: int | None = None,
        retain_age: float | timedelta | None = None,
    ) -> Retention:
        """The limits, checked: counts are positive ints, the age a positive number of seconds or a timedelta."""
        for name, value in (("retain_entries", retain_entries), ("retain_bytes", retain_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidOptionError(f"{name} must be a positive int or None, not {value!r}")
        age = retain_age.total_seconds() if isinstance(retain_age, timedelta) else retain_age
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 < age < 2**53):
            raise InvalidOptionError(
                f"retain_age must be a positive number of seconds or a timedelta, not {retain_age!r}"
            )
        return cls(retain_entries, retain_bytes, None if age is None else float(age))

    @property
    def active(self) -> bool:
        """True when a limit is set."""
        return self.entries is not None or self.bytes is not None or self.age is not None


@final
@dataclass(frozen=True, slots=True)
class RetentionStatistics:
    """What a keeper dropped: trims that removed something, entries and (FileOplog) segments removed."""

    trims: int = 0
    entries_trimmed: int = 0
    segments_trimmed: int = 0


class SegmentedLog(Protocol):
    """What a FileOplog shows its keeper."""

    def retention_view(self) -> tuple[tuple[int, ...], int, int]:
        """(first op_id of each segment, oldest first; the last op_id; bytes of the segment being written)."""
        ...

    def segment_size(self, first: int) -> int:
        """Bytes of the finished segment starting at ``first`` (OSError when it is gone)."""
        ...

    def segment_newest_wall_ms(self, first: int, following: int) -> int | None:
        """Wall time (ms) of the newest entry of the finished segment ``first`` (next one at ``following``)."""
        ...

    def drop_oldest_segment(self, first: int) -> int:
        """Drop the oldest segment if it still starts at ``first`` and is not the newest; entries dropped."""
        ...


class StreamLog(Protocol):
    """What a RedisOplog shows its keeper."""

    def trim_retained(self, entries: int | None, age_ms: int | None) -> int:
        """Trim to the newest ``entries`` and to what is younger than ``age_ms`` by the server's clock; removed."""
        ...


class RetentionKeeper:
    """Applies a ``Retention`` in a thread of its own, started at the first ``appended()``; ``close()`` stops it."""

    def __init__(self, retention: Retention, name: str) -> None:
        self.retention = retention
        self._name = name
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._trims = 0
        self._entries_trimmed = 0
        self._segments_trimmed = 0

    def appended(self) -> None:
        """Something was appended: let the keeper look (the thread starts on the first call)."""
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped:
                thread = threading.Thread(target=self._run, name="rxcs-oplog-retention", daemon=True)
                self._thread = thread
                thread.start()

    def close(self) -> None:
        """Stop the thread and wait for it; idempotent. Call it without holding the oplog's lock."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def statistics(self) -> RetentionStatistics:
        """A frozen record of what this keeper dropped."""
        return RetentionStatistics(self._trims, self._entries_trimmed, self._segments_trimmed)

    def _counted(self, entries: int, segments: int = 0) -> None:
        if entries:
            self._trims += 1
            self._entries_trimmed += entries
            self._segments_trimmed += segments

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                pause = self._pass()
            except OplogClosedError:
                return
            except (RxcsError, OSError) as exc:
                log.warning("oplog retention failed; retrying", oplog=self._name, error=str(exc))
                pause = _RETRY_AFTER_ERROR
            self._wake.wait(IDLE_RECHECK if pause is None else max(0.0, min(pause, IDLE_RECHECK)))

    def _pass(self) -> float | None:
        """Drop what is due; return the seconds until something may be due with no append (None: only appends)."""
        raise NotImplementedError


@final
class SegmentKeeper(RetentionKeeper):
    """A FileOplog's keeper: whole segments, oldest first, one per hold of the oplog's lock."""

    def __init__(self, log_: SegmentedLog, retention: Retention, name: str) -> None:
        super().__init__(retention, name)
        self._log = log_
        self._sizes: dict[int, int] = {}  # finished segments never change size
        self._newest: dict[int, int | None] = {}
        # The writer wakes the keeper once the last op_id or the active segment's size reaches these.
        self._due_op_id = 0
        self._due_active_bytes = 0

    def appended_at(self, last_op_id: int, active_bytes: int) -> None:
        """The writer's hook after each commit: two comparisons, and a wake-up only when a drop may be due."""
        if last_op_id >= self._due_op_id or active_bytes >= self._due_active_bytes:
            self.appended()

    def _pass(self) -> float | None:
        retention = self.retention
        while not self._stopped:
            segments, last_op_id, active_bytes = self._log.retention_view()
            if len(segments) < 2:  # the segment being written always stays
                self._due_op_id = self._due_active_bytes = 0  # a roll starts the next look
                return None
            oldest, following = segments[0], segments[1]
            finished = segments[1:-1]
            rest_bytes = sum(self._size(first) for first in finished) + active_bytes
            pause: float | None = None
            due = False
            if retention.entries is not None and last_op_id - following + 1 >= retention.entries:
                due = True
            if retention.bytes is not None and rest_bytes >= retention.bytes:
                due = True
            if retention.age is not None:
                newest = self._newest_wall_ms(oldest, following)
                if newest is not None:
                    pause = newest / 1000 + retention.age - time.time()
                    due = due or pause < 0
            if due:
                dropped = self._log.drop_oldest_segment(oldest)
                self._counted(dropped, 1 if dropped else 0)
                self._sizes.pop(oldest, None)
                self._newest.pop(oldest, None)
                if not dropped:
                    return 1.0  # held back (a consumer's checkpoint needs it) or moved meanwhile: look again later
                continue
            self._due_op_id = (following + retention.entries - 1) if retention.entries is not None else 2**63
            self._due_active_bytes = (
                retention.bytes - (rest_bytes - active_bytes) if retention.bytes is not None else 2**63
            )
            return pause
        return None

    def _size(self, first: int) -> int:
        size = self._sizes.get(first)
        if size is None:
            size = self._sizes[first] = self._log.segment_size(first)
        return size

    def _newest_wall_ms(self, first: int, following: int) -> int | None:
        if first not in self._newest:
            self._newest[first] = self._log.segment_newest_wall_ms(first, following)
        return self._newest[first]


@final
class StreamKeeper(RetentionKeeper):
    """A RedisOplog's keeper: exact trims after appends, and on a timer while idle when an age is set."""

    def __init__(self, log_: StreamLog, retention: Retention, name: str) -> None:
        super().__init__(retention, name)
        self._log = log_
        self._idle = None if retention.age is None else min(1.0, max(0.05, retention.age / 4))

    def _pass(self) -> float | None:
        retention = self.retention
        age_ms = None if retention.age is None else max(1, round(retention.age * 1000))
        removed = self._log.trim_retained(retention.entries, age_ms)
        self._counted(removed)
        return self._idle


REDIS_TRIM_RETAINED: Final = r"""
-- KEYS: stream. ARGV: entries kept (0: no limit), age kept in ms (0: no limit), by the server's clock.
-- Returns the entries removed. Stream IDs are the server's milliseconds at XADD, so MINID cuts by age.
local removed = 0
local keep = tonumber(ARGV[1])
if keep > 0 then
  removed = removed + redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
end
local age = tonumber(ARGV[2])
if age > 0 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now_ms - age))
end
return removed
"""
"""The Redis script of ``RedisOplog.trim_retained``: exact, atomic, on the server's clock."""
