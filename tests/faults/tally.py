"""Counting fault cases: tried, recovered, reported, and never wrong.

Each fault test keeps a ``Tally``; the session adds them up and prints
them when it ends (see ``conftest.py``), in the manner of SQLite's crash
tests, which say how many cases they ran and how each ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["recovered", "reported"]


@dataclass
class Tally:
    """Outcomes of fault cases: every case is recovered or reported; ``wrong`` lists the ones that were neither."""

    tried: int = 0
    recovered: int = 0
    reported: int = 0
    wrong: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.tried += 1
        if outcome == "recovered":
            self.recovered += 1
        else:
            self.reported += 1

    def fail(self, case: str, why: str) -> None:
        self.tried += 1
        self.wrong.append(f"{case}: {why}")

    def merge(self, other: Tally) -> None:
        self.tried += other.tried
        self.recovered += other.recovered
        self.reported += other.reported
        self.wrong.extend(other.wrong)

    @property
    def never_wrong(self) -> int:
        return self.tried - len(self.wrong)

    def adds_up(self) -> bool:
        """Every case tried ended one way: recovered or reported, or listed as wrong."""
        return self.tried == self.recovered + self.reported + len(self.wrong)

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.tried} cases tried, {self.recovered} recovered with every entry intact, "
            f"{self.reported} reported (file and offset named), {self.never_wrong} never wrong"
        )


SESSION: dict[str, Tally] = {}
"""Every fault suite's tally in this session, by suite name."""


def record(name: str, tally: Tally) -> None:
    """Add a test's tally to the session's."""
    SESSION.setdefault(name, Tally()).merge(tally)
