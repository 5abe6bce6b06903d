"""The benchmark harness, run as ``python -m benchmarks`` at tiny sizes so it cannot rot.

Nothing here is timed: the tests check that every scenario runs and that
the tables, ratios and the docs rewrite have their shape, never the figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import redis_server_available

ROOT = Path(__file__).resolve().parent.parent

HAND_WRITTEN = """# Performance

Intro.

## Targets

A hand-written table.

## What bounds the figures today

Hand-written text.

## Results

Stale figures.
"""


def benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def table_rows(text: str, title_start: str) -> dict[str, list[str]]:
    """The rows of the table under the first "### " heading starting with ``title_start``: name -> other cells."""
    section = text.split(f"### {title_start}", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]  # no header, no |---|
    rows = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    docs = tmp_path_factory.mktemp("docs") / "performance.md"
    docs.write_text(HAND_WRITTEN)
    done = benchmarks("--quick", "--events", "2000", "--no-redis", "--only", "catchup,appends,query",
                      "--write-docs", str(docs))
    return done, docs


class TestSmokeRun:
    def test_it_exits_cleanly(self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
        """A quick run of the cheap scenarios exits 0."""
        done, _ = smoke_run
        assert done.returncode == 0, done.stderr

    def test_catchup_rows_carry_ratios_to_the_limit(
        self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """The catch-up table has the raw msgpack limit at 1.00 and every rxcs path with a ratio to it."""
        rows = table_rows(smoke_run[0].stdout, "Catch-up")
        assert rows["raw msgpack.Unpacker over the same documents (the limit)"][-1] == "1.00"
        for name in ("FileOplog cursor.read(1000), read only", "oplog_entries() source", "watch() with scope",
                     "watch() with scope + $match (a third pass; entries/s)", "watch() through iterate()",
                     "watch() through aiterate()"):
            value, unit, note = rows[name]
            assert unit == "events/s"
            assert float(value.replace(",", "")) > 0
            assert re.fullmatch(r"\d+\.\d\d", note), note

    def test_append_rows_compare_every_durability_mode_with_sqlite(
        self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """The append table has SQLite WAL as the reference and both append styles for each durability mode."""
        rows = table_rows(smoke_run[0].stdout, "Append rate")
        assert rows["SQLite WAL, 1,000 inserts per transaction (reference)"][-1] == "1.00"
        for durability in ("group", "fsync", "none"):
            for name in (f"FileOplog append_many(1,000), durability={durability}",
                         f"FileOplog insert() one by one, durability={durability}"):
                assert re.fullmatch(r"\d+\.\d\d", rows[name][-1])

    def test_targets_are_judged_or_marked_unmeasured(
        self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """Each target gets a verdict: met or missed when its figures were measured, "not measured" otherwise."""
        rows = table_rows(smoke_run[0].stdout, "Targets")
        verdicts = [cells[-1] for cells in rows.values()]
        assert len(verdicts) >= 10
        assert rows["catch-up rate at the largest size"][-1] == "not measured in this run"
        assert rows["threads for 1,000 watchers"][-1] == "not measured in this run"
        judged = [verdict for verdict in verdicts if verdict != "not measured in this run"]
        assert judged
        assert set(judged) <= {"met", "**missed**"}

    def test_skipped_redis_is_said_plainly(self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
        """With --no-redis the output says the Redis scenarios were skipped and has no Redis rows."""
        out = smoke_run[0].stdout
        assert "Redis scenarios skipped" in out
        assert "XREAD" not in "".join(table_rows(out, "Catch-up"))

    def test_write_docs_replaces_only_the_results(
        self, smoke_run: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """--write-docs keeps the hand-written sections and replaces Results with the machine, command and tables."""
        text = smoke_run[1].read_text()
        head, results = text.split("\n## Results\n")
        assert head == HAND_WRITTEN.split("\n## Results\n", maxsplit=1)[0]
        assert "Stale figures." not in results
        assert results.lstrip().startswith("Measured on ")
        assert "python -m benchmarks --quick" in results
        for heading in ("### Targets", "### Catch-up", "### Append rate", "### Query engine"):
            assert heading in results


def test_unknown_scenario_is_refused() -> None:
    """--only with a name that is no scenario exits 2 and names the choices."""
    done = benchmarks("--only", "catchup,nonsense")
    assert done.returncode == 2
    assert "nonsense" in done.stderr
    assert "backpressure" in done.stderr


class TestCaptureScenario:
    def test_capture_rates_and_latency_have_their_references(self) -> None:
        """``--only capture`` starts a PostgreSQL server, and reports rows/s against the server's own decoding
        (1.00) and commit-to-event latency beside a bare replication reader; without PostgreSQL it says so."""
        from pg_server import unavailable_reason

        done = benchmarks("--quick", "--only", "capture", "--latency-samples", "50")
        assert done.returncode == 0, done.stderr
        reason = unavailable_reason()
        if reason is not None:
            assert "Capture scenario skipped" in done.stdout
            return
        rows = table_rows(done.stdout, "Capture: ")
        assert rows["pg_logical_slot_get_binary_changes, pgoutput (reference)"][-1] == "1.00"
        value, unit, note = rows["rxcs capture postgres → FileOplog (group commit)"]
        assert unit == "rows/s"
        assert float(value.replace(",", "")) > 0
        assert re.fullmatch(r"\d+\.\d\d", note)
        latency = table_rows(done.stdout, "Capture latency")
        assert {name.rsplit(" ", 1)[-1] for name in latency} == {"p50", "p99", "p99.9"}
        assert all(cells[1] == "ms" for cells in latency.values())


class TestMetricsOverhead:
    def test_the_ratio_script_reports_scrape_cost_and_both_ratios(self) -> None:
        """``python -m benchmarks.metrics_overhead`` at a tiny size prints a scrape's cost and the two ratios."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.metrics_overhead", "--events", "5000", "--repeat", "1"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"one scrape: \d+\.\d{3} ms", done.stdout)
        for name in ("appends", "catch_up"):
            for clock in ("wall", "cpu"):
                line = rf"^{name}\s+{clock}\s+with/without: median \d\.\d{{3}}"
                assert re.search(line, done.stdout, re.MULTILINE), done.stdout


