"""FileOplog: crashes, torn tails, damage, locking, other processes, and seeking at scale."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxcs
from rxcs.oplog.base import Sift
from rxcs.oplog.file import FileOplog

QUIET = "import structlog, sys; structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n"
WRITER = QUIET + textwrap.dedent(
    """
    import sys, rxcs
    oplog = rxcs.open_oplog(sys.argv[1], durability=sys.argv[2])
    n = oplog.last_op_id
    while True:
        batch = [rxcs.Change.insert("shop", "users", {"_id": n + i, "pad": "x" * (n % 300)}) for i in range(1 + n % 7)]
        ids = oplog.append_many(batch)
        n = ids[-1]
        print(n, flush=True)
    """
)


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def fill(path: Path, n: int, **options: object) -> None:
    with rxcs.open_oplog(path, **options) as oplog:
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "name": f"u{i}"}) for i in range(n)])


class TestCrashes:
    @pytest.mark.parametrize("durability", ["group", "none"])
    def test_sigkilled_writer_loses_no_acknowledged_entry(self, tmp_path: Path, durability: str) -> None:
        """Kill -9 a writer mid-stream, five times: every acknowledged entry is there, contiguous, and appends go on."""
        path = tmp_path / "oplog"
        rng = random.Random(7)
        acknowledged = 0
        for _ in range(5):
            process = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), durability], stdout=subprocess.PIPE, text=True
            )
            assert process.stdout is not None
            deadline = time.monotonic() + rng.uniform(0.2, 0.6)
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if line:
                    acknowledged = max(acknowledged, int(line))
            os.kill(process.pid, signal.SIGKILL)
            for line in process.stdout:  # lines already written before the kill
                acknowledged = max(acknowledged, int(line))
            process.wait()
            with rxcs.open_oplog(path) as oplog:
                last = oplog.last_op_id
                assert last >= acknowledged
                entries = oplog.read(0, last + 10)
                assert [e.op_id for e in entries] == list(range(1, last + 1))
                assert oplog.insert("shop", "users", {"_id": "after"}) == last + 1
                acknowledged = last + 1
        assert acknowledged > 5


class TestDamage:
    def test_torn_tail_is_cut_on_open(self, tmp_path: Path) -> None:
        """Garbage after the last frame is truncated when a writer opens; every entry stays."""
        path = tmp_path / "oplog"
        fill(path, 50)
        last_segment = segments(path)[-1]
        size = last_segment.stat().st_size
        with last_segment.open("ab") as handle:
            handle.write(b"\x07\x00\x00\x00garbage after the last frame")
        with rxcs.open_oplog(path) as oplog:
            assert oplog.insert("shop", "users", {"_id": "x"}) == 51
            assert [e.op_id for e in oplog.read(0, 100)] == list(range(1, 52))
        assert last_segment.stat().st_size > size

    def test_truncated_last_frame_is_cut(self, tmp_path: Path) -> None:
        """A last frame cut short (a crash mid-write) is dropped; the entries before it remain."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            for i in range(20):
                oplog.insert("shop", "users", {"_id": i})
        last_segment = segments(path)[-1]
        with last_segment.open("r+b") as handle:
            handle.truncate(last_segment.stat().st_size - 5)
        with rxcs.open_oplog(path) as oplog:
            assert oplog.last_op_id == 19
            assert oplog.insert("shop", "users", {"_id": "x"}) == 20

    def test_readers_wait_at_a_torn_tail_and_never_cut_it(self, tmp_path: Path) -> None:
        """A reader sees an incomplete last frame as not yet written and leaves the file alone."""
        path = tmp_path / "oplog"
        fill(path, 10)
        last_segment = segments(path)[-1]
        with last_segment.open("ab") as handle:
            handle.write(b"\x40\x00\x00\x00\x00\x00")
        size = last_segment.stat().st_size
        with rxcs.open_oplog(path, readonly=True) as reader:
            assert reader.last_op_id == 10
            assert [e.op_id for e in reader.read(8, 10)] == [9, 10]
        assert last_segment.stat().st_size == size

    @pytest.mark.parametrize("where", ["read", "verify", "open"])
    def test_flipped_byte_in_the_middle_is_reported(self, tmp_path: Path, where: str) -> None:
        """A flipped byte inside the log raises OplogCorruptedError naming the segment file and offset."""
        path = tmp_path / "oplog"
        fill(path, 200)
        segment = segments(path)[-1]
        data = bytearray(segment.read_bytes())
        position = len(data) // 2
        data[position] ^= 0x55
        segment.write_bytes(bytes(data))
        def damaged_read() -> None:
            if where == "open":  # the writer's recovery finds good frames after the bad one
                with rxcs.open_oplog(path) as oplog:
                    oplog.insert("shop", "users", {"_id": "x"})
                return
            with rxcs.open_oplog(path, readonly=True) as oplog:
                assert isinstance(oplog, FileOplog)
                oplog.read(0, 1000) if where == "read" else oplog.verify()

        with pytest.raises(rxcs.OplogCorruptedError) as caught:
            damaged_read()
        assert segment.name in str(caught.value)
        assert caught.value.path == str(segment)
        assert 0 < caught.value.offset < len(data)


