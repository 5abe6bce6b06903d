"""Consumer groups: members of one group share a stream's changes, one document's changes to one member, in order.

A group's changes are split into ``PARTITIONS`` fixed partitions by a hash
of (namespace, ``documentKey``), so every change to one document falls in
one partition. The group's record (kept in the oplog's checkpoint store,
like a named consumer's) holds its members and their leases, which member
owns which partition under which *epoch*, and each partition's checkpoint.

The rules are ``sync()``, a pure function of the record that every member
applies, atomically, through the store's ``update`` (an OS file lock for a
FileOplog, a Redis transaction for a RedisOplog), at its start, every
``lease_ttl / 3`` seconds while it reads, when it commits and when it leaves:

1. members whose lease ran out are removed, and their partitions freed;
2. the member's commits are stored, each only if the member still owns that
   partition under the epoch it was given (fencing: a member that lost a
   partition cannot move its checkpoint);
3. the member renews its lease (joining if new) or leaves;
4. when membership changed, each partition gets a target member (balanced:
   counts differ by at most one; a partition stays with its target when it
   can);
5. the member releases the partitions it owns but is no longer the target
   of, and takes the free partitions it is the target of, each under a new
   epoch.

A partition is taken only once free: released by its owner (after its
commit) or freed when the owner's lease ran out, so two live members never
hold one partition at once. A member that takes a partition starts it from
its checkpoint: what a dead member handled without committing is handled
again (at-least-once), and nothing is skipped. A member renews its lease as
it reads (``ChangeStream.next``): one whose handler takes longer than the
lease loses its partitions to the others and its commits are refused.
"""

from __future__ import annotations

import copy
import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

from rxcs.consumers import CommitEvery, CommitPolicy, needs_op_id, record_token
from rxcs.errors import ConsumerMismatchError, InvalidOptionError
from rxcs.events import ChangeEvent
from rxcs.oplog.base import Oplog
from rxcs.oplog.checkpoints import Record
from rxcs.oplog.entry import OplogEntry
from rxcs.source import Start, resolve_start
from rxcs.tokens import ResumeToken

__all__ = ["PARTITIONS", "GroupMember", "Synced", "check_lease_ttl", "new_group", "partition_of", "sync"]

PARTITIONS: Final = 32
"""Partitions per group: at most this many members share the work."""

RECORD_VERSION: Final = 1
_DOCUMENT_OPS: Final = frozenset({"insert", "update", "replace", "delete"})


def partition_of(db: str, coll: str | None, document_key: Any, partitions: int = PARTITIONS) -> int:
    """The partition of a change: a CRC-32 of its namespace and ``documentKey``, the same on every host.

    Examples:
        >>> partition_of("shop", "orders", {"_id": 7}) == partition_of("shop", "orders", {"_id": 7})
        True
        >>> 0 <= partition_of("shop", "orders", {"_id": 7}) < PARTITIONS
        True
    """
    text = json.dumps([db, coll, document_key], sort_keys=True, separators=(",", ":"), default=repr)
    return zlib.crc32(text.encode()) % partitions


def event_partition(event: Any, partitions: int) -> int:
    """The partition of a delivered item: a ``ChangeEvent`` or its reshaped document."""
    if isinstance(event, ChangeEvent):
        return partition_of(event.ns.db, event.ns.coll, event.document_key, partitions)
    ns = event.get("ns") or {}
    return partition_of(str(ns.get("db")), ns.get("coll"), event.get("documentKey"), partitions)


