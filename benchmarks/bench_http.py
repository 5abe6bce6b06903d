"""HTTP fan-out benchmark: many SSE watchers on one oplog, a burst of events, every event checked.

Run: python -m benchmarks.bench_http [--watchers 100] [--events 10000] [--backend memory|file]
                                     [--steady-rate 500] [--steady-events 2500]

The server (``rxcs.http``, uvicorn) runs in this process on a free loopback
port; the watchers are real HTTP clients (httpx, one asyncio loop) in a
second process, so that client and server each have a core. Once every
watcher has its stream open, this process writes the burst as fast as it
can (one ``insert()`` per event, each document carrying its write time).
Each watcher checks it received every event, in order, exactly once.

Printed: delivered events/s (all watchers together, from the first write to
the last event received), and the delivery latency (write to receipt, over
every event of every watcher) p50 / p99 / max. The burst measures
throughput (its latency is mostly queueing: the last event waits for the
million deliveries before it); a second run at a steady rate the server
keeps up with measures the latency a live dashboard sees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

import rxcs

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only


# -- the watchers' process --------------------------------------------------------------


async def _watch_one(client: Any, url: str, events: int, ready: asyncio.Event, opened: list[int]) -> dict[str, Any]:
    """Read ``events`` SSE events from one stream; record document ids in order and receipt latencies."""
    received: list[int] = []
    latencies: list[float] = []
    async with client.stream("GET", url, headers={"Rxcs-Client": "bench_http"}) as response:
        if response.status_code != 200:
            raise SystemExit(f"watcher got HTTP {response.status_code}: {await response.aread()!r}")
        pending = b""
        async for chunk in response.aiter_raw():
            if b"retry: " in chunk:  # the opening frame: this stream is open
                opened[0] += 1
                if opened[0] == opened[1]:
                    ready.set()
            now = time.time()
            pending += chunk
            frames = pending.split(b"\n\n")
            pending = frames.pop()
            for frame in frames:
                if b"\ndata: " not in frame:
                    continue  # the opening position frame, or a heartbeat
                data = frame[frame.index(b"\ndata: ") + 7:]
                # The document carries its op_id (as _id) and its write time; read them without a full parse.
                key = data.index(b'"documentKey": {"_id": ') + 23
                received.append(int(data[key:data.index(b"}", key)]))
                written = data.index(b'"written": ') + 11
                latencies.append(now - float(data[written:data.index(b",", written)]))
            if len(received) >= events:
                break
    return {"received": received, "latencies": latencies}


async def _watchers(url: str, watchers: int, events: int) -> dict[str, Any]:
    import httpx

    ready = asyncio.Event()
    opened = [0, watchers]
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:
        tasks = [asyncio.create_task(_watch_one(client, url, events, ready, opened)) for _ in range(watchers)]
        await ready.wait()
        print("ready", flush=True)
        results = await asyncio.gather(*tasks)
    last = time.time()
    expected = list(range(events))
    in_order = sum(1 for result in results if result["received"] == expected)
    latencies = sorted(latency for result in results for latency in result["latencies"])
    return {
        "watchers": watchers, "in_order": in_order, "last_receipt": last,
        "delivered": sum(len(result["received"]) for result in results),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "max_ms": 1000 * latencies[-1],
        "mean_ms": 1000 * statistics.fmean(latencies),
    }


def _client_main(url: str, watchers: int, events: int) -> None:
    print(json.dumps(asyncio.run(_watchers(url, watchers, events))), flush=True)


# -- the server's process -----------------------------------------------------------------


def run(
    watchers: int, events: int, backend: str, buffer_size: int = 100, rate: float | None = None
) -> dict[str, Any]:
    """Serve, start the watchers, write the events (a burst, or ``rate`` per second); return the figures."""
    from rxcs.http import ChangeStreamServer, create_app
    from rxcs.http._server import listen

    with tempfile.TemporaryDirectory(prefix="rxcs-bench-http-") as directory:
        location = ":memory:" if backend == "memory" else str(Path(directory) / "oplog")
        with rxcs.open_oplog(location) as oplog:
            app = create_app(oplog, max_watchers=watchers + 10, buffer_size=buffer_size)
            sock = listen("127.0.0.1", 0)
            port = sock.getsockname()[1]
            server = ChangeStreamServer(app)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bench-http-server")
            thread.start()
            while not server.started:
                time.sleep(0.01)
            url = f"http://127.0.0.1:{port}/watch?db=bench&collection=burst"
            client = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_http", "--client", url,
                 "--watchers", str(watchers), "--events", str(events)],
                stdout=subprocess.PIPE, text=True,
            )
            try:
                assert client.stdout is not None
                if client.stdout.readline().strip() != "ready":
                    raise SystemExit("the watchers did not start")
                while app.statistics().watchers < watchers:
                    time.sleep(0.01)
                start = time.time()
                for i in range(events):
                    if rate is not None and (ahead := start + i / rate - time.time()) > 0:
                        time.sleep(ahead)
                    oplog.insert("bench", "burst", {"_id": i, "written": time.time(), "name": f"user{i}"})
                written = time.time()
                line = client.stdout.readline()
                client.wait(timeout=120)
            finally:
                if client.poll() is None:
                    client.kill()
                server.should_exit = True
                thread.join(30)
                sock.close()
    result: dict[str, Any] = json.loads(line)
    result["write_s"] = written - start
    result["events_per_s"] = result["delivered"] / (result["last_receipt"] - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backend", choices=["memory", "file"], default="memory")
    parser.add_argument(
        "--buffer-size", type=int, default=100, help="events buffered per watcher (default 100, as rxcs serve)"
    )
    parser.add_argument(
        "--steady-rate", type=float, default=500.0,
        help="events/s of the steady-rate latency run (default 500; 0 skips it)",
    )
    parser.add_argument("--steady-events", type=int, default=2500, help="events of the steady-rate run")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client_main(args.client, args.watchers, args.events)
        return
    complete = True
    result = run(args.watchers, args.events, args.backend, args.buffer_size)
    complete &= _report(f"burst of {args.events:,} events", args.watchers, args.events, result)
    if args.steady_rate > 0:
        result = run(args.watchers, args.steady_events, args.backend, args.buffer_size, rate=args.steady_rate)
        complete &= _report(
            f"steady {args.steady_rate:,.0f} events/s, {args.steady_events:,} events",
            args.watchers, args.steady_events, result,
        )
    if not complete:
        raise SystemExit(1)


def _report(title: str, watchers: int, events: int, result: dict[str, Any]) -> bool:
    complete: bool = result["in_order"] == watchers and result["delivered"] == watchers * events
    print(f"rxcs.http fan-out, {title}, {watchers} SSE watchers")
    print(f"  every event, in order, at every watcher: {'yes' if complete else 'NO'}"
          f" ({result['in_order']}/{watchers} watchers complete and in order)")
    print(f"  written in {result['write_s']:.2f} s; delivered {result['events_per_s']:,.0f} events/s"
          f" ({result['delivered']:,} deliveries)")
    print(f"  latency (write to receipt): p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
          f" max {result['max_ms']:.1f} ms")
    return complete


if __name__ == "__main__":
    main()
