"""Document images of a FileOplog whose writers are SIGKILLed again and again.

Each writer keeps document images (``images.sqlite``) while it inserts,
updates (set, unset, array elements, truncations), replaces and deletes a few
documents, one change or a commit of several at a time, until it is killed:
with ``durability="none"`` the images are committed within each append, so
kills land inside SQLite transactions too; with ``"group"`` they follow the
group commit, so the store is left behind. After each kill, a reader that
opens the oplog meanwhile and the next writer (which catches the store up when
it takes the oplog) must give, for every retained change, the images that a
store built from scratch over the same entries gives, and the store must
reach the oplog's end. The normal suite kills 12 writers; ``RXCS_FAULTS=all`` 60.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

import rxcs
from rxcs.oplog.images import DocumentImages, MemoryImageStore

from .conftest import FULL
from .tally import Tally, record
from .test_kill import QUIET, kill_a_writer

KILLS = 60 if FULL else 12
KEYS = range(6)
WRITER = QUIET + textwrap.dedent(
    """
    import random, sys, rxcs
    path, run, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(run)
    with rxcs.open_oplog(path, durability=durability, document_images=True) as oplog:
        images = oplog.document_images
        for number in range(10**9):
            changes = []
            for _ in range(rng.choice([1, 1, 1, 3])):
                key = rng.randrange(6)
                now = images.current("shop", "users", key)  # only to choose a change that fits
                if now is None:
                    changes.append(rxcs.Change.insert("shop", "users", {"_id": key, "n": 0, "tags": ["t"] * key}))
                    continue
                action = rng.choice(["update", "update", "update", "replace", "delete"])
                if action == "update":
                    tags = len(now.get("tags", []))
                    changes.append(rxcs.Change.update(
                        "shop", "users", {"_id": key},
                        updated_fields={"n": number, f"tags.{tags}": number, f"sub.r{run}": rng.random()},
                        removed_fields=["gone"] if rng.random() < 0.3 else None,
                        truncated_arrays=[{"field": "tags", "newSize": tags // 2}] if tags > 4 else None,
                    ))
                elif action == "replace":
                    changes.append(rxcs.Change.replace("shop", "users", {"_id": key}, {"_id": key, "gone": run}))
                else:
                    changes.append(rxcs.Change.delete("shop", "users", {"_id": key}))
            print(oplog.append_many(changes)[-1], flush=True)
    """
)


def from_scratch(oplog: rxcs.Oplog) -> DocumentImages:
    """The images of the oplog's entries computed in memory from its first entry, with no crash in between."""
    assert oplog.first_op_id == 1  # nothing trimmed: every document is known from its insert
    reference = DocumentImages(MemoryImageStore(every_collection=True), oplog)
    reference.catch_up(oplog.last_op_id)
    return reference


def differences(oplog: rxcs.Oplog, reference: DocumentImages) -> list[Any]:
    """Where the oplog's own images differ from the reference's: changes' images and documents now."""
    images = oplog.document_images
    assert images is not None
    found: list[Any] = [
        (entry.op_id, entry.op, images.images(entry), reference.images(entry))
        for entry in oplog.read(0, 10**9) if images.images(entry) != reference.images(entry)
    ]
    found += [(key, images.current("shop", "users", key)) for key in KEYS
              if images.current("shop", "users", key) != reference.current("shop", "users", key)]
    return found


class TestKilledWriterKeepingImages:
    @pytest.mark.timeout(900)
    def test_images_after_each_kill_equal_images_computed_from_scratch(self, tmp_path: Path) -> None:
        """Writers SIGKILLed at random moments: a reader opening the oplog before anyone recovers it, and the
        next writer after it caught the store up, both give every change the images computed from scratch
        from the same entries; the store reaches the oplog's end, and kept at least the images of the
        acknowledged changes."""
        path = tmp_path / "oplog"
        rng = random.Random(2027)
        tally = Tally()
        behind = 0  # kills that left the store behind the oplog
        for run in range(KILLS):
            durability = "none" if run % 2 else "group"
            acknowledged = kill_a_writer(path, run, rng, script=WRITER, args=(durability,), longest=0.3)
            with rxcs.open_oplog(path, readonly=True) as reader:
                assert reader.last_op_id >= acknowledged, f"run {run}: acknowledged op_id {acknowledged} is gone"
                images = reader.document_images
                assert images is not None
                behind += images.statistics()["applied"] < reader.last_op_id
                reference = from_scratch(reader)
                assert reference.statistics()["images"] > 0
                assert differences(reader, reference) == [], f"run {run}: a reader before recovery"
            with rxcs.open_oplog(path) as writer:
                writer.insert("shop", "marks", {"_id": run})  # takes the oplog: the store catches up
                writer.sync()
                images = writer.document_images
                assert images is not None
                assert images.statistics()["applied"] == writer.last_op_id
                assert differences(writer, from_scratch(writer)) == [], f"run {run}: after recovery"
            tally.add("recovered")
        record("SIGKILLed writers keeping document images", tally)
        assert tally.recovered == KILLS
        assert behind >= 1, "no kill left the store behind its oplog: the catch-up was never exercised"
