"""Epochs, lost ranges and the durable mark of a ``RedisOplog``: what makes a failover visible.

Redis replicates asynchronously: a primary that dies can take entries it had
acknowledged with it, and the replica promoted in its place goes on from the
last entry it received. rxcs makes that visible instead of letting readers run
on over it:

- **Epochs.** The append script notes which server ran it (its ``run_id``).
  The first append on another server (a promoted replica, a restarted server)
  begins a new epoch: ``{NAME}:meta`` records ``epoch`` and
  ``epoch:<e>`` = the first op_id of epoch ``e``, the op_id after the last the
  new server holds. Op_ids at or after it may have meant other entries before.
- **Witnesses and lost ranges.** Each process remembers the highest op_id it
  was acknowledged or read in each epoch. When it meets a newer epoch, it
  reports that op_id; at or past the new epoch's first op_id, the entries from
  there to it were lost, and ``lost:<e>`` = ``"first last"`` records the range
  (merged with other witnesses'); ``losses`` counts the records' changes, so
  readers see a new one at their next read.
- **The durable mark.** With ``durability="replicated"``, an append returns
  once ``WAIT`` has confirmed that enough replicas hold it, and then raises
  ``durable`` in the meta hash (and adds a mark to ``{NAME}:durable``, the
  stream that such readers block on). Readers of that durability read no
  further than the mark, so they never see an entry a failover could lose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from rxcs.errors import ChangeStreamHistoryLost

__all__ = ["DURABLE_MARK", "EPOCH_LUA", "REPORT_LOSS", "HistoryLoss", "lost_error", "parse_losses"]

# Defines current_epoch(meta): the epoch this append runs in, beginning a new one when the server
# running the script is not the one that appended last. KEYS are not needed beyond the meta hash.
EPOCH_LUA = r"""
local function current_epoch(meta)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local held = redis.call('HMGET', meta, 'run', 'epoch', 'last_op_id')
  local epoch = tonumber(held[2] or '0')
  if held[1] ~= run then
    if held[1] then
      epoch = epoch + 1
      redis.call('HSET', meta, 'epoch', epoch, 'epoch:' .. epoch, string.format('%d', tonumber(held[3]) + 1))
    end
    redis.call('HSET', meta, 'run', run)
  end
  return epoch
end
"""

# KEYS: meta. ARGV: an epoch, the highest op_id a witness saw in it. When that op_id is at or past the
# first op_id of the next epoch, the server of the next epoch never had it: the range from that first
# op_id to it was lost. Recorded, merged with what other witnesses recorded; returns {epoch, first, last}
# of the loss, or false when nothing was lost.
REPORT_LOSS = r"""
local e = tonumber(ARGV[1]) + 1
local seen = tonumber(ARGV[2])
local first = redis.call('HGET', KEYS[1], 'epoch:' .. e)
if not first or seen < tonumber(first) then
  return false
end
first = tonumber(first)
local field = 'lost:' .. e
local recorded = redis.call('HGET', KEYS[1], field)
if recorded then
  local known = tonumber(string.match(recorded, ' (%d+)$'))
  if known >= seen then
    return {e, first, known}
  end
end
redis.call('HSET', KEYS[1], field, string.format('%d %d', first, seen))
redis.call('HINCRBY', KEYS[1], 'losses', 1)
return {e, first, seen}
"""

# KEYS: meta, the marks stream. ARGV: an op_id the replicas confirmed. Raises the durable mark to it and
# tells blocked readers, through the marks stream, that it moved.
DURABLE_MARK = r"""
local op_id = tonumber(ARGV[1])
if op_id > tonumber(redis.call('HGET', KEYS[1], 'durable') or '0') then
  redis.call('HSET', KEYS[1], 'durable', ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100, '*', 'durable', ARGV[1])
end
return 1
"""


@final
@dataclass(frozen=True, slots=True)
class HistoryLoss:
    """Entries a failover lost: op_ids ``first_op_id`` to ``last_op_id`` of the epoch before ``epoch``.

    The server of ``epoch`` went on from ``first_op_id``, so those op_ids
    name other entries now; the range's end is the highest op_id a surviving
    writer or reader had been acknowledged or had read.
    """

    epoch: int
    first_op_id: int
    last_op_id: int

    def __str__(self) -> str:
        return f"op_ids {self.first_op_id}-{self.last_op_id} (lost when epoch {self.epoch} began)"


def parse_losses(meta: dict[bytes, bytes]) -> list[HistoryLoss]:
    """The lost ranges recorded in an oplog's meta hash, oldest epoch first."""
    losses = []
    for field, value in meta.items():
        if field.startswith(b"lost:"):
            first, last = value.split()
            losses.append(HistoryLoss(int(field[5:]), int(first), int(last)))
    return sorted(losses, key=lambda loss: loss.epoch)


def lost_error(where: str, loss: HistoryLoss, position: int) -> ChangeStreamHistoryLost:
    """The error for a stream at ``position`` that a lost range cuts off."""
    return ChangeStreamHistoryLost(
        f"{where}: {loss}: the Redis primary that acknowledged them failed before its replicas had them, and "
        f"the stream (at op_id {position}) would skip them; resume from a later token or start anew "
        "(durability='replicated' prevents this)"
    )
