"""Static types of what streams deliver, checked by running mypy on a snippet (skipped without mypy)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SNIPPET = '''
from typing import Any, assert_type

import rxcs
from rxcs import operators as cso

oplog = rxcs.open_oplog(":memory:")
assert_type(rxcs.watch(oplog), rxcs.ChangeStreamObservable[rxcs.ChangeEvent])
assert_type(rxcs.watch(oplog, "shop", "users"), rxcs.ChangeStreamObservable[rxcs.ChangeEvent])
assert_type(
    rxcs.watch(oplog, "shop", "users", [{"$project": {"a": 1}}]),
    rxcs.ChangeStreamObservable[rxcs.ChangeEvent | dict[str, Any]],
)
assert_type(
    rxcs.watch(oplog, pipeline=[{"$set": {"a": 1}}]),
    rxcs.ChangeStreamObservable[rxcs.ChangeEvent | dict[str, Any]],
)
with rxcs.watch(oplog).iterate() as stream:
    assert_type(stream.next(), rxcs.ChangeEvent)
    assert_type(stream.try_next(), rxcs.ChangeEvent | None)
with rxcs.watch(oplog, pipeline=[{"$unset": "ns"}]).iterate() as reshaped:
    assert_type(reshaped.next(), rxcs.ChangeEvent | dict[str, Any])
operator = cso.pipeline([{"$project": {"a": 1}}])
assert_type(operator(rxcs.oplog_entries(oplog).pipe(cso.to_change_events())),
            "reactivex.Observable[rxcs.ChangeEvent | dict[str, Any]]")
'''


class TestStreamTypes:
    @pytest.mark.slow
    def test_watch_is_typed_by_whether_a_pipeline_is_given(self, tmp_path: Path) -> None:
        """Without a pipeline watch() yields ChangeEvent; with one, ChangeEvent | dict (reshaped documents)."""
        pytest.importorskip("mypy")
        snippet = tmp_path / "snippet.py"
        snippet.write_text("import reactivex\n" + textwrap.dedent(SNIPPET))
        root = Path(__file__).resolve().parents[2]
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(snippet)],
            cwd=root, capture_output=True, text=True, check=False,
            env={"MYPYPATH": str(root), "PATH": "", "HOME": str(tmp_path)},
        )
        assert result.returncode == 0, result.stdout + result.stderr
