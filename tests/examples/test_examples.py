"""Every example in examples/ runs as a script and does what it says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestExamples:
    def test_quickstart(self) -> None:
        """The quickstart writes three changes to a file oplog and reads them back after reopening."""
        entries = load("quickstart").main()
        assert [entry.op for entry in entries] == ["insert", "update", "delete"]

    def test_audit_log(self) -> None:
        """The auditor stops, resumes from its token file, and logs every event exactly once."""
        assert load("audit_log").main() == ["insert", "update", "insert", "delete"]

    def test_order_history(self) -> None:
        """Each update is told with the whole order before it and as it is now, from the kept document images."""
        assert load("order_history").main() == [
            "new ['tea', 'cups', 'pot'] -> changed {'status': 'paid'} (now shipped ['tea', 'mugs'])",
            "paid ['tea', 'cups', 'pot'] -> changed {'items.1': 'mugs'} (now shipped ['tea', 'mugs'])",
            "paid ['tea', 'mugs'] -> changed {'status': 'shipped'} (now shipped ['tea', 'mugs'])",
        ]

    def test_cache_invalidation(self) -> None:
        """An update evicts the cached document, so the next read sees the new value."""
        name, reads = load("cache_invalidation").main()
        assert name == "Ada Lovelace"
        assert reads == 2

    def test_reactive_pipeline(self) -> None:
        """Events grouped by namespace and batched in time add up per namespace."""
        assert load("reactive_pipeline").main() == {"shop.users": 10, "shop.orders": 20}

    def test_asyncio_consumer(self) -> None:
        """The asyncio consumer sees the five inserts in order."""
        assert load("asyncio_consumer").main() == [f"insert {i}" for i in range(5)]

    @pytest.mark.slow
    def test_sync_to_sqlite_survives_sigkill(self) -> None:
        """The SQLite mirror equals the source after its worker is SIGKILLed and restarted."""
        assert load("sync_to_sqlite").main() is True

    def test_group_workers_survive_a_killed_worker(self) -> None:
        """Three workers share the group; after one is SIGKILLed, every change is still handled."""
        assert load("group_workers").main() is True


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_runs_as_a_script(script: str) -> None:
    """Each example runs with `python examples/NAME.py` and exits 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
