"""The rules of consumer groups (``rxcs.groups.sync``), driven by hypothesis through joins, leaves, expiries, commits.

The machine keeps, for each member, what its last sync told it (partitions
and epochs), as the member would, and a clock it moves. It checks that a
partition is owned only by a live member, that two members never both hold
a partition under a current epoch, that a commit is stored only from the
current owner and only forward, that epochs only rise, that targets are
balanced, that a partition changes hands only once its holder released it, left or
expired, and that once every member has synced, every partition is owned.
"""

from __future__ import annotations

import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rxcs.groups import new_group, sync
from rxcs.tokens import ResumeToken

OPLOG = uuid.UUID(int=7)
PARTITIONS = 8
TTL = 10.0
NAMES = ["a", "b", "c", "d"]


def token(op_id: int) -> str:
    return str(ResumeToken(OPLOG, op_id, high_water=True))


class GroupRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.record = new_group(str(OPLOG), "shop", "orders", None, ResumeToken(OPLOG, 0, high_water=True), PARTITIONS)
        self.now = 1000.0
        self.told: dict[str, dict[int, tuple[int, str]]] = {}  # what each member's last sync gave it
        self.highest_epoch: dict[str, int] = {}
        self.position = 0

    def apply(self, member: str, commits: dict[int, tuple[int, str]] | None = None, *, leave: bool = False) -> None:
        before = self.record
        synced = sync(self.record, member, self.now, TTL, commits, leave=leave)
        self.record = synced.record
        for partition, (epoch, wanted) in (commits or {}).items():
            owner = before["owners"].get(str(partition))
            was = ResumeToken.parse(before["checkpoints"][str(partition)])
            stored = ResumeToken.parse(self.record["checkpoints"][str(partition)])
            if owner == {"member": member, "epoch": epoch}:
                assert partition not in synced.fenced
                assert stored == max(was, ResumeToken.parse(wanted))
            else:  # a stale epoch, or a partition the member never held: refused, the checkpoint kept
                assert partition in synced.fenced
                assert stored == was
        for partition, was_owner in before["owners"].items():
            owner = self.record["owners"].get(partition)
            if owner is not None and owner != was_owner:  # taken over: only once the holder left, or its lease ran out
                assert was_owner["member"] not in self.record["members"], (partition, was_owner, owner)
        if leave:
            self.told.pop(member, None)
            assert synced.owned == {}
        else:
            self.told[member] = dict(synced.owned)

    @rule(member=st.sampled_from(NAMES))
    def join_or_renew(self, member: str) -> None:
        self.apply(member)

    @rule(member=st.sampled_from(NAMES), forward=st.integers(0, 5))
    def commit_what_it_was_told(self, member: str, forward: int) -> None:
        """A member commits every partition its last sync gave it, possibly with epochs gone stale since."""
        self.position += forward
        commits = {p: (epoch, token(self.position)) for p, (epoch, _) in self.told.get(member, {}).items()}
        self.apply(member, commits)

    @rule(member=st.sampled_from(NAMES), partition=st.integers(0, PARTITIONS - 1), epoch=st.integers(0, 6))
    def commit_any_epoch(self, member: str, partition: int, epoch: int) -> None:
        """Whatever a member claims, only the owner's current epoch is stored."""
        self.position += 1
        self.apply(member, {partition: (epoch, token(self.position))})

    @rule(member=st.sampled_from(NAMES))
    def leave(self, member: str) -> None:
        self.apply(member, leave=True)

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.record["members"]))
    @rule()
    def everyone_syncs(self) -> None:
        """Every live member syncs, twice: the first releases, the second takes; then every partition is owned."""
        for _ in range(2):
            for member in sorted(self.record["members"]):
                self.apply(member)
        assert sorted(int(p) for p in self.record["owners"]) == list(range(PARTITIONS))

    @invariant()
    def owners_are_members_with_current_epochs(self) -> None:
        for partition, owner in self.record["owners"].items():
            assert owner["member"] in self.record["members"]
            assert owner["epoch"] == self.record["epochs"][partition]

    @invariant()
    def no_partition_held_twice(self) -> None:
        """Of what members were told, only one member's claim on a partition is current."""
        current: dict[int, str] = {}
        for member, owned in self.told.items():
            for partition, (epoch, _) in owned.items():
                owner = self.record["owners"].get(str(partition))
                if owner == {"member": member, "epoch": epoch}:
                    assert partition not in current
                    current[partition] = member

    @invariant()
    def epochs_only_rise(self) -> None:
        for partition, epoch in self.record["epochs"].items():
            assert epoch >= self.highest_epoch.get(partition, 0)
            self.highest_epoch[partition] = epoch

    @invariant()
    def targets_are_balanced(self) -> None:
        targets = self.record["targets"]
        if not self.record["members"] or not targets:
            return
        counts = dict.fromkeys(self.record["members"], 0)
        for member in targets.values():
            if member in counts:
                counts[member] += 1
        assert sum(counts.values()) == PARTITIONS
        assert max(counts.values()) - min(counts.values()) <= 1


TestGroupRules = GroupRules.TestCase
TestGroupRules.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
