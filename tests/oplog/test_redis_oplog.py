"""RedisOplog beyond the shared contract: its keys, its scripts, other processes, and a server that dies."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis_server import RedisServer, redis_server_available

import rxcs
from rxcs.oplog.codec import decode_entry

pytestmark = pytest.mark.skipif(not redis_server_available(), reason="needs a redis-server binary and redis-py")

if redis_server_available():
    import redis
    from redis.crc import key_slot

    from rxcs.oplog.redis import RedisOplog

QUIET = "import structlog, sys; structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n"


def inserts(n: int, start: int = 0) -> list[rxcs.Change]:
    return [rxcs.Change.insert("shop", "users", {"_id": i, "name": f"user{i}"}) for i in range(start, start + n)]


@pytest.fixture
def stream_url(redis_server: RedisServer) -> str:
    """The URL of a stream nobody has used yet, on the session's server."""
    return f"{redis_server.url}?stream=t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client of the session's server, to look at what the oplog stored."""
    with redis.Redis.from_url(redis_server.url) as plain:
        yield plain


def stream_name(url: str) -> str:
    return url.rpartition("stream=")[2]


def scripts_run(client: redis.Redis) -> int:
    """How many scripts the server has run (EVALSHA and EVAL), from INFO commandstats."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


class TestOpen:
    def test_the_url_names_the_stream_and_the_keys_share_a_slot(self, stream_url: str, client: redis.Redis) -> None:
        """?stream=NAME is the stream key itself; the metadata sits in {NAME}:meta, the same cluster slot."""
        name = stream_name(stream_url)
        with rxcs.open_oplog(stream_url) as oplog:
            assert isinstance(oplog, RedisOplog)
            assert oplog.stream == name
            oplog.drop_database("gone")  # a database never seen: no collection UUID
            assert client.type(name) == b"stream"
            meta = client.hgetall(f"{{{name}}}:meta")
            assert meta[b"oplog_id"].decode() == oplog.oplog_id.hex
            assert (meta[b"format"], meta[b"last_op_id"]) == (b"1", b"1")
            assert key_slot(name.encode()) == key_slot(f"{{{name}}}:meta".encode())

    def test_the_format_says_2_from_the_first_entry_with_a_collection_uuid(
        self, stream_url: str, client: redis.Redis
    ) -> None:
        """format stays 1 (what earlier rxcs read) until an entry records a collection UUID, then 2; an
        oplog of format 1 opens, and a format this rxcs does not know is refused, naming it."""
        meta = f"{{{stream_name(stream_url)}}}:meta"
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.drop_database("gone")
            assert client.hget(meta, "format") == b"1"
            oplog.insert("shop", "users", {"_id": 1})
            assert client.hget(meta, "format") == b"2"
        client.hset(meta, "format", "1")
        with rxcs.open_oplog(stream_url) as oplog:
            assert [entry.op for entry in oplog.read(0, 10)] == ["dropDatabase", "insert"]
        client.hset(meta, "format", "3")
        with pytest.raises(rxcs.RxcsError, match="format version 3, this rxcs reads 1, 2"):
            rxcs.open_oplog(stream_url)

    def test_the_default_stream_is_rxcs(self, redis_server: RedisServer, client: redis.Redis) -> None:
        """A URL without ?stream= uses the stream "rxcs"; the constructor takes a client and a name."""
        with rxcs.open_oplog(redis_server.url) as oplog:
            assert oplog.stream == "rxcs"  # type: ignore[attr-defined]
        with RedisOplog(client, "rxcs") as again:
            assert again.oplog_id == oplog.oplog_id

    def test_every_opener_agrees_on_one_identity(self, stream_url: str) -> None:
        """Eight threads opening a new stream at once all get the same oplog_id (created atomically)."""
        barrier = threading.Barrier(8)
        identities: list[uuid.UUID] = []

        def open_one() -> None:
            barrier.wait()
            with rxcs.open_oplog(stream_url) as oplog:
                identities.append(oplog.oplog_id)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(identities) == 8
        assert len(set(identities)) == 1

    def test_an_unreachable_server_is_a_clear_error(self) -> None:
        """open_oplog of a port nobody listens on raises OplogUnavailableError naming the address, at once."""
        from redis_server import free_port

        port = free_port()
        started = time.monotonic()
        with pytest.raises(rxcs.OplogUnavailableError, match=f"cannot reach Redis at redis://127.0.0.1:{port}/0"):
            rxcs.open_oplog(f"redis://127.0.0.1:{port}/0?stream=nobody")
        assert time.monotonic() - started < 5

    def test_the_password_comes_from_the_url(self, tmp_path: Path) -> None:
        """A password in the URL authenticates; a missing or wrong one is OplogUnavailableError, not a crash."""
        server = RedisServer(tmp_path, extra_args=("--requirepass", "s3cret"))
        server.start()
        try:
            url = f"redis://:s3cret@127.0.0.1:{server.port}/0?stream=locked"
            with rxcs.open_oplog(url) as oplog:
                assert oplog.insert("shop", "users", {"_id": 1}) == 1
            with pytest.raises(rxcs.OplogUnavailableError, match="refused the credentials"):
                rxcs.open_oplog(f"redis://127.0.0.1:{server.port}/0?stream=locked")
            with pytest.raises(rxcs.OplogUnavailableError, match="refused the credentials") as wrong:
                rxcs.open_oplog(f"redis://:nope@127.0.0.1:{server.port}/0?stream=locked")
            assert "nope" not in str(wrong.value)
        finally:
            server.stop()

    def test_a_key_that_is_not_an_oplog_is_refused(self, stream_url: str, client: redis.Redis) -> None:
        """A stream key holding a string, or a stream without rxcs metadata, is an RxcsError, left untouched."""
        name = stream_name(stream_url)
        client.set(name, "hello")
        with pytest.raises(rxcs.RxcsError, match="not an rxcs oplog"):
            rxcs.open_oplog(stream_url)
        client.delete(name)
        client.xadd(name, {"something": "else"})
        with pytest.raises(rxcs.RxcsError, match="not an rxcs oplog"):
            rxcs.open_oplog(stream_url)
        assert client.xlen(name) == 1

    def test_bad_arguments(self, redis_server: RedisServer) -> None:
        """A client that decodes responses, a name with braces and a bad max_len are refused up front."""
        with redis.Redis.from_url(redis_server.url, decode_responses=True) as decoding:
            with pytest.raises(ValueError, match="decode_responses"):
                RedisOplog(decoding, "x")
        with redis.Redis.from_url(redis_server.url) as plain:
            with pytest.raises(ValueError, match="braces"):
                RedisOplog(plain, "{x}")
            with pytest.raises(ValueError, match="max_len"):
                RedisOplog(plain, "x", max_len=0)


class TestURL:
    def test_rxcs_options_are_taken_from_the_url(self, redis_server: RedisServer, client: redis.Redis) -> None:
        """stream, max_len and retry_for may be URL parameters: max_len=5 keeps the stream near 5 entries."""
        url = f"{redis_server.url}?stream=url_options&max_len=5&retry_for=none&socket_timeout=30"
        with rxcs.open_oplog(url) as oplog:
            assert isinstance(oplog, RedisOplog)
            assert oplog.stream == "url_options"
            oplog.append_many(inserts(500))
            assert oplog.last_op_id == 500
        assert client.xlen("url_options") < 500

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("stream=s&max_lenn=5", r"unknown parameter 'max_lenn'; rxcs takes stream, max_len, retry_for"),
            ("stream=s&colour=blue", r"unknown parameter 'colour'"),
            ("stream=s&max_len=five", r"max_len='five' is not a valid max_len"),
            ("stream=s&max_len=0", r"max_len must be a positive number of entries"),
            ("stream=s&retry_for=-1", r"retry_for must be seconds >= 0 or none"),
            ("stream={s}", r"stream must be a non-empty name without braces"),
            ("stream=a&stream=b", r"the stream is named more than once"),
            ("stream=s&socket_timeout=soon", r"socket_timeout"),
        ],
    )
    def test_a_bad_url_parameter_is_refused_at_open(self, redis_server: RedisServer, query: str, message: str) -> None:
        """A URL parameter neither rxcs nor redis-py takes, or a bad value, fails at open naming it, not later."""
        with pytest.raises(rxcs.InvalidLocationError, match=message) as raised:
            rxcs.open_oplog(f"{redis_server.url}?{query}")
        assert isinstance(raised.value, ValueError)

    def test_an_option_given_in_the_url_and_as_a_keyword_is_refused(self, redis_server: RedisServer) -> None:
        """The URL and the keywords may not both name max_len (or the stream)."""
        with pytest.raises(rxcs.InvalidLocationError, match="max_len is named more than once"):
            rxcs.open_oplog(f"{redis_server.url}?stream=s&max_len=5", max_len=6)
        with pytest.raises(rxcs.InvalidLocationError, match="stream is named more than once"):
            rxcs.open_oplog(f"{redis_server.url}?stream=s", stream="t")

    def test_a_password_never_appears_in_the_error(self, redis_server: RedisServer) -> None:
        """The error names the URL with its password redacted."""
        url = redis_server.url.replace("redis://", "redis://user:hunter2@")
        with pytest.raises(rxcs.InvalidLocationError) as raised:
            rxcs.open_oplog(f"{url}?stream=s&nope=1")
        assert "hunter2" not in str(raised.value)


class TestAppend:
    def test_entries_are_the_codec_records_under_redis_ids(self, stream_url: str, client: redis.Redis) -> None:
        """Each stream entry holds op_id and the codec's record; its ID is Redis's own ms-seq ID, near now."""
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(3))
            rows = client.xrange(stream_name(stream_url))
            assert [decode_entry(fields[b"entry"]) for _, fields in rows] == oplog.read(0, 10)
        assert [fields[b"op_id"] for _, fields in rows] == [b"1", b"2", b"3"]
        ms = [int(entry_id.split(b"-")[0]) for entry_id, _ in rows]
        assert all(abs(m - time.time() * 1000) < 60_000 for m in ms)

    def test_producers_share_one_order_and_one_clock(self, stream_url: str) -> None:
        """Two oplogs on one stream interleave appends: op_ids contiguous, cluster times strictly increasing."""
        with rxcs.open_oplog(stream_url) as first, rxcs.open_oplog(stream_url) as second:
            ids = []
            for i in range(50):
                producer = first if i % 2 else second
                ids += producer.append_many(inserts(1 + i % 3, start=i * 10))
            assert ids == list(range(1, len(ids) + 1))
            entries = first.read(0, 1000)
        assert [e.op_id for e in entries] == ids
        assert all(a.cluster_time < b.cluster_time for a, b in itertools.pairwise(entries))

    def test_a_retried_batch_is_recorded_once(self, stream_url: str) -> None:
        """The append script sent twice for one batch (a lost reply, then a retry) records it and its catalog once."""
        with rxcs.open_oplog(stream_url) as oplog:
            assert isinstance(oplog, RedisOplog)
            oplog.insert("shop", "users", {"_id": 0})
            args = oplog._script_args([rxcs.Change.create_collection("shop", "orders"), *inserts(1, start=1)],
                                      "producer-x", 41)
            first = oplog._append_script(keys=oplog._keys, args=args)
            orders = oplog.collections()[rxcs.Namespace("shop", "orders")]
            again = oplog._append_script(keys=oplog._keys, args=args)
            assert (first, again) == ([2, 2, 0, 0], [2, 2, 1, 0])  # op_ids, count, replayed, epoch
            assert oplog.last_op_id == 3
            assert oplog.collections()[rxcs.Namespace("shop", "orders")] == orders
            assert oplog.insert("shop", "users", {"_id": 3}) == 4

    def test_appends_go_on_after_the_server_forgets_the_script(self, stream_url: str, client: redis.Redis) -> None:
        """SCRIPT FLUSH (as a restarted or newly promoted server has no scripts): the next append, on the
        connection held for appends, loads the script again and is recorded once."""
        with rxcs.open_oplog(stream_url) as oplog:
            assert oplog.insert("shop", "users", {"_id": 0}) == 1
            client.script_flush()
            assert oplog.insert("shop", "users", {"_id": 1}) == 2
            client.script_flush()
            assert oplog.append_many(inserts(3, start=2)) == [3, 4, 5]
            assert [e.full_document["_id"] for e in oplog.read(0, 10)] == [0, 1, 2, 3, 4]

    def test_writer_threads_share_the_held_connection_and_the_pool(self, stream_url: str) -> None:
        """Eight threads appending through one oplog: one at a time takes the connection held for appends,
        the others the pool's; every change is recorded once, op_ids contiguous."""
        with rxcs.open_oplog(stream_url) as oplog:
            def write(worker: int) -> None:
                for i in range(100):
                    oplog.insert("shop", "users", {"_id": f"{worker}-{i}"})

            threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            entries = oplog.read(0, 10_000)
        assert [e.op_id for e in entries] == list(range(1, 801))
        written = sorted(f"{worker}-{i}" for worker in range(8) for i in range(100))
        assert sorted(e.full_document["_id"] for e in entries) == written

    def test_a_forked_child_appends_on_a_connection_of_its_own(self, stream_url: str) -> None:
        """A process forked after its parent appended appends through the same oplog object while the parent
        goes on: the two never share the held connection (their replies would cross), nothing is lost."""
        import multiprocessing

        with rxcs.open_oplog(stream_url) as oplog:
            oplog.insert("shop", "users", {"_id": "before"})
            context = multiprocessing.get_context("fork")
            child = context.Process(target=_append_in_child, args=(oplog,))
            child.start()
            for i in range(200):
                oplog.insert("shop", "users", {"_id": f"parent-{i}"})
            child.join(60)
            assert child.exitcode == 0
            entries = oplog.read(0, 10_000)
        assert [e.op_id for e in entries] == list(range(1, 402))
        ids = [e.full_document["_id"] for e in entries]
        assert [i for i in ids if str(i).startswith("parent")] == [f"parent-{i}" for i in range(200)]
        assert [i for i in ids if str(i).startswith("child")] == [f"child-{i}" for i in range(200)]

    def test_close_lets_go_of_the_held_connection(self, redis_server: RedisServer, client: redis.Redis) -> None:
        """An oplog given a client hands the connection it held for appends back to that client's pool; one
        opened from a URL closes it: the server sees no connection of it afterwards."""
        name = f"lane-{uuid.uuid4().hex[:8]}"
        given = redis.Redis.from_url(redis_server.url, client_name=name)
        oplog = RedisOplog(given, stream=f"t-{uuid.uuid4().hex[:12]}")
        oplog.insert("shop", "users", {"_id": 1})
        oplog.close()
        pool: Any = given.connection_pool
        assert not pool._in_use_connections  # every connection it took is back in the pool
        given.close()
        url = f"{redis_server.url}?stream=t-{uuid.uuid4().hex[:12]}&client_name={name}-url"
        with rxcs.open_oplog(url) as from_url:
            from_url.insert("shop", "users", {"_id": 1})
            assert any(c["name"] == f"{name}-url" for c in client.client_list())
        deadline = time.monotonic() + 5
        while any(c["name"].startswith(name) for c in client.client_list()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [c["name"] for c in client.client_list() if c["name"].startswith(name)]

    def test_max_len_keeps_about_that_many(self, stream_url: str, client: redis.Redis) -> None:
        """max_len trims on append with MAXLEN ~: at least max_len stay, and not many more; op_ids go on."""
        with rxcs.open_oplog(stream_url, max_len=100) as oplog:
            for start in range(0, 3000, 100):
                oplog.append_many(inserts(100, start))
            length = client.xlen(stream_name(stream_url))
            assert 100 <= length <= 300
            assert oplog.first_op_id == 3000 - length + 1
            assert oplog.read(oplog.first_op_id - 1, 1)[0].op_id == oplog.first_op_id
            with pytest.raises(rxcs.ChangeStreamHistoryLost):
                oplog.cursor(0)


def _append_in_child(oplog: rxcs.Oplog) -> None:
    for i in range(200):
        oplog.insert("shop", "users", {"_id": f"child-{i}"})


class TestSeek:
    @pytest.fixture
    def spread(self, stream_url: str) -> Iterator[rxcs.Oplog]:
        """An oplog of 2,000 entries in batches of 1 to 90, appended over many milliseconds."""
        with rxcs.open_oplog(stream_url) as oplog:
            sizes = itertools.cycle([1, 90, 7, 33, 2, 60])
            while oplog.last_op_id < 2000:
                oplog.append_many(inserts(min(next(sizes), 2000 - oplog.last_op_id)))
                time.sleep(0.001)
            yield oplog

    def test_a_cursor_starts_exactly_after_any_op_id(self, spread: rxcs.Oplog) -> None:
        """cursor(after) reads op_id after + 1 next, for every position, before and after a trim."""
        for after in [*range(40), *range(40, 2000, 37), 1998, 1999, 2000]:
            assert [e.op_id for e in spread.read(after, 2)] == list(range(after + 1, min(after + 3, 2001)))
        spread.trim(before_op_id=777)
        assert spread.first_op_id == 777
        for after in [776, 777, 1000, 1999]:
            assert spread.read(after, 1)[0].op_id == after + 1
        with pytest.raises(rxcs.ChangeStreamHistoryLost):
            spread.cursor(775)

    def test_a_seek_takes_a_logarithmic_number_of_probes(self, spread: rxcs.Oplog, client: redis.Redis) -> None:
        """Seeking runs one script of O(log time span) XRANGE probes, counted by the server."""
        span_ms = int(client.xrevrange(spread.stream, count=1)[0][0].split(b"-")[0]) - int(  # type: ignore[attr-defined]
            client.xrange(spread.stream, count=1)[0][0].split(b"-")[0]  # type: ignore[attr-defined]
        )
        for after in (3, 555, 1234, 1990):
            client.config_resetstat()
            spread.cursor(after).close()
            stats = client.info("commandstats")
            probes = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("xrange", "xrevrange"))
            assert probes <= span_ms.bit_length() + 4, (after, probes, span_ms)
            assert stats["cmdstat_evalsha"]["calls"] == 1

    def test_a_position_past_the_end_waits_for_its_entry(self, stream_url: str) -> None:
        """A cursor after an op_id not yet appended reads nothing, then exactly the entries after it."""
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(3))
            with oplog.cursor(after=5) as cursor:
                assert cursor.read(10) == []
                oplog.append_many(inserts(4, start=3))
                assert [e.op_id for e in cursor.read(10)] == [6, 7]

    def test_a_trim_under_a_reading_cursor_is_history_lost(self, stream_url: str) -> None:
        """Entries trimmed between two reads of a cursor are reported, never skipped in silence."""
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(10))
            with oplog.cursor(after=0) as cursor:
                assert len(cursor.read(2)) == 2
                oplog.trim(before_op_id=6)
                with pytest.raises(rxcs.ChangeStreamHistoryLost, match="op_id 3 was trimmed"):
                    cursor.read(10)


