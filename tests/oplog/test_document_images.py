"""Document images kept beside the oplog, held against every backend: what the store keeps, and when."""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import redis_server_available
from support import BACKENDS

import rxcs
from rxcs.oplog.images import IMAGES_OPTION, DocumentImages, MemoryImageStore

from .conftest import OplogFactory
from .image_model import document_values, random_update

IMAGES = {"changeStreamPreAndPostImages": {"enabled": True}}
NO_IMAGES = {"changeStreamPreAndPostImages": {"enabled": False}}


def images_of(oplog: rxcs.Oplog) -> DocumentImages:
    images = oplog.document_images
    assert images is not None
    return images


def entry_at(oplog: rxcs.Oplog, op_id: int) -> rxcs.OplogEntry:
    (entry,) = oplog.read(op_id - 1, 1)
    return entry


def kept(oplog: rxcs.Oplog, op_id: int) -> tuple[Any, Any]:
    """(pre-image, post-image) the oplog keeps for the change at ``op_id``."""
    return images_of(oplog).images(entry_at(oplog, op_id))


class TestTurningOn:
    def test_an_oplog_keeps_no_images_unless_asked(self, oplog_factory: OplogFactory) -> None:
        """By default an oplog keeps no images: document_images is None and appends leave no store behind."""
        oplog = oplog_factory()
        oplog.insert("shop", "users", {"_id": 1})
        oplog.update("shop", "users", 1, updated_fields={"a": 1})
        assert oplog.document_images is None

    def test_document_images_true_keeps_them_for_every_collection(self, oplog_factory: OplogFactory) -> None:
        """open_oplog(..., document_images=True): every collection's documents are kept."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
        oplog.insert("crm", "leads", {"_id": "x", "score": 3})
        images = images_of(oplog)
        assert images.current("shop", "users", 1) == {"_id": 1, "name": "Ada"}
        assert images.current("crm", "leads", {"_id": "x"}) == {"_id": "x", "score": 3}

    def test_the_setting_is_recorded_with_the_oplog(self, oplog_factory: OplogFactory) -> None:
        """An oplog opened again without the option (another process, or later) keeps images still."""
        if oplog_factory.backend == "memory":  # type: ignore[attr-defined]
            pytest.skip("a memory oplog is not opened again")
        first = oplog_factory(document_images=True)
        first.insert("shop", "users", {"_id": 1, "v": 1})
        first.close()
        again = oplog_factory()
        again.update("shop", "users", 1, updated_fields={"v": 2})
        assert images_of(again).current("shop", "users", 1) == {"_id": 1, "v": 2}

    def test_a_collection_created_with_the_option_keeps_images_for_itself_alone(
        self, oplog_factory: OplogFactory
    ) -> None:
        """create_collection(..., {"changeStreamPreAndPostImages": {"enabled": True}}): that collection only."""
        oplog = oplog_factory()
        oplog.create_collection("shop", "users", IMAGES)
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("shop", "orders", {"_id": 1})
        images = images_of(oplog)
        assert images.current("shop", "users", 1) == {"_id": 1}
        assert images.current("shop", "orders", 1) is None

    def test_modify_collection_turns_images_on_and_off(self, oplog_factory: OplogFactory) -> None:
        """modify_collection (collMod) turns a collection's images on from its entry on; off forgets its documents."""
        oplog = oplog_factory()
        oplog.insert("shop", "users", {"_id": 1, "v": 0})  # before: never known
        oplog.modify_collection("shop", "users", IMAGES)
        oplog.insert("shop", "users", {"_id": 2, "v": 0})
        before = oplog.update("shop", "users", 1, updated_fields={"v": 1})
        images = images_of(oplog)
        assert images.current("shop", "users", 2) == {"_id": 2, "v": 0}
        assert images.current("shop", "users", 1) is None
        assert kept(oplog, before) == (None, None)
        oplog.modify_collection("shop", "users", NO_IMAGES)
        assert images.current("shop", "users", 2) is None
        oplog.update("shop", "users", 2, updated_fields={"v": 2})
        oplog.modify_collection("shop", "users", IMAGES)
        oplog.update("shop", "users", 2, updated_fields={"v": 3})
        assert images.current("shop", "users", 2) is None  # turned off in between: it may have changed unseen

    def test_the_modify_entry_is_an_expanded_event(self, oplog_factory: OplogFactory) -> None:
        """modify_collection appends a modify entry whose operationDescription holds the options."""
        oplog = oplog_factory()
        op_id = oplog.modify_collection("shop", "users", IMAGES)
        entry = entry_at(oplog, op_id)
        assert (entry.op, entry.ns, entry.operation_description) == ("modify", rxcs.Namespace("shop", "users"), IMAGES)

    @pytest.mark.parametrize("option", [{"enabled": "yes"}, True, {"enabled": True, "extra": 1}, {}])
    def test_a_malformed_option_is_refused_naming_it(self, oplog_factory: OplogFactory, option: Any) -> None:
        """changeStreamPreAndPostImages must be {"enabled": bool}: anything else is InvalidChangeError, nothing
        is appended."""
        oplog = oplog_factory()
        with pytest.raises(rxcs.InvalidChangeError, match=r"changeStreamPreAndPostImages: expected \{'enabled'"):
            oplog.create_collection("shop", "users", {"changeStreamPreAndPostImages": option})
        with pytest.raises(rxcs.InvalidChangeError, match=r"changes\[0\]\.operation_description\.changeStreamPre"):
            oplog.append_many([rxcs.Change.create_collection("shop", "users", {IMAGES_OPTION: option})])
        assert oplog.last_op_id == 0

    def test_a_bad_document_images_argument_is_refused(self, oplog_factory: OplogFactory) -> None:
        """document_images must be True or False."""
        with pytest.raises(ValueError, match="document_images must be True or False, not 'yes'"):
            oplog_factory(document_images="yes")


