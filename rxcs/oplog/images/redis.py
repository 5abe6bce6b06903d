"""The image store of a RedisOplog: hashes, a sorted set and a set beside the stream, under its hash tag.

For a stream ``NAME``::

    {NAME}:images               hash: oplog_id, format, applied (the checkpoint), every (1: every collection)
    {NAME}:images:settings      hash: "db.coll" -> 1 or 0, collections' own settings
    {NAME}:images:rows          hash: op_id -> "prev:document" (prev empty when none, document empty when none)
    {NAME}:images:expiry        sorted set: op_id scored by the op_id it expires at (images no longer current)
    {NAME}:images:ns:DB.COLL    hash: document key (encoded) -> op_id of its current image
    {NAME}:images:namespaces    set: the "db.coll" that have such a hash

Every key carries the stream's hash tag, so all live in the stream's slot and
every script declares what it touches. Any number of processes bring the store
up to date (``DocumentImages.catch_up``): the commit script applies a batch of
writes only if the checkpoint is still the one they were computed from, so
two producers catching up at once never apply an entry twice, and trims the
images that expired before the stream's oldest entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, final

import redis
from redis.cluster import RedisCluster

from rxcs.errors import RxcsError
from rxcs.oplog.images.store import (
    DROP,
    DROP_DATABASE,
    EXPIRE,
    RENAME,
    ROW,
    SET,
    SETTING,
    UNSET,
    Checkpoint,
    ImageStore,
    Key,
    Settings,
    StoreState,
    Write,
)

__all__ = ["RedisImageStore"]

T = TypeVar("T")
Retrying = Callable[[str, Callable[[], Any]], Any]

FORMAT: Final = "rxcs-images/1"
_TRIM_BATCH: Final = 1000  # images dropped per script call, so one call never holds the server long

# KEYS: images, oplog meta. ARGV: oplog id, format, every (0/1, or '' to leave as it is).
# Creates the store at the oplog's last op_id unless there is one; returns {oplog id, format}.
_INIT = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then
  local last = redis.call('HGET', KEYS[2], 'last_op_id') or '0'
  local every = ARGV[3] == '1' and 1 or 0
  redis.call('HSET', KEYS[1], 'oplog_id', ARGV[1], 'format', ARGV[2], 'applied', last, 'every', every)
elseif ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'every', ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'oplog_id', 'format')
"""

# KEYS: images, settings. Returns {applied, every, settings as HGETALL}.
_STATE = r"""
local state = redis.call('HMGET', KEYS[1], 'applied', 'every')
return {state[1] or '0', state[2] or '0', redis.call('HGETALL', KEYS[2])}
"""

_ROWS = r"""
local function document_of(row)
  if not row then return false end
  local at = string.find(row, ':', 1, true)
  local document = string.sub(row, at + 1)
  if document == '' then return false end
  return document
end
local function prev_of(row)
  if not row then return false end
  local at = string.find(row, ':', 1, true)
  local prev = string.sub(row, 1, at - 1)
  if prev == '' then return false end
  return prev
end
"""

# KEYS: images, rows, then namespace hashes. ARGV: pairs of (index into KEYS, field).
# Returns {applied, then per pair: op_id and document, or false and false}.
_DOCUMENTS = _ROWS + r"""
local reply = {redis.call('HGET', KEYS[1], 'applied') or '0'}
for i = 1, #ARGV, 2 do
  local op_id = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  local document = false
  if op_id then document = document_of(redis.call('HGET', KEYS[2], op_id)) end
  if not document then op_id = false end
  reply[#reply + 1] = op_id
  reply[#reply + 1] = document
end
return reply
"""

# KEYS: images, rows. ARGV: op_id. Returns {applied, pre-image, post-image}.
_IMAGES = _ROWS + r"""
local applied = redis.call('HGET', KEYS[1], 'applied') or '0'
local row = redis.call('HGET', KEYS[2], ARGV[1])
local prev = prev_of(row)
local before = false
if prev then before = document_of(redis.call('HGET', KEYS[2], prev)) end
return {applied, before, document_of(row)}
"""

# KEYS: images, rows, namespace hash. ARGV: field. Returns {applied, document}.
_CURRENT = _ROWS + r"""
local applied = redis.call('HGET', KEYS[1], 'applied') or '0'
local op_id = redis.call('HGET', KEYS[3], ARGV[1])
local document = false
if op_id then document = document_of(redis.call('HGET', KEYS[2], op_id)) end
return {applied, document}
"""

