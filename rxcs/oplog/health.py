"""Is an oplog usable right now? A quick check for probes: ``rxcs oplog info`` and ``rxcs serve``'s ``/readyz``.

The check never waits out a backend's retrying: a Redis server that does
not answer one ``PING`` is unreachable now, which is what a probe asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from rxcs.errors import RxcsError
from rxcs.oplog.base import Oplog

__all__ = ["OplogHealth", "check_oplog"]


@final
@dataclass(frozen=True, slots=True)
class OplogHealth:
    """What the check found: ``problems`` is empty when the oplog is open, reachable and readable."""

    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def check_oplog(oplog: Oplog) -> OplogHealth:
    """Check that ``oplog`` is open, its storage reachable, and its oldest and newest entries readable.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> check_oplog(oplog).healthy
        True
        >>> oplog.close()
        >>> check_oplog(oplog).problems
        ('the oplog is closed',)
    """
    if oplog.closed:
        return OplogHealth(("the oplog is closed",))
    ping = getattr(oplog, "ping", None)  # a backend on a server (RedisOplog): one round trip, no retrying
    try:
        if ping is not None:
            ping()
        first, last = oplog.first_op_id, oplog.last_op_id
        for after in {first - 1, last - 1} if last >= first else ():
            oplog.read(after, 1)
    except RxcsError as exc:
        return OplogHealth((f"{type(exc).__name__}: {exc}",))
    except OSError as exc:
        return OplogHealth((f"the oplog's storage failed: {exc}",))
    return OplogHealth(())