class TestFileStore:
    def test_a_damaged_store_is_reported_naming_the_file_and_the_way_out(self, tmp_path: Path) -> None:
        """images.sqlite that is not a database: opening the oplog names the file and says how to start the images
        again; the entries are untouched, and moving the file away opens the oplog."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, document_images=True) as oplog:
            oplog.insert("shop", "users", {"_id": 1})
        (path / "images.sqlite").write_bytes(b"not sqlite" * 500)
        with pytest.raises(rxcs.OplogCorruptedError, match=r"images\.sqlite at byte 0: not a document image store"
                                                           r".*move the file away and turn images on again"):
            rxcs.open_oplog(path)
        (path / "images.sqlite").rename(tmp_path / "damaged.sqlite")
        with rxcs.open_oplog(path, readonly=True) as oplog:
            assert oplog.document_images is None
            assert [entry.document_key for entry in oplog.read(0, 10)] == [{"_id": 1}]

    def test_an_append_never_fails_for_its_images(self, tmp_path: Path) -> None:
        """A store that cannot be brought up to date (here, a table gone) fails no append: the entries are
        recorded, the error is logged, and a reader reads them."""
        import sqlite3

        import structlog

        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, document_images=True, durability="fsync") as oplog:
            oplog.insert("shop", "users", {"_id": 1, "v": 0})
            with contextlib.closing(sqlite3.connect(path / "images.sqlite")) as db:
                db.execute("DROP TABLE documents")
            with structlog.testing.capture_logs() as logs:
                op_id = oplog.update("shop", "users", 1, updated_fields={"v": 1})
            assert op_id == 2
            assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
                "document images not brought up to date"
            ]
        with structlog.testing.capture_logs() as logs, rxcs.open_oplog(path) as writer:  # taking the oplog too
            assert writer.insert("shop", "users", {"_id": 2}) == 3
        assert "document images not brought up to date" in [entry["event"] for entry in logs]
        with rxcs.open_oplog(path, readonly=True) as reader:
            assert [entry.op for entry in reader.read(0, 10)] == ["insert", "update", "insert"]

    def test_a_kept_image_that_does_not_decode_is_reported_naming_it(self, tmp_path: Path) -> None:
        """A damaged image: asking for it is an RxcsError naming the change; the writer treats the document as
        unknown (logged) and goes on: its next insert makes it known again."""
        import sqlite3

        import structlog

        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, document_images=True, durability="fsync") as oplog:
            oplog.insert("shop", "users", {"_id": 1, "v": 0})
            with contextlib.closing(sqlite3.connect(path / "images.sqlite")) as db, db:
                db.execute("UPDATE images SET document = X'c1'")  # 0xc1: never used in msgpack
            with pytest.raises(rxcs.RxcsError, match=r"the images of op_id 1 does not decode .* store is damaged"):
                kept(oplog, 1)
            with structlog.testing.capture_logs() as logs:
                oplog.update("shop", "users", 1, updated_fields={"v": 1})
            assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
                "document image no longer known: the update does not fit it"
            ]
            assert images_of(oplog).current("shop", "users", 1) is None
            oplog.replace("shop", "users", 1, {"_id": 1, "v": 2})
            assert images_of(oplog).current("shop", "users", 1) == {"_id": 1, "v": 2}

    @pytest.mark.parametrize(("rewritten", "problem"), [(0, "past the oplog's last entry"), (4, "is not the one it")])
    def test_a_store_ahead_of_its_oplog_starts_again(self, tmp_path: Path, rewritten: int, problem: str) -> None:
        """A store that applied entries the oplog no longer holds (the oplog lost its last entries, as after a power
        loss with durability="none"; perhaps others were written at their op_ids since): the next writer notices
        (a checkpoint past the end, or another entry at it), starts the store again from the oldest entry, logged,
        and every image then equals one computed from scratch."""
        import shutil

        import structlog

        path, copy_ = tmp_path / "oplog", tmp_path / "copy"
        with rxcs.open_oplog(path, document_images=True) as oplog:
            oplog.insert("shop", "users", {"_id": 1, "v": 0})
            oplog.update("shop", "users", 1, updated_fields={"v": 1})
        shutil.copytree(path, copy_)
        with rxcs.open_oplog(copy_) as ahead:  # entries 3 to 6, which the oplog at path loses
            for v in range(2, 6):
                ahead.update("shop", "users", 1, updated_fields={"v": v})
        with rxcs.open_oplog(path) as oplog:  # other entries at the same op_ids, or none
            for w in range(rewritten):
                oplog.update("shop", "users", 1, updated_fields={"w": w})
        shutil.copy(copy_ / "images.sqlite", path / "images.sqlite")  # the store that saw the lost entries
        with structlog.testing.capture_logs() as logs, rxcs.open_oplog(path) as oplog:
            oplog.update("shop", "users", 1, updated_fields={"x": 1})
            oplog.sync()
            restarts = [entry for entry in logs if entry["event"] == "document images started again"]
            assert [problem in entry["problem"] for entry in restarts] == [True], logs
            reference = DocumentImages(MemoryImageStore(every_collection=True), oplog)
            reference.catch_up(oplog.last_op_id)
            for entry in oplog.read(0, 100):
                assert images_of(oplog).images(entry) == reference.images(entry), f"op_id {entry.op_id}"
            expected = {"_id": 1, "v": 1, "x": 1, **({"w": rewritten - 1} if rewritten else {})}
            assert images_of(oplog).current("shop", "users", 1) == expected

    def test_another_oplogs_store_is_refused(self, tmp_path: Path) -> None:
        """A store copied from another oplog's directory is refused, naming both oplogs."""
        with rxcs.open_oplog(tmp_path / "one", document_images=True) as one:
            one.insert("shop", "users", {"_id": 1})
        rxcs.open_oplog(tmp_path / "two").close()
        (tmp_path / "one" / "images.sqlite").rename(tmp_path / "two" / "images.sqlite")
        with pytest.raises(rxcs.RxcsError, match=r"these document images belong to oplog [0-9a-f-]+, not to"):
            rxcs.open_oplog(tmp_path / "two")