_TRIMMING = r"""
local function trim_before(rows, expiry, before, budget)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', '(' .. before, 'LIMIT', 0, budget)
  if #gone > 0 then
    redis.call('HDEL', rows, unpack(gone))
    redis.call('ZREM', expiry, unpack(gone))
  end
  return #gone
end
"""

# KEYS: images, rows, expiry, settings, namespaces, stream, oplog meta, then namespace hashes.
# ARGV: expected, applied, then the writes (see RedisImageStore._encode). Returns 1, or 0 when the
# checkpoint moved. Then drops up to a batch of images that expired before the stream's oldest entry.
_COMMIT = _TRIMMING + r"""
if (redis.call('HGET', KEYS[1], 'applied') or '0') ~= ARGV[1] then
  return 0
end
local function forget(index, name, at)
  local fields = redis.call('HGETALL', KEYS[index])
  for i = 2, #fields, 2 do
    redis.call('ZADD', KEYS[3], 'NX', at, fields[i])
  end
  redis.call('DEL', KEYS[index])
  redis.call('SREM', KEYS[5], name)
end
local function drop(index, name, at)
  forget(index, name, at)
  redis.call('HDEL', KEYS[4], name)
end
local i = 3
while i <= #ARGV do
  local kind = ARGV[i]
  if kind == 'R' then
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2] .. ':' .. ARGV[i + 3])
    if ARGV[i + 3] == '' then redis.call('ZADD', KEYS[3], 'NX', ARGV[i + 1], ARGV[i + 1]) end
    i = i + 4
  elseif kind == 'E' then
    if redis.call('HEXISTS', KEYS[2], ARGV[i + 1]) == 1 then
      redis.call('ZADD', KEYS[3], 'NX', ARGV[i + 2], ARGV[i + 1])
    end
    i = i + 3
  elseif kind == 'S' then
    redis.call('HSET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 3], ARGV[i + 4])
    redis.call('SADD', KEYS[5], ARGV[i + 2])
    i = i + 5
  elseif kind == 'U' then
    redis.call('HDEL', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif kind == 'G' then
    redis.call('HSET', KEYS[4], ARGV[i + 2], ARGV[i + 3])
    if ARGV[i + 3] == '0' then forget(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 4]) end
    i = i + 5
  elseif kind == 'D' then
    drop(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif kind == 'N' then
    local from, from_name = tonumber(ARGV[i + 1]), ARGV[i + 2]
    local to, to_name, at = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
    drop(to, to_name, at)
    if redis.call('EXISTS', KEYS[from]) == 1 then
      redis.call('RENAME', KEYS[from], KEYS[to])
      redis.call('SREM', KEYS[5], from_name)
      redis.call('SADD', KEYS[5], to_name)
    end
    local setting = redis.call('HGET', KEYS[4], from_name)
    if setting then
      redis.call('HDEL', KEYS[4], from_name)
      redis.call('HSET', KEYS[4], to_name, setting)
    end
    i = i + 6
  elseif kind == 'B' then
    local count, at = tonumber(ARGV[i + 1]), ARGV[i + 2]
    for j = 0, count - 1 do
      drop(tonumber(ARGV[i + 3 + 2 * j]), ARGV[i + 4 + 2 * j], at)
    end
    i = i + 3 + 2 * count
  else
    return redis.error_reply('RXCS_IMAGES unknown write ' .. tostring(kind))
  end
end
redis.call('HSET', KEYS[1], 'applied', ARGV[2])
local head = redis.call('XRANGE', KEYS[6], '-', '+', 'COUNT', 1)[1]
local first
if head then
  first = tonumber(head[2][2])
else
  first = tonumber(redis.call('HGET', KEYS[7], 'last_op_id') or '0') + 1
end
trim_before(KEYS[2], KEYS[3], first, """ + str(_TRIM_BATCH) + r""")
return 1
"""

# KEYS: rows, expiry. ARGV: before. Drops a batch of images expired before it; returns how many.
_TRIM = _TRIMMING + r"""
return trim_before(KEYS[1], KEYS[2], ARGV[1], """ + str(_TRIM_BATCH) + r""")
"""

# KEYS: images, rows, expiry, namespaces, then namespace hashes. ARGV: applied, expected.
# Returns 1, or 0 (changing nothing) when the checkpoint is no longer the expected one.
_RESET = r"""
if (redis.call('HGET', KEYS[1], 'applied') or '0') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'applied', ARGV[1])
return 1
"""

