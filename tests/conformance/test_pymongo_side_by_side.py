"""The programs of docs/pymongo-side-by-side.md run and print what the page says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import rxcs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pymongo-side-by-side.md"
BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.DOTALL)


def programs() -> list[tuple[str, str]]:
    """Each rxcs program of the page (a python block that starts with ``# rxcs``) with the text block after it."""
    blocks = BLOCK.findall(PAGE.read_text())
    found = []
    for index, (kind, code) in enumerate(blocks):
        if kind == "python" and code.startswith("# rxcs"):
            output = next(text for later, text in blocks[index + 1:] if later == "text")
            found.append((code, output))
    return found


def run(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestSideBySidePage:
    def test_the_page_has_both_programs(self) -> None:
        """The page shows the PyMongo program (valid Python) and two rxcs programs."""
        blocks = BLOCK.findall(PAGE.read_text())
        pymongo = [code for kind, code in blocks if kind == "python" and code.startswith("# PyMongo")]
        assert len(pymongo) == 1
        compile(pymongo[0], "pymongo-side-by-side.md", "exec")
        assert len(programs()) == 2

    def test_the_rxcs_program_prints_what_the_page_says_and_resumes(self, tmp_path: Path) -> None:
        """The side-by-side rxcs program prints the page's output; run again after a change made while it was
        not running, it resumes from its saved token and prints that change first."""
        code, output = programs()[0]
        assert run(code, tmp_path) == output
        with rxcs.open_oplog(str(tmp_path / "data" / "oplog")) as oplog:
            oplog.update("shop", "orders", 1, updated_fields={"status": "shipped"})
        assert run(code, tmp_path) == output.replace("paid", "shipped")

    @pytest.mark.parametrize("index", [1])
    def test_the_reactive_program_prints_what_the_page_says(self, tmp_path: Path, index: int) -> None:
        """The Observable program prints the page's output."""
        code, output = programs()[index]
        assert run(code, tmp_path) == output