class TestMaintenance:
    def test_each_change_keeps_its_pre_and_post_image(self, oplog_factory: OplogFactory) -> None:
        """insert, update, replace and delete: each change keeps the document it left and the one before it."""
        oplog = oplog_factory(document_images=True)
        inserted = oplog.insert("shop", "users", {"_id": 1, "name": "Ada", "tags": ["a", "b", "c"]})
        updated = oplog.update("shop", "users", 1, updated_fields={"tags.1": "B", "age": 36},
                               removed_fields=["name"], truncated_arrays=[{"field": "tags", "newSize": 2}])
        replaced = oplog.replace("shop", "users", 1, {"_id": 1, "name": "Lovelace"})
        deleted = oplog.delete("shop", "users", 1)
        assert kept(oplog, inserted) == (None, {"_id": 1, "name": "Ada", "tags": ["a", "b", "c"]})
        assert kept(oplog, updated) == (
            {"_id": 1, "name": "Ada", "tags": ["a", "b", "c"]}, {"_id": 1, "tags": ["a", "B"], "age": 36}
        )
        assert kept(oplog, replaced) == ({"_id": 1, "tags": ["a", "B"], "age": 36}, {"_id": 1, "name": "Lovelace"})
        assert kept(oplog, deleted) == ({"_id": 1, "name": "Lovelace"}, None)
        assert images_of(oplog).current("shop", "users", 1) is None

    def test_an_event_read_later_keeps_the_images_of_its_own_change(self, oplog_factory: OplogFactory) -> None:
        """The images of a change are those it left, however many changes followed it."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1, "v": 0})
        op_ids = [oplog.update("shop", "users", 1, updated_fields={"v": v}) for v in range(1, 6)]
        for v, op_id in enumerate(op_ids, start=1):
            assert kept(oplog, op_id) == ({"_id": 1, "v": v - 1}, {"_id": 1, "v": v})

    def test_a_recorded_post_image_becomes_the_document(self, oplog_factory: OplogFactory) -> None:
        """An update whose producer recorded the post-image sets the document to it (it is the truth)."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1, "v": 0})
        oplog.update("shop", "users", 1, updated_fields={"v": 1}, full_document={"_id": 1, "v": 1, "w": 9})
        assert images_of(oplog).current("shop", "users", 1) == {"_id": 1, "v": 1, "w": 9}

    def test_an_update_of_an_unknown_document_uses_a_recorded_pre_image(self, oplog_factory: OplogFactory) -> None:
        """A document never seen becomes known from an update whose producer recorded the pre-image."""
        oplog = oplog_factory(document_images=True)
        op_id = oplog.update("shop", "users", 7, updated_fields={"v": 2},
                             full_document_before_change={"_id": 7, "v": 1, "w": 0})
        assert images_of(oplog).current("shop", "users", 7) == {"_id": 7, "v": 2, "w": 0}
        assert kept(oplog, op_id)[1] == {"_id": 7, "v": 2, "w": 0}

    def test_an_update_of_an_unknown_document_keeps_nothing(self, oplog_factory: OplogFactory) -> None:
        """An update of a document never seen (and no recorded image) leaves it unknown: no images, no document."""
        oplog = oplog_factory(document_images=True)
        op_id = oplog.update("shop", "users", 7, updated_fields={"v": 2})
        assert kept(oplog, op_id) == (None, None)
        assert images_of(oplog).current("shop", "users", 7) is None

    def test_an_update_that_does_not_fit_forgets_the_document(self, oplog_factory: OplogFactory) -> None:
        """An update that cannot apply to the kept document (a field of a string) makes it unknown, logged; the
        update's event keeps its pre-image, and the next replace makes the document known again."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1, "a": "text"})
        op_id = oplog.update("shop", "users", 1, updated_fields={"a.b": 1})
        assert kept(oplog, op_id) == ({"_id": 1, "a": "text"}, None)
        assert images_of(oplog).current("shop", "users", 1) is None
        oplog.replace("shop", "users", 1, {"_id": 1, "a": {"b": 1}})
        assert images_of(oplog).current("shop", "users", 1) == {"_id": 1, "a": {"b": 1}}

    def test_a_drop_forgets_the_collection_and_its_setting(self, oplog_factory: OplogFactory) -> None:
        """After a drop the collection's documents are gone, and a collection created again has images only if
        its own options say so (the setting went with the collection, as in MongoDB)."""
        oplog = oplog_factory()
        oplog.create_collection("shop", "users", IMAGES)
        oplog.insert("shop", "users", {"_id": 1})
        oplog.drop_collection("shop", "users")
        oplog.insert("shop", "users", {"_id": 2})
        images = images_of(oplog)
        assert images.current("shop", "users", 1) is None
        assert images.current("shop", "users", 2) is None

    def test_a_rename_moves_documents_and_setting(self, oplog_factory: OplogFactory) -> None:
        """A rename moves the documents (and the setting) to the target, whose own documents go first."""
        oplog = oplog_factory()
        oplog.create_collection("shop", "users", IMAGES)
        oplog.create_collection("shop", "people", IMAGES)
        oplog.insert("shop", "users", {"_id": 1, "v": 1})
        oplog.insert("shop", "people", {"_id": 2})
        oplog.rename_collection("shop", "users", "shop", "people")
        update = oplog.update("shop", "people", 1, updated_fields={"v": 2})
        images = images_of(oplog)
        assert kept(oplog, update) == ({"_id": 1, "v": 1}, {"_id": 1, "v": 2})
        assert images.current("shop", "people", 2) is None
        assert images.current("shop", "users", 1) is None
        oplog.insert("shop", "users", {"_id": 3})  # the old name has no setting any more
        assert images.current("shop", "users", 3) is None

    def test_a_dropped_database_forgets_its_collections(self, oplog_factory: OplogFactory) -> None:
        """dropDatabase forgets every collection of the database, and no other."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1})
        oplog.insert("shop", "orders", {"_id": 1})
        oplog.insert("crm", "users", {"_id": 1})
        oplog.drop_database("shop")
        images = images_of(oplog)
        assert images.current("shop", "users", 1) is None
        assert images.current("shop", "orders", 1) is None
        assert images.current("crm", "users", 1) == {"_id": 1}


