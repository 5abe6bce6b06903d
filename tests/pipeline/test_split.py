"""Event size caps and $changeStreamSplitLargeEvent, on documents (no stream)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import rxcs
from rxcs.pipeline import DEFAULT_MAX_EVENT_BYTES, compile_pipeline, event_limit, event_size

TOKEN = rxcs.ResumeToken(uuid.UUID(int=5), 42)


def event(**fields: Any) -> dict[str, Any]:
    return {"_id": TOKEN.to_document(), "operationType": "update", "ns": {"db": "shop", "coll": "users"}, **fields}


class TestEventSize:
    def test_size_is_the_msgpack_length(self) -> None:
        """The size of a document is its msgpack encoding's length."""
        assert event_size({"a": "x" * 100}) == 1 + 2 + 2 + 100

    def test_values_msgpack_cannot_carry_are_measured_too(self) -> None:
        """Decimals, UUIDs, sets and naive datetimes are measured rather than refused."""
        document = {"d": Decimal("1.5"), "u": uuid.UUID(int=1), "s": {1, 2}, "t": datetime(2024, 1, 1),
                    "aware": datetime(2024, 1, 1, tzinfo=UTC)}
        assert event_size(document) > 0


class TestLimit:
    def test_no_cap_and_no_split_checks_nothing(self) -> None:
        """Without a cap or the split stage there is no check at all (the hot path pays nothing)."""
        assert event_limit(None, split=False) is None

    def test_split_alone_caps_at_mongodb_s_16_mib(self) -> None:
        """With the split stage and no cap, the cap is 16 MiB, as in MongoDB."""
        fit = event_limit(None, split=True)
        assert fit is not None
        small = event(fullDocument={"x": "y" * 1000})
        assert fit(small) == [small]
        assert DEFAULT_MAX_EVENT_BYTES == 16 * 1024 * 1024

    def test_under_the_cap_passes_the_document_itself(self) -> None:
        """An event within the cap comes back as the very same document."""
        fit = event_limit(10_000, split=False)
        assert fit is not None
        document = event(fullDocument={"a": 1})
        (only,) = fit(document)
        assert only is document

    def test_over_the_cap_without_split_names_op_id_and_size(self) -> None:
        """Without the split stage an oversize event raises EventTooLargeError with op_id and size."""
        fit = event_limit(1000, split=False)
        assert fit is not None
        document = event(fullDocument={"a": "x" * 2000})
        with pytest.raises(rxcs.EventTooLargeError, match=r"^op_id 42: the change event is \d+ bytes, over "
                                                          r"max_event_bytes=1000; end the pipeline with") as caught:
            fit(document)
        assert caught.value.op_id == 42
        assert caught.value.size == event_size(document)

    @pytest.mark.parametrize(("cap", "error"), [(0, ValueError), (-5, ValueError), ("big", TypeError),
                                                (True, TypeError), (1.5, TypeError)])
    def test_bad_cap_is_refused(self, cap: Any, error: type[Exception]) -> None:
        """A cap must be a positive int."""
        with pytest.raises(error, match="max_event_bytes"):
            event_limit(cap, split=False)


class TestSplit:
    CAP = 3000

    def fragments(self, document: dict[str, Any]) -> list[Any]:
        fit = event_limit(self.CAP, split=True)
        assert fit is not None
        return fit(document)

    def test_fragments_carry_split_event_and_their_own_tokens(self) -> None:
        """Each fragment has splitEvent {fragment, of} and a resume token naming its fragment."""
        document = event(fullDocument={"a": "x" * 2000}, fullDocumentBeforeChange={"a": "y" * 2000})
        pieces = self.fragments(document)
        assert [piece["splitEvent"] for piece in pieces] == [{"fragment": 1, "of": 2}, {"fragment": 2, "of": 2}]
        tokens = [rxcs.ResumeToken.parse(piece["_id"]) for piece in pieces]
        assert [(t.op_id, t.fragment) for t in tokens] == [(42, 1), (42, 2)]
        assert tokens[0] > TOKEN
        assert tokens[0] < tokens[1]

    def test_fragments_hold_every_field_once_each_under_the_cap(self) -> None:
        """Together the fragments hold each top-level field of the event exactly once, each under the cap."""
        document = event(fullDocument={"a": "x" * 2000}, fullDocumentBeforeChange={"a": "y" * 2000},
                         updateDescription={"updatedFields": {"a": "x" * 1500}})
        pieces = self.fragments(document)
        fields = [key for piece in pieces for key in piece if key not in ("_id", "splitEvent")]
        assert sorted(fields) == sorted(key for key in document if key != "_id")
        assert all(event_size(piece) <= self.CAP for piece in pieces)
        rebuilt = {key: value for piece in pieces for key, value in piece.items() if key not in ("_id", "splitEvent")}
        assert rebuilt == {key: value for key, value in document.items() if key != "_id"}

    def test_smallest_fields_come_first(self) -> None:
        """Fields are packed smallest first, so the first fragment carries the event's context."""
        document = event(fullDocument={"a": "x" * 2000}, fullDocumentBeforeChange={"a": "y" * 2500})
        first, second = self.fragments(document)
        assert {"operationType", "ns", "fullDocument"} <= set(first)
        assert "fullDocumentBeforeChange" in second

    def test_one_field_over_the_cap_cannot_be_split(self) -> None:
        """A single top-level field larger than the cap is an EventTooLargeError naming the field."""
        document = event(fullDocument={"a": "x" * 5000})
        with pytest.raises(rxcs.EventTooLargeError, match=re.escape("its field 'fullDocument' alone is")):
            self.fragments(document)

    def test_split_needs_a_resume_token(self) -> None:
        """A document whose _id is not a resume token cannot be split into resumable fragments."""
        with pytest.raises(rxcs.PipelineError, match="_id is not a resume token"):
            self.fragments({"_id": 1, "a": "x" * 2000, "b": "y" * 2000})


class TestSplitStage:
    def test_split_stage_marks_the_pipeline(self) -> None:
        """A pipeline ending with the split stage reports split=True and does not reshape by itself."""
        compiled = compile_pipeline([{"$match": {}}, {"$changeStreamSplitLargeEvent": {}}])
        assert compiled.split is True
        assert compiled.reshapes is False
        document = event()
        assert compiled.run(document) is document

    @pytest.mark.parametrize(
        ("stages", "message"),
        [
            ([{"$changeStreamSplitLargeEvent": {}}, {"$match": {}}],
             "pipeline.0.$changeStreamSplitLargeEvent: must be the last stage"),
            ([{"$changeStreamSplitLargeEvent": {"x": 1}}],
             "pipeline.0.$changeStreamSplitLargeEvent: expected an empty document"),
            ([{"$changeStreamSplitLargeEvent": {}}, {"$changeStreamSplitLargeEvent": {}}],
             "pipeline.0.$changeStreamSplitLargeEvent: must be the last stage"),
        ],
    )
    def test_bad_split_stage(self, stages: list[dict[str, Any]], message: str) -> None:
        """The split stage takes {} and must be the last (and so the only) one."""
        with pytest.raises(rxcs.PipelineError, match=re.escape(message)):
            compile_pipeline(stages)