class TestProcesses:
    def test_second_writer_process_is_refused(self, tmp_path: Path) -> None:
        """While one process writes, another's first write raises OplogLockedError naming its pid."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
            script = QUIET + (
                "import rxcs, sys\n"
                "try:\n"
                "    rxcs.open_oplog(sys.argv[1]).insert('shop', 'users', {'_id': 2})\n"
                "except rxcs.OplogLockedError as exc:\n"
                "    print(exc.pid)\n"
            )
            result = subprocess.run(
                [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60, check=True
            )
            assert result.stdout.strip() == str(os.getpid())
        # Once the writer closes, another may write.
        with rxcs.open_oplog(path) as oplog:
            assert oplog.insert("shop", "users", {"_id": 3}) == 2

    def test_same_process_second_writer_is_refused(self, tmp_path: Path) -> None:
        """A second FileOplog in the same process cannot write while the first holds the lock."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as first, rxcs.open_oplog(path) as second:
            first.insert("shop", "users", {"_id": 1})
            with pytest.raises(rxcs.OplogLockedError):
                second.insert("shop", "users", {"_id": 2})

    def test_reader_in_another_process_sees_new_entries(self, tmp_path: Path) -> None:
        """A reader process waiting on the oplog is woken by appends from this process."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            oplog.insert("shop", "users", {"_id": 0})
            script = QUIET + (
                "import rxcs, sys\n"
                "with rxcs.open_oplog(sys.argv[1], readonly=True) as o:\n"
                "    print('ready', flush=True)\n"
                "    with rxcs.watch(o, 'shop', 'users').iterate() as s:\n"
                "        print('watching', flush=True)\n"
                "        for _ in range(3):\n"
                "            print(s.next(timeout=30).document_key['_id'], flush=True)\n"
            )
            reader = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
            assert reader.stdout.readline().strip() == "watching"
            for i in range(1, 4):
                oplog.insert("shop", "users", {"_id": i})
            out, _ = reader.communicate(timeout=60)
        assert out.split() == ["1", "2", "3"]

    def test_readonly_refuses_writes(self, tmp_path: Path) -> None:
        """readonly=True opens for reading only; a write says so."""
        path = tmp_path / "oplog"
        fill(path, 1)
        with rxcs.open_oplog(path, readonly=True) as oplog, pytest.raises(rxcs.RxcsError, match="readonly"):
            oplog.insert("shop", "users", {"_id": 2})

    def test_a_readers_wait_returns_on_wake_waiters(self, tmp_path: Path) -> None:
        """A reader blocked waiting for appends returns once woken, though nothing was appended.

        A stopping stream wakes its tailer this way; a reader that went back
        to sleep would hold the stream's close() for the whole wait.
        """
        path = tmp_path / "oplog"
        fill(path, 1)
        with rxcs.open_oplog(path, readonly=True) as reader:
            returned = threading.Event()
            waiter = threading.Thread(target=lambda: (reader.wait(1, timeout=60), returned.set()))
            waiter.start()
            assert not returned.wait(0.1)
            reader.wake_waiters()
            assert returned.wait(10), "the reader slept on through wake_waiters() (its wait is 60 s)"
            waiter.join()

    def test_readonly_on_a_missing_oplog_is_an_error(self, tmp_path: Path) -> None:
        """Opening a directory that holds no oplog readonly fails clearly instead of creating one."""
        with pytest.raises(rxcs.RxcsError, match="no oplog here"):
            rxcs.open_oplog(tmp_path / "nothing", readonly=True)
        assert not (tmp_path / "nothing").exists()

    def test_a_foreign_directory_is_refused(self, tmp_path: Path) -> None:
        """A non-empty directory without oplog metadata is not taken over."""
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
        with pytest.raises(rxcs.RxcsError, match="not an rxcs oplog"):
            rxcs.open_oplog(tmp_path / "photos")


class TestIdentityAndRetention:
    def test_reopen_keeps_identity_op_ids_and_cluster_time(self, tmp_path: Path) -> None:
        """Reopening keeps the UUID, continues op_ids, and never moves cluster time back."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            identity = oplog.oplog_id
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(10)])
            last_time = oplog.read(9, 1)[0].cluster_time
        with rxcs.open_oplog(path) as oplog:
            assert oplog.oplog_id == identity
            assert oplog.insert("shop", "users", {"_id": "x"}) == 11
            assert oplog.read(10, 1)[0].cluster_time > last_time

    def test_retention_by_entries_drops_whole_segments(self, tmp_path: Path) -> None:
        """retain_entries drops old segments (its keeper thread, soon after the appends), keeping at least that many."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096, retain_entries=100) as oplog:
            for start in range(0, 1000, 20):
                oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, start + 20)])
            assert oplog.last_op_id == 1000
            deadline = time.monotonic() + 10
            while oplog.first_op_id <= 1000 - 100 - 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert 1000 - 100 - 100 < oplog.first_op_id <= 1000 - 100 + 1
            assert len(segments(path)) < 10

    def test_trim_keeps_the_active_segment(self, tmp_path: Path) -> None:
        """trim() never deletes the segment being written."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
            for start in range(0, 300, 30):
                oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, start + 30)])
            oplog.trim(before_op_id=10_000)
            assert len(segments(path)) == 1
            assert oplog.first_op_id <= 300


@pytest.mark.slow
def test_seek_in_a_million_entries_reads_a_few_frames(tmp_path: Path) -> None:
    """Seeking to the last op_id of a 1,000,000-entry oplog decodes one frame and reads little."""
    path = tmp_path / "oplog"
    with rxcs.open_oplog(path, durability="none") as oplog:
        for start in range(0, 1_000_000, 10_000):
            oplog.append_many([rxcs.Change.insert("s", "u", {"_id": i}) for i in range(start, start + 10_000)])
    with rxcs.open_oplog(path, readonly=True) as reader:
        assert isinstance(reader, FileOplog)
        before = reader.statistics()
        with reader.cursor(after=999_999) as cursor:
            (last,) = cursor.read(10)
        after = reader.statistics()
    assert last.op_id == 1_000_000
    assert after.frames_decoded - before.frames_decoded == 1
    assert after.bytes_read - before.bytes_read < 512 * 1024