class TestStores:
    def test_a_reset_from_a_checkpoint_that_moved_changes_nothing(self, oplog_factory: OplogFactory) -> None:
        """A writer that finds entries trimmed starts the store again only if nobody moved it meanwhile: a reset
        expecting another checkpoint is refused and leaves every image; one expecting the right one forgets them."""
        oplog = oplog_factory(document_images=True)
        oplog.insert("shop", "users", {"_id": 1})
        oplog.sync()
        store = images_of(oplog).store
        applied = store.checkpoint()[0]
        assert applied == oplog.last_op_id
        assert store.reset(0, expected=applied - 1) is False
        assert images_of(oplog).current("shop", "users", 1) == {"_id": 1}
        assert store.reset(applied, expected=applied) is True
        assert images_of(oplog).current("shop", "users", 1) is None
        assert store.statistics() == {"applied": applied, "images": 0, "documents": 0}


class TestTrimming:
    @pytest.mark.parametrize("limit", ["max", "retain"])
    def test_retention_takes_the_images_with_the_entries(self, oplog_factory: OplogFactory, limit: str) -> None:
        """The backends' own retention (max_entries; retain_entries, kept by a FileOplog's keeper thread; Redis's
        max_len and retain_entries) trims the images with the entries: what is left is the images of the retained
        changes and the pre-image of the oldest, and the document."""
        retention = {
            ("memory", "max"): {"max_entries": 50}, ("redis", "max"): {"max_len": 50},
            ("redis", "retain"): {"retain_entries": 50},
            ("redis-cluster", "max"): {"max_len": 50}, ("redis-cluster", "retain"): {"retain_entries": 50},
            ("file", "retain"): {"retain_entries": 50, "segment_bytes": 4096},
        }.get((oplog_factory.backend, limit))  # type: ignore[attr-defined]
        if retention is None:
            pytest.skip(f"the {oplog_factory.backend} oplog has no {limit} limit")  # type: ignore[attr-defined]
        oplog = oplog_factory(document_images=True, **retention)
        oplog.insert("shop", "users", {"_id": 1, "v": 0, "pad": "x" * 200})
        for v in range(1, 400):
            oplog.update("shop", "users", 1, updated_fields={"v": v})
        oplog.sync()
        images = images_of(oplog)
        deadline = time.monotonic() + 10  # retention keepers trim a moment after the appends: wait until it settles
        while True:
            first, last = oplog.first_op_id, oplog.last_op_id
            time.sleep(0.2)
            settled = first == oplog.first_op_id and images.statistics()["images"] == last - first + 2
            if (first > 200 and settled) or time.monotonic() > deadline:
                break
        assert first > 200  # the retention trimmed most of the log
        assert images.statistics()["images"] == last - first + 2
        assert kept(oplog, first) == ({"_id": 1, "v": first - 2, "pad": "x" * 200},
                                      {"_id": 1, "v": first - 1, "pad": "x" * 200})
        assert images.current("shop", "users", 1) == {"_id": 1, "v": 399, "pad": "x" * 200}

    def test_images_go_with_the_entries_that_need_them(self, oplog_factory: OplogFactory) -> None:
        """Trimming drops the images only trimmed entries needed; the current documents stay, however old their
        last change, and so do the pre-images of retained changes."""
        backend = oplog_factory.backend  # type: ignore[attr-defined]
        oplog = oplog_factory(document_images=True, **({"segment_bytes": 4096} if backend == "file" else {}))
        pad = "x" * 400  # a FileOplog trims whole segments: a few entries each
        oplog.insert("shop", "users", {"_id": 1, "v": 0})  # never changed again: current for ever
        oplog.insert("shop", "users", {"_id": 2, "v": 0})
        for v in range(1, 30):
            oplog.update("shop", "users", 2, updated_fields={"v": v, "pad": pad})
        later = oplog.update("shop", "users", 1, updated_fields={"v": 1})
        oplog.sync()  # a FileOplog's images follow its synced entries
        images = images_of(oplog)
        assert images.statistics()["images"] == 32
        oplog.trim(later - 5)
        first = oplog.first_op_id
        assert 2 < first <= later - 5
        # Left: the insert of 1 (current), the update of 2 before the first retained one (its pre-image), and
        # the images of the retained changes.
        assert images.statistics()["images"] == 2 + (later - first + 1)
        assert kept(oplog, later) == ({"_id": 1, "v": 0}, {"_id": 1, "v": 1})
        assert kept(oplog, first) == ({"_id": 2, "v": first - 3, "pad": pad}, {"_id": 2, "v": first - 2, "pad": pad})
        assert images.current("shop", "users", 2) == {"_id": 2, "v": 29, "pad": pad}


