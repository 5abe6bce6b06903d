"""``ClusterTime``: the position in time of an oplog entry (MongoDB's ``clusterTime``).

It sits below the event types and the typed event documents, which both name it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ClusterTime"]


class ClusterTime(NamedTuple):
    """A position in time that orders every entry of one oplog.

    Like MongoDB's BSON Timestamp: ``time`` is seconds since the epoch and
    ``inc`` orders entries within that second. Comparisons are tuple order.
    """

    time: int
    inc: int