class TestDamage:
    def test_a_garbled_entry_is_reported_with_its_id(self, stream_url: str, client: redis.Redis) -> None:
        """An entry whose record is not msgpack is OplogCorruptedError naming the stream entry, never skipped."""
        name = stream_name(stream_url)
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(2))
            bad_id = client.xadd(name, {"op_id": "3", "entry": b"\xc1garbage"}).decode()
            with oplog.cursor(after=1) as cursor, pytest.raises(rxcs.OplogCorruptedError, match=bad_id):
                cursor.read(10)

    def test_an_entry_written_by_someone_else_is_reported(self, stream_url: str, client: redis.Redis) -> None:
        """A foreign entry in the stream makes seeking through it OplogCorruptedError, not a wrong position."""
        name = stream_name(stream_url)
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(3))
            client.xadd(name, {"something": "else"})
            with pytest.raises(rxcs.OplogCorruptedError, match="not written by rxcs"):
                oplog.cursor(after=1)

    def test_a_command_redis_refuses_is_oplog_unavailable(self, stream_url: str, client: redis.Redis) -> None:
        """When Redis answers an append with an error (here the key became a string), the error says so."""
        name = stream_name(stream_url)
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
            client.delete(name)
            client.set(name, "not a stream")
            with pytest.raises(rxcs.OplogUnavailableError, match=r"Redis refused appending: .*WRONGTYPE"):
                oplog.insert("shop", "users", {"_id": 2})