def _model_run(oplog: rxcs.Oplog, data: st.DataObject) -> tuple[list[tuple[int, Any, Any]], dict[Any, Any]]:
    """Random changes of a few documents in two collections, with a rename or a drop now and then.

    Returns, per document change, its op_id and the model's (pre-image, post-image), and the model's
    documents at the end: a dict per (collection, key), carried out directly, never from a description.
    """
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    expected: list[tuple[int, Any, Any]] = []
    for _ in range(data.draw(st.integers(1, 25), label="changes")):
        coll = data.draw(st.sampled_from(["a", "b"]))
        key = data.draw(st.integers(1, 3))
        before = model.get((coll, key))
        choice = data.draw(st.sampled_from(["write", "write", "write", "collection"]))
        if choice == "collection":
            if data.draw(st.booleans()):
                oplog.drop_collection("db", coll)
                for name in [name for name in model if name[0] == coll]:
                    del model[name]
            else:
                other = "b" if coll == "a" else "a"
                oplog.rename_collection("db", coll, "db", other)
                moved = {(other, k): doc for (c, k), doc in model.items() if c == coll}
                model = {name: doc for name, doc in model.items() if name[0] not in (coll, other)} | moved
            continue
        if before is None:
            document = data.draw(document_values(key, dotted=True))
            op_id = oplog.insert("db", coll, document)
            model[(coll, key)] = copy.deepcopy(document)
            expected.append((op_id, None, document))
            continue
        action = data.draw(st.sampled_from(["update", "update", "replace", "delete"]))
        if action == "update":
            description, after = random_update(data, before)
            recorded = after if data.draw(st.integers(0, 4)) == 0 else None
            op_id = oplog.update(
                "db", coll, key, updated_fields=description["updatedFields"],
                removed_fields=description["removedFields"], truncated_arrays=description["truncatedArrays"],
                disambiguated_paths=description.get("disambiguatedPaths"), full_document=recorded,
            )
        elif action == "replace":
            after = data.draw(document_values(key, dotted=True))
            op_id = oplog.replace("db", coll, key, after)
        else:
            after = None
            op_id = oplog.delete("db", coll, key)
        expected.append((op_id, copy.deepcopy(before), copy.deepcopy(after)))
        if after is None:
            del model[(coll, key)]
        else:
            model[(coll, key)] = copy.deepcopy(after)
    return expected, model


