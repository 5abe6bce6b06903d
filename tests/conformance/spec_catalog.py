"""Every test of MongoDB's change-stream specification at the pinned commit, and the ones rxcs leaves out, with why.

The specification is ``mongodb/specifications``, ``source/change-streams/``:
the unified test files under ``tests/unified/`` and the prose tests listed in
``tests/README.md``. The names below are its case descriptions at
``SPEC_COMMIT``. ``test_spec_catalog.py`` checks that each one is either
ported (a case in ``test_spec_unified.py`` or ``test_spec_prose.py``) or
left out here, and that docs/conformance.md lists the same left-out cases.
"""

from __future__ import annotations

__all__ = ["LEFT_OUT", "PROSE_TESTS", "SPEC_COMMIT", "SPEC_REPOSITORY", "UNIFIED_CASES"]

SPEC_REPOSITORY = "https://github.com/mongodb/specifications"
SPEC_COMMIT = "92b3c0b9287bfba1b0ec4084300858d05c654f8c"

UNIFIED_CASES: dict[str, tuple[str, ...]] = {
    "change-streams-clusterTime.json": (
        "clusterTime is present",
    ),
    "change-streams-disambiguatedPaths.json": (
        "disambiguatedPaths is not present when showExpandedEvents is false/unset",
        "disambiguatedPaths is present on updateDescription when an ambiguous path is present",
        "disambiguatedPaths returns array indices as integers",
    ),
    "change-streams-errors.json": (
        ("The watch helper must not throw a custom exception when executed against a single server topology, "
        "but instead depend on a server error"),
        "Change Stream should error when an invalid aggregation stage is passed in",
        "Change Stream should error when _id is projected out",
        "change stream errors on ElectionInProgress",
    ),
    "change-streams-nsType.json": (
        "nsType is present when creating collections",
        "nsType is present when creating views",
    ),
    "change-streams-pre_and_post_images.json": (
        "fullDocument:whenAvailable with changeStreamPreAndPostImages enabled",
        "fullDocument:whenAvailable with changeStreamPreAndPostImages disabled",
        "fullDocument:required with changeStreamPreAndPostImages enabled",
        "fullDocument:required with changeStreamPreAndPostImages disabled",
        "fullDocumentBeforeChange:whenAvailable with changeStreamPreAndPostImages enabled",
        "fullDocumentBeforeChange:whenAvailable with changeStreamPreAndPostImages disabled",
        "fullDocumentBeforeChange:required with changeStreamPreAndPostImages enabled",
        "fullDocumentBeforeChange:required with changeStreamPreAndPostImages disabled",
        "fullDocumentBeforeChange:off with changeStreamPreAndPostImages enabled",
        "fullDocumentBeforeChange:off with changeStreamPreAndPostImages disabled",
    ),
    "change-streams-resume-allowlist.json": (
        "change stream resumes after a network error",
        "change stream resumes after HostUnreachable",
        "change stream resumes after HostNotFound",
        "change stream resumes after NetworkTimeout",
        "change stream resumes after ShutdownInProgress",
        "change stream resumes after PrimarySteppedDown",
        "change stream resumes after ExceededTimeLimit",
        "change stream resumes after SocketException",
        "change stream resumes after NotWritablePrimary",
        "change stream resumes after InterruptedAtShutdown",
        "change stream resumes after InterruptedDueToReplStateChange",
        "change stream resumes after NotPrimaryNoSecondaryOk",
        "change stream resumes after NotPrimaryOrSecondary",
        "change stream resumes after StaleShardVersion",
        "change stream resumes after StaleEpoch",
        "change stream resumes after RetryChangeStream",
        "change stream resumes after FailedToSatisfyReadPreference",
        "change stream resumes after CursorNotFound",
    ),
    "change-streams-resume-errorLabels.json": (
        "change stream resumes after HostUnreachable",
        "change stream resumes after HostNotFound",
        "change stream resumes after NetworkTimeout",
        "change stream resumes after ShutdownInProgress",
        "change stream resumes after PrimarySteppedDown",
        "change stream resumes after ExceededTimeLimit",
        "change stream resumes after SocketException",
        "change stream resumes after NotWritablePrimary",
        "change stream resumes after InterruptedAtShutdown",
        "change stream resumes after InterruptedDueToReplStateChange",
        "change stream resumes after NotPrimaryNoSecondaryOk",
        "change stream resumes after NotPrimaryOrSecondary",
        "change stream resumes after StaleShardVersion",
        "change stream resumes after StaleEpoch",
        "change stream resumes after RetryChangeStream",
        "change stream resumes after FailedToSatisfyReadPreference",
        "change stream resumes if error contains ResumableChangeStreamError",
        "change stream does not resume if error does not contain ResumableChangeStreamError",
    ),
    "change-streams-showExpandedEvents.json": (
        "when provided, showExpandedEvents is sent as a part of the aggregate command",
        "when omitted, showExpandedEvents is not sent as a part of the aggregate command",
        "when showExpandedEvents is true, new fields on change stream events are handled appropriately",
        "when showExpandedEvents is true, createIndex events are reported",
        "when showExpandedEvents is true, dropIndexes events are reported",
        "when showExpandedEvents is true, create events are reported",
        "when showExpandedEvents is true, create events on views are reported",
        "when showExpandedEvents is true, modify events are reported",
        "when showExpandedEvents is true, shardCollection events are reported",
    ),
    "change-streams.json": (
        "Test array truncation",
        "Test with document comment",
        "Test with document comment - pre 4.4",
        "Test with string comment",
        "Test that comment is set on getMore",
        "Test that comment is not set on getMore - pre 4.4",
        "to field is set in a rename change event",
        "Test unknown operationType MUST NOT err",
        "Test newField added in response MUST NOT err",
        "Test new structure in ns document MUST NOT err",
        "Test modified structure in ns document MUST NOT err",
        "Test server error on projecting out _id",
        "Test projection in change stream returns expected fields",
        "$changeStream must be the first stage in a change stream pipeline sent to the server",
        "The server returns change stream responses in the specified server response format",
        "Executing a watch helper on a Collection results in notifications for changes to the specified collection",
        "Change Stream should allow valid aggregate pipeline stages",
        ("Executing a watch helper on a Database results in notifications for changes to all collections in the "
        "specified database."),
        ("Executing a watch helper on a MongoClient results in notifications for changes to all collections in all "
        "databases in the cluster."),
        "Test insert, update, replace, and delete event types",
        "Test rename and invalidate event types",
        "Test drop and invalidate event types",
        "Test consecutive resume",
        "Test wallTime field is set in a change event",
    ),
}