class TestReaderIndex:
    def test_a_reader_seeks_exactly_while_the_writer_indexes_more(self, tmp_path: Path) -> None:
        """A reader's cursor lands right after any op_id while the segment it seeks in keeps growing."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as writer, rxcs.open_oplog(path, readonly=True) as reader:
            rng = random.Random(5)
            for round_ in range(20):
                padded = [{"_id": f"{round_}-{i}", "pad": "x" * 200} for i in range(300)]
                writer.append_many([rxcs.Change.insert("shop", "users", document) for document in padded])
                for after in rng.sample(range(writer.last_op_id), 5):
                    (entry,) = reader.read(after, 1)
                    assert entry.op_id == after + 1

    def test_the_index_is_read_incrementally_and_again_when_replaced(self, tmp_path: Path) -> None:
        """refreshed() reads only appended records; a replaced (rewritten) index file is read whole."""
        from rxcs.oplog.segments import INDEX_RECORD, SegmentIndex

        path = tmp_path / "seg.idx"
        path.write_bytes(b"".join(INDEX_RECORD.pack(op_id, op_id * 100) for op_id in (1, 5, 9)))
        index = SegmentIndex.load(path)
        with path.open("ab") as file:
            file.write(INDEX_RECORD.pack(13, 1300) + INDEX_RECORD.pack(17, 1700)[:7])  # a record half written
        index = index.refreshed()
        assert index.op_ids == [1, 5, 9, 13]
        assert index.start_for(16) == (13, 1300)
        replacement = tmp_path / "seg.idx.tmp"
        replacement.write_bytes(INDEX_RECORD.pack(1, 100) + INDEX_RECORD.pack(5, 500))
        os.replace(replacement, path)
        assert index.refreshed().op_ids == [1, 5]


# -- the faults of the reliability issue (#16), one class per kind -------------------------------------


def fill_padded(path: Path, n: int, *, pad: int = 500, commit: int = 50, **options: object) -> None:
    """n entries of about ``pad`` bytes, ``commit`` to an append_many: a segment of them holds an index record
    every ~30 entries."""
    with rxcs.open_oplog(path, **options) as oplog:
        for start in range(0, n, commit):
            batch = range(start, min(n, start + commit))
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "x" * pad}) for i in batch])


def frame_spans(segment: Path) -> list[tuple[int, int]]:
    """(start, end) of every whole frame of a segment, in order."""
    from rxcs.oplog.segments import HEADER, scan_frames

    data = segment.read_bytes()
    first = int(segment.name[:20])
    return [(frame.offset, frame.end) for frame in scan_frames(memoryview(data)[HEADER.size :], HEADER.size, first)]


def index_records(segment: Path) -> list[tuple[int, int]]:
    from rxcs.oplog.segments import INDEX_RECORD

    return list(INDEX_RECORD.iter_unpack(segment.with_suffix(".idx").read_bytes()))


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def read_all(path: Path) -> list[int]:
    with rxcs.open_oplog(path, readonly=True) as oplog:
        return [entry.op_id for entry in oplog.read(0, 1_000_000)]


def verify(path: Path) -> int:
    with rxcs.open_oplog(path, readonly=True) as oplog:
        assert isinstance(oplog, FileOplog)
        return oplog.verify()


class TestTornTailRecovery:
    @pytest.mark.parametrize("filler", ["garbage", "zeros"])
    def test_a_tear_with_bytes_after_it_is_cut_at_the_tear(self, tmp_path: Path, filler: str) -> None:
        """A segment cut mid-frame, then filled past its last index record, recovers to the commits before the cut.

        The index still holds records past the cut; none of them is believed,
        so no torn op_id is kept and the next append follows the last whole commit.
        """
        path = tmp_path / "oplog"
        fill_padded(path, 300)
        segment = segments(path)[-1]
        records = index_records(segment)
        spans = frame_spans(segment)
        cut = records[-2][1] + 700  # inside a frame, two index records before the end
        whole = sum(1 for _, end in spans if end <= cut)
        assert whole % 50
        whole -= whole % 50  # the whole frames of the commit cut short go with it
        data = segment.read_bytes()
        rest = random.Random(3).randbytes(len(data) - cut) if filler == "garbage" else bytes(len(data) - cut)
        segment.write_bytes(data[:cut] + rest)
        with rxcs.open_oplog(path) as oplog:
            assert oplog.last_op_id == whole
            assert oplog.insert("shop", "users", {"_id": "after"}) == whole + 1
        assert read_all(path) == list(range(1, whole + 2))
        assert verify(path) == whole + 1


class TestIndexHints:
    def test_a_garbage_record_at_the_end_of_an_index_is_not_believed(self, tmp_path: Path) -> None:
        """A torn index write leaving a whole garbage record never becomes last_op_id, for readers or the writer."""
        from rxcs.oplog.segments import INDEX_RECORD

        path = tmp_path / "oplog"
        fill_padded(path, 100)
        segment = segments(path)[-1]
        with segment.with_suffix(".idx").open("ab") as index:
            index.write(INDEX_RECORD.pack(7093839458608414719, segment.stat().st_size - 100))
        with rxcs.open_oplog(path, readonly=True) as reader:
            assert reader.last_op_id == 100
        with rxcs.open_oplog(path) as writer:
            assert writer.last_op_id == 100
            assert writer.insert("shop", "users", {"_id": "after"}) == 101
        with rxcs.open_oplog(path, readonly=True) as reader:
            assert reader.last_op_id == 101
        assert read_all(path) == list(range(1, 102))

    def test_a_zeroed_newest_index_neither_stops_the_writer_nor_misleads_readers(self, tmp_path: Path) -> None:
        """An index of zeros (a lost write) for the segment being written: the writer opens, readers count right."""
        path = tmp_path / "oplog"
        fill_padded(path, 100)
        index = segments(path)[-1].with_suffix(".idx")
        index.write_bytes(bytes(index.stat().st_size))
        with rxcs.open_oplog(path, readonly=True) as reader:
            assert reader.last_op_id == 100
            assert [e.op_id for e in reader.read(90, 5)] == [91, 92, 93, 94, 95]
        with rxcs.open_oplog(path) as writer:
            assert writer.insert("shop", "users", {"_id": "after"}) == 101
        assert read_all(path) == list(range(1, 102))

    def test_a_zeroed_older_index_still_seeks_exactly(self, tmp_path: Path) -> None:
        """Readers seek to every op_id of a segment whose index is zeros, landing on the right entry."""
        path = tmp_path / "oplog"
        fill_padded(path, 400, segment_bytes=64 * 1024)
        first = segments(path)[0]
        assert len(segments(path)) > 2
        index = first.with_suffix(".idx")
        index.write_bytes(bytes(index.stat().st_size))
        in_first = len(frame_spans(first))
        with rxcs.open_oplog(path, readonly=True) as reader:
            for after in range(in_first + 1):
                (entry,) = reader.read(after, 1)
                assert entry.op_id == after + 1
        assert read_all(path) == list(range(1, 401))

    @pytest.mark.parametrize("damage", ["garbage record", "zeros", "wrong offset"])
    def test_verify_names_a_bad_index_record(self, tmp_path: Path, damage: str) -> None:
        """verify checks every index record against its segment and names the index file and the record's offset."""
        from rxcs.oplog.segments import INDEX_RECORD

        path = tmp_path / "oplog"
        fill_padded(path, 400, segment_bytes=64 * 1024)
        segment = segments(path)[0]
        index = segment.with_suffix(".idx")
        records = index_records(segment)
        assert len(records) >= 3
        raw = bytearray(index.read_bytes())
        if damage == "garbage record":
            raw += INDEX_RECORD.pack(7093839458608414719, 40)
            bad_at = len(records) * INDEX_RECORD.size
        elif damage == "zeros":
            raw[16:32] = bytes(16)
            bad_at = 16
        else:
            op_id, offset = records[2]
            raw[32:48] = INDEX_RECORD.pack(op_id, offset + 3)
            bad_at = 32
        index.write_bytes(bytes(raw))
        with pytest.raises(rxcs.OplogCorruptedError) as caught:
            verify(path)
        assert caught.value.path == str(index)
        assert caught.value.offset == bad_at
        assert read_all(path) == list(range(1, 401))


