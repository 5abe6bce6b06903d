"""A stream's statistics are right from its start, and its end is told once, at the right level."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

import rxcs

from .conftest import eventually

DELETES = [{"$match": {"operationType": "delete"}}]


def inserts(oplog: rxcs.Oplog, count: int) -> None:
    oplog.append_many([rxcs.Change.insert("shop", "users", {"_id": i}) for i in range(count)])


class TestStatisticsFromTheStart:
    def test_a_pulled_stream_counts_what_it_read_past_before_any_event(self, oplog: rxcs.Oplog) -> None:
        """iterate(): 500 entries it has not read are lag; once read past with no event, they are filtered out."""
        with rxcs.watch(oplog, "shop", "users", DELETES, max_await_time=0.05).iterate() as stream:
            inserts(oplog, 500)
            before = stream.statistics()
            assert (before.lag, before.filtered_out, before.delivered) == (500, 0, 0)
            assert stream.try_next() is None
            read = stream.statistics()
            assert (read.lag, read.filtered_out, read.delivered) == (0, 500, 0)
            oplog.delete("shop", "users", 1)
            assert stream.next(timeout=10).operation_type == "delete"
            after = stream.statistics()
            assert (after.lag, after.filtered_out, after.delivered) == (0, 500, 1)

    def test_a_fed_stream_counts_what_the_tailer_read_past_before_any_event(self, oplog: rxcs.Oplog) -> None:
        """aiterate(): the tailer reads the 500 entries at once; the stream says so before it delivers anything."""

        async def run() -> None:
            async with rxcs.watch(oplog, "shop", "users", DELETES).aiterate() as stream:
                inserts(oplog, 500)
                for _ in range(500):
                    if stream.statistics().filtered_out == 500:
                        break
                    await asyncio.sleep(0.01)
                statistics = stream.statistics()
                assert (statistics.lag, statistics.filtered_out, statistics.delivered) == (0, 500, 0)

        asyncio.run(run())

    def test_dropped_events_are_counted_once(self, memory_oplog: rxcs.Oplog) -> None:
        """Under drop_newest, an event that did not fit is dropped, not also filtered out; everything adds up."""
        with rxcs.watch(memory_oplog, overflow="drop_newest", buffer_size=10).iterate() as stream:
            inserts(memory_oplog, 1000)
            assert eventually(lambda: stream.statistics().lag == 0 and stream.statistics().dropped > 0)
            statistics = stream.statistics()
            assert statistics.filtered_out == 0
            assert statistics.buffered == 10
            assert statistics.dropped == 990
            got = []
            while (event := stream.try_next()) is not None:
                got.append(event.document_key["_id"])
            assert got == list(range(10))
            assert stream.statistics().delivered + stream.statistics().dropped == 1000


class TestEndingsAreToldOnce:
    def test_closing_an_oplog_under_a_thousand_streams_is_one_log_line(self, memory_oplog: rxcs.Oplog) -> None:
        """An orderly close ends every stream, handled or not, with one line for the oplog and none per stream."""
        errors: list[Exception] = []
        with structlog.testing.capture_logs() as logs:
            quiet = [rxcs.watch(memory_oplog, "shop").subscribe(lambda _: None) for _ in range(500)]
            handled = [rxcs.watch(memory_oplog, "web").subscribe(lambda _: None, errors.append) for _ in range(500)]
            inserts(memory_oplog, 3)
            memory_oplog.close()
            assert eventually(lambda: len(errors) == 500)
            for subscription in [*quiet, *handled]:
                subscription.dispose()
        assert all(isinstance(error, rxcs.OplogClosedError) for error in errors)
        closed = [entry for entry in logs if entry["event"] == "oplog closed under its streams"]
        assert len(closed) == 1
        assert closed[0]["streams"] == 1000
        assert [entry for entry in logs if entry["log_level"] in ("error", "warning")] == []

    def test_an_error_the_subscriber_handles_is_not_logged_as_an_error(self, memory_oplog: rxcs.Oplog) -> None:
        """A stream failing (a required image missing) reaches on_error; nothing is logged at error for it."""
        errors: list[Exception] = []
        with structlog.testing.capture_logs() as logs:
            subscription = rxcs.watch(memory_oplog, full_document="required").subscribe(lambda _: None, errors.append)
            memory_oplog.update("shop", "users", 1, updated_fields={"a": 1})
            assert eventually(lambda: bool(errors))
            subscription.dispose()
        assert isinstance(errors[0], rxcs.MissingImageError)
        assert [entry for entry in logs if entry["log_level"] == "error"] == []

    def test_an_error_nobody_handles_is_logged_once(self, memory_oplog: rxcs.Oplog) -> None:
        """Without on_error, the stream's failure is logged once, at error, naming the stream and the error."""
        with structlog.testing.capture_logs() as logs:
            subscription = rxcs.watch(memory_oplog, "shop", full_document="required").subscribe(lambda _: None)
            memory_oplog.update("shop", "users", 1, updated_fields={"a": 1})
            assert eventually(lambda: any(entry["log_level"] == "error" for entry in logs))
            subscription.dispose()
        failures: list[dict[str, Any]] = [entry for entry in logs if entry["log_level"] == "error"]
        assert len(failures) == 1
        assert failures[0]["stream"] == "shop"
        assert "MissingImageError" in failures[0]["error"]
