"""Resume is exactly-once: a stateful property over writes, consumers that stop and resume, trims, drops."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import rxcs

NAMESPACES = [("a", "x"), ("a", "y"), ("b", "x")]


class ResumeMachine(RuleBasedStateMachine):
    """A database stream on "a", stopped and resumed from saved token strings.

    The model is the list of events the stream must give, in order: every
    entry of database "a", and an invalidate after each dropDatabase of "a".
    The consumer must see exactly that list, from where it resumes, with no
    gap and no repeat, or get ChangeStreamHistoryLost when its position was
    trimmed away (and then start again from the oldest retained entry).
    """

    def __init__(self) -> None:
        super().__init__()
        self.oplog = rxcs.open_oplog(":memory:")
        self.expected: list[tuple[int, str]] = []
        self.index = 0  # next expected event for the consumer
        self.token: str | None = None
        self.stream: rxcs.ChangeStream | None = self._open(start_at_operation_time=rxcs.BEGINNING)

    def _open(self, **options: Any) -> rxcs.ChangeStream:
        return rxcs.watch(self.oplog, "a", max_await_time=0.05, **options).iterate()

    def _record(self, op_id: int, db: str, op: str) -> None:
        if db == "a":
            self.expected.append((op_id, op))
            if op == "dropDatabase":
                self.expected.append((op_id, "invalidate"))

    @rule(ns=st.sampled_from(NAMESPACES), count=st.integers(1, 5))
    def write(self, ns: tuple[str, str], count: int) -> None:
        for _ in range(count):
            op_id = self.oplog.insert(*ns, {"_id": self.oplog.last_op_id + 1})
            self._record(op_id, ns[0], "insert")

    @rule(ns=st.sampled_from(NAMESPACES))
    def drop_collection(self, ns: tuple[str, str]) -> None:
        self._record(self.oplog.drop_collection(*ns), ns[0], "drop")

    @rule(db=st.sampled_from(["a", "b"]))
    def drop_database(self, db: str) -> None:
        self._record(self.oplog.drop_database(db), db, "dropDatabase")

    @precondition(lambda self: self.stream is not None and self.stream.alive)
    @rule(count=st.integers(1, 8))
    def consume(self, count: int) -> None:
        """Take up to count events; each must be the next expected one."""
        assert self.stream is not None
        for _ in range(min(count, len(self.expected) - self.index)):
            event = self.stream.next(timeout=10)
            assert (event.op_id, str(event.operation_type)) == self.expected[self.index]
            self.index += 1
            self.token = str(self.stream.resume_token)
            if event.operation_type == "invalidate":
                assert list(self.stream) == []  # the stream ends after an invalidate
                assert not self.stream.alive
                break

    @rule()
    def restart(self) -> None:
        """Stop (if running) and resume from the saved token string."""
        if self.stream is not None:
            self.stream.close()
        self.stream = None
        if self.token is None:
            self._start_over()
            return
        token = rxcs.ResumeToken.parse(self.token)
        option = "start_after" if token.invalidate else "resume_after"
        first = self.oplog.first_op_id
        if token.op_id < first - 1:
            try:
                self._open(**{option: self.token})
            except rxcs.ChangeStreamHistoryLost:
                self._start_over()
                return
            raise AssertionError("resuming before the oldest retained entry must fail")
        if token.op_id < first and self.index < len(self.expected) and self.expected[self.index] == (
            token.op_id, "invalidate"
        ):
            self.index += 1  # the entry that held it is trimmed: its invalidate cannot be re-read
        self.stream = self._open(**{option: self.token})

    def _start_over(self) -> None:
        first = self.oplog.first_op_id
        self.index = next((i for i, (op_id, _) in enumerate(self.expected) if op_id >= first), len(self.expected))
        self.token = None
        self.stream = self._open(start_at_operation_time=rxcs.BEGINNING)

    @rule(data=st.data())
    def trim(self, data: st.DataObject) -> None:
        """The consumer is stopped while the log is trimmed; it resumes (or starts over) later."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        before = data.draw(st.integers(self.oplog.first_op_id, self.oplog.last_op_id + 1))
        self.oplog.trim(before_op_id=before)

    @invariant()
    def tokens_round_trip(self) -> None:
        """A saved token string parses back to itself."""
        if self.token is not None:
            assert str(rxcs.ResumeToken.parse(self.token)) == self.token

    def teardown(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.oplog.close()


ResumeMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestResume = ResumeMachine.TestCase