class TestFlippedFrames:
    def test_a_flipped_length_bit_in_the_newest_segment_is_reported_everywhere(self, tmp_path: Path) -> None:
        """A frame whose length grew past the segment's end is damage: readers, verify and the writer all say where."""
        path = tmp_path / "oplog"
        fill_padded(path, 300)
        segment = segments(path)[-1]
        start, _ = frame_spans(segment)[100]  # well before the last index record
        flip(segment, start + 3, 0x01)  # length += 16 MiB
        for check in (read_all, verify):
            with pytest.raises(rxcs.OplogCorruptedError) as caught:
                check(path)
            assert (caught.value.path, caught.value.offset) == (str(segment), start)
        with pytest.raises(rxcs.OplogCorruptedError) as caught, rxcs.open_oplog(path) as writer:
            writer.insert("shop", "users", {"_id": "after"})
        assert (caught.value.path, caught.value.offset) == (str(segment), start)

    @pytest.mark.parametrize(("field", "at", "mask"), [
        ("length", 0, 0x04), ("length", 3, 0x80), ("crc", 5, 0x01), ("op_id", 8, 0x01), ("payload", 40, 0x20),
    ])
    def test_a_flipped_bit_in_the_last_frame_is_reported_not_cut(
        self, tmp_path: Path, field: str, at: int, mask: int
    ) -> None:
        """The last, acknowledged frame damaged in any field is reported, never cut off as a torn tail."""
        path = tmp_path / "oplog"
        fill_padded(path, 60)
        segment = segments(path)[-1]
        start, _ = frame_spans(segment)[-1]
        flip(segment, start + at, mask)
        damaged = segment.read_bytes()
        with pytest.raises(rxcs.OplogCorruptedError) as caught:
            read_all(path)
        assert (caught.value.path, caught.value.offset) == (str(segment), start), field
        with pytest.raises(rxcs.OplogCorruptedError), rxcs.open_oplog(path) as writer:
            writer.insert("shop", "users", {"_id": "after"})
        assert segment.read_bytes() == damaged  # nothing was cut

    def test_a_flipped_payload_byte_in_a_large_frame_is_reported(self, tmp_path: Path) -> None:
        """A bad frame over 1 MiB in the newest segment, with frames after it, stops readers with an error."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            large = [rxcs.Change.insert("shop", "users", {"_id": i, "pad": "y" * 1_300_000}) for i in range(3)]
            oplog.append_many(large)
            oplog.insert("shop", "users", {"_id": "small"})
        segment = segments(path)[-1]
        start, end = frame_spans(segment)[0]
        flip(segment, (start + end) // 2)
        with pytest.raises(rxcs.OplogCorruptedError) as caught:
            read_all(path)
        assert (caught.value.path, caught.value.offset) == (str(segment), start)

    def test_a_reader_follows_frames_larger_than_its_read_block(self, tmp_path: Path) -> None:
        """A reader process's last_op_id moves past an entry larger than the 256 KiB it reads at a time."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as writer, rxcs.open_oplog(path, readonly=True) as reader:
            writer.insert("shop", "users", {"_id": 0})
            assert reader.last_op_id == 1
            writer.insert("shop", "users", {"_id": 1, "pad": "z" * 400_000})
            writer.insert("shop", "users", {"_id": 2})
            assert reader.last_op_id == 3


class TestShortSegments:
    @pytest.mark.parametrize("size", [0, 10])
    def test_an_empty_or_short_first_segment_is_recovered(self, tmp_path: Path, size: int) -> None:
        """A crash between creating the first segment and writing its header leaves an oplog a writer reopens."""
        path = tmp_path / "oplog"
        rxcs.open_oplog(path).close()
        (path / "00000000000000000001.seg").write_bytes(b"RXCSSEG1\x00\x00"[:size])
        assert read_all(path) == []
        with rxcs.open_oplog(path) as oplog:
            assert oplog.insert("shop", "users", {"_id": 1}) == 1
        assert read_all(path) == [1]
        assert verify(path) == 1

    def test_verify_takes_a_short_newest_segment_for_one_being_started(self, tmp_path: Path) -> None:
        """A newest segment without its whole header is one a writer is starting: verify does not call it damage."""
        path = tmp_path / "oplog"
        fill_padded(path, 20)
        (path / "00000000000000000021.seg").write_bytes(b"RXCS")
        assert verify(path) == 20


