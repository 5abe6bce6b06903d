"""$regex runs within a time bound: a pattern that backtracks too long fails its stream, naming the pattern.

Patterns run on the oplog's shared tailer thread; one that backtracks
exponentially (``^(a|aa)+$``: 8 s on 38 characters with Python's ``re``)
would stall every other stream of the server.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rxcs
from rxcs.errors import QueryError
from rxcs.query import REGEX_TIME_LIMIT, compile_filter
from rxcs.query._regex import BoundedPattern

HOSTILE = "^(a|aa)+$"
VICTIM = "a" * 38 + "b"


class TestTimeBound:
    @pytest.mark.parametrize(
        "spec",
        [
            {"name": {"$regex": HOSTILE}},
            {"name": {"$in": [re.compile(HOSTILE)]}},
            {"name": {"$not": re.compile(HOSTILE)}},
            {"name": {"$all": [re.compile(HOSTILE)]}},
            {"name": re.compile(HOSTILE)},
            {"tags": {"$elemMatch": {"$regex": HOSTILE}}},
        ],
    )
    def test_a_catastrophic_pattern_fails_with_a_query_error_naming_it(self, spec: dict[str, Any]) -> None:
        """However the pattern is written, a match past the bound is a QueryError naming the path and pattern."""
        matches = compile_filter(spec)
        began = time.monotonic()
        with pytest.raises(QueryError) as raised:
            matches({"name": VICTIM, "tags": [VICTIM]})
        elapsed = time.monotonic() - began
        assert elapsed < 10 * REGEX_TIME_LIMIT + 1
        message = str(raised.value)
        assert message.startswith(("name", "tags"))
        assert HOSTILE in message
        assert f"{REGEX_TIME_LIMIT} s" in message

    def test_the_bound_releases_the_interpreter_for_other_threads(self) -> None:
        """While a hostile match runs, other Python threads keep running (the matcher releases the GIL)."""
        matches = compile_filter({"name": {"$regex": HOSTILE}})
        ticks = []
        stop = threading.Event()

        def count() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                time.sleep(0.001)

        counter = threading.Thread(target=count)
        counter.start()
        try:
            with pytest.raises(QueryError):
                matches({"name": VICTIM})
        finally:
            stop.set()
            counter.join()
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert len(ticks) > 10
        assert max(gaps) < REGEX_TIME_LIMIT

    def test_ordinary_patterns_on_long_strings_match(self) -> None:
        """The bound is on backtracking, not on size: a plain pattern over a megabyte matches."""
        text = "x" * 1_000_000 + "needle"
        assert compile_filter({"a": {"$regex": "needle$"}})({"a": text})
        assert compile_filter({"a": {"$regex": "^x+needle$"}})({"a": text})
        assert not compile_filter({"a": {"$regex": "^y"}})({"a": text})

    def test_a_stream_with_a_hostile_pattern_fails_with_the_query_error(self) -> None:
        """Through watch(): the stream ends with the error after the events before it; no event is skipped."""
        with rxcs.open_oplog(":memory:") as oplog:
            pipeline = [{"$match": {"fullDocument.name": {"$regex": HOSTILE}}}]
            with rxcs.watch(oplog, "shop", pipeline=pipeline).iterate() as stream:
                oplog.insert("shop", "users", {"_id": 1, "name": "aaaa"})
                oplog.insert("shop", "users", {"_id": 2, "name": VICTIM})
                assert stream.next(timeout=10).document_key == {"_id": 1}
                with pytest.raises(QueryError, match=re.escape(HOSTILE)):
                    stream.next(timeout=10)


class TestSameAnswers:
    @settings(max_examples=400, deadline=None)
    @given(
        pattern=st.sampled_from(
            ["a", "^a", "a$", "^a+$", "a.*b", "(ab|a)*c", "[a-c]+", "^(a|b)?c", "a{2,3}", r"\bab", "x|y|ab", "(?i)AB",
             "^$", "a*?b", "(a)(b)?", "a(?=b)", "a(?!b)", "(?<=a)b"]
        ),
        flags=st.sampled_from([0, re.IGNORECASE, re.MULTILINE, re.DOTALL, re.IGNORECASE | re.MULTILINE]),
        text=st.text(alphabet="abcxyAB\n ", max_size=300),
    )
    def test_bounded_matching_answers_as_re_does(self, pattern: str, flags: int, text: str) -> None:
        """On both paths (short strings unbounded, long ones with the time bound), the answer is re's."""
        compiled = re.compile(pattern, flags)
        bounded = BoundedPattern(compiled, "a.$regex")
        assert bounded.search(text) == (compiled.search(text) is not None)
        assert bounded.search(text * 50) == (compiled.search(text * 50) is not None)

    @pytest.mark.parametrize(
        ("pattern", "safe"),
        [("^O", 50_000), ("Ada", 50_000), ("^[a-z]+@example\\.org$", 100), ("(a|aa)+$", 0), ("(a+)+", 0),
         (r"(a)\1", 0), ("a?" * 40, 0)],
    )
    def test_only_patterns_that_cannot_backtrack_far_skip_the_clock(self, pattern: str, safe: int) -> None:
        """The unbounded path is kept for short strings and patterns whose worst case is small."""
        bounded = BoundedPattern(re.compile(pattern), "a.$regex")
        assert (bounded.unbounded_length >= safe) if safe else bounded.unbounded_length == 0

    @pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # re's own warning for [[:
    @pytest.mark.parametrize(
        ("pattern", "flags", "text"),
        [("i", re.IGNORECASE, "\u0131"), ("(?i)I", 0, "\u0130"), ("(?i:i)x", 0, "\u0131x"), ("[[:alpha:]]", 0, "a")],
    )
    def test_where_re_and_regex_differ_the_length_of_the_string_does_not_change_the_answer(
        self, pattern: str, flags: int, text: str
    ) -> None:
        """Case folding and POSIX classes answer as regex (and PCRE) do, on short and long strings alike."""
        bounded = BoundedPattern(re.compile(pattern, flags), "a.$regex")
        long_text = "-" * (bounded.unbounded_length + 1) + text
        assert bounded.search(text) == bounded.search(long_text)
