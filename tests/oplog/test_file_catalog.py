"""FileOplog's collection catalog: saved beside the segments, replayed after a crash, rebuilt when damaged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import structlog

import rxcs
from rxcs.events import ClusterTime
from rxcs.oplog.catalog import Catalog
from rxcs.oplog.codec import encode_entry
from rxcs.oplog.file import CATALOG_NAME, FileOplog
from rxcs.oplog.segments import encode_frame, encode_header, segment_path

QUIET = "import structlog, sys; structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n"
WRITER = QUIET + textwrap.dedent(
    """
    import sys, time, rxcs
    oplog = rxcs.open_oplog(sys.argv[1], durability="fsync")
    op_id = oplog.create_collection("shop", "users")
    oplog.create_index("shop", "users", {"key": {"email": 1}})
    print(op_id, flush=True)
    time.sleep(60)
    """
)


def identity(oplog: rxcs.Oplog, op_id: int) -> uuid.UUID | None:
    return oplog.read(op_id - 1, 1)[0].collection_uuid


class TestFileCatalog:
    def test_a_killed_writers_collections_keep_their_identity(self, tmp_path: Path) -> None:
        """A writer killed before it saved its catalog: the next writer replays its entries, identities and indexes."""
        path = tmp_path / "oplog"
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        created = int(process.stdout.readline())
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (path / CATALOG_NAME).exists()
        with rxcs.open_oplog(path) as oplog:
            users = identity(oplog, created)
            assert users is not None
            assert identity(oplog, oplog.insert("shop", "users", {"_id": 1})) == users
            assert oplog.read(oplog.drop_index("shop", "users", "email_1") - 1, 1)[0].dropped == {
                "v": 2, "key": {"email": 1}}
        assert (path / CATALOG_NAME).exists()

    def test_a_reader_sees_the_writers_catalog_as_of_now(self, tmp_path: Path) -> None:
        """collections() of a readonly instance is the saved catalog and what the writer appended since."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as writer:
            writer.insert("shop", "users", {"_id": 1})
            with rxcs.open_oplog(path, readonly=True) as reader:
                assert list(reader.collections()) == [rxcs.Namespace("shop", "users")]
                writer.create_collection("shop", "orders", {"viewOn": "users", "pipeline": []})
                found = reader.collections()
                assert found[rxcs.Namespace("shop", "orders")].kind == "view"
                assert found == writer.collections()

    def test_a_damaged_catalog_is_rebuilt_from_the_retained_entries(self, tmp_path: Path) -> None:
        """A catalog that fails its checksum is rebuilt, with a warning, and the collections in the log keep theirs."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        data = bytearray((path / CATALOG_NAME).read_bytes())
        data[-1] ^= 0xFF
        (path / CATALOG_NAME).write_bytes(bytes(data))
        with structlog.testing.capture_logs() as logs, rxcs.open_oplog(path) as oplog:
            assert identity(oplog, oplog.insert("shop", "users", {"_id": 2})) == users
        assert any(
            line["event"] == "oplog catalog rebuilt from the retained entries" and "checksum" in line["reason"]
            for line in logs
        )

    def test_a_catalog_ahead_of_the_log_is_not_believed(self, tmp_path: Path) -> None:
        """A catalog saved through entries the log no longer holds (an older copy of the segments) is rebuilt."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path) as oplog:
            users = identity(oplog, oplog.insert("shop", "users", {"_id": 1}))
        kept = {name: (path / name).read_bytes() for name in os.listdir(path) if name.endswith((".seg", ".idx"))}
        with rxcs.open_oplog(path) as oplog:
            oplog.drop_collection("shop", "users")
        for name, data in kept.items():  # the segments put back as they were before the drop
            (path / name).write_bytes(data)
        with structlog.testing.capture_logs() as logs, rxcs.open_oplog(path) as oplog:
            assert oplog.last_op_id == 1
            assert identity(oplog, oplog.insert("shop", "users", {"_id": 2})) == users
        assert any("the log ends at 1" in line.get("reason", "") for line in logs)

    def test_entries_written_before_identities_have_none(self, tmp_path: Path) -> None:
        """An oplog whose entries predate identities: they read without one, and the next change gives one."""
        path = tmp_path / "oplog"
        with FileOplog(path) as oplog:
            oplog_id = oplog.oplog_id
        old = [rxcs.Change.create_collection("shop", "users"), rxcs.Change.insert("shop", "users", {"_id": 1})]
        segment = encode_header(oplog_id.bytes, 1) + b"".join(
            encode_frame(op_id, encode_entry(op_id, ClusterTime(1, op_id), 1000, change))
            for op_id, change in enumerate(old, 1)
        )
        segment_path(path, 1).write_bytes(segment)
        with rxcs.open_oplog(path) as oplog:
            assert [entry.collection_uuid for entry in oplog.read(0, 10)] == [None, None]
            assert oplog.collections() == {}
            made = identity(oplog, oplog.insert("shop", "users", {"_id": 2}))
            assert made is not None
            assert identity(oplog, oplog.insert("shop", "users", {"_id": 3})) == made


class TestCatalogSave:
    def test_a_save_inside_a_batch_holds_only_what_was_committed(self) -> None:
        """dump() inside a batch (a segment rolled before its frames are written) is the catalog of the last commit."""
        catalog = Catalog()
        users, _ = catalog.apply(rxcs.Change.insert("shop", "users", {"_id": 1}))
        catalog.apply(rxcs.Change.create_index("shop", "users", {"key": {"a": 1}}))
        catalog.commit(2)
        catalog.begin()
        catalog.apply(rxcs.Change.drop_collection("shop", "users"))
        catalog.apply(rxcs.Change.insert("shop", "orders", {"_id": 1}))
        saved = Catalog.load(catalog.dump())
        assert saved.through == 2
        assert list(saved) == [("shop", "users")]
        assert saved.identity("shop", "users") == users
        assert saved.indexes("shop", "users") == {"a_1": {"v": 2, "key": {"a": 1}}}
        assert list(catalog) == [("shop", "orders")]  # the batch itself goes on
        catalog.commit(4)
        assert list(Catalog.load(catalog.dump())) == [("shop", "orders")]