class TestTrimmingUnderReaders:
    def test_a_reader_whose_next_segment_was_trimmed_gets_history_lost(self, tmp_path: Path) -> None:
        """A cursor at the end of a segment that is trimmed away with the next one raises ChangeStreamHistoryLost."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as writer:
            for start in range(0, 200, 10):
                writer.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, start + 10)])
            firsts = [int(p.name[:20]) for p in segments(path)]
            assert len(firsts) >= 4
            with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(0) as cursor:
                assert [e.op_id for e in cursor.read(firsts[1] - 1)] == list(range(1, firsts[1]))
                writer.trim(before_op_id=firsts[3])
                with pytest.raises(rxcs.ChangeStreamHistoryLost):
                    cursor.read(100)

    def test_cursors_under_hard_trimming_see_entries_or_history_lost(self, tmp_path: Path) -> None:
        """Reader threads seeking anywhere and reading to the end while a writer process trims hard get
        entries or ChangeStreamHistoryLost, never OplogCorruptedError or a raw FileNotFoundError."""
        path = tmp_path / "oplog"
        fill(path, 10)
        script = QUIET + textwrap.dedent(
            """
            import sys, time, rxcs
            with rxcs.open_oplog(sys.argv[1], segment_bytes=4096, retain_entries=40, durability="none") as oplog:
                deadline = time.monotonic() + float(sys.argv[2])
                n = 0
                while time.monotonic() < deadline:
                    oplog.append_many([rxcs.Change.insert("s", "u", {"_id": n + i}) for i in range(5)])
                    n += 5
            """
        )
        writer = subprocess.Popen([sys.executable, "-c", script, str(path), "2.5"])
        failures: list[str] = []
        reads = [0, 0]  # entries read, history lost

        def read_hard(reader: rxcs.Oplog, seed: int) -> None:
            rng = random.Random(seed)
            while writer.poll() is None:
                try:
                    if rng.random() < 0.1:
                        assert isinstance(reader, FileOplog)
                        reader.info()
                    after = max(0, reader.last_op_id - rng.randrange(0, 120))
                    with reader.cursor(after) as cursor:
                        while batch := cursor.read(7):
                            assert [e.op_id for e in batch] == list(range(after + 1, after + 1 + len(batch)))
                            after += len(batch)
                    reads[0] += 1
                except rxcs.ChangeStreamHistoryLost:
                    reads[1] += 1
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

        with rxcs.open_oplog(path, readonly=True) as reader:
            threads = [threading.Thread(target=read_hard, args=(reader, seed)) for seed in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert writer.wait() == 0
        assert reads[0] > 50
        assert failures == []

    def test_a_missing_middle_segment_is_a_reported_gap(self, tmp_path: Path) -> None:
        """A segment deleted by hand from the middle is damage: readers and verify name the segment before the gap."""
        path = tmp_path / "oplog"
        fill(path, 0)
        with rxcs.open_oplog(path, segment_bytes=4096) as writer:
            for start in range(0, 200, 10):
                writer.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, start + 10)])
        before, gone = segments(path)[:2]
        gone.unlink()
        for check in (read_all, verify):
            with pytest.raises(rxcs.OplogCorruptedError) as caught:
                check(path)
            assert caught.value.path == str(before)


class TestDamageAfterGoodEntries:
    def test_a_cursor_returns_the_entries_before_damage_then_raises(self, tmp_path: Path) -> None:
        """A read that meets a bad frame returns the good entries before its commit; the next read raises, naming it."""
        path = tmp_path / "oplog"
        fill_padded(path, 40, pad=100, commit=10)
        segment = segments(path)[-1]
        spans = frame_spans(segment)
        flip(segment, spans[33][0] + 20)  # inside op_id 34's payload, in the commit of 31..40: good frames follow
        with rxcs.open_oplog(path, readonly=True) as oplog, oplog.cursor(0) as cursor:
            assert [entry.op_id for entry in cursor.read(100)] == list(range(1, 31))
            with pytest.raises(rxcs.OplogCorruptedError) as caught:
                cursor.read(100)
            assert caught.value.path == str(segment)
            assert caught.value.offset == spans[33][0]
            with pytest.raises(rxcs.OplogCorruptedError):
                oplog.read(0, 100)  # a one-shot read never passes a short batch off as the end

    def test_a_stream_delivers_the_events_before_damage_then_fails(self, tmp_path: Path) -> None:
        """iterate() hands over every event before the damaged entry, then raises OplogCorruptedError."""
        path = tmp_path / "oplog"
        fill_padded(path, 80, pad=100, commit=10, segment_bytes=4096)
        first = segments(path)[0]
        assert len(segments(path)) > 1
        flip(first, frame_spans(first)[12][0] + 20)  # op_id 13, in the commit of 11..20, in a finished segment
        with rxcs.open_oplog(path, readonly=True) as oplog:
            with rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
                assert [stream.next(timeout=10).op_id for _ in range(10)] == list(range(1, 11))
                with pytest.raises(rxcs.OplogCorruptedError):
                    stream.next(timeout=10)


# -- a commit is all or nothing: append_many's frames are read, kept and cut together ---------------------

CONTINUES = 1 << 63  # in a frame header's op_id field: more frames of the same commit follow this one


def commit_oplog(path: Path) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """op_id 1 appended alone, then op_ids 2..7 in one append_many: the segment, its bytes and its frames' spans."""
    with rxcs.open_oplog(path, durability="none") as oplog:
        oplog.insert("shop", "users", {"_id": 0})
        oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "c" * 300}) for i in range(1, 7)])
    segment = segments(path)[-1]
    return segment, segment.read_bytes(), frame_spans(segment)


