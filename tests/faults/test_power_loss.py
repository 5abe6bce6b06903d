"""A simulated power loss for each durability mode: what each mode promises, held.

A writer runs in this process with its OS calls recorded (``recording.py``):
two sessions of appends of varied sizes over 4 KiB segments, so segments
are started, finished and recovered. From the record, the states a power
loss could leave are built at many moments, each file kept to its last sync
plus a prefix of its later writes (the last one torn, zeroed or followed by
stale bytes), the directory kept to its last sync plus a prefix of its later
changes. Each state is opened: every entry whose frame and segment name were
synced must be there; what is there must be the entries appended, in order;
the writer must recover and append after them.

What each mode promises (docs/oplog.md):

- ``fsync``: an append returns only once its entries are synced;
- ``group``: entries are synced by the flusher within moments of their append;
- ``none``: a segment is synced when it is finished, and everything at close.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import rxcs
from rxcs.oplog.file import FileOplog
from rxcs.oplog.segments import SECTOR

from .conftest import FULL, full_run
from .recording import (
    VARIANTS,
    Event,
    Recorder,
    Variant,
    acknowledged,
    crash_state,
    cut_state,
    durable_at,
    frame_spans,
    written_entries,
)
from .tally import Outcome, Tally, record

MODES = ("fsync", "group", "none")
GROUP_SYNC_WITHIN = 2.0  # seconds: the flusher's 5 ms plus one fdatasync, with room for a busy machine


@dataclass(frozen=True, slots=True)
class Recording:
    directory: Path
    mode: str
    events: list[Event]
    documents: list[dict[str, object]]  # the document of op_id i + 1
    commits: list[tuple[int, int]]  # the first and last op_id of each append_many

    @property
    def commit_ends(self) -> set[int]:
        """Where the entries read may stop: 0, or the last op_id of a commit."""
        return {0, *(last for _, last in self.commits)}

    @property
    def start(self) -> int:
        """The first moment worth a loss: the oplog's metadata is on disk."""
        return next(i for i, e in enumerate(self.events) if e.kind == "dirsync") + 1