def _check(
    oplog: rxcs.Oplog, expected: list[tuple[int, Any, Any]], model: dict[Any, Any],
    images: DocumentImages | None = None,
) -> None:
    images = images or images_of(oplog)
    for op_id, before, after in expected:
        entry = entry_at(oplog, op_id)
        pre, post = images.images(entry)
        assert post == after, f"post-image of op_id {op_id} ({entry.op})"
        if entry.op != "insert":
            assert pre == before, f"pre-image of op_id {op_id} ({entry.op})"
    for coll in ("a", "b"):
        for key in (1, 2, 3):
            assert images.current("db", coll, key) == model.get((coll, key)), f"document db.{coll} {key}"


@contextlib.contextmanager
def _opened(backend: str, request: pytest.FixtureRequest, **options: Any) -> Iterator[Callable[..., rxcs.Oplog]]:
    """Open (and reopen) one fresh oplog of ``backend``; everything opened is closed at the end."""
    opened: list[rxcs.Oplog] = []
    with tempfile.TemporaryDirectory() as directory:
        stream = f"images-{uuid.uuid4().hex[:12]}"

        def make(**more: Any) -> rxcs.Oplog:
            if backend == "memory":
                oplog = rxcs.open_oplog(":memory:", **options, **more)
            elif backend == "redis":
                oplog = rxcs.open_oplog(f"{request.getfixturevalue('redis_server').url}?stream={stream}",
                                        **options, **more)
            else:
                oplog = rxcs.open_oplog(Path(directory) / "oplog", **options, **more)
            opened.append(oplog)
            return oplog

        try:
            yield make
        finally:
            for oplog in opened:
                oplog.close()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_the_store_agrees_with_a_model_of_the_documents(
    backend: str, request: pytest.FixtureRequest, data: st.DataObject
) -> None:
    """Random inserts, updates (MongoDB's updatedFields, removedFields, truncatedArrays, and disambiguatedPaths
    for field names with dots or digits), replaces, deletes,
    renames and drops on a few keys: every change's pre- and post-image, and every document now, equal what a
    straightforward model (a dict per key, updated directly) holds; in the writer's process at once (a FileOplog's
    store may still be behind: the missing images are computed), from a second reader, and after reopening."""
    with _opened(backend, request, document_images=True) as make:
        oplog = make()
        expected, model = _model_run(oplog, data)
        _check(oplog, expected, model)
        # The same images from a store brought up to date in random batches (as writers commit them), then
        # one left at a random checkpoint, past which a reader computes them: every split point gives the same.
        last = oplog.last_op_id
        split = DocumentImages(MemoryImageStore(every_collection=True), oplog)
        for through in sorted(data.draw(st.sets(st.integers(1, max(1, last)), max_size=4), label="commits")):
            split.catch_up(through)
        split.catch_up(last)
        _check(oplog, expected, model, split)
        behind = DocumentImages(MemoryImageStore(every_collection=True), oplog)
        behind.catch_up(data.draw(st.integers(0, last), label="store at"))
        _check(oplog, expected, model, behind)
        if backend != "memory":
            reader = make(readonly=True) if backend == "file" else make()
            _check(reader, expected, model)
            oplog.close()
            _check(make(readonly=True) if backend == "file" else make(), expected, model)