def cuts_inside(spans: list[tuple[int, int]]) -> list[int]:
    """Where the write of the commit of op_ids 2..7 can stop short: at each of its frame boundaries, inside
    every field of each of its frames, and one byte before its end."""
    points = set()
    for start, end in spans[1:]:
        points.update((start, start + 1, start + 5, start + 8, start + 15, start + 16, (start + end) // 2, end - 1))
    return sorted(points)


def leading_match_sift_of(pad: str) -> Sift:
    from rxcs.prefilter import leading_match_sift

    sift = leading_match_sift([{"$match": {"fullDocument.pad": pad}}])
    assert sift is not None
    return sift


def rewrite_frame(data: bytearray, start: int, field: int) -> None:
    """Give the frame at ``start`` the op_id field ``field``, with the checksum it then needs."""
    length = int.from_bytes(data[start : start + 4], "little")
    data[start + 8 : start + 16] = field.to_bytes(8, "little")
    data[start + 4 : start + 8] = zlib.crc32(bytes(data[start + 8 : start + 16 + length])).to_bytes(4, "little")


def meta_version(path: Path) -> object:
    return json.loads((path / "oplog.meta").read_bytes())["version"]


class TestAtomicCommits:
    def test_every_frame_of_a_commit_but_its_last_says_that_more_follow(self, tmp_path: Path) -> None:
        """The op_id field of each frame of a multi-entry commit but the last has its top bit set; a one-entry
        commit's frame, and a commit's last frame, have it clear (as every frame of an earlier oplog has)."""
        _, data, spans = commit_oplog(tmp_path / "oplog")
        fields = [int.from_bytes(data[start + 8 : start + 16], "little") for start, _ in spans]
        assert fields == [1, *(op_id | CONTINUES for op_id in range(2, 7)), 7]

    def test_a_commit_cut_short_anywhere_is_read_as_if_never_written(self, tmp_path: Path) -> None:
        """The segment ends anywhere inside a commit (a killed write, a power loss): readers, seeks, last_op_id,
        info() and verify see the entries before it and none of it; a writer cuts it and appends after them."""
        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        for cut in cuts_inside(spans):
            segment.write_bytes(data[:cut])
            with rxcs.open_oplog(path, readonly=True) as reader:
                assert isinstance(reader, FileOplog)
                assert reader.last_op_id == 1, cut
                assert reader.info().last_op_id == 1, cut
                assert [e.op_id for e in reader.read(0, 100)] == [1], cut
                for after in range(1, 7):
                    assert reader.read(after, 10) == [], (cut, after)
                assert reader.verify() == 1, cut
            with rxcs.open_oplog(path) as writer:
                assert writer.last_op_id == 1, cut
                assert writer.insert("shop", "users", {"_id": "after"}) == 2, cut
            with rxcs.open_oplog(path, readonly=True) as reader:
                assert [e.full_document for e in reader.read(0, 100)] == [{"_id": 0}, {"_id": "after"}], cut

    def test_a_commit_cut_short_across_index_records_counts_for_nothing(self, tmp_path: Path) -> None:
        """A commit of 120 entries (index records point inside it) cut short: a reader that starts following
        the segment from its index, or seeks through it, finds only the commit before it; so does the writer."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, durability="none") as oplog:
            oplog.insert("shop", "users", {"_id": 0})
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "i" * 500}) for i in range(120)])
        segment = segments(path)[-1]
        data, spans, records = segment.read_bytes(), frame_spans(segment), index_records(segment)
        assert len([op_id for op_id, _ in records if op_id > 2]) >= 3
        for cut in (spans[-1][0] + 7, spans[80][0], spans[40][1] + 100):
            segment.write_bytes(data[:cut])
            with rxcs.open_oplog(path, readonly=True) as reader:
                assert reader.last_op_id == 1, cut
                assert [e.op_id for e in reader.read(0, 200)] == [1], cut
                assert [reader.read(after, 5) for after in (2, 33, 70)] == [[], [], []], cut
        with rxcs.open_oplog(path) as writer:
            assert writer.insert("shop", "users", {"_id": "after"}) == 2
        assert read_all(path) == [1, 2]

    def test_a_reader_delivers_a_commit_being_written_only_once_its_last_frame_is_there(self, tmp_path: Path) -> None:
        """While a writer's write() of a commit is under way a reader in another process may see any prefix of
        it: cursors (one seeking into the commit), wait() and last_op_id see nothing of it until it is whole."""
        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        segment.write_bytes(data[: spans[1][0]])
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor, reader.cursor(4) as inside:
            for cut in cuts_inside(spans):
                with segment.open("r+b") as handle:  # the write going on, as another process would see it
                    handle.seek(0, os.SEEK_END)
                    handle.write(data[handle.tell() : cut])
                assert cursor.read(100) == [], cut
                assert cursor.read(3) == [], cut
                assert inside.read(100) == [], cut
                assert reader.last_op_id == 1, cut
                assert not reader.wait(1, timeout=0), cut
            with segment.open("ab") as handle:
                handle.write(data[segment.stat().st_size :])
            assert reader.wait(1, timeout=5)
            assert reader.last_op_id == 7
            assert [e.op_id for e in cursor.read(3)] == [2, 3, 4]
            assert [e.op_id for e in inside.read(100)] == [5, 6, 7]
            assert [e.op_id for e in cursor.read(100)] == [5, 6, 7]

    def test_a_read_limit_inside_a_whole_commit_hands_it_over_in_parts(self, tmp_path: Path) -> None:
        """A commit longer than a read's limit is not held back: once its last frame is seen whole, reads
        return it a limit at a time."""
        path = tmp_path / "oplog"
        commit_oplog(path)
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(0) as cursor:
            assert [[e.op_id for e in cursor.read(3)] for _ in range(4)] == [[1, 2, 3], [4, 5, 6], [7], []]

    def test_a_sifted_read_that_stops_inside_a_commit_notes_what_its_sift_lets_through(self, tmp_path: Path) -> None:
        """A read with a sift stops at its limit inside a commit, as any read does, and its look-ahead for the
        commit's last frame notes the frames the sift lets through: the next reads with that sift take them,
        and a read with another sift, or none, reads the rest the usual way. A damaged frame past the limit
        still keeps the whole commit back."""
        from rxcs.prefilter import leading_match_sift

        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        none = leading_match_sift([{"$match": {"fullDocument.pad": "nobody"}}])
        every = leading_match_sift([{"$match": {"fullDocument.pad": "c" * 300}}])
        assert none is not None
        assert every is not None
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor:
            assert cursor.read(2, none) == []
            assert cursor.position == 3  # moved on: its look-ahead found nothing the sift lets through
            assert cursor.read(2, none) == []
            assert cursor.position == 7
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor:
            assert [e.op_id for e in cursor.read(2, every)] == [2, 3]
            assert [e.op_id for e in cursor.read(2, every)] == [4, 5]
            assert [e.op_id for e in cursor.read(100, every)] == [6, 7]
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor:
            assert [e.op_id for e in cursor.read(2, every)] == [2, 3]
            assert cursor.read(2, none) == []  # another sift: the frames are walked again, not taken from the note
            assert cursor.position == 5
            assert [e.op_id for e in cursor.read(100)] == [6, 7]
        damaged = bytearray(data)
        damaged[(spans[5][0] + spans[5][1]) // 2] ^= 0x40  # in op_id 6, past the limit of the read below
        segment.write_bytes(bytes(damaged))
        for sift in (none, every):
            with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor:
                with pytest.raises(rxcs.OplogCorruptedError):
                    cursor.read(2, sift)
                assert cursor.position == 1

    def test_a_noted_frame_that_does_not_decode_is_reported_where_it_lies(self, tmp_path: Path) -> None:
        """A frame whose checksum holds but whose payload is no entry (written so by a faulty writer), met
        among the frames a sifted look-ahead noted: the entries before it are handed over, then the read
        after them reports that frame, naming the segment and its offset."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, durability="none") as oplog:
            oplog.insert("shop", "users", {"_id": 0})
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "c" * 300}) for i in range(1, 7)])
        segment = segments(path)[-1]
        data, spans = bytearray(segment.read_bytes()), frame_spans(segment)
        start, end = spans[5]  # op_id 6: a payload of the same length that is no msgpack entry
        data[start + 16 : end] = b"\xc1" * (end - start - 16)
        data[start + 4 : start + 8] = zlib.crc32(bytes(data[start + 8 : end])).to_bytes(4, "little")
        segment.write_bytes(bytes(data))
        every = leading_match_sift_of("c" * 300)
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(1) as cursor:
            assert [e.op_id for e in cursor.read(2, every)] == [2, 3]
            assert [e.op_id for e in cursor.read(100, every)] == [4, 5]
            with pytest.raises(rxcs.OplogCorruptedError) as raised:
                cursor.read(100, every)
            assert raised.value.offset == start
            assert str(segment) in str(raised.value)
            assert cursor.position == 5

    def test_a_commit_larger_than_a_read_block_is_checksummed_once_a_frame(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reads a limit at a time through commits of many blocks check each frame once: the look-ahead for a
        commit's last frame keeps what it checked for the reads that take those frames."""
        import zlib as real_zlib

        import rxcs.oplog.file as file_module

        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, durability="none") as oplog:
            for first in range(0, 6000, 3000):
                oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "p" * 200})
                                   for i in range(first, first + 3000)])
        calls = [0]

        class CountingZlib:
            @staticmethod
            def crc32(data: bytes, value: int = 0) -> int:
                calls[0] += 1
                return real_zlib.crc32(data, value)

        monkeypatch.setattr(file_module, "zlib", CountingZlib)
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(0) as cursor:
            read = [e.op_id for _ in range(60) for e in cursor.read(100)]
        assert read == list(range(1, 6001))
        assert calls[0] <= 6000 + 60

    def test_recovery_logs_the_op_ids_of_an_unfinished_commit_it_cuts(self, tmp_path: Path) -> None:
        """A writer cutting whole frames of an unfinished commit says which op_ids go, and where it cut."""
        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        segment.write_bytes(data[: spans[5][0] + 20])  # op_ids 2..5 whole, 6 begun
        with structlog.testing.capture_logs() as logs, rxcs.open_oplog(path) as writer:
            assert writer.insert("shop", "users", {"_id": "after"}) == 2
        (recovered,) = [log for log in logs if log["event"] == "oplog recovered"]
        assert recovered["at_offset"] == spans[1][0]
        assert recovered["truncated_bytes"] == spans[5][0] + 20 - spans[1][0]
        assert recovered["dropped_op_ids"] == [2, 5]

    def test_repair_says_which_op_ids_of_an_unfinished_commit_it_cuts(self, tmp_path: Path) -> None:
        """repair --dry-run names the cut of an unfinished commit and its op_ids, and changes nothing; repair cuts."""
        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        segment.write_bytes(data[: spans[5][0] + 20])
        for dry_run in (True, False):
            with FileOplog(path) as oplog:
                plan = oplog.repair(dry_run=dry_run)
            assert plan.refusal is None
            (cut,) = [step for step in plan.steps if step.action == "cut"]
            assert (cut.offset, cut.cut_bytes, cut.dropped) == (spans[1][0], spans[5][0] + 20 - spans[1][0], (2, 5))
            assert "op_ids 2..5" in cut.describe(done=not dry_run)
            assert segment.stat().st_size == (spans[5][0] + 20 if dry_run else spans[1][0])
        assert read_all(path) == [1]

    def test_a_finished_segment_ending_inside_a_commit_is_damage(self, tmp_path: Path) -> None:
        """A segment with a newer one after it is whole: one that ends inside a commit has lost its last frames.
        Readers return the entries before that commit, then raise naming the segment and where the commit starts."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, durability="none", segment_bytes=4096) as oplog:
            for i in range(5):
                oplog.insert("shop", "users", {"_id": i, "pad": "p" * 200})
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "q" * 200}) for i in range(3)])
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i, "pad": "r" * 900}) for i in range(4)])
        first, _ = segments(path)
        spans = frame_spans(first)
        assert len(spans) == 8
        first.write_bytes(first.read_bytes()[: spans[-1][0]])  # op_id 8, the commit's last frame, is gone
        with rxcs.open_oplog(path, readonly=True) as reader, reader.cursor(0) as cursor:
            assert [e.op_id for e in cursor.read(100)] == [1, 2, 3, 4, 5]
            with pytest.raises(rxcs.OplogCorruptedError) as caught:
                cursor.read(100)
        assert (caught.value.path, caught.value.offset) == (str(first), spans[5][0])
        with pytest.raises(rxcs.OplogCorruptedError) as caught:
            verify(path)
        assert (caught.value.path, caught.value.offset) == (str(first), spans[5][0])

    def test_an_oplog_of_the_earlier_format_reads_each_frame_as_a_commit(self, tmp_path: Path) -> None:
        """An oplog written before commits were marked (every op_id field's top bit clear, version 1) is read
        as it always was: every whole frame is an entry, and a cut keeps the whole frames before it."""
        path = tmp_path / "oplog"
        segment, data, spans = commit_oplog(path)
        earlier = bytearray(data)
        for op_id, (start, _) in enumerate(spans, 1):
            rewrite_frame(earlier, start, op_id)
        meta = json.loads((path / "oplog.meta").read_bytes())
        (path / "oplog.meta").write_text(json.dumps({**meta, "version": 1}))
        segment.write_bytes(bytes(earlier))
        assert read_all(path) == list(range(1, 8))
        assert verify(path) == 7
        segment.write_bytes(bytes(earlier[: spans[5][0] + 20]))
        assert read_all(path) == [1, 2, 3, 4, 5]
        with rxcs.open_oplog(path) as writer:
            assert writer.drop_database("gone") == 6  # a record without a collection UUID: the format stays
        assert read_all(path) == list(range(1, 7))
        assert meta_version(path) == 1

    def test_oplog_meta_says_version_2_once_a_commit_of_several_entries_is_written(self, tmp_path: Path) -> None:
        """An oplog stays format version 1 (what earlier rxcs read) while every commit holds one entry; the
        first commit of more rewrites oplog.meta as version 2, keeping its other keys, before its frames go in;
        the first record with a collection UUID, as version 3. A version this rxcs does not know is refused at
        open, naming oplog.meta."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:  # dropDatabase of a database never seen: no collection UUID
            oplog.drop_database("a")
            oplog.append_many([rxcs.Change.drop_database("b")])
            assert meta_version(path) == 1
            before = json.loads((path / "oplog.meta").read_bytes())
            oplog.append_many([rxcs.Change.drop_database(name) for name in ("c", "d")])
            assert json.loads((path / "oplog.meta").read_bytes()) == {**before, "version": 2}
            oplog.insert("shop", "users", {"_id": 5})
            assert json.loads((path / "oplog.meta").read_bytes()) == {**before, "version": 3}
        assert read_all(path) == [1, 2, 3, 4, 5]
        assert not [name for name in os.listdir(path) if name.startswith(".")]
        (path / "oplog.meta").write_text(json.dumps({**before, "version": 4}))
        with pytest.raises(rxcs.OplogCorruptedError, match="format version 4") as caught:
            rxcs.open_oplog(path, readonly=True)
        assert caught.value.path == str(path / "oplog.meta")


class TestSiftedReadsThroughCommits:
    """Reads with and without sifts, of any limit, through commits of any size, DDL among them."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        commits=st.lists(st.lists(st.sampled_from(["new", "paid", "shipped", "drop"]), min_size=1, max_size=80),
                         min_size=1, max_size=8),
        reads=st.lists(st.tuples(st.integers(1, 40), st.sampled_from(["paid", "none", "multi", None])),
                       min_size=1, max_size=30),
    )
    def test_sifted_reads_hand_over_what_the_sift_passes_once_in_order(
        self, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        commits: list[list[str]], reads: list[tuple[int, str | None]],
    ) -> None:
        """Whatever the sifts and limits read after read, a cursor hands over each entry at most once, in
        op_id order, equal to what an unsifted read gives; every entry whose record the read's sift passes
        is handed over, and only an entry of a read with another sift, or none, can be handed over besides.
        Small blocks make the look-ahead read on, block by block."""
        import rxcs.oplog.file as file_module
        from rxcs.oplog.codec import needle_sift
        from rxcs.prefilter import leading_match_sift

        monkeypatch.setattr(file_module, "READ_CHUNK", 2048)
        path = tmp_path_factory.mktemp("sifted") / "oplog"
        with rxcs.open_oplog(path, durability="none") as oplog:
            for number, commit in enumerate(commits):
                oplog.append_many([
                    rxcs.Change.drop_collection("shop", f"c{number}") if status == "drop"
                    else rxcs.Change.insert("shop", "users", {"_id": f"{number}-{i}", "status": status})
                    for i, status in enumerate(commit)
                ])
            last = oplog.last_op_id
        multi = leading_match_sift([{"$match": {"fullDocument.status": {"$in": ["shipped", "nobody"]},
                                                 "fullDocument._id": {"$in": ["0-0", "1-1", "2-2", "3-3"]}}}])
        assert multi is not None
        sifts: dict[str | None, Sift | None] = {
            "paid": needle_sift(b"paid"), "none": needle_sift(b"\xa6nobody"), "multi": multi, None: None,
        }
        with rxcs.open_oplog(path, readonly=True) as reader:
            everything = {entry.op_id: entry for entry in reader.read(0, 1_000_000)}
            records = dict(frame_payloads(segments(path)))
            handed: list[int] = []
            with reader.cursor(0) as cursor:
                for limit, name in itertools.islice(itertools.cycle(reads), 2 * last + 2):  # each read moves on
                    sift = sifts[name]
                    before = cursor.position
                    entries = cursor.read(limit, sift)
                    assert [entry == everything[entry.op_id] for entry in entries] == [True] * len(entries)
                    handed += [entry.op_id for entry in entries]
                    assert cursor.position >= before
                    if sift is not None:
                        passed = [op_id for op_id in range(before + 1, cursor.position + 1)
                                  if sift(records[op_id], 0, len(records[op_id]))]
                        assert [op_id for op_id in passed if op_id not in entries_ids(entries)] == []
                        assert len(entries) <= limit or entries[-1].op_id <= before + limit + 1
                    else:
                        assert [e.op_id for e in entries] == list(range(before + 1, cursor.position + 1))
                    if cursor.position == last:
                        break
            assert handed == sorted(set(handed))
            assert cursor.position == last


def entries_ids(entries: list[rxcs.OplogEntry]) -> set[int]:
    return {entry.op_id for entry in entries}


def frame_payloads(paths: list[Path]) -> list[tuple[int, bytes]]:
    """(op_id, payload) of every whole frame of the segments."""
    from rxcs.oplog.segments import HEADER, scan_frames

    found: list[tuple[int, bytes]] = []
    for segment in paths:
        data = segment.read_bytes()
        frames = scan_frames(memoryview(data)[HEADER.size :], HEADER.size, int(segment.name[:20]))
        found.extend((frame.op_id, bytes(frame.payload)) for frame in frames)
    return found
