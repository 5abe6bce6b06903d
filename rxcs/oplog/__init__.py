"""The operation log: entries, the ``Oplog`` contract and its backends."""

import importlib
from pathlib import Path
from typing import Any

from rxcs.errors import RxcsError
from rxcs.oplog.base import Oplog, OplogCursor
from rxcs.oplog.catalog import CollectionInfo
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.memory import MemoryOplog

__all__ = ["Change", "CollectionInfo", "MemoryOplog", "Oplog", "OplogCursor", "OplogEntry", "open_oplog"]

_REDIS_SCHEMES = (
    "redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://",
    "rediss+cluster://",
)


def open_oplog(location: str | Path, **options: Any) -> Oplog:
    """Open the oplog at ``location``, choosing the backend from its form.

    - ``":memory:"``: a new ``MemoryOplog``;
    - ``"redis://host:port/db?stream=NAME"`` (also ``rediss://``, ``unix://``, and
      ``redis+sentinel://host:port,.../SERVICE?stream=NAME``): a ``RedisOplog``;
    - ``"redis+cluster://host:port[,host:port...]/?stream=NAME"`` (also ``rediss+cluster://``): a
      ``RedisOplog`` on a Redis Cluster, every host a seed;
    - anything else is a directory: a ``FileOplog`` (created when missing).

    ``options`` go to the backend's constructor.

    Examples:
        >>> import rxcs
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> oplog.insert("shop", "users", {"_id": 1})
        1
    """
    if isinstance(location, str) and location == ":memory:":
        return MemoryOplog(**options)
    if isinstance(location, str) and location.startswith(_REDIS_SCHEMES):
        return _open_redis(location, **options)
    if not isinstance(location, (str, Path)):
        raise TypeError(f"oplog location must be a path or a URI string, not {type(location).__name__}")
    from rxcs.oplog.file import FileOplog

    return FileOplog(location, **options)


def _open_redis(url: str, **options: Any) -> Oplog:
    try:
        backend = importlib.import_module("rxcs.oplog.redis")  # redis-py is an optional extra
    except ImportError as exc:
        raise RxcsError(f"{url}: the Redis backend is not available ({exc}); install rxcs[redis]") from None
    oplog: Oplog = backend.RedisOplog.from_url(url, **options)
    return oplog
