"""Prometheus metrics for an oplog, its streams, its named consumers and ``rxcs serve`` (the ``rxcs[metrics]`` extra).

One line registers an oplog's collector in a registry (the default one
unless ``registry=`` says otherwise); streams are added under a name the
caller chooses, so the labels stay as few as the names, however many
streams come and go::

    import rxcs.metrics
    metrics = rxcs.metrics.register(oplog)                 # prometheus_client's default REGISTRY
    stream = rxcs.watch(oplog, "shop", "orders").iterate()
    metrics.track(stream, "billing")                       # rxcs_stream_*{stream="billing"}

Nothing is counted on the hot path: every value is read from the
statistics rxcs keeps anyway (``statistics()``, ``retention_statistics()``,
the op_id range, the consumers' checkpoints) when Prometheus scrapes.
Named consumers and groups are labelled by their names: names an operator
gives, each a checkpoint the oplog keeps. A stream that is closed and
garbage-collected leaves its last counts in its name's totals, so counters
never go back.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Protocol, final

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(f"rxcs.metrics needs prometheus_client ({exc}): install rxcs[metrics]") from exc

from rxcs.consumers import list_consumers
from rxcs.oplog.base import Oplog
from rxcs.oplog.health import check_oplog

__all__ = ["HEALTH_INTERVAL", "MAX_STREAM_NAMES", "OplogCollector", "register"]

MAX_STREAM_NAMES: Final = 100
"""Stream names one collector labels at most: a bound on the series, whatever callers pass."""

HEALTH_INTERVAL: Final = 10.0
"""Seconds between two health checks of the ``rxcs_oplog_healthy`` gauge, however often Prometheus scrapes."""

_COUNTED: Final = ("delivered", "filtered_out", "dropped", "pauses")


class _Counted(Protocol):
    def statistics(self) -> Any: ...


@final
class OplogCollector(Collector):
    """Collects an oplog's metrics, its tracked streams' by name, and (in ``rxcs serve``) the server's."""

    def __init__(self, oplog: Oplog) -> None:
        self._oplog = oplog
        self._lock = threading.Lock()
        self._streams: dict[str, weakref.WeakKeyDictionary[Any, dict[str, int]]] = {}
        self._retired: dict[str, dict[str, int]] = {}
        self._server: Callable[[], Any] | None = None
        self._health: tuple[float, int] | None = None  # (monotonic time, 1 or 0) of the last health check

    def track(self, stream: _Counted, name: str) -> None:
        """Count ``stream`` (a ``ChangeStream`` or ``AsyncChangeStream``) under ``name``, the label value."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a stream's metrics name must be a non-empty string, not {name!r}")
        if not callable(getattr(stream, "statistics", None)):
            raise TypeError(f"track() needs a ChangeStream or AsyncChangeStream, not {type(stream).__name__}")
        with self._lock:
            if name not in self._streams and len(self._streams) >= MAX_STREAM_NAMES:
                raise ValueError(
                    f"already {MAX_STREAM_NAMES} stream names: name streams by their role, not one name each"
                )
            streams = self._streams.setdefault(name, weakref.WeakKeyDictionary())
            if stream in streams:
                return
            seen = streams[stream] = dict.fromkeys(_COUNTED, 0)
        # once the stream is collected, its counts at the last scrape stay in its name's totals
        weakref.finalize(stream, self._retire, name, seen)

    def watch_server(self, statistics: Callable[[], Any]) -> None:
        """Also collect a server's ``statistics()`` (``rxcs serve`` calls this)."""
        self._server = statistics

    def collect(self) -> Iterator[Metric]:
        yield from self._oplog_metrics()
        yield from self._stream_metrics()
        if not self._oplog.closed:
            yield from self._consumer_metrics()
        if self._server is not None:
            yield from self._server_metrics(self._server())

    def _oplog_metrics(self) -> Iterator[Metric]:
        oplog = self._oplog
        if oplog.closed:  # nothing more to read from it
            yield _gauge("rxcs_oplog_healthy", "1 when the oplog is open, reachable and readable", 0)
            return
        first, last = oplog.first_op_id, oplog.last_op_id
        yield _gauge("rxcs_oplog_first_op_id", "op_id of the oldest retained entry", first)
        yield _gauge("rxcs_oplog_last_op_id", "op_id of the newest entry", last)
        yield _gauge("rxcs_oplog_entries", "entries retained", max(0, last - first + 1))
        # op_ids start at 1 and have no gaps: the newest is the count of entries ever appended
        yield _counter("rxcs_oplog_appended_entries", "entries ever appended to the oplog", last)
        yield _gauge("rxcs_oplog_healthy", "1 when the oplog is open, reachable and readable", self._healthy())
        described = oplog.describe()
        if isinstance(described.get("bytes"), int):
            yield _gauge("rxcs_oplog_size_bytes", "bytes of the oplog's segments", described["bytes"])
        if isinstance(described.get("segments"), int):
            yield _gauge("rxcs_oplog_segments", "segment files", described["segments"])
        statistics = getattr(oplog, "statistics", None)
        if callable(statistics):
            stats = statistics()
            yield _counter("rxcs_oplog_fsyncs", "fsyncs by this process", stats.fsyncs)
            yield _counter("rxcs_oplog_segments_rolled", "segments started by this process", stats.segments_rolled)
            yield _counter("rxcs_oplog_read_bytes", "bytes read from segments by this process", stats.bytes_read)
            yield _counter("rxcs_oplog_recoveries", "torn tails this process's writer cut at open", stats.recoveries)
            yield _counter(
                "rxcs_oplog_corruptions_found", "reads in this process that met a damaged frame", stats.corruptions
            )
        timings = getattr(oplog, "fsync_timings", None)
        if callable(timings):
            buckets, total = timings()
            yield HistogramMetricFamily(
                "rxcs_oplog_fsync_seconds", "how long this process's syncs of segments took",
                buckets=[("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in buckets],
                sum_value=total,
            )
        retention = getattr(oplog, "retention_statistics", None)
        if callable(retention):
            kept = retention()
            yield _counter("rxcs_oplog_retention_trims", "trims retention made that removed entries", kept.trims)
            yield _counter("rxcs_oplog_retention_trimmed_entries", "entries retention removed", kept.entries_trimmed)

    def _healthy(self) -> int:
        """The health check's verdict, checked again at most every HEALTH_INTERVAL seconds (it reads entries)."""
        now = time.monotonic()
        if self._health is None or now - self._health[0] >= HEALTH_INTERVAL:
            self._health = (now, 1 if check_oplog(self._oplog).healthy else 0)
        return self._health[1]

    def _stream_metrics(self) -> Iterator[Metric]:
        families = {
            "delivered": CounterMetricFamily("rxcs_stream_delivered_events", "events handed over", labels=["stream"]),
            "filtered_out": CounterMetricFamily(
                "rxcs_stream_filtered_out_entries", "entries read that gave no event", labels=["stream"]
            ),
            "dropped": CounterMetricFamily("rxcs_stream_dropped_events", "events a drop policy discarded",
                                           labels=["stream"]),
            "pauses": CounterMetricFamily("rxcs_stream_pauses", "times reading paused on a full buffer",
                                          labels=["stream"]),
        }
        open_streams = GaugeMetricFamily("rxcs_stream_open", "streams tracked and alive", labels=["stream"])
        buffered = GaugeMetricFamily("rxcs_stream_buffered_events", "events read, not yet handed over",
                                     labels=["stream"])
        lag = GaugeMetricFamily("rxcs_stream_lag_entries", "the largest lag of a stream, in entries",
                                labels=["stream"])
        lag_seconds = GaugeMetricFamily(
            "rxcs_stream_lag_seconds", "age of the last change a lagging stream handed over (0 when caught up)",
            labels=["stream"],
        )
        now = time.time()
        with self._lock:
            for name, streams in self._streams.items():
                totals = dict(self._retired.get(name, dict.fromkeys(_COUNTED, 0)))
                buffered_now = lag_now = alive = 0
                behind = 0.0
                for stream, seen in list(streams.items()):
                    stats = stream.statistics()
                    for field in _COUNTED:
                        seen[field] = getattr(stats, field)
                        totals[field] += seen[field]
                    buffered_now += stats.buffered
                    lag_now = max(lag_now, stats.lag)
                    token = getattr(stream, "resume_token", None)
                    if stats.lag and token is not None and token.wall_time_ms is not None:
                        behind = max(behind, now - token.wall_time_ms / 1000)
                    alive += 1 if getattr(stream, "alive", True) else 0
                for field, family in families.items():
                    family.add_metric([name], totals[field])
                open_streams.add_metric([name], alive)
                buffered.add_metric([name], buffered_now)
                lag.add_metric([name], lag_now)
                lag_seconds.add_metric([name], behind)
        yield from families.values()
        yield from (open_streams, buffered, lag, lag_seconds)

    def _consumer_metrics(self) -> Iterator[Metric]:
        """The named consumers and groups the oplog keeps checkpoints for (``rxcs.list_consumers``), by name."""
        labels = ["consumer", "kind"]
        position = GaugeMetricFamily("rxcs_consumer_position_op_id", "op_id of its checkpoint", labels=labels)
        lag = GaugeMetricFamily("rxcs_consumer_lag_entries", "entries after the consumer's checkpoint", labels=labels)
        lag_seconds = GaugeMetricFamily(
            "rxcs_consumer_lag_seconds", "how much older the checkpoint is than the newest entry", labels=labels
        )
        committed = GaugeMetricFamily(
            "rxcs_consumer_last_commit_timestamp_seconds", "when the consumer last committed (Unix time)",
            labels=labels,
        )
        lost = GaugeMetricFamily(
            "rxcs_consumer_history_lost", "1 when the oplog no longer holds what the consumer needs", labels=labels
        )
        members = GaugeMetricFamily("rxcs_group_members", "live members of a consumer group", labels=["consumer"])
        for info in list_consumers(self._oplog):
            names = [info.name, info.kind]
            position.add_metric(names, info.op_id)
            lag.add_metric(names, info.lag_entries)
            if info.lag_seconds is not None:
                lag_seconds.add_metric(names, info.lag_seconds)
            if info.committed_at is not None:
                committed.add_metric(names, info.committed_at.timestamp())
            lost.add_metric(names, 1 if info.history_lost else 0)
            if info.members is not None:
                members.add_metric([info.name], len(info.members))
        yield from (position, lag, lag_seconds, committed, lost, members)

    def _retire(self, name: str, seen: dict[str, int]) -> None:
        with self._lock:
            retired = self._retired.setdefault(name, dict.fromkeys(_COUNTED, 0))
            for field in _COUNTED:
                retired[field] += seen[field]

    @staticmethod
    def _server_metrics(stats: Any) -> Iterable[Metric]:
        yield _gauge("rxcs_server_watchers", "streams served now", stats.watchers)
        yield _gauge("rxcs_server_max_watchers", "streams served at most at once", stats.max_watchers)
        yield _counter("rxcs_server_served_streams", "streams opened since the server started", stats.served)
        yield _counter("rxcs_server_refused_requests", "requests turned away", stats.refused)
        yield _counter("rxcs_server_slow_clients", "watchers disconnected for not keeping up", stats.slow_clients)
        yield _counter("rxcs_server_sent_bytes", "bytes of events and frames sent to watchers", stats.sent_bytes)


def register(oplog: Oplog, registry: CollectorRegistry | None = None) -> OplogCollector:
    """Register ``oplog``'s collector in ``registry`` (default: prometheus_client's ``REGISTRY``); return it.

    Examples:
        >>> import rxcs, rxcs.metrics
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> oplog = rxcs.open_oplog(":memory:")
        >>> _ = oplog.insert("shop", "users", {"_id": 1})
        >>> registry = CollectorRegistry()
        >>> metrics = rxcs.metrics.register(oplog, registry)
        >>> b"rxcs_oplog_appended_entries_total 1.0" in generate_latest(registry)
        True
    """
    if not isinstance(oplog, Oplog):
        raise TypeError(f"register() needs an Oplog (rxcs.open_oplog), not {type(oplog).__name__}")
    collector = OplogCollector(oplog)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