class TestWait:
    def test_wake_waiters_alone_unblocks_a_wait(self, stream_url: str) -> None:
        """wake_waiters() makes a wait(timeout=60) blocked in XREAD return within a fraction of a second."""
        with rxcs.open_oplog(stream_url) as oplog:
            assert oplog._can_unblock  # type: ignore[attr-defined]
            returned = threading.Event()
            thread = threading.Thread(target=lambda: (oplog.wait(0, timeout=60), returned.set()))
            thread.start()
            time.sleep(0.2)
            started = time.monotonic()
            oplog.wake_waiters()
            assert returned.wait(5)
            assert time.monotonic() - started < 0.5
            thread.join()

    def test_without_client_unblock_waiters_still_wake(self, redis_server: RedisServer, client: redis.Redis) -> None:
        """A user denied CLIENT (as on managed services) still gets wake-ups, by bounded blocks."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        client.acl_setuser(
            "limited", enabled=True, passwords=["+pw"], keys=["*"], categories=["+@all"], commands=["-client"]
        )
        url = f"redis://limited:pw@127.0.0.1:{redis_server.port}/0?stream={name}"
        with rxcs.open_oplog(url) as oplog:
            assert not oplog._can_unblock  # type: ignore[attr-defined]
            returned = threading.Event()
            thread = threading.Thread(target=lambda: (oplog.wait(0, timeout=60), returned.set()))
            thread.start()
            time.sleep(0.2)
            oplog.wake_waiters()
            assert returned.wait(2)
            thread.join()
            appended = threading.Timer(0.2, lambda: oplog.insert("shop", "users", {"_id": 1}))
            appended.start()
            assert oplog.wait(0, timeout=10)
            appended.join()

    def test_the_entry_that_ends_a_wait_is_read_without_another_round_trip(
        self, stream_url: str, client: redis.Redis
    ) -> None:
        """After wait() returns for an append, the cursor's next read takes that entry from the XREAD reply."""
        with rxcs.open_oplog(stream_url) as oplog, rxcs.open_oplog(stream_url) as producer:
            producer.append_many(inserts(3))
            assert len(oplog.cursor(after=0).read(10)) == 3  # the read script is loaded: one call a read from now
            with oplog.cursor(after=3) as cursor:
                appended = threading.Timer(0.2, lambda: producer.insert("shop", "users", {"_id": "live"}))
                appended.start()
                assert oplog.wait(3, timeout=10)
                appended.join()
                producer.append_many(inserts(2, start=10))  # appended after the wait: read the usual way
                scripts = scripts_run(client)
                assert [e.document_key for e in cursor.read(10)] == [{"_id": "live"}]
                assert scripts_run(client) == scripts  # no read script for it
                assert [e.op_id for e in cursor.read(10)] == [5, 6]
                assert scripts_run(client) == scripts + 1
                assert cursor.read(10) == []

    def test_a_wait_that_meets_another_oplog_hands_nothing_over(self, stream_url: str, client: redis.Redis) -> None:
        """If the stream was deleted and made anew meanwhile, the entry a wait saw is not taken: history is lost."""
        with rxcs.open_oplog(stream_url) as oplog:
            oplog.append_many(inserts(3))
            with oplog.cursor(after=3) as cursor:
                def replace() -> None:
                    client.delete(*oplog._keys)  # type: ignore[attr-defined]
                    with rxcs.open_oplog(stream_url) as other:
                        other.append_many(inserts(4))

                replaced = threading.Timer(0.2, replace)
                replaced.start()
                assert oplog.wait(3, timeout=10)
                replaced.join()
                with pytest.raises(rxcs.ChangeStreamHistoryLost, match="no longer there"):
                    cursor.read(10)

    def test_a_watch_receives_live_events(self, stream_url: str) -> None:
        """rxcs.watch over a RedisOplog delivers events appended after it started, in order, from another client."""
        with rxcs.open_oplog(stream_url) as oplog, rxcs.open_oplog(stream_url) as producer:
            producer.insert("shop", "users", {"_id": "before"})
            with rxcs.watch(oplog, "shop", "users").iterate() as stream:
                for i in range(5):
                    producer.insert("shop", "users", {"_id": i})
                events = [stream.next(timeout=10) for _ in range(5)]
            assert [e.document_key for e in events] == [{"_id": i} for i in range(5)]
            assert [e.op_id for e in events] == [2, 3, 4, 5, 6]


