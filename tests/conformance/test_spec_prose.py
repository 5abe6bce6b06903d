"""The prose tests of MongoDB's change-stream specification, ported to rxcs and run on every oplog backend.

From ``source/change-streams/tests/README.md`` ("Prose Tests") in
``mongodb/specifications`` at commit 92b3c0b9287bfba1b0ec4084300858d05c654f8c.
A test named ``test_prose_<n>_...`` ports prose test n; the prose tests left
out (3, 4, 6 and 8: server errors, aggregate commands, server selection,
killCursors) are in ``spec_catalog.LEFT_OUT`` with their reasons.

Where the prose speaks of batches, rxcs's counterpart is what the stream has
read and not yet handed over (``statistics().buffered``); where it speaks of
``getResumeToken``, ``ChangeStream.resume_token``.
"""

from __future__ import annotations

import pytest
from support import eventually

import rxcs
from rxcs.oplog import Change

USERS = ("shop", "users")
ONLY_INSERTS = [{"$match": {"operationType": "insert"}}]



def inserted_token(oplog: rxcs.Oplog, document_id: object) -> rxcs.ResumeToken:
    """The resume token of the insert of ``document_id``, as a stream returned it."""
    with rxcs.watch(oplog, *USERS).iterate() as stream:
        oplog.insert(*USERS, {"_id": document_id})
        return stream.next(timeout=10).id


