"""The rxcs command, driven as a real console script in subprocesses (signals included)."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_server import RedisServer

import rxcs

RXCS = [sys.executable, "-m", "rxcs"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RXCS, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def oplog_dir(tmp_path: Path) -> Path:
    path = tmp_path / "oplog"
    with rxcs.open_oplog(path) as oplog:
        oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        oplog.update("shop", "users", 1, updated_fields={"name": "Ada L."})
        oplog.insert("shop", "orders", {"_id": 1, "user": 1})
    return path


class TestWatch:
    def test_from_beginning_prints_mongodb_shaped_json_lines(self, oplog_dir: Path) -> None:
        """--from-beginning --count N prints N events, one JSON document per line, dates as $date."""
        result = run("watch", str(oplog_dir), "--from-beginning", "--count", "3")
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["operationType"] for line in lines] == ["insert", "update", "insert"]
        assert set(lines[0]["_id"]) == {"_data"}
        assert "$date" in lines[0]["wallTime"]
        assert "$timestamp" in lines[0]["clusterTime"]
        assert lines[1]["updateDescription"]["updatedFields"] == {"name": "Ada L."}
        assert "resume token: " in result.stderr

    def test_match_and_scope(self, oplog_dir: Path) -> None:
        """--db/--collection and --match narrow the stream."""
        result = run(
            "watch", str(oplog_dir), "--db", "shop", "--collection", "users", "--from-beginning",
            "--match", '{"operationType": "update"}', "--count", "1",
        )
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert json.loads(line)["ns"] == {"db": "shop", "coll": "users"}

    def test_expanded_events_carry_the_collection_uuid_across_runs(self, oplog_dir: Path) -> None:
        """--show-expanded-events prints collectionUUID as a $binary UUID, the same in every run and the one
        the oplog's catalog holds; without the flag there is none."""
        args = ["watch", str(oplog_dir), "--db", "shop", "--from-beginning", "--count", "3"]
        runs = [run(*args, "--show-expanded-events") for _ in range(2)]
        assert all(result.returncode == 0 for result in runs), runs[0].stderr
        first, second = ([json.loads(line) for line in result.stdout.splitlines()] for result in runs)
        assert first == second
        identities = [line["collectionUUID"] for line in first]
        assert all(identity["$binary"]["subType"] == "04" for identity in identities)
        assert identities[0] == identities[1] != identities[2]  # users, users, orders
        with rxcs.open_oplog(oplog_dir, readonly=True) as oplog:
            users = oplog.collections()[rxcs.Namespace("shop", "users")].uuid
        assert base64.b64decode(identities[0]["$binary"]["base64"]) == users.bytes
        plain = run(*args)
        assert not any("collectionUUID" in json.loads(line) for line in plain.stdout.splitlines())

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--match", "{not json"], "--match: not valid JSON"),
            (["--match", '{"a": {"$bogus": 1}}'], "$bogus"),
            (["--resume-after", "deadbeef"], "resume token"),
            (["--collection", "users"], "collection 'users' needs its database"),
            (["--format", "xml"], "invalid choice"),
        ],
    )
    def test_bad_input_exits_2_with_one_line(self, oplog_dir: Path, args: list[str], message: str) -> None:
        """Bad arguments, JSON, filters or tokens: exit status 2, one line on stderr, no traceback."""
        result = run("watch", str(oplog_dir), *args)
        assert result.returncode == 2
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr

    def test_missing_oplog_is_a_usage_error(self, tmp_path: Path) -> None:
        """Watching a directory that holds no oplog says so and exits 2."""
        result = run("watch", str(tmp_path / "nowhere"))
        assert result.returncode == 2
        assert "no oplog directory" in result.stderr

    def test_ctrl_c_exits_0_and_prints_the_token(self, oplog_dir: Path) -> None:
        """SIGINT while waiting ends the command with status 0 and the last token on stderr."""
        process = subprocess.Popen(
            [*RXCS, "watch", str(oplog_dir), "--from-beginning"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0
        token = err.strip().splitlines()[-1].removeprefix("resume token: ")
        assert rxcs.ResumeToken.parse(token) == rxcs.ResumeToken.parse(json.loads(lines[-1])["_id"])

    def test_a_reader_that_goes_away_ends_it_quietly_at_the_last_token(self, oplog_dir: Path, tmp_path: Path) -> None:
        """`rxcs watch | head`: when the pipe closes, it exits 141 without a traceback, its token the last event's."""
        with rxcs.open_oplog(oplog_dir) as oplog:
            oplog.append_many([rxcs.Change.insert("shop", "orders", {"_id": i, "pad": "x" * 200}) for i in range(3000)])
        token_file = tmp_path / "token"
        process = subprocess.Popen(
            [*RXCS, "watch", str(oplog_dir), "--from-beginning", "--resume-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()  # the pipe's buffer is full long before 3,000 events: the next write fails
        _, err = process.communicate(timeout=60)
        assert process.returncode == 141
        assert "Traceback" not in err
        saved = rxcs.ResumeToken.parse(token_file.read_text().strip())
        assert err.strip().splitlines()[-1] == f"resume token: {saved}"
        assert rxcs.ResumeToken.parse(json.loads(first[-1])["_id"]).op_id <= saved.op_id < 3002
        again = run("watch", str(oplog_dir), "--resume-file", str(token_file), "--count", "1")
        assert again.returncode == 0, again.stderr
        assert rxcs.ResumeToken.parse(json.loads(again.stdout)["_id"]).op_id == saved.op_id + 1

    def test_live_events_from_another_process(self, oplog_dir: Path) -> None:
        """A watcher sees what a writer process appends after it started, line by line."""
        process = subprocess.Popen(
            [*RXCS, "watch", str(oplog_dir), "--count", "2"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # the watcher starts at the present; give it time to open the oplog
        writer = (
            "import rxcs, sys\n"
            "with rxcs.open_oplog(sys.argv[1]) as o:\n"
            "    o.insert('shop', 'users', {'_id': 'live1'})\n"
            "    o.insert('shop', 'users', {'_id': 'live2'})\n"
        )
        subprocess.run([sys.executable, "-c", writer, str(oplog_dir)], check=True, timeout=60)
        out, _ = process.communicate(timeout=60)
        assert [json.loads(line)["documentKey"]["_id"] for line in out.splitlines()] == ["live1", "live2"]

    def test_resume_file_moves_past_what_the_filter_left_out(self, oplog_dir: Path, tmp_path: Path) -> None:
        """With nothing to print, --resume-file still moves past the entries the filter left out."""
        token_file = tmp_path / "token"
        process = subprocess.Popen(
            [*RXCS, "watch", str(oplog_dir), "--from-beginning", "--match", '{"operationType": "delete"}',
             "--resume-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        saved = None
        while time.monotonic() < deadline:
            if token_file.exists():
                saved = rxcs.ResumeToken.parse(token_file.read_text().strip())
                if saved.op_id == 3:
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
        assert out == ""
        assert saved is not None
        assert (saved.op_id, saved.high_water) == (3, True)

    def test_resume_file_carries_on_where_the_last_run_stopped(self, oplog_dir: Path, tmp_path: Path) -> None:
        """--resume-file saves the token per event; the next run starts after it."""
        token_file = tmp_path / "token"
        first = run("watch", str(oplog_dir), "--from-beginning", "--resume-file", str(token_file), "--count", "2")
        assert first.returncode == 0, first.stderr
        with rxcs.open_oplog(oplog_dir) as oplog:
            oplog.insert("shop", "users", {"_id": 2})
        second = run("watch", str(oplog_dir), "--resume-file", str(token_file), "--count", "2")
        assert second.returncode == 0, second.stderr
        keys = [json.loads(line)["documentKey"]["_id"] for line in second.stdout.splitlines()]
        assert keys == [1, 2]  # the orders insert (op 3), then the new user (op 4)
        assert not [p for p in token_file.parent.iterdir() if p.name.startswith(".token.")]


def watch_into(output: Path, *args: str) -> subprocess.Popen[bytes]:
    """``rxcs watch ARGS >> OUTPUT``: the watcher writes to a file it appends to, as a shell redirection does."""
    with output.open("ab") as out:
        return subprocess.Popen([*RXCS, "watch", *args], stdout=out, stderr=subprocess.PIPE)


def op_ids_in(output: Path) -> list[int]:
    return [rxcs.ResumeToken.parse(json.loads(line)["_id"]).op_id for line in output.read_text().splitlines()]


class TestWatchExactlyOnceIntoAFile:
    def test_a_run_killed_after_writing_an_event_but_before_saving_its_token(
        self, oplog_dir: Path, tmp_path: Path
    ) -> None:
        """The next run resumes after the output file's last line, not the older saved token: nothing repeats."""
        output, token_file = tmp_path / "events.jsonl", tmp_path / "token"
        args = [str(oplog_dir), "--from-beginning", "--resume-file", str(token_file)]
        assert watch_into(output, *args, "--count", "3").wait(60) == 0
        second_line = output.read_text().splitlines()[1]
        token_file.write_text(rxcs.ResumeToken.parse(json.loads(second_line)["_id"]).__str__() + "\n")
        with rxcs.open_oplog(oplog_dir) as oplog:
            oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(10, 12)])
        assert watch_into(output, *args, "--count", "2").wait(60) == 0
        assert op_ids_in(output) == [1, 2, 3, 4, 5]
        assert rxcs.ResumeToken.parse(token_file.read_text().strip()).op_id == 5

    def test_a_torn_last_line_is_cut_and_its_event_written_whole(self, oplog_dir: Path, tmp_path: Path) -> None:
        """A run killed while writing a line leaves half of it: the next run cuts it, says so, and writes it again."""
        output, token_file = tmp_path / "events.jsonl", tmp_path / "token"
        args = [str(oplog_dir), "--from-beginning", "--resume-file", str(token_file)]
        assert watch_into(output, *args, "--count", "1").wait(60) == 0
        whole = output.read_text()
        with output.open("a") as out:
            out.write('{"_id": {"_data": "02')  # the start of the second event's line
        process = watch_into(output, *args, "--count", "2")
        assert process.wait(60) == 0
        assert process.stderr is not None
        assert "cut the torn last line (21 bytes)" in process.stderr.read().decode()
        assert output.read_text().startswith(whole)
        assert op_ids_in(output) == [1, 2, 3]

    def test_sigkilled_again_and_again_it_writes_every_event_exactly_once(
        self, oplog_dir: Path, tmp_path: Path
    ) -> None:
        """kill -9 at random moments of a run that writes events into a file: once it is through, every event is
        in the file exactly once, in order, whatever the kills cut."""
        rng = random.Random(7)
        total = 3 + 2000
        with rxcs.open_oplog(oplog_dir) as oplog:
            oplog.append_many([rxcs.Change.insert("shop", "items", {"_id": i, "pad": "x" * 300}) for i in range(2000)])
        output, token_file = tmp_path / "events.jsonl", tmp_path / "token"
        args = [str(oplog_dir), "--from-beginning", "--resume-file", str(token_file)]
        kills = 0
        while kills < 12:
            process = watch_into(output, *args)
            time.sleep(rng.uniform(0.3, 0.9))
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            kills += 1
        rest = watch_into(output, *args)  # one more run finishes what the kills left, then is killed too
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and output.read_bytes().count(b"\n") < total:
            time.sleep(0.05)
        rest.send_signal(signal.SIGKILL)
        rest.wait(30)
        assert op_ids_in(output) == list(range(1, total + 1))



class TestOplogCommands:
    def test_info(self, oplog_dir: Path) -> None:
        """oplog info prints the op_id range and identity as JSON."""
        result = run("oplog", "info", str(oplog_dir))
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["first_op_id"] == 1
        assert info["last_op_id"] == 3

    def test_dump(self, oplog_dir: Path) -> None:
        """oplog dump --from --limit prints those entries as JSON lines."""
        result = run("oplog", "dump", str(oplog_dir), "--from", "2", "--limit", "1")
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert json.loads(line)["op_id"] == 2

    def test_verify_names_the_bad_frame(self, oplog_dir: Path) -> None:
        """oplog verify passes a sound oplog and, after a flipped byte, names the file and offset."""
        assert run("oplog", "verify", str(oplog_dir)).returncode == 0
        segment = max((p for p in oplog_dir.iterdir() if p.stat().st_size > 200), key=lambda p: p.stat().st_size)
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(bytes(data))
        result = run("oplog", "verify", str(oplog_dir))
        assert result.returncode == 1
        assert segment.name in result.stderr

    def test_trim(self, oplog_dir: Path) -> None:
        """oplog trim --before reports what it dropped and exits 0."""
        result = run("oplog", "trim", str(oplog_dir), "--before", "2")
        assert result.returncode == 0, result.stderr
        assert "oldest retained op_id" in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], action: str) -> str:
    """The command's one line on stderr, checked to be one line, from that action, without a traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"rxcs oplog {action}: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def big_oplog(tmp_path: Path) -> Path:
    """32 entries in one segment, 8 to a commit."""
    path = tmp_path / "big"
    with rxcs.open_oplog(path) as oplog:
        for start in range(0, 32, 8):
            oplog.append_many([
                rxcs.Change.insert("shop", "users", {"_id": i, "pad": "p" * 50}) for i in range(start, start + 8)
            ])
    return path


def segment_of(path: Path) -> Path:
    return sorted(path.glob("*.seg"))[-1]


def frame_starts(segment: Path) -> list[int]:
    from rxcs.oplog.segments import HEADER, scan_frames

    data = memoryview(segment.read_bytes())
    return [frame.offset for frame in scan_frames(data[HEADER.size :], HEADER.size, int(segment.name[:20]))]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


class TestOplogCommandsOnDamage:
    def test_trim_while_a_writer_holds_the_oplog_exits_3(self, oplog_dir: Path) -> None:
        """trim beside a live writer: exit status 3 and one line naming the writer's pid, no traceback."""
        with rxcs.open_oplog(oplog_dir) as writer:
            writer.insert("shop", "users", {"_id": 2})
            result = run("oplog", "trim", str(oplog_dir), "--before", "2")
        assert result.returncode == 3
        assert f"pid {os.getpid()}" in one_line_error(result, "trim")

    def test_dump_stops_at_damage_with_one_line_and_status_1(self, big_oplog: Path) -> None:
        """dump prints the entries of the commits before a damaged frame, then one line naming the file and offset,
        status 1."""
        segment = segment_of(big_oplog)
        bad = frame_starts(segment)[10]  # op_id 11, in the commit of op_ids 9..16
        flip_byte(segment, bad + 20)
        result = run("oplog", "dump", str(big_oplog))
        assert result.returncode == 1
        assert [json.loads(line)["op_id"] for line in result.stdout.splitlines()] == list(range(1, 9))
        assert f"{segment} at byte {bad}" in one_line_error(result, "dump")

    @pytest.mark.parametrize("damage", ["zeros", "garbage"])
    def test_info_is_not_misled_by_a_damaged_index(self, big_oplog: Path, damage: str) -> None:
        """info counts the entries there are, whatever the index holds."""
        index = segment_of(big_oplog).with_suffix(".idx")
        size = max(index.stat().st_size, 64)
        index.write_bytes(bytes(size) if damage == "zeros" else os.urandom(size))
        result = run("oplog", "info", str(big_oplog))
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["first_op_id"], info["last_op_id"], info["entries"]) == (1, 32, 32)

    def test_info_on_a_damaged_last_frame_exits_1(self, big_oplog: Path) -> None:
        """info on an oplog whose last frame is damaged says where, in one line, with status 1."""
        segment = segment_of(big_oplog)
        bad = frame_starts(segment)[-1]
        flip_byte(segment, bad + 30)
        result = run("oplog", "info", str(big_oplog))
        assert result.returncode == 1
        assert f"{segment} at byte {bad}" in one_line_error(result, "info")

    def test_verify_names_a_damaged_index(self, big_oplog: Path) -> None:
        """verify checks the index against the segment: a wrong record exits 1 naming the index file and offset."""
        index = segment_of(big_oplog).with_suffix(".idx")
        index.write_bytes(bytes(16))
        result = run("oplog", "verify", str(big_oplog))
        assert result.returncode == 1
        assert f"{index} at byte 0" in one_line_error(result, "verify")

    def test_trim_on_a_damaged_newest_segment_exits_1(self, big_oplog: Path) -> None:
        """trim needs the writer, which refuses damage in the newest segment: one line naming it, status 1."""
        segment = segment_of(big_oplog)
        bad = frame_starts(segment)[5]
        flip_byte(segment, bad + 40)
        result = run("oplog", "trim", str(big_oplog), "--before", "2")
        assert result.returncode == 1
        assert f"{segment} at byte {bad}" in one_line_error(result, "trim")

    def test_verify_passes_a_torn_tail(self, big_oplog: Path) -> None:
        """A torn tail is what a crash leaves, not damage: verify says ok with every whole entry."""
        with segment_of(big_oplog).open("ab") as handle:
            handle.write(b"\x40\x00\x00\x00\x21\x00")
        result = run("oplog", "verify", str(big_oplog))
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "ok: 32", "")

    def test_a_damaged_meta_file_exits_1(self, big_oplog: Path) -> None:
        """Every oplog command on an oplog whose oplog.meta is damaged: one line naming it, status 1."""
        meta = big_oplog / "oplog.meta"
        meta.write_text(meta.read_text()[:-5])
        for action in ("info", "dump", "verify"):
            result = run("oplog", action, str(big_oplog))
            assert result.returncode == 1
            assert str(meta) in one_line_error(result, action)


class TestRepair:
    def test_dry_run_shows_what_repair_then_does(self, big_oplog: Path) -> None:
        """--dry-run lists the torn tail and the bad index it would fix and changes nothing; repair then does it."""
        segment = segment_of(big_oplog)
        index = segment.with_suffix(".idx")
        with segment.open("ab") as handle:
            handle.write(b"\x30\x00\x00\x00torn")
        index.write_bytes(bytes(32))
        before = {p.name: p.read_bytes() for p in big_oplog.iterdir()}
        dry = run("oplog", "repair", str(big_oplog), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert {p.name: p.read_bytes() for p in big_oplog.iterdir()} == before
        planned = dry.stdout.splitlines()
        assert any(line.startswith("would cut 8 bytes") and segment.name in line for line in planned), planned
        assert any(line.startswith("would rebuild") and index.name in line for line in planned), planned
        done = run("oplog", "repair", str(big_oplog))
        assert done.returncode == 0, done.stderr
        assert [line.removeprefix("would ") for line in planned] == done.stdout.splitlines()[: len(planned)]
        assert run("oplog", "verify", str(big_oplog)).stdout.strip() == "ok: 32"
        again = run("oplog", "repair", str(big_oplog))
        assert (again.returncode, again.stdout.strip()) == (0, "nothing to repair")

    def test_repair_refuses_while_a_writer_holds_the_oplog(self, big_oplog: Path) -> None:
        """repair takes the writer lock: beside a live writer it exits 3 with one line."""
        with rxcs.open_oplog(big_oplog) as writer:
            writer.insert("shop", "users", {"_id": "w"})
            result = run("oplog", "repair", str(big_oplog))
        assert result.returncode == 3
        assert "another writer" in one_line_error(result, "repair")

    def test_damage_in_the_middle_is_refused_unless_asked_and_then_listed(self, big_oplog: Path) -> None:
        """A bad frame with good ones after it: repair refuses and names it; --truncate-at-damage cuts it with
        the rest of its commit, listing the op_ids that go, and the oplog carries on from there."""
        segment = segment_of(big_oplog)
        bad = frame_starts(segment)[20]  # op_id 21, in the commit of op_ids 17..24
        flip_byte(segment, bad + 25)
        before = segment.read_bytes()
        refused = run("oplog", "repair", str(big_oplog))
        assert refused.returncode == 1
        line = one_line_error(refused, "repair")
        assert f"{segment} at byte {bad}" in line
        assert "op_ids 17..32" in line
        assert segment.read_bytes() == before
        cut = run("oplog", "repair", str(big_oplog), "--truncate-at-damage")
        assert cut.returncode == 0, cut.stderr
        assert "op_ids 17..32" in cut.stdout
        assert run("oplog", "verify", str(big_oplog)).stdout.strip() == "ok: 16"
        with rxcs.open_oplog(big_oplog) as oplog:
            assert oplog.insert("shop", "users", {"_id": "next"}) == 17

    def test_damage_in_an_older_segment_is_never_cut(self, tmp_path: Path) -> None:
        """Cutting at damage in an older segment would drop every newer segment: repair refuses even when asked."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
            for start in range(0, 200, 10):
                oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(start, start + 10)])
        oldest = sorted(path.glob("*.seg"))[0]
        bad = frame_starts(oldest)[3]
        flip_byte(oldest, bad + 18)
        result = run("oplog", "repair", str(path), "--truncate-at-damage")
        assert result.returncode == 1
        line = one_line_error(result, "repair")
        assert f"{oldest} at byte {bad}" in line
        assert "oplog trim" in line


class TestOplogCommandsOnRedis:
    @pytest.fixture
    def url(self, redis_server: RedisServer, tmp_path: Path) -> str:
        url = f"{redis_server.url}?stream={tmp_path.name}"
        with rxcs.open_oplog(url) as oplog:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            oplog.update("shop", "users", 1, updated_fields={"name": "Ada L."})
            oplog.insert("shop", "orders", {"_id": 1, "user": 1})
        return url

    def test_info_dump_verify(self, url: str, tmp_path: Path) -> None:
        """info, dump and verify take a Redis URL as they take a directory."""
        info = run("oplog", "info", url)
        assert info.returncode == 0, info.stderr
        document = json.loads(info.stdout)
        assert (document["stream"], document["first_op_id"], document["last_op_id"]) == (tmp_path.name, 1, 3)
        dump = run("oplog", "dump", url, "--from", "2")
        assert [json.loads(line)["op"] for line in dump.stdout.splitlines()] == ["update", "insert"]
        verify = run("oplog", "verify", url)
        assert (verify.returncode, verify.stdout.strip()) == (0, "ok: 3")

    def test_trim_by_op_id_and_not_by_bytes(self, url: str) -> None:
        """trim --before drops entries from the stream; --keep-bytes, a FileOplog notion, is refused."""
        refused = run("oplog", "trim", url, "--keep-bytes", "10")
        assert refused.returncode == 2
        assert "--keep-bytes needs a FileOplog" in refused.stderr
        trimmed = run("oplog", "trim", url, "--before", "3")
        assert trimmed.returncode == 0, trimmed.stderr
        with rxcs.open_oplog(url) as oplog:
            assert (oplog.first_op_id, oplog.last_op_id) == (3, 3)

    def test_repair_is_for_directories(self, url: str) -> None:
        """repair on a Redis URL is a usage error: status 2, one line."""
        result = run("oplog", "repair", url)
        assert result.returncode == 2
        assert "directory" in one_line_error(result, "repair")

    def test_an_unreachable_server_is_one_line_and_status_1(self) -> None:
        """info, dump, verify and trim on a Redis nobody listens on: one line each, status 1."""
        from redis_server import free_port

        url = f"redis://127.0.0.1:{free_port()}/0?stream=gone"
        for action in (["info"], ["dump"], ["verify"], ["trim", "--before", "3"]):
            result = run("oplog", action[0], url, *action[1:])
            assert result.returncode == 1, (action, result.stderr)
            assert "127.0.0.1" in one_line_error(result, action[0])

    def test_verify_names_a_garbled_entry(self, url: str, redis_server: RedisServer, tmp_path: Path) -> None:
        """An entry that does not decode makes verify exit 1 naming the stream entry."""
        import redis

        name = tmp_path.name
        client = redis.Redis.from_url(redis_server.url)
        bad_id = client.xadd(name, {"op_id": "4", "entry": b"\xc1garbage"}).decode()
        client.hset(f"{{{name}}}:meta", "last_op_id", 4)  # as if an append had recorded it
        client.close()
        result = run("oplog", "verify", url)
        assert result.returncode == 1
        assert bad_id in result.stderr


class TestDemo:
    def test_demo_prints_a_shop_and_stops_after_count(self) -> None:
        """rxcs demo --count N runs a producer and a consumer and exits 0 after N events."""
        result = run("demo", "--count", "25", "--interval", "0", "--seed", "7", "--color", "never")
        assert result.returncode == 0, result.stderr
        body = result.stdout.splitlines()[1:-1]
        assert len(body) == 25
        assert "create" in body[0]
        assert any(" insert " in line for line in body)
        assert "\033[" not in result.stdout

    def test_demo_colours_when_asked(self) -> None:
        """--color always colour-codes operation types."""
        result = run("demo", "--count", "3", "--interval", "0", "--color", "always")
        assert result.returncode == 0, result.stderr
        assert "\033[" in result.stdout

    def test_demo_until_ctrl_c(self) -> None:
        """Without --count the demo runs until SIGINT, then exits 0."""
        process = subprocess.Popen([*RXCS, "demo", "--interval", "0.01"], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        for _ in range(5):
            process.stdout.readline()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert process.returncode == 0


    def test_demo_into_a_pipe_that_closes(self) -> None:
        """`rxcs demo | head` ends quietly when head has had enough: status 141, no traceback."""
        process = subprocess.Popen(
            [*RXCS, "demo", "--interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert "create" in lines[1]
        process.stdout.close()
        _, err = process.communicate(timeout=60)
        assert process.returncode == 141
        assert "Traceback" not in err


def test_python_dash_m_and_console_script_agree() -> None:
    """`python -m rxcs --help` works (the console script runs the same main)."""
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
    env_bin = Path(sys.executable).parent / "rxcs"
    if env_bin.exists():
        script = subprocess.run([str(env_bin), "--help"], capture_output=True, check=False, env=os.environ)
        assert script.returncode == 0


class TestDocumentImages:
    """rxcs oplog images turns document images on; rxcs watch then serves updateLookup and pre-images from them."""

    @pytest.fixture(params=["file", "redis"])
    def location(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        if request.param == "redis":
            return f"{request.getfixturevalue('redis_server').url}?stream={tmp_path.name}"
        path = tmp_path / "oplog"
        rxcs.open_oplog(path).close()
        return str(path)

    def test_on_then_watch_update_lookup_gives_the_document_now(self, location: str) -> None:
        """Before --on nothing is kept; after it, updates written by another process come with their documents
        through --full-document updateLookup and --full-document-before-change whenAvailable."""
        before = run("oplog", "images", location)
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout) == {"kept": False}
        turned_on = run("oplog", "images", location, "--on")
        assert turned_on.returncode == 0, turned_on.stderr
        assert json.loads(turned_on.stdout)["every_collection"] is True
        with rxcs.open_oplog(location) as oplog:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada", "visits": 0})
            oplog.update("shop", "users", 1, updated_fields={"visits": 1})
            oplog.update("shop", "users", 1, updated_fields={"visits": 2}, removed_fields=["name"])
        result = run(
            "watch", location, "--from-beginning", "--count", "3", "--full-document", "updateLookup",
            "--full-document-before-change", "whenAvailable",
        )
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["fullDocument"] for line in lines[1:]] == [{"_id": 1, "visits": 2}] * 2
        assert [line["fullDocumentBeforeChange"] for line in lines[1:]] == [
            {"_id": 1, "name": "Ada", "visits": 0}, {"_id": 1, "name": "Ada", "visits": 1},
        ]
        shown = json.loads(run("oplog", "images", location).stdout)
        assert (shown["kept"], shown["documents"], shown["applied"]) == (True, 1, 3)

    def test_one_collection_on_and_off(self, location: str) -> None:
        """--db/--collection --on keeps images for that collection alone (a modify entry); --off stops them."""
        result = run("oplog", "images", location, "--db", "shop", "--collection", "users", "--on")
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert (shown["every_collection"], shown["collections"]) == (False, {"shop.users": True})
        with rxcs.open_oplog(location) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.insert("shop", "orders", {"_id": 1})
            assert oplog.last_op_id == 3  # the modify entry is in the oplog
        assert json.loads(run("oplog", "images", location).stdout)["documents"] == 1
        off = run("oplog", "images", location, "--db", "shop", "--collection", "users", "--off")
        assert off.returncode == 0, off.stderr
        shown = json.loads(off.stdout)
        assert (shown["collections"], shown["documents"]) == ({"shop.users": False}, 0)

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--off"], "--off needs --db and --collection"),
            (["--collection", "users", "--on"], "--db and --collection go together"),
            (["--db", "shop", "--collection", "users"], "--collection needs --on or --off"),
        ],
    )
    def test_bad_arguments_exit_2_with_one_line(self, location: str, args: list[str], message: str) -> None:
        """Arguments that do not make sense together exit 2, naming what was wrong."""
        result = run("oplog", "images", location, *args)
        assert result.returncode == 2
        assert message in one_line_error(result, "images")

    def test_on_while_another_process_writes_the_oplog(self, tmp_path: Path) -> None:
        """Turned on while a writer holds the oplog: the writer notices within a second and keeps the store up to
        date from then on; documents inserted after that have their images."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as writer:
            writer.insert("shop", "users", {"_id": 0})  # takes the writer lock
            result = run("oplog", "images", str(path), "--on")
            assert result.returncode == 0, result.stderr
            started = json.loads(result.stdout)["applied"]
            time.sleep(1.2)
            writer.insert("shop", "users", {"_id": 1, "v": 0})
            writer.update("shop", "users", 1, updated_fields={"v": 1})
            writer.sync()
            images = writer.document_images
            assert images is not None
            assert images.statistics()["applied"] == writer.last_op_id == started + 2
            assert images.current("shop", "users", 1) == {"_id": 1, "v": 1}
