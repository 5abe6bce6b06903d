"""``RedisOplog``: the oplog on a Redis stream, shared by any number of producer and consumer processes.

One Redis stream holds the entries, in op_id order, each as two fields:
``op_id`` (decimal) and ``entry`` (the msgpack record of ``rxcs.oplog.codec``).
A hash beside it, ``{NAME}:meta``, holds the oplog's identity and its
counters, and another, ``{NAME}:catalog``, the collection catalog
(``rxcs.oplog.catalog``). Every append runs one Lua script that gives the
batch its op_ids and cluster times from the server's own counter and clock,
and its collection identities from the catalog, which it updates in the same
step, so producers on many hosts share one total order and one catalog. Seeking an op_id is a bisection over stream
IDs inside another script: one round trip, no index to keep. The key layout,
the scripts and the fault handling are described in ``docs/redis.md``.

redis-py is an optional extra (``rxcs[redis]``); only ``rxcs.open_oplog`` of a
``redis://`` URL imports this module.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast, final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from rxcs.errors import (
    ChangeStreamHistoryLost,
    InvalidChangeError,
    InvalidLocationError,
    OplogClosedError,
    OplogCorruptedError,
    OplogUnavailableError,
    RxcsError,
)
from rxcs.events import ClusterTime, Namespace
from rxcs.limits import MAX_ENTRY_BYTES
from rxcs.log import log
from rxcs.oplog.base import Oplog, OplogCursor, Sift
from rxcs.oplog.catalog import CollectionInfo, catalog_action, parse_hash
from rxcs.oplog.checkpoints import CheckpointStore, RedisCheckpoints
from rxcs.oplog.codec import UNPACK_OPTIONS, EntryDecodeError, decode_entry, encode_entry, entry_from_record
from rxcs.oplog.entry import Change, OplogEntry
from rxcs.oplog.images import DocumentImages
from rxcs.oplog.images.overlay import enables_images
from rxcs.oplog.images.redis import RedisImageStore
from rxcs.oplog.redis_cluster import CLUSTER_FAULTS, CLUSTER_SCHEMES, SlotRoute, cluster_address, open_cluster
from rxcs.oplog.redis_history import DURABLE_MARK, EPOCH_LUA, REPORT_LOSS, HistoryLoss, lost_error, parse_losses
from rxcs.oplog.redis_lane import BUSY, ScriptLane
from rxcs.oplog.redis_sentinel import READ_FROM, open_sentinel_clients, sentinel_address
from rxcs.oplog.redis_sentinel import SCHEMES as SENTINEL_SCHEMES
from rxcs.oplog.retention import REDIS_TRIM_RETAINED, Retention, RetentionStatistics, StreamKeeper

__all__ = ["RedisOplog", "RedisOplogInfo"]


T = TypeVar("T")

FORMAT_VERSION = 1  # a new oplog's, as every rxcs reads
IDENTITIES_FORMAT_VERSION = 2  # from the first entry with a collection UUID (16 or 17 fields) on
_READ_FORMAT_VERSIONS = (b"1", b"2")
# Connection faults: retried with backoff. redis-py counts a server still
# loading its data (BusyLoadingError) and a failed AUTH among these.
_FAULTS = (redis.ConnectionError, redis.TimeoutError)
_DURABILITIES = ("primary", "replicated")
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
# One XREAD BLOCK lasts at most this long; a wake-up missed in a race costs no more.
_BLOCK_SLICE = 5.0
# Without CLIENT UNBLOCK (no permission), waiters poll for wake-ups this often.
_BLOCK_POLL = 0.1
# A blocked read that gets no reply this long after its block time ended is a dead connection.
_READ_MARGIN = 10.0
# The producers hash (retry bookkeeping) expires after a day without appends.
_PRODUCERS_TTL = 86_400
_NO_SUCH_CLIENT = 2**63 - 1
_ZERO_TIME = ClusterTime(0, 0)
# The script's head (four uint64s, up to 9 bytes each) outgrows the zeroed one (1 byte each) by at most this.
_HEAD_GROWTH = 4 * 8
# Seconds between looks for document images another process turned on.
_IMAGES_LOOK_AGAIN = 1.0

# Lua helpers shared by the scripts that read positions.
_LUA_HELPERS = r"""
local function op_id_of(entry)
  local fields = entry[2]
  if fields[1] ~= 'op_id' then
    error('RXCS_FOREIGN stream entry ' .. entry[1] .. ' was not written by rxcs')
  end
  return tonumber(fields[2])
end