class TestDocumentImagesCost:
    def test_bench_images_prints_a_ratio_per_backend_and_way_of_appending(self) -> None:
        """python -m benchmarks.bench_images runs at a tiny size and prints, per backend and way of appending, the
        rates with document images off and on and their ratio, then the replay's ratio."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_images", "--entries", "6000", "--repeat", "1", "--no-redis"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert result.returncode == 0, result.stderr
        rows = re.findall(
            r"^(MemoryOplog|FileOplog, durability=group) +(one by one|append_many\(1000\)) +[\d,]+ +[\d,]+ +"
            r"(\d+\.\d\d)$", result.stdout, re.MULTILINE,
        )
        assert len(rows) == 4, result.stdout
        assert all(float(ratio) > 0 for _, _, ratio in rows)
        assert re.search(r"^replay through watch\(\): default [\d,]+ events/s, .* ratio \d+\.\d\d$", result.stdout,
                         re.MULTILINE), result.stdout


@pytest.mark.skipif(not redis_server_available(), reason="needs a redis-server binary and redis-py")
class TestRedisScaleOut:
    @staticmethod
    def run(module: str, *args: str) -> str:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def test_the_durability_script_compares_replicated_with_default_appends(self) -> None:
        out = self.run("benchmarks.redis_durability", "--events", "300", "--repeat", "1")
        rows = re.findall(r"^\| (insert\(\), one by one|append_many, 100 at a time) \| [\d,]+/s \| [\d,]+/s \| "
                          r"(\d+\.\d\d) \|$", out, re.MULTILINE)
        assert len(rows) == 2, out
        assert all(float(ratio) > 0 for _, ratio in rows)

    def test_the_capacity_script_gives_server_cpu_per_entry(self) -> None:
        out = self.run("benchmarks.redis_capacity", "--events", "2000", "--readers", "1,2")
        appends = re.findall(r"^\| append_many of ([\d,]+) \| (\d+\.\d) µs \| [\d,]+ entries/s \|$", out, re.MULTILINE)
        assert [size for size, _ in appends] == ["1", "100", "1,000"], out
        reads = re.findall(r"^\| read by (\d+) watching process(?:es)? \(.*\) \| (\d+\.\d\d) µs per process \|", out,
                           re.MULTILINE)
        assert [count for count, _ in reads] == ["1", "2"], out


class TestClusterScenario:
    def test_the_scale_out_of_30_oplogs_has_its_reference(self) -> None:
        """``--only cluster`` forms clusters of 1 and 3 primaries and reports the aggregate append rate of each,
        the 1-primary row as the reference (1.00), and watchers on every oplog; without Redis it says so."""
        done = benchmarks("--quick", "--only", "cluster")
        assert done.returncode == 0, done.stderr
        if not redis_server_available():
            assert "Redis Cluster scenario skipped" in done.stdout
            return
        rows = table_rows(done.stdout, "Redis Cluster: ")
        assert rows["1 primary: aggregate append_many(100)"][-1].startswith("1.00 (writers ")
        value, unit, note = rows["3 primaries: aggregate append_many(100)"]
        assert unit == "entries/s"
        assert float(value.replace(",", "")) > 0
        assert "servers" in note
        watched = table_rows(done.stdout, "Redis Cluster, 3 primaries")
        assert watched["watchers (2 per oplog): delivered events, all watchers"][1] == "events/s"
