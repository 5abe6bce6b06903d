"""Damage to every kind of file a FileOplog writes, at every kind of offset: recovered or reported, never wrong.

Segments (header, each frame field, the tail), index files and the metadata
are truncated at and flipped at offsets of every class; every way in is
held to the three outcomes of ``damage.py``. The normal run takes a fixed
sample; ``RXCS_FAULTS=all`` (``tox -e faults``) takes every case.
"""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from .conftest import FULL, full_run
from .damage import Case, Pristine, Wrong, all_cases, build_pristine, run_case, sample
from .tally import Tally, record


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """Three segments of about 110 entries, four index records each, and the metadata."""
    return build_pristine(tmp_path_factory.mktemp("pristine") / "oplog")


@pytest.fixture(scope="module")
def pristine_large(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """One segment with a 1.3 MB entry between small ones."""
    return build_pristine(tmp_path_factory.mktemp("pristine-large") / "oplog", large=True)


def run_all(pristine: Pristine, cases: list[Case], work: Path, *, watch_every: int) -> Tally:
    """Run the cases and count how each ended."""
    tally = Tally()
    for number, case in enumerate(cases):
        try:
            tally.add(run_case(pristine, case, work, watch=number % watch_every == 0))
        except Wrong as wrong:
            tally.fail(str(case), str(wrong))
    return tally


def held(tally: Tally, name: str, cases: int) -> None:
    """Every case was tried and ended recovered or reported; the counts add up and go to the session's."""
    record(name, tally)
    assert tally.wrong == []
    assert tally.tried == cases
    assert tally.recovered + tally.reported == tally.tried
    assert tally.adds_up()


class TestDamageSample:
    def test_every_file_kind_and_offset_class_is_recovered_or_reported(
        self, pristine: Pristine, tmp_path: Path
    ) -> None:
        """A fixed sample covering every (file kind, region, mutation): each case recovers or is reported."""
        cases = sample(all_cases(pristine, full=False), 90, seed=16)
        tally = run_all(pristine, cases, tmp_path, watch_every=6)
        held(tally, "damage", len(cases))
        assert tally.recovered
        assert tally.reported

    def test_damage_to_a_frame_larger_than_a_read_block_is_reported(
        self, pristine_large: Pristine, tmp_path: Path
    ) -> None:
        """A 1.3 MB frame damaged in any field, with frames after it, is reported by every reader, never skipped."""
        large = 20  # the large entry's frame
        segment = pristine_large.segments[-1]
        start, end = segment.spans[large]
        cases = [
            Case(segment.name, region, offset, "flip", 0x04, large)
            for region, offset in (("length", start + 2), ("crc", start + 6), ("payload", (start + end) // 2),
                                   ("payload", end - 1))
        ]
        cases.append(Case(segment.name, "payload", (start + end) // 2, "truncate", frame=large))
        tally = run_all(pristine_large, cases, tmp_path, watch_every=1)
        held(tally, "damage", len(cases))
        assert tally.reported == len(cases) - 1

    def test_a_cut_inside_a_commit_keeps_only_the_commits_before_it(self, pristine: Pristine, tmp_path: Path) -> None:
        """The newest segment cut at each frame of its last commit (13 entries of one append_many), and inside
        each field of each of those frames, as a killed or lost write leaves it: every way in reads the commits
        before the cut, whole, and nothing of the commit cut short; the writer appends after them."""
        segment = pristine.segments[-1]
        first, last = pristine.commits[-1]
        cases = [
            _classified(pristine, Case(segment.name, "meta", offset, "truncate"))
            for number in range(first - segment.first, last - segment.first + 1)
            for offset in _cut_points(*segment.spans[number])
        ]
        assert len(cases) == 6 * 13
        tally = run_all(pristine, cases, tmp_path, watch_every=7)
        held(tally, "damage (commits cut short)", len(cases))
        assert tally.recovered == len(cases)


def _cut_points(start: int, end: int) -> tuple[int, ...]:
    """Where a write can stop inside a frame: at its start, in its length, op_id and payload, and its last byte."""
    return (start, start + 2, start + 9, start + 16, (start + end) // 2, end - 1)


class TestRandomFlips:
    @given(st.data())
    @settings(
        max_examples=400 if FULL else 12, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def test_random_flips_are_recovered_or_reported(
        self, pristine: Pristine, tmp_path: Path, data: st.DataObject
    ) -> None:
        """A flip of any bits of any byte of any file: recovered or reported, never a wrong entry."""
        files = sorted(p.name for p in pristine.path.iterdir() if p.name != "writer.lock")
        name = data.draw(st.sampled_from(files))
        size = (pristine.path / name).stat().st_size
        offset = data.draw(st.integers(0, size - 1))
        mask = data.draw(st.integers(1, 255))
        case = _classified(pristine, Case(name, "meta", offset, "flip", mask))
        tally = run_all(pristine, [case], tmp_path / f"{name}-{offset}-{mask}", watch_every=1_000_000)
        held(tally, "damage (random flips)", 1)


def _classified(pristine: Pristine, case: Case) -> Case:
    """The case with the region and frame its offset falls in."""
    if case.file.endswith(".idx"):
        return Case(case.file, "record", case.offset, case.mutation, case.mask)
    if not case.file.endswith(".seg"):
        return case
    segment = next(s for s in pristine.segments if s.name == case.file)
    for number, (start, end) in enumerate(segment.spans):
        if start <= case.offset < end:
            field = case.offset - start
            region = "length" if field < 4 else "crc" if field < 8 else "op_id" if field < 16 else "payload"
            last = segment.newest and number == len(segment.spans) - 1
            return Case(case.file, region, case.offset, case.mutation, case.mask, number, last)  # type: ignore[arg-type]
    return Case(case.file, "header", case.offset, case.mutation, case.mask)


@pytest.mark.slow
@full_run
class TestDamageFull:
    @pytest.mark.timeout(3600)
    @pytest.mark.parametrize("kind", ["seg", "idx", "meta"])
    def test_every_case(self, pristine: Pristine, kind: str, tmp_path: Path) -> None:
        """Every byte of every field of every file kind, three masks, and truncation there: recovered or reported."""
        cases = [case for case in all_cases(pristine, full=True) if case.file.endswith(kind)]
        tally = run_all(pristine, cases, tmp_path, watch_every=25)
        held(tally, "damage", len(cases))

    @pytest.mark.timeout(3600)
    def test_every_case_around_a_large_frame(self, pristine_large: Pristine, tmp_path: Path) -> None:
        """The same for the oplog with a 1.3 MB entry."""
        cases = [case for case in all_cases(pristine_large, full=True) if case.file.endswith(".seg")]
        tally = run_all(pristine_large, cases, tmp_path, watch_every=25)
        held(tally, "damage", len(cases))
