"""Prometheus metrics: scraped over real HTTP from a running server and parsed with prometheus_client's parser."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import eventually

import rxcs
import rxcs.metrics
from rxcs.http import create_app
from rxcs.oplog.file import FileOplog

from .helpers import get, running, sse


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class TestLibraryCollector:
    def test_values_match_the_statistics_after_a_known_workload(self, tmp_path: Path) -> None:
        """After 301 appends, retention's trims and a stream that took 120 events: each value equals rxcs's count."""
        # fsync durability: every sync happens inside an append, none between the scrape and the statistics
        with rxcs.open_oplog(tmp_path / "oplog", segment_bytes=4096, retain_entries=100, durability="fsync") as oplog:
            assert isinstance(oplog, FileOplog)
            registry = CollectorRegistry()
            metrics = rxcs.metrics.register(oplog, registry)  # the one line a library user writes
            oplog.insert("shop", "users", {"_id": -1})
            stream = rxcs.watch(oplog, "shop", "users", start_at_operation_time=rxcs.BEGINNING).iterate()
            metrics.track(stream, "billing")
            for i in range(300):
                oplog.insert("shop", "users" if i % 2 else "orders", {"_id": i, "pad": "x" * 40})
                if i % 2 and stream.statistics().delivered < 120:
                    stream.next(timeout=5)  # the stream keeps up, so retention never passes it

            def settled() -> bool:  # retention done: every dropped entry counted, nothing more due
                before = oplog.retention_statistics().entries_trimmed
                time.sleep(0.05)
                kept_now = oplog.retention_statistics().entries_trimmed
                return 0 < kept_now == before == oplog.first_op_id - 1

            assert eventually(settled)
            before = time.time()
            found = samples(generate_latest(registry).decode())
            after = time.time()
            stats, kept = stream.statistics(), oplog.retention_statistics()
            assert found[("rxcs_oplog_appended_entries_total", ())] == 301 == oplog.last_op_id
            assert found[("rxcs_oplog_last_op_id", ())] == oplog.last_op_id
            assert found[("rxcs_oplog_first_op_id", ())] == oplog.first_op_id
            assert found[("rxcs_oplog_entries", ())] == oplog.last_op_id - oplog.first_op_id + 1
            assert found[("rxcs_oplog_segments_rolled_total", ())] == oplog.statistics().segments_rolled
            assert found[("rxcs_oplog_retention_trimmed_entries_total", ())] == kept.entries_trimmed
            assert found[("rxcs_oplog_healthy", ())] == 1
            assert found[("rxcs_oplog_fsync_seconds_count", ())] == oplog.statistics().fsyncs >= 301
            assert found[("rxcs_oplog_fsyncs_total", ())] == oplog.statistics().fsyncs
            billing = (("stream", "billing"),)
            assert found[("rxcs_stream_delivered_events_total", billing)] == stats.delivered == 120
            assert found[("rxcs_stream_filtered_out_entries_total", billing)] == stats.filtered_out
            assert found[("rxcs_stream_lag_entries", billing)] == stats.lag > 0
            handed = stream.resume_token.wall_time_ms / 1000  # the last event handed over was written then
            assert before - handed <= found[("rxcs_stream_lag_seconds", billing)] <= after - handed
            assert found[("rxcs_stream_open", billing)] == 1
            stream.close()

    def test_recoveries_and_damage_are_counted(self, tmp_path: Path) -> None:
        """A torn tail cut when the writer opens counts a recovery; a damaged frame a reader meets, a corruption."""
        path = tmp_path / "oplog"
        with rxcs.open_oplog(path, segment_bytes=4096) as oplog:
            for i in range(100):
                oplog.insert("shop", "users", {"_id": i, "pad": "x" * 100})
        newest, oldest = max(path.glob("*.seg")), min(path.glob("*.seg"))
        with newest.open("ab") as segment:
            segment.write(b"\x00\x01torn")  # a write cut short
        with oldest.open("r+b") as segment:
            segment.seek(60)
            segment.write(b"XXXXXXXX")  # damage inside the first frame
        with rxcs.open_oplog(path) as oplog:
            registry = CollectorRegistry()
            rxcs.metrics.register(oplog, registry)
            oplog.insert("shop", "users", {"_id": "after"})  # the writer opens: the torn tail is cut
            before = samples(generate_latest(registry).decode())
            with pytest.raises(rxcs.OplogCorruptedError), oplog.cursor(0) as cursor:
                cursor.read(10)
            found = samples(generate_latest(registry).decode())
        assert found[("rxcs_oplog_recoveries_total", ())] == 1
        corruptions = ("rxcs_oplog_corruptions_found_total", ())
        assert found[corruptions] == before[corruptions] + 1  # each read that meets the damage counts

    def test_counters_never_go_back_when_streams_go_away(self) -> None:
        """A tracked stream that is closed and collected leaves its counts in its name's totals; a closed oplog
        scrapes as unhealthy rather than failing the scrape."""
        oplog = rxcs.open_oplog(":memory:")
        registry = CollectorRegistry()
        metrics = rxcs.metrics.register(oplog, registry)
        for i in range(5):
            oplog.insert("shop", "users", {"_id": i})
        stream = rxcs.watch(oplog, start_at_operation_time=rxcs.BEGINNING).iterate()
        metrics.track(stream, "audit")
        for _ in range(5):
            stream.next(timeout=5)
        audit = (("stream", "audit"),)
        assert samples(generate_latest(registry).decode())[("rxcs_stream_delivered_events_total", audit)] == 5
        stream.close()
        del stream
        gc.collect()
        after = samples(generate_latest(registry).decode())
        assert after[("rxcs_stream_delivered_events_total", audit)] == 5
        assert after[("rxcs_stream_open", audit)] == 0
        oplog.close()
        assert samples(generate_latest(registry).decode())[("rxcs_oplog_healthy", ())] == 0

    def test_named_consumers_and_groups_by_name(self, tmp_path: Path) -> None:
        """Each consumer the oplog keeps a checkpoint for: its position, lag, last commit and, for a group, its
        members; the values are those rxcs.list_consumers gives."""
        oplog = rxcs.open_oplog(str(tmp_path / "oplog"))
        registry = CollectorRegistry()
        rxcs.metrics.register(oplog, registry)
        for i in range(10):
            oplog.insert("shop", "orders", {"_id": i})
        before = time.time()
        with rxcs.watch(oplog, "shop", "orders", consumer="billing", commit="manual",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as stream:
            for _ in range(4):
                stream.next(timeout=5)
            stream.commit()
        with rxcs.watch(oplog, "shop", "orders", group="audit", member="w1",
                        start_at_operation_time=rxcs.BEGINNING).iterate() as member:
            member.next(timeout=5)
            found = samples(generate_latest(registry).decode())
            listed = {info.name: info for info in rxcs.list_consumers(oplog)}
        billing = (("consumer", "billing"), ("kind", "consumer"))
        assert found[("rxcs_consumer_position_op_id", billing)] == 4
        assert found[("rxcs_consumer_lag_entries", billing)] == 6
        assert found[("rxcs_consumer_history_lost", billing)] == 0
        assert before - 1 <= found[("rxcs_consumer_last_commit_timestamp_seconds", billing)] <= time.time() + 1
        assert found[("rxcs_group_members", (("consumer", "audit"),))] == 1
        assert found[("rxcs_consumer_lag_entries", (("consumer", "audit"), ("kind", "group")))] == (
            listed["audit"].lag_entries
        )
        oplog.close()

    def test_names_are_bounded(self) -> None:
        """More than MAX_STREAM_NAMES distinct names is refused: one label value per stream would grow forever."""
        with rxcs.open_oplog(":memory:") as oplog:
            metrics = rxcs.metrics.register(oplog, CollectorRegistry())
            streams = [rxcs.watch(oplog).iterate() for _ in range(2)]
            for i in range(rxcs.metrics.MAX_STREAM_NAMES):
                metrics.track(streams[0], f"role{i}")
            metrics.track(streams[1], "role0")  # a known name: fine
            with pytest.raises(ValueError, match="stream names"):
                metrics.track(streams[1], "one-more")
            for stream in streams:
                stream.close()


class TestServerMetrics:
    def test_scrape_of_a_running_server(self, tmp_path: Path) -> None:
        """GET /metrics over HTTP, parsed: the oplog's values, the watchers' delivered events and bytes sent,
        refused requests; without the token it is refused like the API."""
        with rxcs.open_oplog(tmp_path / "oplog") as oplog:
            app = create_app(oplog, token="s3cret")
            auth = {"Authorization": "Bearer s3cret"}
            with running(app) as served:
                assert get(f"{served.url}/metrics", timeout=10).status_code == 401
                first = get(f"{served.url}/metrics", headers=auth, timeout=10)
                assert first.status_code == 200
                assert first.headers["content-type"].startswith("text/plain")
                with sse(f"{served.url}/watch", headers=auth, db="shop") as reader:
                    reader.frame()
                    for i in range(5):
                        oplog.insert("shop", "users", {"_id": i})
                    events = [reader.event() for _ in range(5)]
                    found: dict[Any, float] = samples(get(f"{served.url}/metrics", headers=auth, timeout=10).text)
                    stats = app.statistics()
            assert len(events) == 5
            assert found[("rxcs_oplog_last_op_id", ())] == 5
            assert found[("rxcs_server_watchers", ())] == 1
            assert found[("rxcs_server_served_streams_total", ())] == stats.served == 1
            assert found[("rxcs_server_refused_requests_total", ())] == stats.refused >= 1
            assert found[("rxcs_server_sent_bytes_total", ())] == stats.sent_bytes > 0
            assert found[("rxcs_stream_delivered_events_total", (("stream", "http"),))] == 5

    def test_a_scraper_without_a_token_needs_no_client_header_but_other_sites_are_refused(
        self, tmp_path: Path
    ) -> None:
        """Token-less, /metrics answers a plain GET (as Prometheus sends it), yet refuses a page of another site
        and a foreign Host, as the API does."""
        with rxcs.open_oplog(tmp_path / "oplog") as oplog:
            oplog.insert("shop", "users", {"_id": 1})
            app = create_app(oplog, allowed_hosts=["127.0.0.1", "localhost"])
            with running(app) as served:
                plain = httpx.get(f"{served.url}/metrics", timeout=10)
                cross_site = httpx.get(f"{served.url}/metrics", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
                rebound = httpx.get(f"{served.url}/metrics", headers={"Host": "attacker.example"}, timeout=10)
                watch = httpx.get(f"{served.url}/oplog", timeout=10)
        assert plain.status_code == 200
        assert samples(plain.text)[("rxcs_oplog_last_op_id", ())] == 1
        assert cross_site.status_code == 403
        assert rebound.status_code == 421
        assert watch.status_code == 403  # the API still wants the program's header

