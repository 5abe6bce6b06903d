"""Pipelines through watch(): reshaped documents, the resume-token rule, and large events.

Real oplogs (memory and file), real tailer threads; nothing of rxcs is mocked.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import rxcs
from rxcs import operators as cso


def drain(stream: rxcs.ChangeStream, n: int) -> list[Any]:
    """The next n events, each waited for with a generous timeout."""
    return [stream.next(timeout=10) for _ in range(n)]


def op_id(document: dict[str, Any]) -> int:
    return rxcs.ResumeToken.parse(document["_id"]).op_id


class TestReshapedEvents:
    def test_match_only_pipeline_delivers_change_events(self, oplog: rxcs.Oplog) -> None:
        """$match stages filter; what arrives are ChangeEvent objects, untouched."""
        pipeline = [{"$match": {"operationType": "insert"}}, {"$match": {"fullDocument.n": {"$gt": 1}}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            for n in range(4):
                oplog.insert("shop", "users", {"_id": n, "n": n})
            events = drain(stream, 2)
        assert all(isinstance(event, rxcs.ChangeEvent) for event in events)
        assert [event.document_key for event in events] == [{"_id": 2}, {"_id": 3}]

    def test_reshaping_pipeline_delivers_plain_documents(self, oplog: rxcs.Oplog) -> None:
        """A $project delivers dicts holding the event's _id and the projected fields."""
        pipeline = [{"$project": {"operationType": 1, "name": "$fullDocument.name"}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1, "name": "Ada"})
            document = stream.next(timeout=10)
            assert stream.resume_token == rxcs.ResumeToken.parse(document["_id"])
        assert type(document) is dict
        assert document == {"_id": document["_id"], "operationType": "insert", "name": "Ada"}
        assert op_id(document) == 1

    def test_computed_fields_and_redaction(self, oplog: rxcs.Oplog) -> None:
        """$set computes from the event, $redact prunes sub-documents, $unset removes fields, in order."""
        pipeline = [
            {"$set": {"total": {"$multiply": ["$fullDocument.qty", "$fullDocument.price"]},
                      "who": {"$toUpper": "$fullDocument.customer.name"}}},
            {"$redact": {"$cond": [{"$eq": ["$private", True]}, "$$PRUNE", "$$DESCEND"]}},
            {"$unset": ["ns", "clusterTime", "wallTime", "documentKey"]},
        ]
        with rxcs.watch(oplog, "shop", "orders", pipeline).iterate() as stream:
            oplog.insert("shop", "orders", {"_id": 1, "qty": 3, "price": 2.5,
                                            "customer": {"name": "ada", "card": {"private": True, "no": "1234"}}})
            document = stream.next(timeout=10)
        assert document["total"] == 7.5
        assert document["who"] == "ADA"
        assert document["fullDocument"]["customer"] == {"name": "ada"}
        assert set(document) == {"_id", "operationType", "fullDocument", "total", "who"}

    def test_replace_with_keeping_the_id(self, oplog: rxcs.Oplog) -> None:
        """$replaceWith can make the document the event, as long as _id stays the event's token."""
        keep_id = {"_id": "$_id", "docId": "$documentKey._id"}
        pipeline = [{"$replaceWith": {"$mergeObjects": ["$fullDocument", keep_id]}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 7, "name": "Ada"})
            document = stream.next(timeout=10)
        assert document == {"_id": document["_id"], "name": "Ada", "docId": 7}
        assert op_id(document) == 1

    def test_resume_from_a_reshaped_document(self, oplog: rxcs.Oplog) -> None:
        """A reshaped document's _id resumes the stream right after it."""
        pipeline = [{"$project": {"documentKey": 1}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            for n in range(3):
                oplog.insert("shop", "users", {"_id": n})
            first = stream.next(timeout=10)
        with rxcs.watch(oplog, "shop", "users", pipeline, resume_after=first["_id"]).iterate() as stream:
            rest = drain(stream, 2)
        assert [doc["documentKey"] for doc in rest] == [{"_id": 1}, {"_id": 2}]

    def test_subscribers_receive_documents_too(self, oplog: rxcs.Oplog) -> None:
        """subscribe() gets the same reshaped documents as iteration, on the tailer thread."""
        got: list[Any] = []
        done = threading.Event()

        def on_next(item: Any) -> None:
            got.append(item)
            done.set()

        subscription = rxcs.watch(oplog, pipeline=[{"$project": {"ns": 1}}]).subscribe(on_next)
        oplog.insert("shop", "users", {"_id": 1})
        assert done.wait(10)
        subscription.dispose()
        assert got == [{"_id": got[0]["_id"], "ns": {"db": "shop", "coll": "users"}}]

    def test_bad_stage_fails_at_watch(self, oplog: rxcs.Oplog) -> None:
        """A malformed stage raises PipelineError from watch() itself, naming stage and path."""
        with pytest.raises(rxcs.PipelineError, match=r"^pipeline\.1\.\$project\.total\.\$add\.0\.\$nope: "):
            rxcs.watch(oplog, pipeline=[{"$match": {}}, {"$project": {"total": {"$add": [{"$nope": 1}]}}}])

    def test_runtime_error_fails_the_stream_after_earlier_events(self, oplog: rxcs.Oplog) -> None:
        """An expression failing on one event ends the stream with PipelineError naming the op_id."""
        pipeline = [{"$set": {"ratio": {"$divide": [1, "$fullDocument.n"]}}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1, "n": 2})
            oplog.insert("shop", "users", {"_id": 2, "n": 0})
            assert stream.next(timeout=10)["ratio"] == 0.5
            with pytest.raises(rxcs.PipelineError, match=r"pipeline\.0\.\$set\.ratio\.\$divide: can't \$divide by "
                                                         r"zero \(the event of op_id 2\)"):
                stream.next(timeout=10)


class TestResumeTokenRule:
    def test_removing_id_fails_the_stream(self, oplog: rxcs.Oplog) -> None:
        """$project {_id: 0} compiles, but the first event it produces fails the stream."""
        with rxcs.watch(oplog, "shop", "users", [{"$project": {"_id": 0}}]).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            with pytest.raises(rxcs.PipelineError, match=r"op_id 1 came out of the pipeline with its _id \(the "
                                                         r"resume token\) removed"):
                stream.next(timeout=10)
            assert not stream.alive

    def test_only_events_that_change_id_fail(self, oplog: rxcs.Oplog) -> None:
        """A stage that changes _id for some events only fails when such an event is produced."""
        pipeline = [{"$set": {"_id": {"$cond": [{"$eq": ["$operationType", "delete"]}, "gone", "$_id"]}}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            oplog.delete("shop", "users", 1)
            assert stream.next(timeout=10)["operationType"] == "insert"
            with pytest.raises(rxcs.PipelineError, match=r"op_id 2 came out of the pipeline with its _id \(the "
                                                         r"resume token\) changed"):
                stream.next(timeout=10)

    def test_subscribers_hear_of_it_through_on_error(self, oplog: rxcs.Oplog) -> None:
        """The _id rule reaches a subscriber's on_error, not a dead thread."""
        errors: list[Exception] = []
        failed = threading.Event()

        def on_error(error: Exception) -> None:
            errors.append(error)
            failed.set()

        subscription = rxcs.watch(oplog, pipeline=[{"$replaceWith": "$fullDocument"}]).subscribe(
            lambda _item: None, on_error
        )
        oplog.insert("shop", "users", {"_id": 1})
        assert failed.wait(10)
        subscription.dispose()
        assert isinstance(errors[0], rxcs.PipelineError)

    def test_reading_id_is_fine(self, oplog: rxcs.Oplog) -> None:
        """Stages may read _id (copy it, match on it) without failing the stream."""
        pipeline = [{"$set": {"token": "$_id._data"}}, {"$match": {"_id": {"$exists": True}}}]
        with rxcs.watch(oplog, "shop", "users", pipeline).iterate() as stream:
            oplog.insert("shop", "users", {"_id": 1})
            document = stream.next(timeout=10)
        assert document["token"] == document["_id"]["_data"]


def big_update(oplog: rxcs.Oplog, key: int, size: int) -> int:
    """An update whose pre- and post-images are each about ``size`` bytes."""
    return oplog.update("shop", "files", key, updated_fields={"body": "n" * size},
                        full_document={"_id": key, "body": "n" * size},
                        full_document_before_change={"_id": key, "body": "o" * size})


IMAGES = {"full_document": "whenAvailable", "full_document_before_change": "whenAvailable"}
SPLIT = [{"$changeStreamSplitLargeEvent": {}}]


class TestLargeEvents:
    def test_cap_fails_the_stream_naming_op_id_and_size(self, oplog: rxcs.Oplog) -> None:
        """Over max_event_bytes without the split stage: EventTooLargeError after the events before it."""
        with rxcs.watch(oplog, "shop", "files", max_event_bytes=2000, **IMAGES).iterate() as stream:
            small = big_update(oplog, 1, 10)
            large = big_update(oplog, 2, 1500)
            assert stream.next(timeout=10).op_id == small
            with pytest.raises(rxcs.EventTooLargeError, match=rf"^op_id {large}: the change event is \d+ bytes, "
                                                              r"over max_event_bytes=2000") as caught:
                stream.next(timeout=10)
        assert caught.value.op_id == large
        assert caught.value.size > 3000

    def test_bad_cap_is_refused_at_watch(self, oplog: rxcs.Oplog) -> None:
        """max_event_bytes is checked by watch() itself."""
        with pytest.raises(ValueError, match="max_event_bytes must be positive"):
            rxcs.watch(oplog, max_event_bytes=0)

    def test_split_stage_delivers_fragments_in_order(self, oplog: rxcs.Oplog) -> None:
        """With the split stage an oversize event arrives as fragments; small events stay ChangeEvents."""
        with rxcs.watch(oplog, "shop", "files", SPLIT, max_event_bytes=2000, **IMAGES).iterate() as stream:
            large = big_update(oplog, 1, 1500)
            small = big_update(oplog, 2, 10)
            first, second, third, after = drain(stream, 4)
        fragments = [first, second, third]
        assert [f["splitEvent"] for f in fragments] == [{"fragment": n, "of": 3} for n in (1, 2, 3)]
        assert [(rxcs.ResumeToken.parse(f["_id"]).op_id, rxcs.ResumeToken.parse(f["_id"]).fragment)
                for f in fragments] == [(large, 1), (large, 2), (large, 3)]
        assert first["operationType"] == "update"
        assert {"fullDocument", "fullDocumentBeforeChange", "updateDescription"} == {
            key for f in fragments for key in f if key in ("fullDocument", "fullDocumentBeforeChange",
                                                          "updateDescription")}
        assert isinstance(after, rxcs.ChangeEvent)
        assert after.op_id == small

    @pytest.mark.parametrize(("fragment", "expected"), [(1, [2, 3, None]), (2, [3, None]), (3, [None])])
    def test_resume_from_a_fragment_continues_with_the_next(
        self, oplog: rxcs.Oplog, fragment: int, expected: list[int | None]
    ) -> None:
        """Resuming from fragment k gives fragments k+1.. of the same event, then the next event."""
        with rxcs.watch(oplog, "shop", "files", SPLIT, max_event_bytes=2000, **IMAGES).iterate() as stream:
            big_update(oplog, 1, 1500)
            small = big_update(oplog, 2, 10)
            fragments = drain(stream, 3)
        token = fragments[fragment - 1]["_id"]
        with rxcs.watch(oplog, "shop", "files", SPLIT, max_event_bytes=2000, resume_after=token,
                        **IMAGES).iterate() as stream:
            got = drain(stream, len(expected))
        assert [g["splitEvent"]["fragment"] if isinstance(g, dict) else None for g in got] == expected
        assert got[-1].op_id == small
        assert got[:-1] == fragments[fragment:]

    def test_resume_from_a_fragment_without_the_split_stage_is_refused(self, oplog: rxcs.Oplog) -> None:
        """A fragment token on a stream that does not split the event fails rather than repeat it whole."""
        with rxcs.watch(oplog, "shop", "files", SPLIT, max_event_bytes=2000, **IMAGES).iterate() as stream:
            big_update(oplog, 1, 1500)
            first = stream.next(timeout=10)
        with rxcs.watch(oplog, "shop", "files", resume_after=first["_id"], **IMAGES).iterate() as stream, \
                pytest.raises(rxcs.PipelineError, match="resume token names fragment 1 of the event of op_id 1"):
            stream.next(timeout=10)

    def test_resume_from_a_fragment_of_a_trimmed_entry_is_history_lost(self, memory_oplog: rxcs.Oplog) -> None:
        """A fragment token whose entry was trimmed away cannot give the rest of its event: history lost."""
        with rxcs.watch(memory_oplog, "shop", "files", SPLIT, max_event_bytes=2000, **IMAGES).iterate() as stream:
            big_update(memory_oplog, 1, 1500)
            big_update(memory_oplog, 2, 10)
            first = stream.next(timeout=10)
        memory_oplog.trim(before_op_id=2)
        with pytest.raises(rxcs.ChangeStreamHistoryLost, match="names fragment 1 of op_id 1"):
            rxcs.watch(memory_oplog, "shop", "files", SPLIT, max_event_bytes=2000, resume_after=first["_id"])

    def test_split_after_reshaping_stages(self, oplog: rxcs.Oplog) -> None:
        """The split stage measures what the stages before it made (here: only the post-image kept)."""
        pipeline = [{"$project": {"fullDocument": 1, "operationType": 1}}, *SPLIT]
        with rxcs.watch(oplog, "shop", "files", pipeline, max_event_bytes=2000, **IMAGES).iterate() as stream:
            big_update(oplog, 1, 1500)
            document = stream.next(timeout=10)
        assert "splitEvent" not in document
        assert set(document) == {"_id", "operationType", "fullDocument"}

    def test_split_stage_default_cap_is_16_mib(self, memory_oplog: rxcs.Oplog) -> None:
        """Without max_event_bytes the split stage splits at 16 MiB, as MongoDB does."""
        with rxcs.watch(memory_oplog, "shop", "files", SPLIT, **IMAGES).iterate() as stream:
            big_update(memory_oplog, 1, 7 * 1024 * 1024)  # three fields of 7 MiB: two fit under 16 MiB
            big_update(memory_oplog, 2, 5 * 1024 * 1024)  # 15 MiB in all: not split
            fragments = drain(stream, 2)
            whole = stream.next(timeout=10)
        assert [f["splitEvent"] for f in fragments] == [{"fragment": 1, "of": 2}, {"fragment": 2, "of": 2}]
        assert isinstance(whole, rxcs.ChangeEvent)


class TestPipelineOperator:
    def test_hand_built_chain_splits_too(self, memory_oplog: rxcs.Oplog) -> None:
        """cso.pipeline(stages, max_event_bytes=) splits oversize events in a chain built by hand."""
        got: list[Any] = []
        done = threading.Event()

        def on_next(item: Any) -> None:
            got.append(item)
            if len(got) == 3:
                done.set()

        big_update(memory_oplog, 1, 1500)
        subscription = rxcs.oplog_entries(memory_oplog, after=0).pipe(
            cso.to_change_events(full_document="whenAvailable", full_document_before_change="whenAvailable"),
            cso.pipeline(SPLIT, max_event_bytes=2000),
        ).subscribe(on_next)
        assert done.wait(10)
        subscription.dispose()
        assert [item["splitEvent"]["fragment"] for item in got] == [1, 2, 3]

    def test_hand_built_chain_reshapes(self, memory_oplog: rxcs.Oplog) -> None:
        """cso.pipeline with a reshaping stage delivers documents; with $match only, events."""
        memory_oplog.insert("shop", "users", {"_id": 1})
        got: list[Any] = []
        done = threading.Event()

        def on_next(item: Any) -> None:
            got.append(item)
            done.set()

        subscription = rxcs.oplog_entries(memory_oplog, after=0).pipe(
            cso.to_change_events(), cso.pipeline([{"$project": {"documentKey": 1}}])
        ).subscribe(on_next)
        assert done.wait(10)
        subscription.dispose()
        assert got == [{"_id": got[0]["_id"], "documentKey": {"_id": 1}}]