# The prose tests of tests/README.md, by number; 5, 9, 10, 12, 15 and 16 are marked "Removed" there.
PROSE_TESTS: dict[int, str] = {
    1: "ChangeStream must continuously track the last seen resumeToken",
    2: "ChangeStream will throw an exception if the server response is missing the resume token",
    3: "ChangeStream will automatically resume one time on a resumable error",
    4: "ChangeStream will not attempt to resume on any error encountered while executing an aggregate command",
    6: "ChangeStream will perform server selection before attempting to resume",
    7: "A cursor with an initial empty batch is not closed on the driver side",
    8: "The killCursors command sent during the resume process must not be allowed to throw an exception",
    11: "getResumeToken returns the postBatchResumeToken when the batch is empty or iterated to its end",
    13: "getResumeToken returns the _id of the previous document returned inside a batch",
    14: "getResumeToken before any iteration returns startAfter, resumeAfter, or nothing",
    17: "A stream started with startAfter that has received nothing resumes with startAfter",
    18: "A stream started with startAfter that has received a result resumes with resumeAfter",
    19: "Large events are split with $changeStreamSplitLargeEvent",
}

_WIRE = (
    "wire protocol: asserts the aggregate/getMore commands a driver sends (command monitoring); rxcs has no "
    "server and no wire commands, a stream reads the oplog directly"
)
_COMMENT = (
    "wire protocol: the comment option only travels in aggregate/getMore commands for the server's logs and "
    "profiler; rxcs has no server to send it to"
)
_FAILPOINT = (
    "server failpoint (failCommand on getMore): a server-side error injection. The embedded oplogs have no "
    "server to fail; RedisOplog retries through connection faults for retry_for seconds instead "
    "(tests/oplog/test_redis_oplog.py)"
)
_ERROR_LABELS = (
    "server failpoint and error labels (ResumableChangeStreamError): the classification of server error codes a "
    "driver resumes on. rxcs streams read a durable log with no server errors; a RedisOplog stream retries "
    "connection faults and reports OplogUnavailableError past retry_for"
)

LEFT_OUT: dict[tuple[str, str], str] = {
    ("change-streams.json", "Test with document comment"): _COMMENT,
    ("change-streams.json", "Test with document comment - pre 4.4"): _COMMENT + " (and a pre-4.4 server error)",
    ("change-streams.json", "Test with string comment"): _COMMENT,
    ("change-streams.json", "Test that comment is set on getMore"): _COMMENT,
    ("change-streams.json", "Test that comment is not set on getMore - pre 4.4"): _COMMENT,
    ("change-streams.json", "Test consecutive resume"): _FAILPOINT,
    (
        "change-streams-errors.json",
        ("The watch helper must not throw a custom exception when executed against a single server topology, "
        "but instead depend on a server error"),
    ): (
        "topology: a standalone MongoDB server refuses change streams (error 40573) because it has no oplog; "
        "an rxcs oplog on one machine is the supported case"
    ),
    ("change-streams-errors.json", "change stream errors on ElectionInProgress"): (
        "server failpoint and replica-set elections: no elections in an embedded or Redis oplog"
    ),
    **{
        ("change-streams-resume-allowlist.json", name): _ERROR_LABELS
        for name in UNIFIED_CASES["change-streams-resume-allowlist.json"]
    },
    **{
        ("change-streams-resume-errorLabels.json", name): _ERROR_LABELS
        for name in UNIFIED_CASES["change-streams-resume-errorLabels.json"]
    },
    (
        "change-streams-showExpandedEvents.json",
        "when provided, showExpandedEvents is sent as a part of the aggregate command",
    ): _WIRE,
    (
        "change-streams-showExpandedEvents.json",
        "when omitted, showExpandedEvents is not sent as a part of the aggregate command",
    ): _WIRE,
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, shardCollection events are reported",
    ): "topology: shardCollection exists only on a sharded cluster; an rxcs oplog is not sharded",
    ("prose", "3"): (
        "automatic resume on a resumable server error: no server. A RedisOplog stream retries connection "
        "faults itself (tests/oplog/test_redis_oplog.py); the embedded oplogs have none"
    ),
    ("prose", "4"): "wire protocol: errors of the aggregate command and retryable reads; no aggregate command",
    ("prose", "6"): "topology: server selection and read preference; there is one oplog to read",
    ("prose", "8"): "wire protocol: killCursors during the resume process; no server cursors",
}
