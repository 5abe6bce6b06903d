"""Consumer groups on every backend: members in threads share a stream; leaving, dying and fencing."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

import pytest

import rxcs
from rxcs.groups import PARTITIONS, event_partition, partition_of


def produce(oplog: rxcs.Oplog, documents: int, versions: int) -> None:
    """``versions`` versions of ``documents`` documents of shop.orders, interleaved: v0 inserted, then replaced."""
    for version in range(versions):
        oplog.append_many([
            rxcs.Change.insert("shop", "orders", {"_id": d, "v": 0}) if version == 0
            else rxcs.Change.replace("shop", "orders", d, {"_id": d, "v": version})
            for d in range(documents)
        ])


class Member:
    """A group member in a thread: takes events until told to stop, noting (document, version) in order."""

    def __init__(self, oplog: rxcs.Oplog, name: str, **options: Any) -> None:
        options.setdefault("max_await_time", 0.05)
        options.setdefault("lease_ttl", 1.0)
        self.stream = rxcs.watch(oplog, "shop", "orders", group="g", member=name,
                                 start_at_operation_time=rxcs.BEGINNING, **options).iterate()
        self.handled: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.stream:
                while not self.stop.is_set():
                    event = self.stream.try_next()
                    if event is not None:
                        self.handled.append((event.document_key["_id"], event.full_document["v"]))
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert self.error is None, self.error


def wait_until(condition: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def by_document(*members: Member) -> dict[int, list[int]]:
    versions: dict[int, list[int]] = collections.defaultdict(list)
    for member in members:
        for document, version in member.handled:
            versions[document].append(version)
    return versions


class TestSharing:
    def test_members_share_every_change_once_in_document_order(self, oplog: rxcs.Oplog) -> None:
        """Three members: every change handled once, each document by one member, its versions in order."""
        members = [Member(oplog, f"w{i}") for i in range(3)]
        assert wait_until(lambda: len(_owners(oplog)) == 3 and sum(map(len, _owners(oplog).values())) == PARTITIONS)
        produce(oplog, 30, 20)
        assert wait_until(lambda: sum(len(m.handled) for m in members) >= 600)
        for member in members:
            member.close()
        assert all(member.handled for member in members)
        for versions in by_document(*members).values():
            assert versions == list(range(20))
        for member in members:
            documents = {document for document, _ in member.handled}
            others = {document for other in members if other is not member for document, _ in other.handled}
            assert not documents & others  # one document, one member

    def test_a_member_that_leaves_hands_its_partitions_over_after_its_commit(self, oplog: rxcs.Oplog) -> None:
        """A member that closes commits and releases: the other takes over its documents, nothing twice or lost."""
        first, second = Member(oplog, "a"), Member(oplog, "b")
        assert wait_until(lambda: len(_owners(oplog)) == 2 and sum(map(len, _owners(oplog).values())) == PARTITIONS)
        produce(oplog, 20, 5)
        assert wait_until(lambda: len(first.handled) + len(second.handled) >= 100)
        first.close()
        assert wait_until(lambda: list(_owners(oplog)) == ["b"] and len(_owners(oplog)["b"]) == PARTITIONS)
        for version in range(5, 10):
            for document in range(20):
                oplog.replace("shop", "orders", document, {"_id": document, "v": version})
        assert wait_until(lambda: len(first.handled) + len(second.handled) >= 200)
        second.close()
        for versions in by_document(first, second).values():
            assert sorted(versions) == list(range(10))
            assert len(versions) == 10


class TestFailures:
    def test_a_silent_member_loses_its_partitions_and_its_uncommitted_changes_are_handled_again(
        self, oplog: rxcs.Oplog
    ) -> None:
        """A member that stops asking (a hung process) keeps its share for lease_ttl, then another member takes
        it, from its last commit: what it handled without committing is handled again; its late commit is refused."""
        produce(oplog, 10, 3)
        silent = rxcs.watch(oplog, "shop", "orders", group="g", member="silent", commit="manual", lease_ttl=0.5,
                            start_at_operation_time=rxcs.BEGINNING).iterate()
        taken = [silent.next(timeout=5) for _ in range(30)]  # every change, handled, never committed
        assert len({event.op_id for event in taken}) == 30
        other = Member(oplog, "other", lease_ttl=0.5)
        assert wait_until(lambda: len(other.handled) == 30)
        other.close()
        assert sorted(other.handled) == sorted((e.document_key["_id"], e.full_document["v"]) for e in taken)
        with pytest.raises(rxcs.ConsumerFencedError, match="no longer owns partitions") as refused:
            silent.commit()
        assert len(refused.value.partitions) == PARTITIONS
        silent.close()

    def test_a_restarted_group_resumes_from_its_commits(self, oplog: rxcs.Oplog) -> None:
        """Members that left (committing) and come back start after what was handled."""
        produce(oplog, 10, 2)
        member = Member(oplog, "a")
        assert wait_until(lambda: len(member.handled) == 20)
        member.close()
        produce_more = [oplog.replace("shop", "orders", d, {"_id": d, "v": 2}) for d in range(10)]
        assert len(produce_more) == 10
        again = Member(oplog, "b")
        assert wait_until(lambda: len(again.handled) == 10)
        time.sleep(0.2)
        again.close()
        assert sorted(again.handled) == [(d, 2) for d in range(10)]


class TestPartitions:
    def test_an_entry_and_its_event_fall_in_one_partition(self, memory_oplog: rxcs.Oplog) -> None:
        """A member passes over other members' entries before they become events: the entry's partition is the
        event's, for every kind of document change and key."""
        keys: list[Any] = [5, "x", {"a": 1, "b": [2, 3]}, 2.5, None, True, {"nested": {"z": 1, "a": 2}}]
        for key in keys:
            memory_oplog.insert("shop", "orders", {"_id": key})
            memory_oplog.update("shop", "orders", {"_id": key}, updated_fields={"v": 1})
            memory_oplog.replace("shop", "orders", {"_id": key}, {"_id": key, "v": 2})
            memory_oplog.delete("shop", "orders", {"_id": key})
        entries = memory_oplog.read(0, 100)
        with rxcs.watch(memory_oplog, "shop", "orders", start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            events = [stream.next(timeout=5) for _ in entries]
        for entry, event in zip(entries, events, strict=True):
            assert partition_of(entry.db, entry.coll, entry.document_key) == event_partition(event, PARTITIONS)


class TestUsage:
    def test_options_that_do_not_fit_are_refused(self, memory_oplog: rxcs.Oplog) -> None:
        """A group needs a member, is not also a consumer, is iterated (not subscribed or async)."""
        with pytest.raises(rxcs.InvalidOptionError, match="both group= and member="):
            rxcs.watch(memory_oplog, "shop", group="g")
        with pytest.raises(rxcs.InvalidOptionError, match="not both"):
            rxcs.watch(memory_oplog, "shop", consumer="c", group="g", member="m")
        with pytest.raises(rxcs.InvalidOptionError, match="member name"):
            rxcs.watch(memory_oplog, "shop", group="g", member="a b")
        with pytest.raises(rxcs.InvalidOptionError, match="lease_ttl"):
            rxcs.watch(memory_oplog, "shop", group="g", member="m", lease_ttl=0)
        watch = rxcs.watch(memory_oplog, "shop", group="g", member="m")
        with pytest.raises(rxcs.InvalidOptionError, match="iterate"):
            watch.subscribe(lambda _event: None)

        async def held_async() -> None:
            async with watch.aiterate():
                pass

        with pytest.raises(rxcs.InvalidOptionError, match="iterate"):
            asyncio.run(held_async())

    def test_a_group_is_one_stream(self, memory_oplog: rxcs.Oplog) -> None:
        """Members of one group watch the same scope; a consumer name is not a group's."""
        rxcs.watch(memory_oplog, "shop", "orders", group="g", member="m").iterate().close()
        with pytest.raises(rxcs.ConsumerMismatchError, match="same stream"):
            rxcs.watch(memory_oplog, "shop", "users", group="g", member="n").iterate()
        with pytest.raises(rxcs.ConsumerMismatchError, match="group"):
            rxcs.watch(memory_oplog, "shop", "orders", consumer="g")

    def test_a_stopped_group_is_reset(self, memory_oplog: rxcs.Oplog) -> None:
        """reset_consumer moves every partition of a group: its members start there again."""
        produce(memory_oplog, 4, 1)
        with rxcs.watch(memory_oplog, "shop", "orders", group="g", member="m",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            assert [stream.next(timeout=5).op_id for _ in range(4)] == [1, 2, 3, 4]
        rxcs.reset_consumer(memory_oplog, "g", rxcs.BEGINNING)
        with rxcs.watch(memory_oplog, "shop", "orders", group="g", member="m").iterate() as stream:
            assert sorted(stream.next(timeout=5).op_id for _ in range(4)) == [1, 2, 3, 4]

    def test_listed_with_its_members(self, memory_oplog: rxcs.Oplog) -> None:
        """list_consumers shows a group: its lowest checkpoint and which member owns which partitions."""
        produce(memory_oplog, 4, 1)
        with rxcs.watch(memory_oplog, "shop", "orders", group="g", member="m",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            for _ in range(4):
                stream.next(timeout=5)
            (info,) = rxcs.list_consumers(memory_oplog)
            assert (info.kind, list(info.members or {})) == ("group", ["m"])
            assert (info.members or {})["m"] == list(range(PARTITIONS))
        (info,) = rxcs.list_consumers(memory_oplog)
        assert (info.op_id, info.lag_entries, info.members) == (4, 0, {})  # all handled, every partition past them


def _owners(oplog: rxcs.Oplog) -> dict[str, list[int]]:
    record = oplog.checkpoints.load("g") or {}
    owners: dict[str, list[int]] = collections.defaultdict(list)
    for partition, owner in record.get("owners", {}).items():
        owners[owner["member"]].append(int(partition))
    return dict(owners)