local function ms_seq(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- The stream ID of the entry with op_id `target`, given the first (`head`) and
-- last (`tail`) entries, with op_id_of(head) <= target <= op_id_of(tail).
-- Stream IDs rise with op_ids, and inside one millisecond the sequence numbers
-- of entries rise by one as their op_ids do. So: bisect over milliseconds for
-- the last one whose first entry is at or before `target`, then step to it.
local function locate(stream, head, tail, target)
  local low = head
  local low_ms = ms_seq(head[1])
  local high_ms = ms_seq(tail[1]) + 1
  while high_ms - low_ms > 1 do
    local mid = math.floor((low_ms + high_ms) / 2)
    local probe = redis.call('XRANGE', stream, string.format('%d', mid), '+', 'COUNT', 1)[1]
    if op_id_of(probe) <= target then
      low = probe
      low_ms = ms_seq(probe[1])
    else
      high_ms = mid
    end
  end
  local _, low_seq = ms_seq(low[1])
  local id = string.format('%d-%d', low_ms, low_seq + target - op_id_of(low))
  local found = redis.call('XRANGE', stream, id, id)[1]
  if not found or op_id_of(found) ~= target then
    error('RXCS_CORRUPT op_id ' .. string.format('%d', target) .. ' is not where its neighbours put it')
  end
  return id
end
"""

# KEYS: stream, meta. ARGV: a new oplog id, the format version.
# Creates the identity on first use; returns {oplog_id, format, type of the stream key, epoch, losses}.
_INIT = r"""
local owner = redis.call('HGET', KEYS[2], 'oplog_id')
local kind = redis.call('TYPE', KEYS[1])['ok']
if not owner then
  if kind ~= 'none' then
    return redis.error_reply('RXCS_FOREIGN ' .. KEYS[1] .. ' exists (a ' .. kind .. ') without rxcs metadata')
  end
  redis.call('HSET', KEYS[2], 'oplog_id', ARGV[1], 'format', ARGV[2], 'last_op_id', 0, 'time', 0, 'inc', 0)
  owner = ARGV[1]
end
local held = redis.call('HMGET', KEYS[2], 'format', 'epoch', 'losses')
return {owner, held[1] or '', kind, held[2] or '0', held[3] or '0'}
"""

# The collection catalog, kept in the hash KEYS[4] with the rules of rxcs.oplog.catalog.Catalog.apply.
# Fields: 'n' .. db .. NUL .. coll -> the collection's UUID (16 bytes) and its kind code; 'i' .. UUID ..
# index name -> the msgpack of the index's {v, key}. A change's action (rxcs.oplog.catalog.catalog_action)
# says what it asks of the catalog; apply() returns what its entry records: the collection's UUID (or
# false) and what it dropped, as msgpack (or false). New identities are the batch's seed (ARGV[5], a random
# version-4 UUID) with a count added to its last four bytes.
_CATALOG = r"""
local catalog = KEYS[4]
local seed = ARGV[5]
local minted = 0

local function mint()
  minted = minted + 1
  local a, b, c, d = string.byte(seed, 13, 16)
  local n = (((a * 256 + b) * 256 + c) * 256 + d + minted) % 4294967296
  return string.sub(seed, 1, 12) .. string.char(math.floor(n / 16777216), math.floor(n / 65536) % 256,
                                                math.floor(n / 256) % 256, n % 256)
end

local function bin(id)
  return '\196\16' .. id
end

local function held(ns)
  local value = redis.call('HGET', catalog, 'n' .. ns)
  if value then
    return string.sub(value, 1, 16)
  end
  return false
end

local function forget_indexes(owners)
  for _, field in ipairs(redis.call('HKEYS', catalog)) do
    if string.sub(field, 1, 1) == 'i' and owners[string.sub(field, 2, 17)] then
      redis.call('HDEL', catalog, field)
    end
  end
end

local function forget(ns)
  local found = held(ns)
  if found then
    redis.call('HDEL', catalog, 'n' .. ns)
    forget_indexes({[found] = true})
  end
  return found
end

local function map_header(count)
  if count < 16 then
    return string.char(128 + count)
  elseif count < 65536 then
    return '\222' .. string.char(math.floor(count / 256), count % 256)
  end
  return '\223' .. string.char(math.floor(count / 16777216), math.floor(count / 65536) % 256,
                              math.floor(count / 256) % 256, count % 256)
end

local function drop_database(db)
  local prefix = 'n' .. db .. '\0'
  local names, owners, count = {}, {}, 0
  for _, field in ipairs(redis.call('HKEYS', catalog)) do
    if string.sub(field, 1, #prefix) == prefix then
      local id = string.sub(redis.call('HGET', catalog, field), 1, 16)
      redis.call('HDEL', catalog, field)
      owners[id] = true
      count = count + 1
      names[count] = cmsgpack.pack(string.sub(field, #prefix + 1)) .. bin(id)
    end
  end
  if count == 0 then
    return false, false
  end
  forget_indexes(owners)
  return false, map_header(count) .. table.concat(names)
end

local function apply(action)
  local a = cmsgpack.unpack(action)
  local kind = a[1]
  if kind == nil then
    return false, false
  end
  if kind == 'D' then
    return drop_database(a[2])
  end
  local ns = a[2] .. '\0' .. a[3]
  if kind == 'c' then
    forget(ns)
    local made = mint()
    redis.call('HSET', catalog, 'n' .. ns, made .. a[4])
    return made, false
  end
  local id = held(ns)
  if not id then
    id = mint()
    redis.call('HSET', catalog, 'n' .. ns, id .. 'c')
  end
  if kind == 'd' then
    forget(ns)
  elseif kind == 'r' then
    local target = a[4] .. '\0' .. a[5]
    local dropped = false
    local there = forget(target)
    if there then
      dropped = bin(there)
    elseif a[6] == '1' then
      dropped = bin(mint())
    end
    local value = redis.call('HGET', catalog, 'n' .. ns)
    redis.call('HDEL', catalog, 'n' .. ns)
    redis.call('HSET', catalog, 'n' .. target, value)
    return id, dropped
  elseif kind == 'i' then
    for i = 4, #a - 1, 2 do
      redis.call('HSET', catalog, 'i' .. id .. a[i], a[i + 1])
    end
  elseif kind == 'x' then
    local field = 'i' .. id .. a[4]
    local spec = redis.call('HGET', catalog, field)
    if spec then
      redis.call('HDEL', catalog, field)
      return id, spec
    end
  end
  return id, false
end

-- The entry of a record with a zeroed head (a fixarray of at most 15 fields): the head filled in, and, when
-- the catalog gave them, fields 16 and 17 added (nulls padding the fields left off), in an array 16.
local function entry_of(record, head, id, dropped)
  if not id and not dropped then
    return string.sub(record, 1, 1) .. head .. string.sub(record, 6)
  end
  local fields = string.byte(record, 1) - 144
  local size = 16
  local tail = string.rep('\192', 15 - fields)
  if id then
    tail = tail .. bin(id)
  else
    tail = tail .. '\192'
  end
  if dropped then
    tail = tail .. dropped
    size = 17
  end
  return '\220\0' .. string.char(size) .. head .. string.sub(record, 6) .. tail
end
"""

# KEYS: stream, meta, producers, catalog. ARGV: oplog id, producer, batch number, max_len (0: none), the
# batch's identity seed, then for each change its catalog action and its record: the codec's record with
# a zeroed head (op_id, time, inc, wall_ms), which this script fills in. Returns {first op_id, count, 1 if
# the batch was already appended, the epoch}. A batch already appended writes its record again, so a WAIT
# after it covers it.
_APPEND = _CATALOG + EPOCH_LUA + r"""
if redis.call('HGET', KEYS[2], 'oplog_id') ~= ARGV[1] then
  return redis.error_reply('RXCS_GONE')
end
local epoch = current_epoch(KEYS[2])
local done = redis.call('HGET', KEYS[3], ARGV[2])
if done then
  local batch, first, count = string.match(done, '^(%d+) (%d+) (%d+)$')
  if batch == ARGV[3] then
    redis.call('HSET', KEYS[3], ARGV[2], done)
    return {tonumber(first), tonumber(count), 1, epoch}
  end
end
local now = redis.call('TIME')
local seconds = tonumber(now[1])
local wall_ms = seconds * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[2], 'last_op_id', 'time', 'inc')
local op_id, ctime, inc = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
local first = op_id + 1
local identities = false
for i = 6, #ARGV, 2 do
  op_id = op_id + 1
  if seconds > ctime then
    ctime, inc = seconds, 1
  else
    inc = inc + 1
  end
  local id, dropped = apply(ARGV[i])
  identities = identities or id or dropped
  local entry = entry_of(ARGV[i + 1], cmsgpack.pack(op_id, ctime, inc, wall_ms), id, dropped)
  redis.call('XADD', KEYS[1], '*', 'op_id', string.format('%d', op_id), 'entry', entry)
end
local count = (#ARGV - 5) / 2
if identities and redis.call('HGET', KEYS[2], 'format') == '1' then
  redis.call('HSET', KEYS[2], 'format', '""" + str(IDENTITIES_FORMAT_VERSION) + r"""')
end
redis.call('HSET', KEYS[2], 'last_op_id', string.format('%d', op_id),
           'time', string.format('%d', ctime), 'inc', string.format('%d', inc))
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3] .. ' ' .. string.format('%d', first) .. ' ' .. count)
redis.call('EXPIRE', KEYS[3], """ + str(_PRODUCERS_TTL) + r""")
local max_len = tonumber(ARGV[4])
if max_len > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', max_len)
end
return {first, count, 0, epoch}
"""

# KEYS: stream, meta. ARGV: after. Returns {status, value, epoch, losses}: {0, XRANGE start} when
# positioned, {1, first retained op_id} when the entry after `after` was trimmed, {2, ''} past the end.
_SEEK = _LUA_HELPERS + r"""
local function seek(after)
  local last = tonumber(redis.call('HGET', KEYS[2], 'last_op_id') or '0')
  if after > last then
    return 2, ''
  end
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if not head then
    if after < last then
      return 1, string.format('%d', last + 1)
    end
    return 0, '(0-0'
  end
  local first = op_id_of(head)
  if after + 1 < first then
    return 1, string.format('%d', first)
  end
  if after + 1 == first then
    return 0, head[1]
  end
  local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if op_id_of(tail) == after then
    return 0, '(' .. tail[1]
  end
  return 0, '(' .. locate(KEYS[1], head, tail, after)
end
local status, value = seek(tonumber(ARGV[1]))
local held = redis.call('HMGET', KEYS[2], 'epoch', 'losses')
return {status, value, held[1] or '0', held[2] or '0'}
"""

# KEYS: stream, meta. ARGV: before_op_id. Trims exactly (XTRIM MINID); returns entries removed.
_TRIM = _LUA_HELPERS + r"""
local before = tonumber(ARGV[1])
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not head or op_id_of(head) >= before then
  return 0
end
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if op_id_of(tail) < before then
  local ms, seq = ms_seq(tail[1])
  return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', ms, seq + 1))
end
return redis.call('XTRIM', KEYS[1], 'MINID', locate(KEYS[1], head, tail, before))
"""

# KEYS: stream, meta. ARGV: XRANGE start, count, the op_id before the start, 1 to read no further than
# the durable mark. Returns {oplog id, ID of the last entry read, entries read, their records
# concatenated, epoch, losses}: one bulk string parses far faster than a reply per field.
_READ = r"""
local held = redis.call('HMGET', KEYS[2], 'oplog_id', 'epoch', 'losses', 'durable')
local count = tonumber(ARGV[2])
if ARGV[4] == '1' then
  count = math.min(count, tonumber(held[4] or '0') - tonumber(ARGV[3]))
  if count <= 0 then
    return {held[1], false, 0, '', held[2] or '0', held[3] or '0'}
  end
end
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', count)
local records = {}
for i = 1, #rows do
  local fields = rows[i][2]
  if fields[1] ~= 'op_id' or fields[3] ~= 'entry' then
    error('RXCS_FOREIGN stream entry ' .. rows[i][1] .. ' was not written by rxcs')
  end
  records[i] = fields[4]
end
local last = false
if #rows > 0 then
  last = rows[#rows][1]
end
return {held[1], last, #rows, table.concat(records), held[2] or '0', held[3] or '0'}
"""

# KEYS: stream, meta. ARGV: 1 to count only to the durable mark. Returns {first retained op_id, last
# op_id}, read atomically.
_RANGE = _LUA_HELPERS + r"""
local last = tonumber(redis.call('HGET', KEYS[2], 'last_op_id') or '0')
if ARGV[1] == '1' then
  last = math.min(last, tonumber(redis.call('HGET', KEYS[2], 'durable') or '0'))
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not head then
  return {last + 1, last}
end
return {op_id_of(head), last}
"""


@final
@dataclass(frozen=True, slots=True)
class RedisOplogInfo:
    """What ``rxcs oplog info`` shows for an oplog on Redis."""

    address: str
    stream: str
    oplog_id: str
    first_op_id: int
    last_op_id: int
    entries: int
    memory_bytes: int | None
    max_len: int | None
    durability: str = "primary"
    epoch: int = 0
    history_losses: tuple[str, ...] = ()


@final
class RedisOplog(Oplog):
    """An oplog on a Redis stream: many producer processes, many consumer processes, one total order.

    ``client`` is a ``redis.Redis``, or a ``redis.cluster.RedisCluster`` for an
    oplog on a Redis Cluster, with ``decode_responses=False``; ``stream``
    names the stream key (the metadata lives in ``{stream}:meta``, in the same
    cluster slot). ``max_len`` keeps roughly that many entries, trimmed on
    append with ``MAXLEN ~`` (Redis trims whole internal nodes, so a few
    hundred more may stay). ``retain_entries`` keeps exactly the newest that
    many and ``retain_age`` (seconds or timedelta) what is younger, by the
    server's clock; both trimmed right after appends and, for the age, while
    idle (``rxcs.oplog.retention``). ``retry_for`` is how long, in seconds, an
    operation keeps retrying through a connection fault before it raises
    ``OplogUnavailableError``; ``None`` retries forever.
    ``document_images=True`` keeps document images for every collection, in
    keys beside the stream; the setting stays with the oplog, for every
    process (docs/images.md).

    ``durability="replicated"`` makes an append return only once ``WAIT`` has
    confirmed that ``replicas`` replicas hold it (within ``replication_timeout``
    seconds, else ``OplogUnavailableError``: the entries are appended but not
    yet durable), and makes this handle's streams read no further than what
    was so confirmed; with the default, ``"primary"``, an append returns once
    the primary ran it and streams read everything it holds. ``reader`` is a
    second client that reads go to (a replica's, for ``read_from=replica``).
    After a failover, a range that the old primary had acknowledged and the new
    one never received is reported as ``ChangeStreamHistoryLost`` to the streams
    it cuts off, never skipped (docs/redis.md, "Failover").

    The identity is created on first use, atomically, so any number of
    processes may open the same stream at once. An unreachable server raises
    ``OplogUnavailableError`` here, naming the address.

    Usage (with a Redis server on localhost)::

        oplog = rxcs.open_oplog("redis://127.0.0.1:6379/0?stream=shop")
        oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        for event in rxcs.watch(oplog, "shop", "users").iterate():
            ...
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        stream: str = "rxcs",
        *,
        max_len: int | None = None,
        retry_for: float | None = 30.0,
        retain_entries: int | None = None,
        retain_age: float | timedelta | None = None,
        document_images: bool = False,
        retain_for_consumers: bool = False,
        durability: str = "primary",
        replicas: int = 1,
        replication_timeout: float = 5.0,
        reader: redis.Redis | None = None,
    ) -> None:
        if not isinstance(client, (redis.Redis, RedisCluster)):
            raise TypeError(
                f"client must be a redis.Redis or a redis.cluster.RedisCluster, not {type(client).__name__}"
            )
        if client.get_encoder().decode_responses:
            raise ValueError("the redis client must not decode responses (decode_responses=False): entries are bytes")
        if not isinstance(stream, str) or not stream or "{" in stream or "}" in stream:
            raise ValueError(f"stream must be a non-empty name without braces, not {stream!r}")
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, not {max_len!r}")
        if retry_for is not None and not retry_for >= 0:
            raise ValueError(f"retry_for must be a number of seconds >= 0 or None, not {retry_for!r}")
        if not isinstance(document_images, bool):
            raise ValueError(f"document_images must be True or False, not {document_images!r}")
        if durability not in _DURABILITIES:
            raise ValueError(f"durability must be 'primary' or 'replicated', not {durability!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive int, not {replicas!r}")
        if isinstance(replication_timeout, bool) or not isinstance(replication_timeout, (int, float)) or not (
            replication_timeout > 0
        ):
            raise ValueError(f"replication_timeout must be a positive number of seconds, not {replication_timeout!r}")
        if reader is not None and not isinstance(reader, redis.Redis):
            raise TypeError(f"reader must be a redis.Redis, not {type(reader).__name__}")
        if isinstance(client, RedisCluster) and reader is not None:
            raise ValueError("on a Redis Cluster, an oplog reads from the primary serving its slot: no reader=")
        if retain_for_consumers and max_len is not None:
            raise ValueError(
                "retain_for_consumers cannot hold back max_len (Redis trims by length as it appends): trim with trim()"
            )
        self._client = client
        self._reader = client if reader is None else reader
        self._replicated = durability == "replicated"
        self._replicas = replicas
        self._wait_ms = max(1, int(replication_timeout * 1000))
        self._stream = stream
        self.retain_for_consumers = bool(retain_for_consumers)
        # The stream key is the bare name; its hash tag is the name too, so every key is in one slot.
        self._keys = (stream, f"{{{stream}}}:meta", f"{{{stream}}}:producers", f"{{{stream}}}:catalog")
        self._marks = f"{{{stream}}}:durable"  # what readers of replicated durability block on
        self._where = f"{_address(client)} stream {stream!r}"
        # Where the blocking reads and CLIENT UNBLOCK go: on a cluster, the node serving the stream's slot.
        self._route = SlotRoute(self._reader, stream)
        self._faults: tuple[type[Exception], ...] = _FAULTS + CLUSTER_FAULTS if self._route.cluster else _FAULTS
        self._max_len = max_len or 0
        self._retry_for = retry_for
        retention = Retention.of(retain_entries=retain_entries, retain_age=retain_age)
        self._keeper = StreamKeeper(self, retention, f"{stream}") if retention.active else None
        self._retain_script: Any = None
        self._owns_client = False
        self._close_clients: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()
        self._outage_since: float | None = None
        self._wakes = 0
        self._waiters: dict[object, tuple[str, int]] = {}  # each wait's server (SlotRoute) and client id
        self._tail_hint: tuple[int, bytes] | None = None
        # What the last XREAD BLOCK brought, for the cursor at that position: (after, stream ID, record).
        self._arrival: tuple[int, bytes, bytes] | None = None
        self._range_seen = (1, 0)
        self._producer = uuid.uuid4().hex
        self._producer_fields: set[str] = set()
        self._batches = itertools.count(1)
        self._init_script = client.register_script(_INIT)
        self._append_script = client.register_script(_APPEND)
        # One connection held for appends one thread at a time (rxcs.oplog.redis_lane); a cluster routes by slot.
        self._append_lane = None if self._route.cluster else ScriptLane(
            cast("redis.Redis", client), self._append_script, self._keys
        )
        self._seek_script = client.register_script(_SEEK)
        self._trim_script = client.register_script(_TRIM)
        self._range_script = client.register_script(_RANGE)
        self._read_script = client.register_script(_READ)
        self._report_script = client.register_script(REPORT_LOSS)
        self._mark_script = client.register_script(DURABLE_MARK)
        if not self._route.covered():
            raise OplogUnavailableError(
                f"{self._where}: no node of the cluster serves the stream's slot {self._route.slot} "
                "(see CLUSTER SLOTS); nothing was written"
            )
        try:
            owner, version, kind, epoch, losses = self._init_script(
                keys=self._keys[:2], args=[uuid.uuid4().hex, FORMAT_VERSION]
            )
            # A waiter on a replica cannot be unblocked through another connection (which replica would it
            # reach?): such waiters poll instead. On a cluster, CLIENT UNBLOCK goes to the slot's node.
            self._can_unblock = self._reader is client and _can_unblock(self._route.server()[1])
        except redis.AuthenticationError as exc:
            raise OplogUnavailableError(f"Redis at {_address(client)} refused the credentials: {exc}") from None
        except redis.exceptions.MovedError as exc:
            if self._route.cluster:
                raise OplogUnavailableError(f"{self._where}: the stream's slot is moving ({exc})") from None
            raise InvalidLocationError(
                f"{self._where}: this server is a Redis Cluster node that does not serve the stream's slot "
                f"({exc}); open the cluster as redis+cluster://host:port"
            ) from None
        except self._faults as exc:
            if self._route.cluster:
                raise OplogUnavailableError(f"{self._where}: the cluster cannot serve the stream now ({exc})") from None
            raise OplogUnavailableError(f"cannot reach Redis at {_address(client)}: {exc}") from None
        except redis.ResponseError as exc:
            if "RXCS_FOREIGN" in str(exc):
                raise RxcsError(f"{self._where}: {str(exc).split('RXCS_FOREIGN ', 1)[1]}; not an rxcs oplog") from None
            raise OplogUnavailableError(f"{self._where}: Redis refused to open the oplog: {exc}") from None
        if kind not in (b"none", b"stream"):
            raise RxcsError(f"{self._where}: the key {stream!r} holds a {kind.decode()}, not a stream")
        if version not in _READ_FORMAT_VERSIONS:
            readable = ", ".join(known.decode() for known in _READ_FORMAT_VERSIONS)
            raise RxcsError(
                f"{self._where}: oplog format version {version.decode() or '?'}, this rxcs reads {readable}"
            )
        self._oplog_id = uuid.UUID(hex=owner.decode())
        self._owner = owner
        # What this process knows of the oplog's history (rxcs.oplog.redis_history): the newest epoch it met,
        # per epoch the highest op_id it was acknowledged or read in it (its evidence as a witness), the
        # losses counter and the lost ranges, and per lost range learned while open, how far it had read.
        self._opened_epoch = self._epoch = int(epoch)
        self._witnessed: dict[int, int] = {}
        self._highest = 0
        self._losses_seen = b"0"
        self._losses: list[HistoryLoss] = []
        self._learned: list[tuple[HistoryLoss, int]] = []
        if losses != b"0":
            self._observe(self._epoch, losses)
        self._image_store = RedisImageStore(client, stream, str(self._oplog_id), self._keys[1], self._retrying)
        self._images: DocumentImages | None = None
        self._images_looked = 0.0
        self._open_images(every_collection=True if document_images else None)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        stream: str | None = None,
        max_len: int | None = None,
        retry_for: float | None = 30.0,
        retain_entries: int | None = None,
        retain_age: float | None = None,
        document_images: bool | None = None,
        retain_for_consumers: bool = False,
        durability: str | None = None,
        replicas: int | None = None,
        replication_timeout: float | None = None,
        read_from: str | None = None,
        **redis_options: Any,
    ) -> RedisOplog:
        """Open the oplog at ``redis://[[user]:password@]host:port/db?stream=NAME``.

        ``rediss://`` (TLS) and ``unix://`` work too, and
        ``redis+sentinel://host:port,host:port/SERVICE[/DB]?stream=NAME``
        finds the primary through Sentinel and follows its failovers
        (``rxcs.oplog.redis_sentinel``), and
        ``redis+cluster://host:port[,host:port...]/?stream=NAME`` (or
        ``rediss+cluster://``) opens it on a Redis Cluster, every host a seed
        (``rxcs.oplog.redis_cluster``). rxcs's own options may
        be given as query parameters or keywords, not both: ``stream`` (the
        stream's name, ``"rxcs"`` by default), ``max_len``, ``retry_for``
        (seconds, or ``none``), ``retain_entries``, ``retain_age`` (seconds),
        ``document_images`` (``true`` keeps document images for every
        collection), ``durability`` (``primary`` or ``replicated``),
        ``replicas``, ``replication_timeout`` (seconds) and, through Sentinel,
        ``read_from`` (``primary`` or ``replica``). The rest of the URL and ``redis_options`` go to
        ``redis.Redis.from_url``, so passwords, TLS settings and timeouts
        are given as redis-py takes them; a parameter neither rxcs nor
        redis-py knows is an ``InvalidLocationError`` now, not an error at the
        first command. rxcs does its own retrying, so redis-py's is off unless
        ``retry=`` is given; connecting times out after 5 s unless
        ``socket_connect_timeout=`` says otherwise. The oplog closes the
        client it made when it closes.
        """
        if redis_options.get("decode_responses"):
            raise ValueError("decode_responses must stay off: entries are bytes")
        redis_url, options = _split_url(url, {
            "stream": stream, "max_len": max_len, "retry_for": retry_for, "retain_entries": retain_entries,
            "retain_age": retain_age, "document_images": document_images, "durability": durability,
            "replicas": replicas, "replication_timeout": replication_timeout, "read_from": read_from,
        })
        reader: redis.Redis | None = None
        client: redis.Redis | RedisCluster
        if options["read_from"] == "replica" and not url.startswith(SENTINEL_SCHEMES):
            raise InvalidLocationError(
                f"{_redact(url)}: read_from=replica needs a redis+sentinel:// URL (Sentinel names the replicas)"
            )
        # What close() must close beyond the client's own pool, which it empties without cutting connections
        # in use: the cluster's other nodes, the Sentinels and a replica reader. A plain client has nothing more.
        also_close: Callable[[], None] | None
        if url.startswith(CLUSTER_SCHEMES):
            client = open_cluster(redis_url, redis_options, _redact(url), tuple(_URL_OPTIONS))
            close = also_close = client.close
        else:
            redis_options.setdefault("retry", Retry(NoBackoff(), 0))
            redis_options.setdefault("socket_connect_timeout", 5.0)
            redis_options.setdefault("socket_keepalive", True)
            if url.startswith(SENTINEL_SCHEMES):
                clients = open_sentinel_clients(redis_url, _redact(url), options["read_from"], redis_options)
                client, reader, close = clients.primary, clients.reader, clients.close
                also_close = close
            else:
                try:
                    client = redis.Redis.from_url(redis_url, **redis_options)
                except ValueError as exc:
                    raise InvalidLocationError(f"{_redact(url)}: {exc}") from None
                close, also_close = client.close, None
        try:
            if isinstance(client, redis.Redis):
                _check_connection_options(client, url)
            durable = {
                key: options[key]
                for key in ("durability", "replicas", "replication_timeout")
                if options[key] is not None
            }
            oplog = cls(
                client, options["stream"] or "rxcs", max_len=options["max_len"], retry_for=options["retry_for"],
                retain_entries=options["retain_entries"], retain_age=options["retain_age"],
                document_images=False if options["document_images"] is None else options["document_images"],
                retain_for_consumers=retain_for_consumers, reader=reader, **durable,
            )
        except BaseException:
            close()
            raise
        oplog._owns_client = True
        oplog._close_clients = also_close
        return oplog

    # -- identity and range -------------------------------------------------

    @property
    def oplog_id(self) -> uuid.UUID:
        return self._oplog_id

    @property
    def stream(self) -> str:
        """The name of the Redis stream that holds the entries."""
        return self._stream

    @property
    def first_op_id(self) -> int:
        if self._closed:
            return self._range_seen[0]
        first, last = self._retrying("reading the oplog's range", self._read_range)
        self._range_seen = (first, last)
        return first

    @property
    def last_op_id(self) -> int:
        if self._closed:
            return self._range_seen[1]
        last = self._retrying("reading the last op_id", self._read_last)
        self._range_seen = (self._range_seen[0], last)
        return last

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def document_images(self) -> DocumentImages | None:
        if self._images is None and not self._closed:
            self._open_images()
        return self._images

    def _open_images(self, *, every_collection: bool | None = None, create: bool = False) -> None:
        """Find the document images (another process may have turned them on); make them when asked to."""
        self._images_looked = time.monotonic()
        store = self._image_store
        if every_collection or create:
            store.create(every_collection=every_collection)
        elif self._images is None and store.exists():
            store.create(every_collection=None)  # checks that they are this oplog's
        else:
            return
        if self._images is None:
            self._images = DocumentImages(store, self)

    def _update_images(self, through: int, entries: list[OplogEntry]) -> None:
        """Bring the document images up to ``through`` after an append; never raises (the entries are recorded:
        readers compute what is missing themselves, and the next producer's catch-up applies it)."""
        images = self._images
        if images is None:
            return
        try:
            images.catch_up(through, entries)
        except Exception as exc:  # noqa: BLE001 - the entries are appended: an append must not fail for its images
            log.warning("document images not brought up to date", stream=self._stream, through_op_id=through,
                        error=repr(exc))

    def info(self) -> RedisOplogInfo:
        """What ``rxcs oplog info`` shows: where the oplog is, its range and its size in Redis."""
        self._check_open()
        first, last = self._retrying("reading the oplog's range", self._read_range)

        def sizes() -> tuple[int, int | None]:
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(self._stream)
            pipe.memory_usage(self._stream)
            length, memory = pipe.execute()
            return int(length), None if memory is None else int(memory)

        length, memory = self._retrying("reading the stream's size", sizes)
        meta = self._read_meta()
        return RedisOplogInfo(
            address=_address(self._client), stream=self._stream, oplog_id=str(self._oplog_id),
            first_op_id=first, last_op_id=last, entries=length, memory_bytes=memory, max_len=self._max_len or None,
            durability="replicated" if self._replicated else "primary", epoch=int(meta.get(b"epoch", b"0")),
            history_losses=tuple(str(loss) for loss in parse_losses(meta)),
        )

    def _read_range(self) -> tuple[int, int]:
        first, last = self._range_script(keys=self._keys[:2], args=[int(self._replicated)], client=self._reader)
        return int(first), int(last)

    def _read_last(self) -> int:
        last, owner, durable = cast("list[Any]", self._reader.hmget(self._keys[1], "last_op_id", "oplog_id", "durable"))
        if owner != self._owner:
            raise self._gone(ChangeStreamHistoryLost)
        return min(int(last), int(durable or 0)) if self._replicated else int(last)

    # -- history: epochs, witnesses and lost ranges (rxcs.oplog.redis_history) ------------------

    @property
    def epoch(self) -> int:
        """The newest epoch this process has met: it grows when another server takes over the oplog."""
        return self._epoch

    def history_losses(self) -> list[HistoryLoss]:
        """The ranges that failovers lost, as recorded in the oplog, oldest first."""
        self._check_open()
        return parse_losses(self._read_meta())

    def _read_meta(self) -> dict[bytes, bytes]:
        """The meta hash, whole: the identity, the counters and the history (epochs, lost ranges)."""
        fields = self._retrying("reading the oplog's meta hash", lambda: self._client.hgetall(self._keys[1]))
        return cast("dict[bytes, bytes]", fields)

    def _witness(self, epoch: int, op_id: int) -> None:
        """Note that this process was acknowledged, or read, op_id ``op_id`` in ``epoch``."""
        if op_id > self._witnessed.get(epoch, 0):
            with self._lock:
                if op_id > self._witnessed.get(epoch, 0):
                    self._witnessed[epoch] = op_id
                self._highest = max(self._highest, op_id)

    def _observe(self, epoch: int, losses: bytes | None) -> None:
        """Take in what a reply said of the history: a newer epoch (report what this process saw in the
        older ones: it may be a lost range) or a changed losses counter (learn the lost ranges)."""
        learn = losses is not None and losses != self._losses_seen
        if epoch > self._epoch:
            with self._lock:
                older = sorted((seen, op_id) for seen, op_id in self._witnessed.items() if seen < epoch)
                for seen, _ in older:
                    del self._witnessed[seen]
                self._epoch = max(self._epoch, epoch)
            for seen, op_id in older:
                found = self._report_loss(seen, op_id)
                if found:
                    log.error("entries lost in a Redis failover", stream=self._stream,
                              lost=str(HistoryLoss(*(int(value) for value in found))))
            learn = True
        if learn:
            self._learn_losses()

    def _report_loss(self, epoch: int, op_id: int) -> list[Any] | None:
        def report() -> list[Any] | None:
            found: list[Any] | None = self._report_script(keys=self._keys[1:2], args=[epoch, op_id])
            return found

        return self._retrying("reporting a lost range", report)

    def _learn_losses(self) -> None:
        meta = self._read_meta()
        losses = parse_losses(meta)
        with self._lock:
            reached = max(self._range_seen[1], self._highest)
            for loss in losses:
                if loss not in self._losses and loss.epoch > self._opened_epoch:
                    self._learned.append((loss, reached))  # learned while open: streams before `reached` crossed it
            self._losses = losses
            self._losses_seen = meta.get(b"losses", b"0")

    # -- writing ---------------------------------------------------------------

    def append_many(self, changes: Iterable[Change]) -> list[int]:
        changes = list(changes)
        for index, change in enumerate(changes):
            if not isinstance(change, Change):
                raise TypeError(f"changes[{index}]: expected a Change, got {type(change).__name__}")
        self._check_open()
        if not changes:
            return []
        producer = f"{self._producer}:{os.getpid()}:{threading.get_ident()}"
        # Encoding all first: one bad change appends nothing, and nothing is sent.
        args = self._script_args(changes, producer, next(self._batches))
        if enables_images(changes) and self._images is None:
            self._open_images(create=True)  # before the batch: the store starts at an op_id before it
        elif self._images is None and time.monotonic() - self._images_looked > _IMAGES_LOOK_AGAIN:
            self._open_images()
        if producer not in self._producer_fields:
            with self._lock:
                self._producer_fields.add(producer)

        def attempt() -> tuple[list[Any], int]:
            if not self._replicated:
                if self._append_lane is not None:
                    reply = self._append_lane.run(args)
                    if reply is not BUSY:
                        return reply, 0
                return self._append_script(keys=self._keys, args=args), 0
            # WAIT on the connection that ran the script: it confirms that script's writes (and all before).
            # On a cluster, that is a pipeline to the node serving the slot, routed here (SlotRoute).
            _, server_client, asking = self._route.server() if self._route.cluster else ("", self._client, False)
            pipe: Any = server_client.pipeline(transaction=False)
            if asking:
                pipe.execute_command("ASKING")
            self._append_script(keys=self._keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self._replicas, self._wait_ms)
            try:
                *_, reply, confirmed = pipe.execute()
            except redis.exceptions.AskError as exc:  # MOVED too: the slot moved, or is moving
                self._route.redirected(exc)
                raise
            return reply, int(confirmed)

        (first, count, replayed, epoch), confirmed = self._retrying(
            "appending", attempt,
            unavailable_note="the batch may or may not have been recorded (never twice); read the oplog's tail to see",
        )
        if replayed:
            log.info("redis oplog append confirmed after a lost reply", stream=self._stream, first_op_id=first)
        last = first + count - 1
        self._observe(int(epoch), None)
        if self._replicated:
            self._confirm(first, last, confirmed)
        self._witness(int(epoch), last)  # acknowledged: evidence of the history, should a failover lose it
        if self._images is not None and count:  # before retention trims: the store takes the entries first
            records = args[6::2]  # each change's record, after its catalog action (_script_args)
            entries = [decode_entry(record)._replace(op_id=first + offset) for offset, record in enumerate(records)]
            self._update_images(first + count - 1, entries)
        if self._keeper is not None:
            self._keeper.appended()
        return list(range(first, first + count))

    def _confirm(self, first: int, last: int, confirmed: int) -> None:
        """Raise the durable mark to ``last`` once ``confirmed`` replicas (WAIT's answer) are enough."""
        if confirmed < self._replicas:
            raise OplogUnavailableError(
                f"{self._where}: op_ids {first}-{last} are appended, but {confirmed} of the {self._replicas} "
                f"replicas asked for confirmed them within {self._wait_ms / 1000:g} s: they are not durable yet, "
                "and a failover now could lose them (streams of durability 'replicated' see them once a later "
                "append is confirmed)"
            )

        def mark() -> Any:
            return self._mark_script(keys=[self._keys[1], self._marks], args=[last])

        self._retrying("raising the durable mark", mark)

    def collections(self) -> dict[Namespace, CollectionInfo]:
        self._check_open()
        fields = self._retrying("reading the catalog", lambda: self._client.hgetall(self._keys[3]))
        return parse_hash(cast("dict[bytes, bytes]", fields))

    def _script_args(self, changes: list[Change], producer: str, batch: int) -> list[Any]:
        """The append script's arguments for a batch: who sends it, then each change's catalog action and record."""
        args: list[Any] = [self._owner, producer, batch, self._max_len, _identity_seed()]
        for change in changes:
            args += (catalog_action(change), _record(change))
        return args

    def trim_retained(self, entries: int | None, age_ms: int | None) -> int:
        """Trim to the newest ``entries`` and to what is younger than ``age_ms`` by the server's clock; removed.

        What the retention keeper runs (``retain_entries``, ``retain_age``), exactly, in one script.
        """
        self._check_open()
        if self._retain_script is None:
            self._retain_script = self._client.register_script(REDIS_TRIM_RETAINED)
        script = self._retain_script

        def attempt() -> int:
            return int(script(keys=self._keys[:1], args=[entries or 0, age_ms or 0]))

        removed = self._retrying("trimming to the retention limits", attempt)
        if removed:
            log.debug("oplog trimmed", backend="redis", stream=self._stream, entries=removed, reason="retention")
            if self._images is not None:  # the images only the trimmed entries needed go too
                self._images.trim(self.first_op_id)
            self._trimmed_past_consumers(self.first_op_id)
        return removed

    def ping(self) -> None:
        """One ``PING``, without retrying: ``OplogUnavailableError`` when Redis does not answer now (for probes)."""
        self._check_open()
        try:
            self._route.server()[1].ping()  # on a cluster, the node serving the stream's slot
        except self._faults as exc:
            raise OplogUnavailableError(f"{self._where}: Redis unreachable ({exc})") from None
        except redis.RedisError as exc:
            raise OplogUnavailableError(f"{self._where}: Redis refused PING ({exc})") from None

    def retention_statistics(self) -> RetentionStatistics:
        """What retention trimmed from this process (zeros without retain_entries or retain_age)."""
        return RetentionStatistics() if self._keeper is None else self._keeper.statistics()

    def trim(self, before_op_id: int) -> int:
        self._check_open()
        before_op_id = self._keep_for_consumers(before_op_id)

        def attempt() -> int:
            return int(self._trim_script(keys=self._keys[:2], args=[before_op_id]))

        removed = self._retrying("trimming", attempt)
        if removed:
            log.info("oplog trimmed", backend="redis", stream=self._stream, entries=removed)
        if self.document_images is not None:
            self.document_images.trim(self.first_op_id)
            self._trimmed_past_consumers(self.first_op_id)
        return removed

    def _open_checkpoints(self) -> CheckpointStore:
        return RedisCheckpoints(self._client, f"{{{self._stream}}}:consumers")

    # -- reading ---------------------------------------------------------------

    def cursor(self, after: int) -> OplogCursor:
        return self._new_cursor(after, "stream")

    def continuing_cursor(self, after: int) -> OplogCursor:
        return self._new_cursor(after, "continuing")

    def _inspecting_cursor(self, after: int) -> OplogCursor:
        return self._new_cursor(after, "inspecting")

    def _new_cursor(self, after: int, kind: str) -> OplogCursor:
        """A cursor after ``after`` for a new stream, a stream picking up again, or a look at entries
        (which alone is not checked against lost ranges)."""
        if after < 0:
            raise ValueError(f"after must be >= 0, not {after}")
        self._check_open()
        start = self._seek(after)
        if kind != "inspecting":
            self._check_position(after, continuing=kind == "continuing")
        return _RedisCursor(self, after, start, checked=kind != "inspecting")

    def _check_position(self, after: int, *, continuing: bool) -> None:
        """Refuse a stream's cursor that a known lost range cuts off: positioned before it; or, picking up a
        stream that was already reading, at a position in the range's op_ids short of how far this process
        had read when it learned of the range (from the old history, or crossed into the new one)."""
        for loss in self._losses:
            if after < loss.first_op_id:
                raise lost_error(self._where, loss, after)
        if continuing:
            for loss, reached in self._learned:
                if loss.first_op_id <= after < reached:
                    raise lost_error(self._where, loss, after)

    def _seek(self, after: int) -> bytes | None:
        """The XRANGE start of the entries after ``after``; None when ``after`` is past the end."""
        status, value, epoch, losses = self._retrying(
            "seeking", lambda: self._seek_script(keys=self._keys[:2], args=[after], client=self._reader)
        )
        self._observe(int(epoch), losses)
        if status == 1:
            raise ChangeStreamHistoryLost(
                f"{self._where}: op_id {after + 1} was trimmed; the oldest retained is {int(value)}"
            )
        if status == 2:
            return None
        start: bytes = value
        return start

    def _read_batch(
        self, start: bytes, limit: int, after: int
    ) -> tuple[bytes | None, bytes | None, int, bytes, int, bytes]:
        owner, last_id, count, records, epoch, losses = self._read_script(
            keys=self._keys[:2], args=[start, limit, after, int(self._replicated)], client=self._reader
        )
        return owner, last_id, int(count), records, int(epoch), losses

    def wait(self, after: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _BACKOFF_FIRST
        redirected = False
        while True:
            if self._closed:
                return False
            generation = self._wakes
            remaining = None if deadline is None else deadline - time.monotonic()
            hint = self._tail_hint
            contacted = hint is None or hint[0] != after  # else _wait_start answers from the hint, not from Redis
            try:
                start = self._wait_start(after)
                if start is None:
                    arrived = True
                elif remaining is not None and remaining <= 0:
                    arrived = False
                else:
                    arrived = self._block(after, start, remaining, generation)
                    contacted = True
            except self._faults as exc:
                if self.closed:  # close() cut the connection
                    return False
                if isinstance(exc, redis.exceptions.AskError) and not redirected:
                    self._route.redirected(exc)  # the slot moved, or is moving: block where it is now, at once
                    redirected = True
                    continue
                self._route.lost()
                self._give_up_after_outage(exc, "waiting for entries")
                remaining = None if deadline is None else deadline - time.monotonic()
                pause = delay if remaining is None else min(delay, remaining)
                if pause <= 0 or self._closing.wait(pause):
                    return False
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            except redis.ResponseError as exc:
                raise self._refused("waiting for entries", exc) from None
            except (OSError, ValueError):
                if self.closed:  # close() closed the client, cutting the blocked read's socket under it
                    return False
                raise
            redirected = False
            if contacted:  # an outage ends when Redis answers, not when a wait runs out without asking it
                self._recovered()
            if arrived:
                return True
            if self._closed or self._wakes != generation:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _wait_start(self, after: int) -> bytes | None:
        """The stream ID to block after, or None when an entry after ``after`` already exists."""
        hint = self._tail_hint
        if hint is not None and hint[0] == after:
            return hint[1]  # XREAD from there also returns at once if more is there
        pipe = self._reader.pipeline(transaction=False)
        # Readers of replicated durability wait for the durable mark to pass `after`, on the marks stream.
        pipe.xrevrange(self._marks if self._replicated else self._stream, "+", "-", count=1)
        pipe.hget(self._keys[1], "durable" if self._replicated else "last_op_id")
        tail, last = pipe.execute()
        if int(last or 0) > after:
            return None
        return tail[0][0] if tail else b"0-0"

    def _block(self, after: int, start: bytes, remaining: float | None, generation: int) -> bool:
        """One XREAD BLOCK after ``start`` (op_id ``after``); True when entries arrived, False on timeout or wake-up.

        The entry that ends the wait is kept for the cursor at ``after``
        (``_take_arrival``), with the oplog's identity read right after it on
        the same connection: a live stream's next entry costs no second round trip.
        """
        longest = _BLOCK_SLICE if self._can_unblock else _BLOCK_POLL
        block_s = longest if remaining is None else min(remaining, longest)
        block_ms = max(1, int(block_s * 1000))  # BLOCK 0 would mean forever
        xread: tuple[Any, ...] = (
            "XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", self._marks if self._replicated else self._stream, start,
        )
        # Redis runs a connection's commands in order: this one runs once the XREAD returns.
        identity: tuple[Any, ...] = ("HMGET", self._keys[1], "oplog_id", "epoch", "losses")
        server, server_client, asking = self._route.server()  # on a cluster, the node serving the slot
        commands = [("ASKING",), xread, ("ASKING",), identity] if asking else [xread, identity]
        pool = server_client.connection_pool
        connection: Any = pool.get_connection()  # used as PubSub does: held for one blocking command
        token = object()
        try:
            if self._can_unblock:
                connection.send_packed_command(connection.pack_commands([("CLIENT", "ID"), *commands]))
                client_id = int(connection.read_response())
                with self._lock:
                    self._waiters[token] = (server, client_id)
                    woken = self._closed or self._wakes != generation
                if woken:
                    self._unblock([(server, client_id)])
            else:
                connection.send_packed_command(connection.pack_commands(commands))
            if asking:
                connection.read_response()
            if not connection.can_read(timeout=block_ms / 1000 + _READ_MARGIN):
                raise redis.TimeoutError(f"no reply from {self._where} to a blocked read")
            reply = connection.read_response()
            if asking:
                connection.read_response()
            owner, epoch, losses = connection.read_response()
        except BaseException:
            connection.disconnect()  # a reply may still be on its way: the connection is spent
            raise
        finally:
            with self._lock:
                self._waiters.pop(token, None)
            pool.release(connection)
            if self._closed and self._owns_client:
                connection.disconnect()  # close() left this one alone, in use
        if owner == self._owner:
            self._observe(int(epoch or 0), losses or b"0")
            if reply and not self._replicated:
                found = _arrived_entry(reply)
                self._arrival = None if found is None else (after, *found)
        return bool(reply)

    def _take_arrival(self, after: int) -> tuple[bytes, bytes] | None:
        """The stream ID and record of the entry after op_id ``after`` that the last wait brought, if it did."""
        arrival = self._arrival
        if arrival is None or arrival[0] != after:
            return None
        self._arrival = None
        return arrival[1], arrival[2]

    def wake_waiters(self) -> None:
        with self._lock:
            self._wakes += 1
            waiters = list(self._waiters.values())
        self._unblock(waiters)

    def _unblock(self, waiters: list[tuple[str, int]]) -> None:
        """CLIENT UNBLOCK each waiter, on the server it blocked on."""
        if not waiters or not self._can_unblock:
            return
        for server in sorted({server for server, _ in waiters}):
            server_client = self._route.server_named(server)
            if server_client is None:
                continue  # a node that left the cluster: its waiters' connections are gone
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                pipe = server_client.pipeline(transaction=False)
                for client_id in (client_id for where, client_id in waiters if where == server):
                    pipe.client_unblock(client_id)
                pipe.execute()

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wakes += 1
            waiters = list(self._waiters.values())
            fields = list(self._producer_fields)
        self._closing.set()
        if self._keeper is not None:
            self._keeper.close()
        self._unblock(waiters)
        if self._append_lane is not None:
            self._append_lane.close(disconnect=self._owns_client)
        if fields:  # this producer's retry bookkeeping is no longer needed
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                self._client.hdel(self._keys[2], *fields)
        if self._owns_client:
            # Connections in use are not cut under the threads using them: a waiter
            # closes its own when it returns, the rest close with the pool.
            if isinstance(self._client, RedisCluster):
                for server_client in self._route.servers():
                    server_client.connection_pool.disconnect(inuse_connections=False)
            else:
                self._client.connection_pool.disconnect(inuse_connections=False)
            if self._close_clients is not None:
                self._close_clients()
        log.debug("redis oplog closed", stream=self._stream)

    def _check_open(self) -> None:
        if self._closed:
            raise OplogClosedError(f"{self._where}: the oplog is closed")

    # -- faults ----------------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[], T], *, unavailable_note: str = "") -> T:
        """Run ``operation``, retrying connection faults with backoff until ``retry_for`` has passed.

        The outage is measured from its first fault, across every thread, and
        logged once when it starts and once when it ends.
        """
        delay = _BACKOFF_FIRST
        while True:
            self._check_open()
            try:
                result = operation()
            except self._faults as exc:
                self._give_up_after_outage(exc, what, unavailable_note)
                self._closing.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            except redis.RedisError as exc:
                raise self._refused(what, exc) from None
            self._recovered()
            return result

    def _give_up_after_outage(self, exc: Exception, what: str, note: str = "") -> None:
        """Record a fault; raise ``OplogUnavailableError`` once the outage has lasted ``retry_for``."""
        now = time.monotonic()
        with self._lock:
            since = self._outage_since
            if since is None:
                since = self._outage_since = now
                log.warning(
                    "redis oplog unreachable; retrying", stream=self._stream, address=_address(self._client),
                    error=str(exc), retry_for=self._retry_for,
                )
        if self._retry_for is not None and now - since >= self._retry_for:
            raise OplogUnavailableError(
                f"{self._where}: {what} failed, Redis unreachable for {now - since:.1f} s ({exc})"
                + (f"; {note}" if note else "")
            ) from exc

    def _recovered(self) -> None:
        if self._outage_since is None:
            return
        with self._lock:
            since, self._outage_since = self._outage_since, None
        if since is not None:
            log.info("redis oplog reachable again", stream=self._stream, outage_s=round(time.monotonic() - since, 3))

    def _refused(self, what: str, exc: redis.RedisError) -> RxcsError:
        """The error for a command Redis answered with an error (not a connection fault)."""
        message = str(exc)
        if "RXCS_GONE" in message:
            return self._gone(OplogUnavailableError)
        for marker in ("RXCS_FOREIGN ", "RXCS_CORRUPT "):
            if marker in message:
                return OplogCorruptedError(message.split(marker, 1)[1], path=self._where, offset=0)
        return OplogUnavailableError(f"{self._where}: Redis refused {what}: {message}")

    def _gone(self, error: type[RxcsError]) -> RxcsError:
        return error(
            f"{self._where}: oplog {self._oplog_id} is no longer there ({self._keys[1]} is missing or names "
            "another oplog): the Redis server lost its data, or the keys were deleted"
        )


@final
class _RedisCursor(OplogCursor):
    __slots__ = ("_checked", "_known", "_oplog", "_origin", "_origin_epoch", "_start", "position")

    def __init__(self, oplog: RedisOplog, after: int, start: bytes | None, *, checked: bool) -> None:
        self._oplog = oplog
        self._start = start  # the XRANGE start ("(id" exclusive, "id" inclusive); None: seek again
        self.position = after
        # Where and in which epoch the cursor began, and the lost ranges known then (none of which cut it
        # off: RedisOplog.cursor checked). A range learned later cuts it off when it began before the range
        # or before the epoch that lost it: it read the lost entries, or crossed their op_ids in the new history.
        self._origin, self._origin_epoch = after, oplog._epoch
        self._known = oplog._losses
        self._checked = checked  # a stream's cursor; not one that only looks at entries

    def _check_losses(self) -> None:
        losses = self._oplog._losses
        if losses is self._known or not self._checked:
            return
        for loss in losses:
            if loss not in self._known and (loss.epoch > self._origin_epoch or self._origin < loss.first_op_id):
                raise lost_error(self._oplog._where, loss, self.position)
        self._known = losses

    def read(self, limit: int, sift: Sift | None = None) -> list[OplogEntry]:
        oplog = self._oplog
        oplog._check_open()
        if limit <= 0:
            return []
        self._check_losses()
        arrival = oplog._take_arrival(self.position)
        if arrival is not None:  # the entry that ended the wait: no round trip for it
            entry = _arrived(arrival[1], self.position + 1)
            if entry is not None:
                self._start = b"(" + arrival[0]
                self.position = entry.op_id
                oplog._tail_hint = (self.position, arrival[0])
                oplog._witness(oplog._epoch, entry.op_id)
                return [entry]
        if self._start is None:
            self._start = oplog._seek(self.position)
            if self._start is None:
                return []
        start, after = self._start, self.position
        owner, last_id, count, records, epoch, losses = oplog._retrying(
            "reading", lambda: oplog._read_batch(start, limit, after)
        )
        if owner != oplog._owner:
            raise oplog._gone(ChangeStreamHistoryLost)
        oplog._observe(epoch, losses)
        self._check_losses()
        if not count or last_id is None:
            return []
        try:
            entries = _decode_batch(records, count)
        except EntryDecodeError as exc:
            raise self._corrupted(start, limit, exc) from None
        expected = self.position + 1
        if entries[0].op_id != expected:
            if entries[0].op_id > expected:
                raise ChangeStreamHistoryLost(
                    f"{oplog._where}: op_id {expected} was trimmed; the oldest retained is {entries[0].op_id}"
                )
            raise ChangeStreamHistoryLost(
                f"{oplog._where}: expected op_id {expected} but the stream now holds op_id {entries[0].op_id} "
                "there: the Redis server lost acknowledged entries (see its persistence settings)"
            )
        self._start = b"(" + last_id
        self.position = entries[-1].op_id
        oplog._witness(epoch, self.position)
        if not oplog._replicated:  # the hint is a position in the stream of entries, not of marks
            oplog._tail_hint = (self.position, last_id)
        return entries

    def _corrupted(self, start: bytes, limit: int, exc: EntryDecodeError) -> OplogCorruptedError:
        """Name the first entry of a batch that does not decode (the slow path, read entry by entry)."""
        oplog = self._oplog

        def fetch() -> list[Any]:
            return list(oplog._reader.xrange(oplog._stream, start, "+", count=limit) or ())

        rows = oplog._retrying("reading", fetch)
        reason = str(exc)
        entry_id: Any = rows[0][0] if rows else b"?"
        for row_id, fields in rows:
            try:
                decode_entry(fields[b"entry"])
            except EntryDecodeError as error:
                entry_id, reason = row_id, str(error)
                break
        return OplogCorruptedError(reason, path=f"{oplog._where} entry {entry_id.decode()}", offset=0)


def _arrived_entry(reply: Any) -> tuple[bytes, bytes] | None:
    """``(stream ID, record)`` from an ``XREAD COUNT 1`` reply of rxcs's fields, else None."""
    try:
        ((_, rows),) = reply.items() if isinstance(reply, dict) else reply  # RESP3 gives a map
        ((entry_id, fields),) = rows
        if list(fields[0::2]) == [b"op_id", b"entry"] and isinstance(entry_id, bytes):
            return entry_id, fields[3]
    except (TypeError, ValueError, IndexError):
        pass  # not the shape expected: the cursor reads the entry as usual
    return None


def _arrived(record: bytes, expected: int) -> OplogEntry | None:
    """The entry a wait brought, if it decodes and is op_id ``expected``; else the cursor reads as usual."""
    try:
        entry = decode_entry(record)
    except EntryDecodeError:
        return None  # the read script's path names the damage
    return entry if entry.op_id == expected else None


def _decode_batch(records: bytes, count: int) -> list[OplogEntry]:
    """Decode ``count`` concatenated records (each is one msgpack array, so they split themselves)."""
    unpacker = msgpack.Unpacker(**UNPACK_OPTIONS, max_buffer_size=max(len(records), 1 << 20))
    unpacker.feed(records)
    try:
        entries = [entry_from_record(record) for record in unpacker]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise EntryDecodeError(f"not a msgpack entry ({exc})") from None
    if len(entries) != count or entries[-1].op_id - entries[0].op_id != count - 1:
        raise EntryDecodeError(f"a batch of {count} records decodes into {len(entries)} entries out of sequence")
    return entries


def _identity_seed() -> bytes:
    """16 random bytes set out as a version-4 UUID: the append script makes the batch's new identities from it."""
    seed = bytearray(os.urandom(16))
    seed[6] = (seed[6] & 0x0F) | 0x40
    seed[8] = (seed[8] & 0x3F) | 0x80
    return bytes(seed)


def _record(change: Change) -> bytes:
    """The codec's record of ``change`` with a zeroed head, for the append script to fill in.

    A record without the catalog's fields is a msgpack fixarray (it has at
    most 15 fields) whose first four fields are op_id, time, inc and wall_ms;
    zeros pack to one byte each. The script keeps byte 1, writes the four real
    values, keeps the rest, and adds the catalog's fields.
    """
    if change.collection_uuid is not None or change.dropped is not None:
        change = change._replace(collection_uuid=None, dropped=None)  # the script's catalog says what they are
    record = encode_entry(0, _ZERO_TIME, 0, change)
    if record[0] & 0xF0 != 0x90 or record[1:5] != b"\x00\x00\x00\x00":  # pragma: no cover - the codec's layout
        raise RxcsError("the entry codec no longer packs the head the Redis append script expects")
    if len(record) + _HEAD_GROWTH > MAX_ENTRY_BYTES:
        raise InvalidChangeError(
            f"{change.op} on {change.db}.{change.coll}: the entry is about {len(record) + _HEAD_GROWTH} bytes "
            f"encoded, over the limit of {MAX_ENTRY_BYTES} bytes (64 MiB)"
        )
    return record


_BOOLEANS: dict[str, bool] = {
    "true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False,
}
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "stream": str,
    "max_len": int,
    "retry_for": lambda text: None if text.lower() == "none" else float(text),
    "retain_entries": int,
    "retain_age": float,
    "document_images": lambda text: _BOOLEANS[text.lower()],
    "durability": lambda text: _choice(text, _DURABILITIES),
    "replicas": int,
    "replication_timeout": float,
    "read_from": lambda text: _choice(text, READ_FROM),
}


def _choice(text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ValueError(text)
    return text


def _split_url(url: str, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Take rxcs's own options out of a Redis URL's query; return the rest of the URL and the options.

    ``given`` holds the options passed as keywords (None for not given, but
    ``retry_for``'s default is a number): an option given both ways is refused.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = dict(given)
    seen: set[str] = set()
    for key, text in query:
        parse = _URL_OPTIONS.get(key)
        if parse is None:
            continue
        if key in seen or (key != "retry_for" and given[key] is not None):
            raise InvalidLocationError(f"{_redact(url)}: the {key} is named more than once")
        seen.add(key)
        try:
            options[key] = parse(text)
        except (ValueError, KeyError):
            raise InvalidLocationError(f"{_redact(url)}: {key}={text!r} is not a valid {key}") from None
    stream, max_len, retry_for = options["stream"], options["max_len"], options["retry_for"]
    if stream is not None and (not stream or "{" in stream or "}" in stream):
        raise InvalidLocationError(f"{_redact(url)}: stream must be a non-empty name without braces, not {stream!r}")
    if "max_len" in seen and max_len < 1:
        raise InvalidLocationError(f"{_redact(url)}: max_len must be a positive number of entries, not {max_len}")
    if "retry_for" in seen and retry_for is not None and not retry_for >= 0:
        raise InvalidLocationError(f"{_redact(url)}: retry_for must be seconds >= 0 or none, not {retry_for}")
    rest = urlencode([(key, text) for key, text in query if key not in _URL_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), options


def _check_connection_options(client: redis.Redis, url: str) -> None:
    """Make (without connecting) one connection of the client's pool, so an unknown option fails now."""
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        name = unknown.group(1) if unknown else str(exc)
        raise InvalidLocationError(
            f"{_redact(url)}: unknown parameter {name!r}; rxcs takes {', '.join(_URL_OPTIONS)} "
            "and redis-py its connection options (socket_timeout, db, ...)"
        ) from None


def _address(client: redis.Redis | RedisCluster) -> str:
    """Where the client connects, without credentials: ``redis://host:port/db``, ``unix://path``,
    ``redis+sentinel://...`` or ``redis+cluster://host:port,...``."""
    if isinstance(client, RedisCluster):
        return cluster_address(client)
    if isinstance(client.connection_pool, SentinelConnectionPool):
        return sentinel_address(client.connection_pool)
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if kwargs.get("ssl") or "SSL" in getattr(
        client.connection_pool.connection_class, "__name__", ""
    ) else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _can_unblock(client: redis.Redis) -> bool:
    """Whether this connection may send CLIENT UNBLOCK (managed services often forbid it)."""
    try:
        client.client_unblock(_NO_SUCH_CLIENT)
    except redis.ResponseError:
        return False
    return True