class TestResumeTokenTracking:
    def test_prose_1_the_stream_tracks_the_last_seen_resume_token(self, oplog: rxcs.Oplog) -> None:
        """Prose 1: after each event, resume_token is that event's _id."""
        with rxcs.watch(oplog, *USERS).iterate() as stream:
            for n in range(3):
                oplog.insert(*USERS, {"_id": n})
            for _ in range(3):
                event = stream.next(timeout=10)
                assert stream.resume_token == event.id
                assert str(stream.resume_token) == event.to_document()["_id"]["_data"]

    def test_prose_11_an_empty_or_finished_batch_gives_the_post_batch_token(self, oplog: rxcs.Oplog) -> None:
        """Prose 11: once everything read was returned or filtered out, resume_token is the position read to."""
        with rxcs.watch(oplog, *USERS, ONLY_INSERTS, max_await_time=0.05).iterate() as stream:
            oplog.insert(*USERS, {"_id": 1})
            assert stream.next(timeout=10).document_key == {"_id": 1}
            for n in range(5):
                oplog.delete(*USERS, n)
            assert eventually(lambda: stream.try_next() is None and stream.resume_token.op_id == oplog.last_op_id)
            token = stream.resume_token
        assert token.high_water
        oplog.insert(*USERS, {"_id": "next"})
        with rxcs.watch(oplog, *USERS, ONLY_INSERTS, resume_after=token).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": "next"}
            assert resumed.statistics().filtered_out == 0

    def test_prose_13_inside_a_batch_the_token_is_the_previous_documents(self, oplog: rxcs.Oplog) -> None:
        """Prose 13: with events read and not all returned, resume_token is the last returned event's _id."""
        with rxcs.watch(oplog, *USERS).iterate() as stream:
            oplog.append_many([Change.insert(*USERS, {"_id": n}) for n in range(3)])
            first = stream.next(timeout=10)
            assert eventually(lambda: stream.statistics().buffered == 2)
            assert stream.resume_token == first.id
            second = stream.next(timeout=10)
            assert stream.resume_token == second.id

    @pytest.mark.parametrize("option", ["resume_after", "start_after"])
    def test_prose_14_before_any_iteration_the_token_is_the_start_option(
        self, oplog: rxcs.Oplog, option: str
    ) -> None:
        """Prose 14: a stream started with resume_after or start_after, with changes to return but not iterated
        yet, gives that token (a resumed stream reads its first batch when first asked, not before)."""
        token = inserted_token(oplog, 1)
        oplog.append_many([Change.insert(*USERS, {"_id": n}) for n in (2, 3)])
        with rxcs.watch(oplog, *USERS, **{option: token}).iterate() as stream:
            assert stream.resume_token == token
            assert stream.next(timeout=10).document_key == {"_id": 2}

    def test_prose_14_without_a_start_token_the_token_is_the_start_position(self, oplog: rxcs.Oplog) -> None:
        """Prose 14, where rxcs differs: with neither option MongoDB gives no token; rxcs gives the start position,
        from which a resumed stream returns every event the first had not returned."""
        oplog.insert(*USERS, {"_id": 0})
        with rxcs.watch(oplog, *USERS, start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            oplog.insert(*USERS, {"_id": 1})
            token = stream.resume_token
        assert token.op_id == 0
        with rxcs.watch(oplog, *USERS, resume_after=token).iterate() as resumed:
            assert [resumed.next(timeout=10).document_key["_id"] for _ in range(2)] == [0, 1]


class TestErrorsAndEmptyBatches:
    @pytest.mark.parametrize("stage", [{"$project": {"_id": 0}}, {"$unset": "_id"}, {"$set": {"_id": "mine"}}])
    def test_prose_2_an_event_without_its_resume_token_is_an_error(
        self, oplog: rxcs.Oplog, stage: dict[str, object]
    ) -> None:
        """Prose 2: an event that comes without its resume token (the pipeline removed or changed _id) fails
        the stream with PipelineError, naming the op_id; it is not handed out."""
        with rxcs.watch(oplog, *USERS, [stage]).iterate() as stream:
            op_id = oplog.insert(*USERS, {"_id": 1})
            with pytest.raises(rxcs.PipelineError, match=f"op_id {op_id}"):
                stream.next(timeout=10)

    def test_prose_7_a_stream_with_nothing_to_return_yet_stays_open(self, oplog: rxcs.Oplog) -> None:
        """Prose 7: a stream whose first read found nothing is alive, and returns the change made afterwards."""
        with rxcs.watch(oplog, *USERS, max_await_time=0.05).iterate() as stream:
            assert stream.try_next() is None
            assert stream.alive
            oplog.insert(*USERS, {"_id": 1})
            assert stream.next(timeout=10).document_key == {"_id": 1}


class TestResumingAStartAfterStream:
    def invalidated(self, oplog: rxcs.Oplog) -> rxcs.ResumeToken:
        """The token of the invalidate that ends a stream on the users collection when it is dropped."""
        with rxcs.watch(oplog, *USERS).iterate() as stream:
            oplog.drop_collection(*USERS)
            stream.next(timeout=10)
            invalidate = stream.next(timeout=10)
        assert invalidate.operation_type == "invalidate"
        return invalidate.id

    def test_prose_17_with_nothing_received_it_resumes_with_start_after(self, oplog: rxcs.Oplog) -> None:
        """Prose 17: a start_after stream that has returned nothing still holds the invalidate's token, which
        only start_after takes (resume_after refuses an invalidate), and start_after reaches what comes next."""
        invalidate = self.invalidated(oplog)
        with rxcs.watch(oplog, *USERS, start_after=invalidate, max_await_time=0.05).iterate() as stream:
            assert stream.try_next() is None
            token = stream.resume_token
        assert token == invalidate
        with pytest.raises(rxcs.InvalidResumeToken):
            rxcs.watch(oplog, *USERS, resume_after=token).iterate().close()
        oplog.insert(*USERS, {"_id": "again"})
        with rxcs.watch(oplog, *USERS, start_after=token).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": "again"}

    def test_prose_18_with_a_result_received_it_resumes_with_resume_after(self, oplog: rxcs.Oplog) -> None:
        """Prose 18: once a start_after stream returned an event, its token is that event's, which resume_after
        takes, and the resumed stream continues after it."""
        invalidate = self.invalidated(oplog)
        oplog.insert(*USERS, {"_id": 1})
        oplog.insert(*USERS, {"_id": 2})
        with rxcs.watch(oplog, *USERS, start_after=invalidate).iterate() as stream:
            first = stream.next(timeout=10)
            token = stream.resume_token
        assert token == first.id
        with rxcs.watch(oplog, *USERS, resume_after=token).iterate() as resumed:
            assert resumed.next(timeout=10).document_key == {"_id": 2}


class TestLargeEvents:
    BIG = 10 * 1024 * 1024

    def split_update(self, oplog: rxcs.Oplog, *, record_pre_image: bool) -> list[dict[str, object]]:
        """Prose 19's steps: a 10 MB document, a stream with fullDocumentBeforeChange=required and
        $changeStreamSplitLargeEvent, an update setting the field to another 10 MB value; the splitEvent fields."""
        oplog.create_collection(*USERS, {"changeStreamPreAndPostImages": {"enabled": True}})
        oplog.insert(*USERS, {"_id": 1, "value": "q" * self.BIG})
        pipeline = [{"$changeStreamSplitLargeEvent": {}}]
        with rxcs.watch(oplog, *USERS, pipeline, full_document_before_change="required").iterate() as stream:
            pre = {"full_document_before_change": {"_id": 1, "value": "q" * self.BIG}} if record_pre_image else {}
            oplog.update(*USERS, 1, updated_fields={"value": "z" * self.BIG}, **pre)
            fragments = [stream.next(timeout=30) for _ in range(2)]
        return [fragment["splitEvent"] for fragment in fragments]

    def test_prose_19_large_events_are_split(self, oplog: rxcs.Oplog) -> None:
        """Prose 19: the update event, over 16 MB with its pre-image, arrives in two fragments, in order
        (here the producer records the pre-image)."""
        assert self.split_update(oplog, record_pre_image=True) == [{"fragment": 1, "of": 2}, {"fragment": 2, "of": 2}]

    def test_prose_19_with_images_the_collection_keeps(self, oplog: rxcs.Oplog) -> None:
        """Prose 19 as written: the pre-image comes from the collection's changeStreamPreAndPostImages, not the
        producer."""
        assert self.split_update(oplog, record_pre_image=False) == [
            {"fragment": 1, "of": 2}, {"fragment": 2, "of": 2},
        ]