def check_lease_ttl(ttl: object) -> float:
    """A lease's length in seconds: a number of at least 0.1."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 0.1:
        raise InvalidOptionError(f"lease_ttl must be a number of seconds of at least 0.1, not {ttl!r}")
    return float(ttl)


# -- the rules ------------------------------------------------------------------------------------


def new_group(
    oplog_id: str, db: str | None, collection: str | None, pipeline: str | None, start: ResumeToken,
    partitions: int = PARTITIONS,
) -> Record:
    """The record of a group that starts at ``start``: no members, every partition's checkpoint there."""
    now = time.time()
    return {
        "kind": "group", "version": RECORD_VERSION, "oplog_id": oplog_id, "db": db, "collection": collection,
        "pipeline": pipeline, "partitions": partitions, "generation": 0, "members": {}, "owners": {},
        "targets": {}, "epochs": {}, "checkpoints": {str(p): str(start) for p in range(partitions)},
        "needs_op_id": needs_op_id(start), "created_at": now, "committed_at": now,
    }


@final
@dataclass(frozen=True, slots=True)
class Synced:
    """What ``sync`` made of a group's record for one member.

    ``owned``: the partitions the member owns now, each with its epoch and
    checkpoint token (string). ``fenced``: partitions whose commit was
    refused (the member no longer owns them under that epoch).
    """

    record: Record
    owned: dict[int, tuple[int, str]]
    fenced: frozenset[int]


def sync(
    record: Record,
    member: str,
    now: float,
    ttl: float,
    commits: Mapping[int, tuple[int, str]] | None = None,
    *,
    leave: bool = False,
) -> Synced:
    """Apply the group's rules for ``member`` at time ``now`` (seconds): expire, commit, renew or leave, rebalance.

    ``commits`` maps partitions to (epoch, token string): stored only where
    the member owns the partition under that epoch, and only forward.
    """
    r = copy.deepcopy(record)
    members: dict[str, dict[str, float]] = r["members"]
    owners: dict[str, dict[str, Any]] = r["owners"]
    checkpoints: dict[str, str] = r["checkpoints"]
    epochs: dict[str, int] = r["epochs"]
    partitions: int = r["partitions"]
    changed = False
    for name in [name for name, lease in members.items() if lease["expires"] < now and name != member]:
        del members[name]
        changed = True
    fenced = set()
    committed = False
    for partition, (epoch, token) in (commits or {}).items():
        owner = owners.get(str(partition))
        if owner is None or owner["member"] != member or owner["epoch"] != epoch:
            fenced.add(partition)
            continue
        if ResumeToken.parse(token) > ResumeToken.parse(checkpoints[str(partition)]):
            checkpoints[str(partition)] = token
            committed = True
    if leave:
        if member in members:
            del members[member]
            changed = True
    else:
        if member not in members:
            changed = True
        members[member] = {"expires": now + ttl}
    for key in [p for p, owner in owners.items() if owner["member"] not in members]:
        del owners[key]
    if changed:
        r["generation"] += 1
        r["targets"] = _assign(partitions, sorted(members), r["targets"])
    targets: dict[str, str] = r["targets"]
    if not leave:
        for key in [p for p, owner in owners.items() if owner["member"] == member and targets.get(p) != member]:
            del owners[key]
        for key, target in targets.items():
            if target == member and key not in owners:
                epochs[key] = epochs.get(key, 0) + 1
                owners[key] = {"member": member, "epoch": epochs[key]}
    if committed:
        r["committed_at"] = now
        r["needs_op_id"] = min(needs_op_id(ResumeToken.parse(token)) for token in checkpoints.values())
    owned = {
        int(p): (owner["epoch"], checkpoints[p]) for p, owner in owners.items() if owner["member"] == member
    }
    return Synced(r, owned, frozenset(fenced))


def _assign(partitions: int, members: list[str], previous: Mapping[str, str]) -> dict[str, str]:
    """Targets for every partition: balanced over ``members`` (sorted), each kept where it was when it can be."""
    if not members:
        return {}
    base, extra = divmod(partitions, len(members))
    quota = {name: base + (1 if index < extra else 0) for index, name in enumerate(members)}
    counts = dict.fromkeys(members, 0)
    targets: dict[str, str] = {}
    for partition in range(partitions):
        was = previous.get(str(partition))
        if was in quota and counts[was] < quota[was]:
            targets[str(partition)] = was
            counts[was] += 1
    for partition in range(partitions):
        if str(partition) not in targets:
            name = next(name for name in members if counts[name] < quota[name])
            targets[str(partition)] = name
            counts[name] += 1
    return targets