PRODUCER = QUIET + textwrap.dedent(
    """
    import sys, rxcs
    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with rxcs.open_oplog(url) as oplog:
        seq = 0
        while seq < count:
            size = 1 + seq % 4
            batch = [rxcs.Change.insert("shop", "users", {"_id": f"{name}-{seq + i}", "producer": name, "seq": seq + i})
                     for i in range(min(size, count - seq))]
            if len(batch) == 1:
                oplog.append(batch[0])
            else:
                oplog.append_many(batch)
            seq += len(batch)
    """
)

CONSUMER = QUIET + textwrap.dedent(
    """
    import json, sys, rxcs
    url, total = sys.argv[1], int(sys.argv[2])
    seen = []
    with rxcs.open_oplog(url) as oplog, rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
        print("ready", flush=True)
        while len(seen) < total:
            event = stream.next(timeout=30)
            seen.append([event.op_id, list(event.cluster_time), event.full_document["producer"],
                         event.full_document["seq"]])
    print(json.dumps(seen), flush=True)
    """
)


class TestProcesses:
    def test_two_producers_three_consumers_one_total_order(self, stream_url: str) -> None:
        """Two producer processes and three consumer processes on one stream: every consumer sees
        the same totally ordered sequence, op_ids contiguous from 1, each producer's entries in its order."""
        per_producer = 400
        total = 2 * per_producer
        consumers = [
            subprocess.Popen(
                [sys.executable, "-c", CONSUMER, stream_url, str(total)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(3)
        ]
        for consumer in consumers:  # tailing live before the producers start
            assert consumer.stdout is not None
            assert consumer.stdout.readline().strip() == "ready"
        producers = [
            subprocess.Popen([sys.executable, "-c", PRODUCER, stream_url, name, str(per_producer)])
            for name in ("p1", "p2")
        ]
        for producer in producers:
            assert producer.wait(60) == 0
        outputs = []
        for consumer in consumers:
            out, _ = consumer.communicate(timeout=60)
            assert consumer.returncode == 0
            outputs.append(json.loads(out))
        assert outputs[0] == outputs[1] == outputs[2]
        sequence = outputs[0]
        assert [op_id for op_id, *_ in sequence] == list(range(1, total + 1))
        assert all(a[1] < b[1] for a, b in itertools.pairwise(sequence))
        for name in ("p1", "p2"):
            assert [seq for *_, producer, seq in sequence if producer == name] == list(range(per_producer))


class TestFaults:
    def test_a_killed_and_restarted_server_loses_and_repeats_nothing(self, tmp_path: Path) -> None:
        """kill -9 of an appendonly Redis during a live stream, then a restart on the same port: the
        producer's retries and the consumer's tail resume, every document arrives exactly once, in order."""
        server = RedisServer(tmp_path / "redis", appendonly=True)
        server.start()
        url = f"{server.url}?stream=survivor"
        total = 600
        acknowledged: list[int] = []
        killed = threading.Event()
        try:
            with structlog.testing.capture_logs() as logs, rxcs.open_oplog(url) as oplog:

                def produce() -> None:
                    with rxcs.open_oplog(url) as producer:
                        for i in range(total):
                            if i == 300:  # however slow the machine, half the writes meet the outage
                                killed.wait(30)
                            acknowledged.append(producer.insert("shop", "users", {"_id": i}))
                            time.sleep(0.001)

                with rxcs.watch(oplog, "shop", "users").iterate() as stream:
                    writer = threading.Thread(target=produce)
                    writer.start()
                    received = [stream.next(timeout=30) for _ in range(150)]
                    server.kill()
                    killed.set()
                    time.sleep(0.5)
                    server.restart()
                    while len(received) < total:
                        received.append(stream.next(timeout=30))
                    writer.join()
                    assert stream.try_next() is None
                # The restarted server is another run: a new epoch began at its first append, and nothing
                # acknowledged was lost (appendfsync always), so no lost range is recorded.
                assert oplog.epoch == 1
                assert oplog.history_losses() == []  # type: ignore[attr-defined]
            assert [e.document_key for e in received] == [{"_id": i} for i in range(total)]
            assert [e.op_id for e in received] == list(range(1, total + 1)) == acknowledged
            outages = [entry for entry in logs if entry["event"] == "redis oplog unreachable; retrying"]
            recoveries = [entry for entry in logs if entry["event"] == "redis oplog reachable again"]
            assert 1 <= len(outages) <= 2  # once per oplog (consumer, producer) per outage
            assert len(recoveries) == len(outages)
        finally:
            server.stop()

    def test_the_catalog_survives_a_killed_server_and_a_trim(self, tmp_path: Path) -> None:
        """kill -9 of an appendonly Redis, a restart and a trim of every entry of a collection: its next change
        records the UUID it had, and a dropped index still says its key."""
        server = RedisServer(tmp_path / "redis", appendonly=True)
        server.start()
        url = f"{server.url}?stream=catalog"
        try:
            with rxcs.open_oplog(url) as oplog:
                users = oplog.read(oplog.create_collection("shop", "users") - 1, 1)[0].collection_uuid
                oplog.create_index("shop", "users", {"key": {"email": 1}})
                oplog.append_many([rxcs.Change.insert("shop", "orders", {"_id": i}) for i in range(20)])
            server.kill()
            server.restart()
            with rxcs.open_oplog(url) as oplog:
                assert oplog.trim(before_op_id=oplog.last_op_id) > 2
                assert oplog.first_op_id > 2
                again = oplog.read(oplog.insert("shop", "users", {"_id": 1}) - 1, 1)[0].collection_uuid
                assert again == users is not None
                dropped = oplog.read(oplog.drop_index("shop", "users", "email_1") - 1, 1)[0].dropped
                assert dropped == {"v": 2, "key": {"email": 1}}
        finally:
            server.stop()

    def test_a_server_that_comes_back_empty_is_history_lost(self, tmp_path: Path) -> None:
        """A restart without persistence loses the oplog: the tail says so, and appends refuse to start anew."""
        server = RedisServer(tmp_path / "redis", appendonly=False)
        server.start()
        try:
            with rxcs.open_oplog(f"{server.url}?stream=lost") as oplog:
                oplog.append_many(inserts(5))
                cursor = oplog.cursor(after=0)
                assert len(cursor.read(10)) == 5
                server.kill()
                server.restart()
                with pytest.raises(rxcs.ChangeStreamHistoryLost, match="no longer there"):
                    cursor.read(10)
                with pytest.raises(rxcs.OplogUnavailableError, match="no longer there"):
                    oplog.insert("shop", "users", {"_id": 6})
        finally:
            server.stop()

    def test_a_long_outage_raises_after_retry_for(self, tmp_path: Path) -> None:
        """With the server gone longer than retry_for, reads and appends raise OplogUnavailableError;
        the append says its outcome; once the server is back the oplog works again."""
        server = RedisServer(tmp_path / "redis", appendonly=True)
        server.start()
        try:
            with rxcs.open_oplog(f"{server.url}?stream=patience", retry_for=0.3) as oplog:
                oplog.append_many(inserts(3))
                cursor = oplog.cursor(after=0)
                server.kill()
                started = time.monotonic()
                with pytest.raises(rxcs.OplogUnavailableError, match="reading failed, Redis unreachable"):
                    cursor.read(10)
                assert time.monotonic() - started < 5
                with pytest.raises(rxcs.OplogUnavailableError, match="may or may not have been recorded"):
                    oplog.insert("shop", "users", {"_id": 3})
                with pytest.raises(rxcs.OplogUnavailableError, match="waiting for entries failed"):
                    oplog.wait(0, timeout=10)
                server.restart()
                assert [e.op_id for e in cursor.read(10)] == [1, 2, 3]
                assert oplog.insert("shop", "users", {"_id": 3}) == 4
        finally:
            server.stop()


class TestSharedCatalog:
    def test_producers_on_one_stream_share_one_catalog(self, stream_url: str, client: redis.Redis) -> None:
        """Producers racing on one stream agree on each collection's identity: the append script gives them out."""
        name = stream_name(stream_url)
        oplogs = [rxcs.open_oplog(stream_url) for _ in range(4)]
        try:
            def produce(oplog: rxcs.Oplog, worker: int) -> None:
                for i in range(30):
                    oplog.append_many([rxcs.Change.insert("shop", f"c{i % 5}", {"_id": f"{worker}-{i}"}),
                                       rxcs.Change.insert("shop", "all", {"_id": f"{worker}-{i}"})])

            threads = [threading.Thread(target=produce, args=(oplog, n)) for n, oplog in enumerate(oplogs)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seen: dict[str, set[uuid.UUID | None]] = {}
            for entry in oplogs[0].read(0, 1000):
                seen.setdefault(str(entry.ns), set()).add(entry.collection_uuid)
            assert sorted(seen) == ["shop.all", *(f"shop.c{i}" for i in range(5))]
            assert all(len(identities) == 1 and None not in identities for identities in seen.values())
            assert len(set().union(*seen.values())) == 6
            assert {str(ns): info.uuid for ns, info in oplogs[1].collections().items()} == {
                ns: identities.pop() for ns, identities in seen.items()}
            assert key_slot(name.encode()) == key_slot(f"{{{name}}}:catalog".encode())
            assert client.type(f"{{{name}}}:catalog") == b"hash"
        finally:
            for oplog in oplogs:
                oplog.close()
