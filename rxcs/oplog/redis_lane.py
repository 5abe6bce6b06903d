"""A connection a RedisOplog holds for one script it runs often: its appends.

Taking a connection from redis-py's pool and giving it back costs, with the
command's packing, as much Python as the script's round trip; a writer
appending one change at a time pays it on every append, and a live stream
waits for it. A ``ScriptLane`` keeps one connection for the script and packs
its commands itself (the script's SHA and keys once). One thread at a time
uses it; another thread that finds it busy takes the pool's way
(``ScriptLane.run`` says so), so concurrent writers still overlap their
round trips. After a fork the child takes a connection of its own; after
any error the connection goes back to the pool disconnected (a reply may
be under way), and the next run takes one from the pool, connected as the
pool connects (to the primary the Sentinels name now, for instance).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = ["BUSY", "ScriptLane"]

BUSY: Final = object()
"""What ``ScriptLane.run`` returns when another thread is running the script on the lane."""


@final
class ScriptLane:
    """``script`` over one held connection of ``client``'s pool (a plain or Sentinel-managed ``redis.Redis``)."""

    def __init__(self, client: redis.Redis, script: Script, keys: Sequence[str]) -> None:
        self._client = client
        self._pool = client.connection_pool
        self._script = script
        encoder: Any = self._pool.get_encoder()  # redis-py's Encoder, untyped: str as the client encodes it
        self._encode: Callable[[Any], bytes] = encoder.encode
        head = [b"EVALSHA", script.sha.encode("ascii"), b"%d" % len(keys), *(self._encode(key) for key in keys)]
        self._head = b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in head)
        self._head_count = len(head)
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pid = 0
        self._closed = False
        self._disconnect = False

    def run(self, args: Sequence[Any]) -> Any:
        """The script's reply to ``args`` (str, bytes or int), or ``BUSY``; redis-py's errors as they come."""
        if not self._lock.acquire(blocking=False):
            return BUSY
        try:
            if self._closed:
                return BUSY  # the pool's way, which reports the oplog closed
            connection = self._connection
            if connection is None or self._pid != os.getpid():  # after a fork the parent's socket is not ours
                connection = self._connection = self._pool.get_connection()
                self._pid = os.getpid()
            command = self._packed(args)
            try:
                connection.send_packed_command([command])
                try:
                    return connection.read_response()
                except NoScriptError:  # a restarted or new server (a failover): load it, then run it once more
                    self._client.script_load(self._script.script)
                    connection.send_packed_command([command])
                    return connection.read_response()
            except redis.ResponseError:
                raise  # an error reply, read whole: the connection is as good as before
            except BaseException:
                # A reply may be under way: the connection is spent. Back to the pool, whose next one connects
                # as the pool does (a Sentinel-managed pool asks where the primary is now).
                self._connection = None
                connection.disconnect()
                self._pool.release(connection)
                raise
        finally:
            if self._closed:  # closed while this run went on: its connection goes now
                self._let_go()
            self._lock.release()

    def _packed(self, args: Sequence[Any]) -> bytes:
        encode = self._encode
        parts = [b"*%d\r\n" % (self._head_count + len(args)), self._head]
        for arg in args:
            value = arg if type(arg) is bytes else encode(arg)
            parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
        return b"".join(parts)

    def close(self, *, disconnect: bool) -> None:
        """Give the connection back to the pool, or ``disconnect`` it (the oplog's own client); a run under way
        lets go of it when it returns."""
        self._disconnect = disconnect
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._let_go()
            finally:
                self._lock.release()

    def _let_go(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            if self._disconnect:
                connection.disconnect()
            self._pool.release(connection)
