"""Frames: the codec round-trips, and damage is always detected or recovered, never misread."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

import rxcs
from rxcs.oplog.codec import decode_entry, encode_entry
from rxcs.oplog.segments import HEADER, encode_frame, scan_frames

documents = st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.none(), st.booleans(), st.binary(max_size=8)),
    max_size=4,
)


class TestFrameCodec:
    @given(st.lists(documents, min_size=1, max_size=10))
    def test_frames_round_trip(self, docs: list[dict[str, Any]]) -> None:
        """Encoded frames, concatenated, scan back to the same op_ids and entries."""
        changes = [rxcs.Change.insert("db", "c", {"_id": i, **d}) for i, d in enumerate(docs)]
        blob = b"".join(
            encode_frame(i + 1, encode_entry(i + 1, rxcs.ClusterTime(1, i + 1), 1000, c)) for i, c in enumerate(changes)
        )
        frames = list(scan_frames(memoryview(blob), 0, 1))
        assert [f.op_id for f in frames] == list(range(1, len(docs) + 1))
        assert [decode_entry(bytes(f.payload)).full_document for f in frames] == [c.full_document for c in changes]


def _pristine() -> tuple[Path, list[rxcs.OplogEntry]]:
    directory = Path(tempfile.mkdtemp(prefix="rxcs-frames-"))
    with rxcs.open_oplog(directory / "oplog", durability="none") as oplog:
        oplog.append_many([rxcs.Change.insert("db", "c", {"_id": i, "v": "x" * (i % 13)}) for i in range(40)])
        entries = oplog.read(0, 100)
    return directory, entries


PRISTINE, ORIGINAL = _pristine()
SEGMENT = next((PRISTINE / "oplog").glob("*.seg")).name
SIZE = (PRISTINE / "oplog" / SEGMENT).stat().st_size

damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(HEADER.size, SIZE - 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(HEADER.size, SIZE), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(HEADER.size, SIZE - 1), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(HEADER.size, SIZE - 1), st.just(0)),
    st.tuples(st.just("append"), st.just(SIZE), st.binary(min_size=1, max_size=40)),
)


@settings(max_examples=150, deadline=None)
@given(damage, st.booleans())
def test_damage_is_detected_or_recovered(change: tuple[str, int, Any], as_writer: bool) -> None:
    """Whatever the damage, reading gives a prefix of the true entries or raises OplogCorruptedError."""
    kind, position, argument = change
    work = Path(tempfile.mkdtemp(prefix="rxcs-damage-"))
    try:
        shutil.copytree(PRISTINE / "oplog", work / "oplog")
        segment = work / "oplog" / SEGMENT
        data = bytearray(segment.read_bytes())
        if kind == "flip":
            data[position] ^= argument
        elif kind == "insert":
            data[position:position] = argument
        elif kind == "delete":
            del data[position : position + argument]
        elif kind == "truncate":
            del data[position:]
        else:
            data += argument
        segment.write_bytes(bytes(data))
        try:
            with rxcs.open_oplog(work / "oplog", readonly=not as_writer) as oplog:
                if as_writer:
                    oplog.insert("db", "c", {"_id": "after"})
                entries = oplog.read(0, 1000)
        except rxcs.OplogCorruptedError:
            return
        got = [e for e in entries if e.full_document != {"_id": "after"}]
        assert got == ORIGINAL[: len(got)], "a damaged frame was read as a wrong entry"
    finally:
        shutil.rmtree(work)


class TestResync:
    def test_a_good_frame_after_damage_is_found_in_both_record_forms(self) -> None:
        """The resync search finds a valid frame after damage whether its record is a fixarray or an array 16."""
        import uuid

        from rxcs.events import ClusterTime
        from rxcs.oplog.segments import valid_frame_after

        change = rxcs.Change.insert("shop", "users", {"_id": 1})
        for identity in (None, uuid.UUID(int=7)):
            good = encode_frame(5, encode_entry(5, ClusterTime(1, 5), 1, change, identity))
            data = b"\x00" * 40 + good
            assert valid_frame_after(data, 0, 5) == 40