# -- a member, as a held stream runs it ------------------------------------------------------------


@final
class GroupMember:
    """One member of a group, held by one ``ChangeStream``: its partitions, their floors, its commits.

    ``join`` (at the start) and ``rebalance`` (when due) answer where the
    stream must (re)start reading: the lowest checkpoint of the partitions
    it owns. ``mine(event)`` says whether an event is the member's to
    handle. ``handled(token)`` moves the member's handled position; commits
    go out by the policy, through ``sync``.
    """

    def __init__(
        self,
        oplog: Oplog,
        group: str,
        member: str,
        db: str | None,
        collection: str | None,
        pipeline: str | None,
        policy: CommitPolicy,
        lease_ttl: float,
    ) -> None:
        self.oplog = oplog
        self.group = group
        self.member = member
        self._scope = (db, collection, pipeline)
        self._policy = policy
        self._ttl = lease_ttl
        self._every_events = policy.events if isinstance(policy, CommitEvery) else None
        self._every_seconds = policy.seconds if isinstance(policy, CommitEvery) else None
        self._partitions = PARTITIONS
        self._owned: dict[int, tuple[int, ResumeToken]] = {}  # partition -> (epoch, floor: handled up to it)
        self._handled: ResumeToken | None = None  # every owned partition's events up to it were handled
        self._count = 0
        self._commit_due = float("inf")
        self._sync_due = 0.0
        self.changed = False  # a sync gave the member partitions it must read from their checkpoints
        self.fenced: set[int] = set()
        self.closed = False

    # -- starting and rebalancing

    def join(self, default_start: Start) -> Start:
        """Join the group (creating it at ``default_start`` when new) and return where to start reading."""
        db, collection, pipeline = self._scope
        oplog_id = str(self.oplog.oplog_id)

        def joined(record: Record | None) -> Record:
            if record is None:
                record = new_group(oplog_id, db, collection, pipeline, default_start.token, self._partitions)
            else:
                self._check(record)
            return sync(record, self.member, time.time(), self._ttl).record

        record = self.oplog.checkpoints.update(self.group, joined)
        assert record is not None
        return self._take(record)

    def _check(self, record: Record) -> None:
        record_token(self.oplog, self.group, {**record, "token": next(iter(record["checkpoints"].values()))},
                     kind="group")
        found = (record.get("db"), record.get("collection"), record.get("pipeline"))
        if found != self._scope:
            raise ConsumerMismatchError(
                f"group {self.group!r} reads {found[0]}.{found[1]} with pipeline {found[2] or '[]'}, not "
                f"{self._scope[0]}.{self._scope[1]} with pipeline {self._scope[2] or '[]'}: every member of a group "
                "watches the same stream"
            )

    def _take(self, record: Record) -> Start:
        """Take the partitions the record gives this member; the start that reads from the lowest of them.

        A partition it kept (same epoch) starts after what it handled of it,
        even when that was not committed (a manual policy).
        """
        handled = self._handled
        owned = {}
        for p, owner in record["owners"].items():
            if owner["member"] != self.member:
                continue
            floor = ResumeToken.parse(record["checkpoints"][p])
            kept = self._owned.get(int(p))
            if kept is not None and kept[0] == owner["epoch"] and handled is not None and handled > floor:
                floor = handled
            owned[int(p)] = (owner["epoch"], floor)
        self._owned = owned
        self._partitions = record["partitions"]
        self.changed = False
        self._sync_due = time.monotonic() + self._ttl / 3
        self._commit_due = time.monotonic() + self._every_seconds if self._every_seconds is not None else float("inf")
        self._count = 0
        if owned:
            lowest = min(floor for _, floor in owned.values())
            start = resolve_start(self.oplog, token=lowest, start_after=lowest.invalidate)
        else:  # nothing to handle yet: read from the end, until a rebalance gives it partitions
            start = resolve_start(self.oplog)
        self._handled = start.token
        return start

    def due(self) -> bool:
        """True when the member should sync (renew its lease, commit, see a rebalance) now."""
        return time.monotonic() >= self._sync_due

    def rebalance(self) -> Start | None:
        """Sync with the group (commit what was handled unless manual, renew the lease); a new start when it
        gained partitions (those it lost are dropped at once)."""
        synced = self._sync(commit=self._policy != "manual")
        if not self.changed:
            return None
        return self._take(synced.record)

    # -- delivering and committing

    @property
    def owns(self) -> frozenset[int]:
        """The partitions the member owns now."""
        return frozenset(self._owned)

    def keeps(self, entry: OplogEntry) -> bool:
        """False for an entry whose change is surely another member's (a document change of a partition it does
        not own): the stream passes over it without making it an event. ``mine`` judges the rest."""
        if entry.op not in _DOCUMENT_OPS:
            return True
        return partition_of(entry.db, entry.coll, entry.document_key, self._partitions) in self._owned

    def mine(self, event: Any) -> bool:
        """True when ``event`` is in a partition the member owns, past that partition's floor."""
        lease = self._owned.get(event_partition(event, self._partitions))
        if lease is None:
            return False
        token = event.id if isinstance(event, ChangeEvent) else ResumeToken.parse(event["_id"])
        return token > lease[1]

    def handled(self, token: ResumeToken, *, event: bool = True) -> None:
        """Every event of the member's partitions up to ``token`` was handled; commit when the policy says."""
        if self._handled is not None and token <= self._handled:
            return
        self._handled = token
        if not event:
            if self._policy == "each" or time.monotonic() >= self._commit_due:
                self._sync(commit=True)
            return
        self._count += 1
        if self._policy == "each" or (self._every_events is not None and self._count >= self._every_events) or (
            time.monotonic() >= self._commit_due
        ):
            self._sync(commit=True)

    def commit(self) -> frozenset[int]:
        """Commit the handled position of every owned partition now; return the partitions refused (fenced)."""
        return self._sync(commit=True).fenced

    @property
    def handled_to(self) -> ResumeToken | None:
        """The position up to which the member handled every event of its partitions."""
        return self._handled

    def _commits(self) -> dict[int, tuple[int, str]]:
        handled = self._handled
        commits = {}
        for partition, (epoch, floor) in self._owned.items():
            position = floor if handled is None or handled < floor else handled
            commits[partition] = (epoch, str(position))
        return commits

    def _sync(self, *, commit: bool, leave: bool = False) -> Synced:
        commits = self._commits() if commit else {}
        result: list[Synced] = []

        def change(record: Record | None) -> Record:
            if record is None:  # deleted under the member: it starts over on its next join
                raise ConsumerMismatchError(f"group {self.group!r} was deleted while member {self.member!r} ran")
            synced = sync(record, self.member, time.time(), self._ttl, commits, leave=leave)
            result[:] = [synced]
            return synced.record

        self.oplog.checkpoints.update(self.group, change)
        synced = result[0]
        for partition in list(self._owned):  # lost (released, fenced): not the member's to handle any more
            if synced.owned.get(partition, (None,))[0] != self._owned[partition][0]:
                del self._owned[partition]
        if any(partition not in self._owned for partition in synced.owned):
            self.changed = True
        self.fenced |= synced.fenced
        self._count = 0
        self._commit_due = time.monotonic() + self._every_seconds if self._every_seconds is not None else float("inf")
        self._sync_due = time.monotonic() + self._ttl / 3
        return synced

    def leave(self) -> None:
        """Commit what was handled (unless manual), release every partition and leave the group; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._sync(commit=self._policy != "manual", leave=True)