@pytest.fixture(scope="module", params=MODES)
def recording(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Two writer sessions in one durability mode, every OS call recorded."""
    mode: str = request.param
    directory = tmp_path_factory.mktemp(f"recorded-{mode}") / "oplog"
    recorder = Recorder()
    documents: list[dict[str, object]] = []
    commits: list[tuple[int, int]] = []
    rng = random.Random(21)
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder.install(monkeypatch)
        for _ in range(2):  # the second session starts with a recovery
            with FileOplog(directory, durability=mode, segment_bytes=4096) as oplog:  # type: ignore[arg-type]
                for step in range(30):
                    batch = [  # up to 6 entries: now and then a commit larger than a segment
                        {"_id": len(documents) + i, "pad": "x" * rng.randrange(20, 900)}
                        for i in range(rng.randint(1, 6))
                    ]
                    op_ids = oplog.append_many([rxcs.Change.insert("shop", "users", d) for d in batch])
                    recorder.ack(op_ids)
                    documents.extend(batch)
                    commits.append((op_ids[0], op_ids[-1]))
                    if step % 7 == 6:
                        time.sleep(0.03)  # the group flusher gets to run between appends
    return Recording(directory, mode, recorder.events, documents, commits)


class TestWhatEachModePromises:
    @pytest.mark.parametrize("recording", ["fsync"], indirect=True)
    def test_fsync_acknowledges_only_what_is_synced(self, recording: Recording) -> None:
        """fsync: when append returns, its entries' frames and their segment's name are synced."""
        for moment, event in enumerate(recording.events):
            if event.kind == "ack":
                assert set(event.op_ids) <= durable_at(recording.events, moment), event.op_ids

    @pytest.mark.parametrize("recording", ["group"], indirect=True)
    def test_group_syncs_every_entry_within_moments(self, recording: Recording) -> None:
        """group: every acknowledged entry's frame is synced within moments of its append returning."""
        events = recording.events
        written = written_entries(events)
        for event in (e for e in events if e.kind == "ack"):
            for op_id in event.op_ids:
                where = written[op_id]
                sync = next(
                    e for e in events[where.event :]
                    if e.kind == "sync" and e.file == where.file and e.begun > where.event
                )
                assert sync.at - event.at < GROUP_SYNC_WITHIN, f"op_id {op_id} synced {sync.at - event.at:.3f} s late"

    @pytest.mark.parametrize("recording", ["none"], indirect=True)
    def test_none_syncs_each_finished_segment(self, recording: Recording) -> None:
        """none: when a segment is finished (the next one is named), every entry in it is synced."""
        events = recording.events
        started = [i for i, e in enumerate(events) if e.kind == "rename" and e.target.endswith(".seg")]
        assert len(started) > 3
        for moment in started:
            before = set(acknowledged(events, moment))
            assert before <= durable_at(events, moment), sorted(before - durable_at(events, moment))[:5]

    def test_everything_is_synced_at_close(self, recording: Recording) -> None:
        """Every mode: after close(), every entry appended is synced."""
        events = recording.events
        assert set(acknowledged(events, len(events))) == durable_at(events, len(events))
        assert len(recording.documents) == len(acknowledged(events, len(events)))

    def test_a_segment_is_named_on_disk_before_entries_go_in(self, recording: Recording) -> None:
        """Every mode: a segment's header is synced and its name synced before its first frame is written."""
        events = recording.events
        written = written_entries(events)
        for where in {w.name: w for w in sorted(written.values(), key=lambda w: -w.event)}.values():
            named = max(i for i, e in enumerate(events[: where.event]) if e.kind == "rename" and e.target == where.name)
            assert any(
                e.kind == "dirsync" and e.begun > named for e in events[named : where.event]
            ), f"{where.name} got frames before its name was synced"


# -- the states a power loss leaves --------------------------------------------------------------------


class Lost(Exception):
    """A power-loss state the oplog took wrongly: the message says how."""


def check_state(recording: Recording, moment: int, variant: Variant, seed: int, work: Path) -> Outcome:
    """Build the state of a power loss at ``moment`` and hold the oplog to its mode's promise."""
    into = work / f"{moment}-{variant}-{seed}"
    crash_state(recording.events, moment, variant, seed, recording.directory, into)
    durable = durable_at(recording.events, moment)
    got = _read(recording, into, durable, variant)
    try:
        with FileOplog(into, durability=recording.mode) as writer:  # type: ignore[arg-type]
            appended = writer.insert("shop", "users", {"_id": "after"})
    except rxcs.OplogCorruptedError as exc:
        if variant not in ("stale", "reordered") or not exc.path.startswith(str(into)):
            raise Lost(f"the writer refused: {exc}") from None
        _repair(recording, into, durable)
        return "reported"
    if appended != got + 1:
        raise Lost(f"the writer appended op_id {appended} after {got} entries")
    again = _read(recording, into, durable, variant, after=appended)
    if again != appended:
        raise Lost(f"after the writer's append, {again} entries read, not {appended}")
    with FileOplog(into, readonly=True) as oplog:
        if oplog.verify() != appended:
            raise Lost("verify disagrees with the entries read")
    return "recovered"


def _read(recording: Recording, into: Path, durable: set[int], variant: Variant, after: int = 0) -> int:
    """Read every entry; check each against what was appended (op_id ``after``: the writer's own) and that
    every synced one is there."""
    entries: list[rxcs.OplogEntry] = []
    try:
        with FileOplog(into, readonly=True) as oplog, oplog.cursor(0) as cursor:
            while batch := cursor.read(100):
                entries.extend(batch)
    except rxcs.OplogCorruptedError as exc:
        if variant not in ("stale", "reordered"):
            raise Lost(f"a reader reported {exc}") from None
    for number, entry in enumerate(entries, 1):
        if entry.op_id != number:
            raise Lost(f"op_id {entry.op_id} read where {number} was due")
        document = {"_id": "after"} if number == after else recording.documents[number - 1]
        if entry.full_document != document:
            raise Lost(f"op_id {number} decoded as another entry")
    recorded = len(entries) - 1 if after and len(entries) == after else len(entries)
    if recorded not in recording.commit_ends:
        commit = next(c for c in recording.commits if c[0] <= recorded <= c[1])
        raise Lost(f"op_ids {commit[0]}..{recorded} of the commit of op_ids {commit[0]}..{commit[1]} were read")
    missing = sorted(op_id for op_id in durable if op_id > len(entries))
    if missing and variant not in ("stale", "reordered"):
        raise Lost(f"synced op_ids {missing[:5]} are lost")
    return len(entries)


def _repair(recording: Recording, into: Path, durable: set[int]) -> None:
    """A state the writer refused: repair, cutting at the damage, drops only entries never synced."""
    with FileOplog(into) as oplog:
        plan = oplog.repair(truncate_at_damage=True)
    if plan.refusal is not None:
        raise Lost(f"repair refused: {plan.refusal}")
    dropped = [step.dropped for step in plan.steps if step.dropped is not None]
    for first, last in dropped:
        if durable & set(range(first, last + 1)):
            raise Lost(f"repair dropped synced op_ids among {first}..{last}")
    got = _read(recording, into, durable, "kept")
    with FileOplog(into, durability=recording.mode) as writer:  # type: ignore[arg-type]
        appended = writer.insert("shop", "users", {"_id": "after"})
    if appended != got + 1 or _read(recording, into, durable, "kept", after=appended) != appended:
        raise Lost("after repair, the writer did not append after the last entry")


def moments(recording: Recording, count: int) -> list[int]:
    """``count`` moments spread over the record, the first and the last among them."""
    span = range(recording.start, len(recording.events) + 1)
    step = max(1, len(span) // count)
    return sorted({*span[::step], span[-1]})


def run_states(recording: Recording, chosen: list[int], variants: tuple[Variant, ...], seeds: int, work: Path) -> Tally:
    tally = Tally()
    for moment in chosen:
        for variant in variants:
            for seed in range(seeds):
                case = f"{recording.mode} loss at event {moment}/{len(recording.events)}, {variant}, seed {seed}"
                try:
                    tally.add(check_state(recording, moment, variant, seed * 1000 + moment, work))
                except Lost as lost:
                    tally.fail(case, str(lost))
    return tally


def held(tally: Tally, name: str, cases: int) -> None:
    record(name, tally)
    assert tally.wrong == []
    assert tally.tried == cases == tally.recovered + tally.reported
    assert tally.adds_up()


def multi_entry_writes(recording: Recording) -> list[int]:
    """The indexes of the recorded writes that put a commit of several entries into a segment."""
    frames = Counter(written.event for written in written_entries(recording.events).values())
    return sorted(index for index, count in frames.items() if count > 1)


def cut_states(write: Event) -> dict[int, bytes]:
    """What a write of frames can leave, by where it stopped: at each frame boundary, inside each field of each
    frame, at its last byte and its end (whole), or with its size reached and zeros from the sector of such a
    point on; with ``RXCS_FAULTS=all`` at every 16th byte besides."""
    data = write.data
    points = {len(data)}
    for _, start, end in frame_spans(data):
        points.update((start, start + 2, start + 9, start + 16, (start + end) // 2, end - 1))
    if FULL:
        points.update(range(0, len(data), 16))
    states = {cut: data[:cut] for cut in points}
    for cut in points:
        boundary = min(len(data), -(-(write.offset + cut) // SECTOR) * SECTOR - write.offset)
        states[-boundary - 1] = data[:boundary] + bytes(len(data) - boundary)  # keyed apart from the cuts
    return states


def check_cut(recording: Recording, index: int, data: bytes, into: Path) -> Outcome:
    """The write ``index`` left ``data``: every commit before it whole, all of its own only when all of it is
    there, and the writer appends after the last whole commit."""
    spans = frame_spans(recording.events[index].data)
    expected = spans[-1][0] if data == recording.events[index].data else spans[0][0] - 1
    cut_state(recording.events, index, data, recording.directory, into)
    durable = durable_at(recording.events, index)
    got = _read(recording, into, durable, "kept")
    if got != expected:
        raise Lost(f"{got} entries read; the commits before the cut end at op_id {expected}")
    with FileOplog(into, durability=recording.mode) as writer:  # type: ignore[arg-type]
        appended = writer.insert("shop", "users", {"_id": "after"})
    if appended != expected + 1 or _read(recording, into, durable, "kept", after=appended) != appended:
        raise Lost(f"the writer appended op_id {appended} after {expected} entries")
    with FileOplog(into, readonly=True) as oplog:
        if oplog.verify() != appended:
            raise Lost("verify disagrees with the entries read")
    return "recovered"


class TestCommitsCutShort:
    def test_a_commit_is_all_or_nothing_wherever_its_write_stops(self, recording: Recording, tmp_path: Path) -> None:
        """Writes of append_many batches of several entries, each stopped short at every frame boundary and
        inside every field of its frames (a SIGKILL during write(), a power loss before it was synced), or
        reaching their size with zeros from the sector of the cut: the commits before it are read whole,
        none of it unless all of it is there, and the writer appends after the last whole commit."""
        writes = multi_entry_writes(recording)
        assert len(writes) > 20
        chosen = writes if FULL else writes[:: len(writes) // 4][:4]
        tally = Tally()
        for index in chosen:
            for cut, data in sorted(cut_states(recording.events[index]).items()):
                where = f"stopped at byte {cut}" if cut >= 0 else f"zeros from byte {-cut - 1}"
                try:
                    tally.add(check_cut(recording, index, data, tmp_path / f"{index}-{cut}"))
                except Lost as lost:
                    tally.fail(f"{recording.mode}: the write of event {index} {where}", str(lost))
        record("power loss (commits cut short)", tally)
        assert tally.wrong == []
        assert tally.recovered == tally.tried > 4 * 2 * 7


class TestPowerLoss:
    def test_every_synced_entry_survives_and_nothing_decodes_wrong(self, recording: Recording, tmp_path: Path) -> None:
        """A sample of moments, each lost every way (all, none, torn, zeroed, stale): recovered, synced entries kept."""
        chosen = moments(recording, 16)
        tally = run_states(recording, chosen, VARIANTS, 1, tmp_path)
        held(tally, "power loss", len(chosen) * len(VARIANTS))
        assert tally.recovered

    def test_a_later_write_outliving_an_earlier_one_is_reported_then_repaired(
        self, recording: Recording, tmp_path: Path
    ) -> None:
        """A loss that kept a later write and not an earlier one: recovered, or refused naming the segment;
        repair --truncate-at-damage then drops only entries that were never synced."""
        chosen = moments(recording, 8)
        tally = run_states(recording, chosen, ("reordered",), 1, tmp_path)
        held(tally, "power loss", len(chosen))

    @pytest.mark.slow
    @full_run
    @pytest.mark.timeout(3600)
    def test_every_moment_every_way(self, recording: Recording, tmp_path: Path) -> None:
        """Every moment of the record, every way of losing, three seeds each."""
        chosen = moments(recording, 10**9)
        variants: tuple[Variant, ...] = (*VARIANTS, "reordered")
        tally = run_states(recording, chosen, variants, 3 if FULL else 1, tmp_path)
        held(tally, "power loss", len(chosen) * len(variants) * 3)