_KINDS: Final = {ROW: "R", EXPIRE: "E", SET: "S", UNSET: "U", SETTING: "G", DROP: "D", RENAME: "N",
                 DROP_DATABASE: "B"}


@final
class RedisImageStore(ImageStore):
    """Document images beside a RedisOplog's stream; see the module for its keys.

    ``retrying(what, operation)`` runs a Redis call with the oplog's
    retrying of connection faults (and its errors).
    """

    def __init__(
        self, client: redis.Redis | RedisCluster, stream: str, oplog_id: str, oplog_meta: str, retrying: Retrying
    ) -> None:
        tag = f"{{{stream}}}"
        self._client = client
        self._stream = stream
        self._oplog_id = oplog_id
        self._oplog_meta = oplog_meta
        self._retrying = retrying
        self._meta = f"{tag}:images"
        self._settings = f"{tag}:images:settings"
        self._rows = f"{tag}:images:rows"
        self._expiry = f"{tag}:images:expiry"
        self._namespaces = f"{tag}:images:namespaces"
        self._namespace_prefix = f"{tag}:images:ns:"
        self._init = client.register_script(_INIT)
        self._state = client.register_script(_STATE)
        self._documents = client.register_script(_DOCUMENTS)
        self._images = client.register_script(_IMAGES)
        self._current = client.register_script(_CURRENT)
        self._commit = client.register_script(_COMMIT)
        self._trim = client.register_script(_TRIM)
        self._reset = client.register_script(_RESET)

    @property
    def keys(self) -> list[str]:
        """The store's fixed keys (the namespace hashes come and go)."""
        return [self._meta, self._settings, self._rows, self._expiry, self._namespaces]

    def exists(self) -> bool:
        """Whether the oplog keeps images (the store's hash is there)."""
        return bool(self._retrying("looking for document images", lambda: self._client.exists(self._meta)))

    def create(self, *, every_collection: bool | None) -> None:
        """Make the store at the oplog's last op_id unless there is one; ``every_collection`` True or False sets it."""
        every = "" if every_collection is None else str(int(every_collection))
        owner, version = self._retrying(
            "turning document images on",
            lambda: self._init(keys=[self._meta, self._oplog_meta], args=[self._oplog_id, FORMAT, every]),
        )
        if owner is None or owner.decode() != self._oplog_id or version != FORMAT.encode():
            raise RxcsError(
                f"stream {self._stream!r}: {self._meta} is not this oplog's document image store "
                f"(oplog {owner!r}, format {version!r})"
            )

    def _namespace_key(self, db: str, coll: str) -> str:
        return f"{self._namespace_prefix}{db}.{coll}"

    # -- reading ---------------------------------------------------------------------

    def state(self) -> StoreState:
        applied, every, pairs = self._retrying(
            "reading document images", lambda: self._state(keys=[self._meta, self._settings])
        )
        collections = {}
        for name, enabled in zip(pairs[0::2], pairs[1::2], strict=True):
            db, _, coll = name.decode().partition(".")
            collections[(db, coll)] = enabled == b"1"
        return StoreState(int(applied), Settings(every == b"1", collections))

    def checkpoint(self) -> Checkpoint:
        applied = self._retrying("reading document images", lambda: self._client.hget(self._meta, "applied"))
        return int(applied or 0), None

    def documents(self, keys: Sequence[Key]) -> tuple[int, dict[Key, tuple[int, bytes]]]:
        script_keys: list[str] = [self._meta, self._rows]
        where: dict[tuple[str, str], int] = {}
        args: list[Any] = []
        for db, coll, field in keys:
            index = where.get((db, coll))
            if index is None:
                script_keys.append(self._namespace_key(db, coll))
                index = where[(db, coll)] = len(script_keys)
            args += [index, field]
        reply = self._retrying("reading document images", lambda: self._documents(keys=script_keys, args=args))
        found: dict[Key, tuple[int, bytes]] = {}
        for key, op_id, document in zip(keys, reply[1::2], reply[2::2], strict=True):
            if op_id is not None and document is not None:
                found[key] = (int(op_id), document)
        return int(reply[0]), found

    def images(self, op_id: int) -> tuple[int, bytes | None, bytes | None]:
        applied, before, after = self._retrying(
            "reading document images", lambda: self._images(keys=[self._meta, self._rows], args=[op_id])
        )
        return int(applied), before, after

    def current(self, key: Key) -> tuple[int, bytes | None]:
        keys = [self._meta, self._rows, self._namespace_key(key[0], key[1])]
        applied, document = self._retrying(
            "reading document images", lambda: self._current(keys=keys, args=[key[2]])
        )
        return int(applied), document

    def statistics(self) -> dict[str, int]:
        def read() -> tuple[Any, ...]:
            pipe = self._client.pipeline(transaction=True)
            pipe.hget(self._meta, "applied")
            pipe.hlen(self._rows)
            pipe.smembers(self._namespaces)
            applied, images, names = pipe.execute()
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hlen(self._namespace_prefix + name.decode())
            return int(applied or 0), int(images), sum(pipe.execute()) if names else 0

        applied, images, documents = self._retrying("reading document images", read)
        return {"applied": applied, "images": images, "documents": documents}

    # -- writing ---------------------------------------------------------------------

    def commit(self, expected: int, writes: Sequence[Write], applied: int, stamp: tuple[int, int, int] | None) -> bool:
        keys = [self._meta, self._rows, self._expiry, self._settings, self._namespaces, self._stream, self._oplog_meta]
        where: dict[tuple[str, str], int] = {}

        def index(db: str, coll: str) -> int:
            found = where.get((db, coll))
            if found is None:
                keys.append(self._namespace_key(db, coll))
                found = where[(db, coll)] = len(keys)
            return found

        args: list[Any] = [expected, applied]
        for write in writes:
            kind = write[0]
            args.append(_KINDS[kind])
            if kind == ROW:
                _, op_id, prev, document = write
                args += [op_id, "" if prev is None else prev, b"" if document is None else document]
            elif kind == EXPIRE:
                args += [write[1], write[2]]
            elif kind == SET:
                _, db, coll, field, op_id = write
                args += [index(db, coll), f"{db}.{coll}", field, op_id]
            elif kind == UNSET:
                args += [index(write[1], write[2]), write[3]]
            elif kind == SETTING:
                _, db, coll, enabled, at = write
                args += [index(db, coll), f"{db}.{coll}", int(enabled), at]
            elif kind == DROP:
                args += [index(write[1], write[2]), f"{write[1]}.{write[2]}", write[3]]
            elif kind == RENAME:
                _, db, coll, to_db, to_coll, at = write
                args += [index(db, coll), f"{db}.{coll}", index(to_db, to_coll), f"{to_db}.{to_coll}", at]
            else:  # DROP_DATABASE: every collection of the database the store knows, read now (the commit
                # refuses if the store moved since, so none can have come meanwhile)
                _, db, at = write
                names = sorted(self._namespaces_of(db))
                args += [len(names), at]
                for name in names:
                    args += [index(db, name), f"{db}.{name}"]
        done = self._retrying("bringing document images up to date", lambda: self._commit(keys=keys, args=args))
        return bool(done)

    def _namespaces_of(self, db: str) -> set[str]:
        """The collections of ``db`` that have documents or a setting in the store."""
        def read() -> tuple[Any, Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.smembers(self._namespaces)
            pipe.hkeys(self._settings)
            members, names = pipe.execute()
            return members, names

        members, names = self._retrying("reading document images", read)
        prefix = f"{db}."
        return {
            name[len(prefix):] for name in (raw.decode() for raw in (*members, *names)) if name.startswith(prefix)
        }

    def set_every_collection(self, enabled: bool) -> None:
        self.create(every_collection=enabled)

    def reset(self, applied: int, *, expected: int) -> bool:
        def names() -> Any:
            return self._client.smembers(self._namespaces)

        keys = [self._meta, self._rows, self._expiry, self._namespaces]
        keys += [self._namespace_prefix + name.decode() for name in self._retrying("reading document images", names)]
        # A namespace hash made after the names were read means the checkpoint moved: the script refuses then.
        done = self._retrying(
            "starting document images again", lambda: self._reset(keys=keys, args=[applied, expected])
        )
        return bool(done)

    def trim(self, before_op_id: int) -> int:
        dropped = 0
        while True:
            gone = int(self._retrying(
                "trimming document images", lambda: self._trim(keys=[self._rows, self._expiry], args=[before_op_id])
            ))
            dropped += gone
            if gone < _TRIM_BATCH:
                return dropped