PRODUCER = """
import sys, rxcs
url, number, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with rxcs.open_oplog(url) as oplog:
    print("ready", flush=True)
    sys.stdin.readline()  # every producer starts at once
    for i in range(1, count + 1):
        key = i % 3
        if i % 10 == 0:
            oplog.append_many([
                rxcs.Change.update("db", "c", {"_id": key}, updated_fields={f"p{number}": i}),
                rxcs.Change.update("db", "c", {"_id": (key + 1) % 3}, updated_fields={f"p{number}": i}),
            ])
        else:
            oplog.update("db", "c", key, updated_fields={f"p{number}": i, f"log.{number}": i})
"""


@pytest.mark.skipif(not redis_server_available(), reason="no redis-server binary")
class TestOnRedis:
    def test_producers_appending_at_once_keep_one_consistent_store(self, request: pytest.FixtureRequest) -> None:
        """Four producer processes update the same documents at once, each catching the shared store up after
        its appends: the store reaches the stream's end, each document ends with every producer's last value,
        and every change's images equal those computed from scratch from the stream's entries."""
        url = f"{request.getfixturevalue('redis_server').url}?stream=images-{uuid.uuid4().hex[:12]}"
        producers, count = 4, 60
        with rxcs.open_oplog(url, document_images=True) as oplog:
            for key in range(3):
                oplog.insert("db", "c", {"_id": key, "log": []})
            processes = [
                subprocess.Popen([sys.executable, "-c", PRODUCER, url, str(n), str(count)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in range(producers)
            ]
            for process in processes:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            for process in processes:
                _, errors = process.communicate(timeout=120)
                assert process.returncode == 0, errors
            images = images_of(oplog)
            assert images.statistics()["applied"] == oplog.last_op_id == 3 + producers * (count + count // 10)
            reference = DocumentImages(MemoryImageStore(every_collection=True), oplog)
            reference.catch_up(oplog.last_op_id)
            for entry in oplog.read(0, 10**6):
                assert images.images(entry) == reference.images(entry), f"op_id {entry.op_id}"
            for key in range(3):
                document = images.current("db", "c", key)
                assert document == reference.current("db", "c", key)
                assert document is not None
                # Producer i-th change: key i % 3, and in every tenth, a commit of two, key i % 3 + 1 too.
                touched = [i for i in range(1, count + 1) if key in (i % 3, (i % 3 + 1) % 3 if i % 10 == 0 else -1)]
                assert [document[f"p{n}"] for n in range(producers)] == [max(touched)] * producers
                assert document["log"] == [max(i for i in range(1, count + 1) if i % 10 and i % 3 == key)] * producers

    def test_images_survive_a_killed_and_restarted_server(self, tmp_path: Path) -> None:
        """kill -9 of an appendonly Redis while a producer updates documents, then a restart: the producer's
        retries go on, and the store ends at the stream's end with each change's images equal to those
        computed from scratch, and each document as the updates left it."""
        from redis_server import RedisServer

        server = RedisServer(tmp_path / "redis", appendonly=True)
        server.start()
        url = f"{server.url}?stream=kept"
        total = 300
        try:
            with rxcs.open_oplog(url, document_images=True) as oplog:
                for key in range(3):
                    oplog.insert("db", "c", {"_id": key, "n": 0, "seen": []})
                killed = threading.Event()

                def produce() -> None:
                    with rxcs.open_oplog(url) as producer:
                        for i in range(1, total + 1):
                            if i == total // 2:
                                killed.wait(30)
                            producer.update("db", "c", i % 3, updated_fields={"n": i, f"seen.{i // 3}": i})
                            time.sleep(0.001)

                writer = threading.Thread(target=produce)
                writer.start()
                time.sleep(0.05)
                server.kill()
                killed.set()
                time.sleep(0.3)
                server.restart()
                writer.join(60)
                assert not writer.is_alive()
                images = images_of(oplog)
                assert images.statistics()["applied"] == oplog.last_op_id == 3 + total
                reference = DocumentImages(MemoryImageStore(every_collection=True), oplog)
                reference.catch_up(oplog.last_op_id)
                for entry in oplog.read(0, 10**6):
                    assert images.images(entry) == reference.images(entry), f"op_id {entry.op_id}"
                for key in range(3):
                    # Update i set n = i and seen.(i // 3) = i: seen holds each update of the key, nulls padding.
                    seen = [3 * j + key if 3 * j + key >= 1 else None for j in range((total - key) // 3 + 1)]
                    assert images.current("db", "c", key) == {"_id": key, "n": seen[-1], "seen": seen}
        finally:
            server.stop()
