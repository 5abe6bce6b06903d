"""Stages that copy fields by reference cannot make an event's output grow without bound.

``{"$set": {"a": ["$$ROOT", "$$ROOT"]}}`` doubles what an event would
serialize to while costing nothing to evaluate (its output shares the
input); thirty such stages in a one-kilobyte request would make every event
2^30 times its size when written or walked. As MongoDB refuses documents
over 16 MiB, a pipeline that can copy fields this often has each stage's
output measured (shared parts once), and one over 16 MiB fails the stream.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import rxcs
from rxcs.errors import PipelineError
from rxcs.pipeline import compile_pipeline
from rxcs.pipeline._amplification import expanded_size

DOUBLING = {"$set": {"copies": ["$$ROOT", "$$ROOT"]}}


def event(data: Any = "x") -> dict[str, Any]:
    return {"_id": {"_data": "82ab"}, "operationType": "insert", "fullDocument": {"_id": 1, "data": data}}


class TestExpandedSize:
    def test_shared_parts_count_every_time_they_appear(self) -> None:
        """The size is that of the document written out: a part shared twice counts twice."""
        part = {"text": "x" * 1000}
        assert expanded_size({"a": part, "b": part}) >= 2 * expanded_size({"a": part}) - 16

    def test_a_doubling_dag_is_measured_without_expanding_it(self) -> None:
        """Sixty levels of doubling (2^60 copies) are measured at once: each shared part is visited once."""
        document: Any = {"leaf": "x"}
        for _ in range(60):
            document = {"left": document, "right": document}
        began = time.monotonic()
        assert expanded_size(document) > 2**60
        assert time.monotonic() - began < 0.5


class TestPipelines:
    def test_thirty_doubling_stages_fail_the_event_within_a_moment(self) -> None:
        """A pipeline whose output would be 2^30 times the event: PipelineError naming the stage, promptly."""
        run = compile_pipeline([DOUBLING] * 30).run
        began = time.monotonic()
        with pytest.raises(PipelineError, match=r"pipeline\.\d+\.\$set: .*16 MiB"):
            run(event())
        assert time.monotonic() - began < 1.0

    def test_a_few_copies_of_a_small_event_pass(self) -> None:
        """Copying is fine while the output stays under 16 MiB."""
        result = compile_pipeline([DOUBLING] * 5).run(event())
        assert result is not None
        assert expanded_size(result) < 16 * 1024 * 1024

    def test_through_watch_the_stream_fails_with_the_pipeline_error(self) -> None:
        """The stream delivers what came before, then fails; it does not hang the tailer."""
        with rxcs.open_oplog(":memory:") as oplog:
            with rxcs.watch(oplog, "shop", pipeline=[DOUBLING] * 40).iterate() as stream:
                oplog.insert("shop", "users", {"_id": 1})
                with pytest.raises(PipelineError, match="16 MiB"):
                    stream.next(timeout=10)

    def test_stages_that_wrap_the_document_again_and_again_stop_at_200_levels(self) -> None:
        """{$project: {a: $$ROOT}} a thousand times nests the event 1,000 deep: refused past 200, no RecursionError."""
        run = compile_pipeline([{"$project": {"wrapped": "$$ROOT"}}] * 1000).run
        with pytest.raises(PipelineError, match="nested more than 200 levels"):
            run(event())
