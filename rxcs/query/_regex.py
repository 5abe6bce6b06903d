"""``$regex`` matching within a time bound.

Filters run on the oplog's shared tailer thread, so a pattern that
backtracks exponentially (``^(a|aa)+$`` takes 8 s on 38 characters with
``re``, doubling with each further two) would stall every stream of the
process. Patterns are still written and checked as ``re`` patterns, but a
match that could take long runs on the ``regex`` engine (``re``-compatible,
closer to MongoDB's PCRE, and it releases the GIL while it matches) with a
timeout of ``REGEX_TIME_LIMIT`` seconds of CPU; past it, the match raises
``QueryError`` naming the path and the pattern, which fails that stream
alone.

Starting the timeout's clock costs about as much as a short match, so
strings match without it where the worst case is small: a pattern's worst
case is estimated from its parse (the size of the pattern, times the start
positions, times the lengths each quantifier may try), and strings up to the
length where it stays under ``_STEP_BUDGET`` steps go the unbounded way. A
quantifier around a group that can match in more than one way (an
alternation, another quantifier) or a back reference makes the worst case
exponential: such patterns always run with the clock.

The unbounded way is ``re`` itself (three times faster than ``regex`` on
short matches), except for the patterns where the two engines answer
differently: case-insensitive ones (``regex`` folds case as Unicode and
PCRE do, so ``i`` does not match a dotless i) and POSIX classes (``[[:alpha:]]``,
which ``re`` reads as a set of characters). Those use ``regex`` both ways,
so a string's length never changes the answer.
"""

from __future__ import annotations

import math
import re
from re import _constants as sre  # type: ignore[attr-defined]  # the parse tree's opcodes
from re import _parser as sre_parse  # type: ignore[attr-defined]  # no public parser: see _worst_case
from typing import Any, Final, final

import regex

from rxcs.errors import QueryError

__all__ = ["REGEX_TIME_LIMIT", "BoundedPattern"]

REGEX_TIME_LIMIT: Final = 0.1
"""The CPU seconds one ``$regex`` match may take before it fails its stream."""
_STEP_BUDGET: Final = 2e5  # ``re`` takes well under 10 ms for this many steps of backtracking
_LONGEST: Final = 1 << 30
_FLAGS: Final = (
    (re.IGNORECASE, regex.IGNORECASE), (re.MULTILINE, regex.MULTILINE), (re.DOTALL, regex.DOTALL),
    (re.VERBOSE, regex.VERBOSE), (re.ASCII, regex.ASCII),
)
# Where re and regex answer differently: case-insensitive matching (flag or inline group), POSIX classes.
_ENGINES_DIFFER: Final = re.compile(r"\(\?[-a-zA-Z]*i[-a-zA-Z]*[:)]|\[:")
_REPEATS: Final = frozenset({sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT})
_AMBIGUOUS: Final = frozenset({*_REPEATS, sre.BRANCH, sre.GROUPREF, sre.GROUPREF_EXISTS})


@final
class BoundedPattern:
    """An ``re`` pattern whose ``search`` never takes more than ``REGEX_TIME_LIMIT`` seconds of CPU.

    ``unbounded_length``: strings up to this length match with ``re``,
    without the clock (0 for patterns that always need it).

    Examples:
        >>> import re
        >>> BoundedPattern(re.compile("^Ad"), "name.$regex").search("Ada")
        True
        >>> BoundedPattern(re.compile("^(a|aa)+$"), "name.$regex").search("a" * 40 + "b")
        Traceback (most recent call last):
        ...
        rxcs.errors.QueryError: name.$regex: /^(a|aa)+$/ took more than 0.1 s of CPU on a string of 41 characters ...
    """

    __slots__ = ("_bounded", "_unbounded", "_where", "pattern", "unbounded_length")

    def __init__(self, pattern: re.Pattern[str], where: str) -> None:
        self.pattern = pattern
        self._where = where
        flags = 0
        for re_flag, regex_flag in _FLAGS:
            if pattern.flags & re_flag:
                flags |= regex_flag
        try:
            self._bounded = regex.compile(pattern.pattern, flags)
        except regex.error as exc:
            raise QueryError(f"{where}: /{pattern.pattern}/ cannot be matched within a time bound: {exc}") from None
        self.unbounded_length = _unbounded_length(pattern)
        differ = bool(pattern.flags & re.IGNORECASE) or _ENGINES_DIFFER.search(pattern.pattern) is not None
        self._unbounded = self._bounded.search if differ else pattern.search

    def search(self, value: str) -> bool:
        """True when the pattern matches somewhere in ``value``; ``QueryError`` past the time bound."""
        if len(value) <= self.unbounded_length:
            return self._unbounded(value) is not None
        try:
            return self._bounded.search(value, timeout=REGEX_TIME_LIMIT) is not None
        except TimeoutError:
            raise QueryError(
                f"{self._where}: /{self.pattern.pattern}/ took more than {REGEX_TIME_LIMIT} s of CPU on a string "
                f"of {len(value)} characters (it backtracks too much: a quantifier around an alternation or "
                "another quantifier); this stream stops so that the others sharing its thread do not wait"
            ) from None


def _unbounded_length(pattern: re.Pattern[str]) -> int:
    """The longest string whose worst-case match stays under the step budget; 0 when it may be exponential."""
    try:
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
    except (re.error, TypeError, ValueError, AttributeError):  # a parser unlike 3.11's: always bounded
        return 0
    shape = _worst_case(tree, inside_repeat=False)
    if shape is None:
        return 0
    size, repeats = shape

    def steps(length: int) -> float:
        log_steps = math.log(size) + math.log(length + 1)
        for low, high in repeats:
            log_steps += math.log(max(1, min(high, length) - low + 1))
        return log_steps

    budget = math.log(_STEP_BUDGET)
    if steps(0) > budget:
        return 0
    low, high = 0, _LONGEST
    while low < high:  # the longest length within the budget (steps grows with length)
        middle = (low + high + 1) // 2
        if steps(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _worst_case(tree: Any, *, inside_repeat: bool) -> tuple[int, list[tuple[int, int]]] | None:
    """The pattern's size and its quantifiers' (min, max); None when backtracking may be exponential."""
    size = 0
    repeats: list[tuple[int, int]] = []
    for op, argument in tree:
        size += 1
        parts: list[Any] = []
        if op in _REPEATS:
            low, high, body = argument
            if inside_repeat or _contains(body, _AMBIGUOUS):
                return None
            repeats.append((low, high))
            parts = [body]
            inner_repeat = True
        elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            return None
        elif op == sre.BRANCH:
            parts = argument[1]
            inner_repeat = inside_repeat
        elif op == sre.SUBPATTERN or op in (sre.ASSERT, sre.ASSERT_NOT):
            parts = [argument[-1]]
            inner_repeat = inside_repeat
        elif op == sre.ATOMIC_GROUP:
            parts = [argument]
            inner_repeat = inside_repeat
        for part in parts:
            found = _worst_case(part, inside_repeat=inner_repeat)
            if found is None:
                return None
            size += found[0]
            repeats.extend(found[1])
    return size, repeats


def _contains(tree: Any, ops: frozenset[Any]) -> bool:
    for op, argument in tree:
        if op in ops:
            return True
        if op == sre.SUBPATTERN or op in (sre.ASSERT, sre.ASSERT_NOT):
            if _contains(argument[-1], ops):
                return True
        elif op == sre.ATOMIC_GROUP and _contains(argument, ops):
            return True
    return False
