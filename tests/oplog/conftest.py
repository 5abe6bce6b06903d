"""The backend fixture: one contract, every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rxcs

OplogFactory = Callable[..., rxcs.Oplog]


@pytest.fixture(params=["memory", "file"])
def oplog_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OplogFactory]:
    """Make oplogs of one backend; calling it again reopens the same oplog (where the backend can)."""
    opened: list[rxcs.Oplog] = []
    memory: dict[str, rxcs.Oplog] = {}

    def make(**options: Any) -> rxcs.Oplog:
        if request.param == "memory":
            if "memory" not in memory:
                memory["memory"] = rxcs.open_oplog(":memory:", **options)
            return memory["memory"]
        oplog = rxcs.open_oplog(tmp_path / "oplog", **options)
        opened.append(oplog)
        return oplog

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for oplog in [*opened, *memory.values()]:
        oplog.close()
