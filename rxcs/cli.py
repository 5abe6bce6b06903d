"""The ``rxcs`` command: a live demo, ``watch`` for any oplog, ``serve`` over HTTP, and oplog maintenance.

Bad arguments, malformed JSON, a bad filter or token exit with status 2 and
one line on stderr; ``rxcs`` alone prints its usage. ``rxcs watch`` exits 1
when its stream fails (history lost, the oplog damaged or unreachable). The
``oplog`` commands exit 0 when all is well, 1 when they find damage or fail,
2 on bad usage and 3 when another process holds the oplog's writer lock,
with one line ``rxcs oplog <action>: ...``. Events
go to stdout, one flushed line each; logs go to stderr through structlog
(console on a terminal, JSON with ``--log-json``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import io
import json
import logging
import os
import random
import signal
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

import structlog

import rxcs
from rxcs import extjson
from rxcs.errors import (
    ChangeStreamHistoryLost,
    OplogCorruptedError,
    OplogLockedError,
    OplogUnavailableError,
    RxcsError,
)
from rxcs.events import ChangeEvent
from rxcs.oplog.health import check_oplog
from rxcs.oplog.images import IMAGES_OPTION
from rxcs.plan import WatchOptions
from rxcs.stream import watch_with

__all__ = ["main"]

USAGE_ERROR = 2
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a command the shell sees killed by a closed pipe exits with


def _say(text: str, out: TextIO) -> None:
    out.write(f"{text}\n")
    out.flush()


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


class CommandFailed(Exception):
    """The command could not do its work (history lost, the oplog damaged or unreachable): one line, exit status 1."""


_REDIS_URL_FORMS = "redis://host:port/db?stream=NAME (a Redis Cluster: redis+cluster://host:port,.../?stream=NAME)"
# Errors that say the oplog or the stream's history cannot be had, not that the command line was wrong.
_FAILURES = (ChangeStreamHistoryLost, OplogCorruptedError, OplogUnavailableError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


_SUBCOMMANDS = {"oplog": "action", "capture": "source"}  # commands that need one more word, and its dest


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rxcs", description="Change streams over a durable oplog.")
    parser.add_argument("--version", action="version", version=f"rxcs {importlib.metadata.version('rxcs')}")
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines on stderr")
    parser.add_argument(
        "--log-level", default=None, choices=["debug", "info", "warning", "error"],
        help="default: warning (error for the oplog commands, which report in their own lines)",
    )
    parser.set_defaults(usage_of=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser("demo", help="a simulated shop writing to a temporary oplog, watched live")
    demo.add_argument("--count", type=int, default=None, help="stop after N events (default: until Ctrl-C)")
    demo.add_argument("--interval", type=float, default=0.25, help="seconds between writes (default 0.25)")
    demo.add_argument("--seed", type=int, default=None, help="seed the simulation for a repeatable run")
    demo.add_argument("--color", choices=["auto", "always", "never"], default="auto")

    watch = commands.add_parser("watch", help="print the change events of an oplog as they happen")
    watch.add_argument("location", help=f"oplog directory, or {_REDIS_URL_FORMS}")
    watch.add_argument("--db", help="watch this database only (default: the whole deployment)")
    watch.add_argument("--collection", help="watch this collection of --db only")
    filters = watch.add_mutually_exclusive_group()
    filters.add_argument("--match", metavar="JSON", help="a MongoDB filter on the event document")
    filters.add_argument("--pipeline", metavar="JSON", help="a list of aggregation stages")
    start = watch.add_mutually_exclusive_group()
    start.add_argument("--resume-after", metavar="TOKEN", help="start after the event of this resume token")
    start.add_argument(
        "--start-after", metavar="TOKEN", help="as --resume-after, and also after an invalidate event's token"
    )
    start.add_argument("--from-beginning", action="store_true", help="replay everything retained first")
    watch.add_argument("--resume-file", metavar="FILE", help="save the token after every event; resume from it")
    watch.add_argument(
        "--full-document", default="default", choices=sorted(rxcs.operators.FULL_DOCUMENT_MODES), metavar="MODE",
        help="the document an update event carries: %(choices)s (default: %(default)s, none)",
    )
    watch.add_argument(
        "--full-document-before-change", default="off", metavar="MODE",
        choices=sorted(rxcs.operators.FULL_DOCUMENT_BEFORE_CHANGE_MODES),
        help="the document before an update, replace or delete: %(choices)s (default: %(default)s)",
    )
    watch.add_argument(
        "--show-expanded-events", action="store_true", help="also show create, createIndexes and dropIndexes events"
    )
    watch.add_argument(
        "--format", choices=["jsonl", "pretty"], default="jsonl",
        help="jsonl: one event per line (default); pretty: indented",
    )
    watch.add_argument("--count", type=int, default=None, metavar="N", help="exit after N events")

    serve = commands.add_parser(
        "serve", help="serve change streams over HTTP: Server-Sent Events, WebSocket and a live page"
    )
    serve.add_argument("location", help=f"oplog directory, or {_REDIS_URL_FORMS}")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0: any free port)")
    serve.add_argument(
        "--token-file", metavar="FILE", help="require this bearer token (required when not on loopback)"
    )
    serve.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="a browser origin allowed besides the server's own, e.g. https://dash.example.org (repeatable)",
    )
    serve.add_argument("--max-watchers", type=int, default=256, help="streams served at once (default 256)")
    serve.add_argument(
        "--ready-max-lag", type=int, default=None, metavar="ENTRIES",
        help="GET /readyz answers 503 while a watcher lags more than this many entries (default: no limit)",
    )

    oplog = commands.add_parser("oplog", help="inspect and maintain an oplog (a directory or a Redis URL)")
    oplog.set_defaults(usage_of=oplog)
    actions = oplog.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    where = f"oplog directory, or {_REDIS_URL_FORMS}"
    info = actions.add_parser("info", help="op_id range, size, identity (and segments for a directory)")
    info.add_argument("location", help=where)
    dump = actions.add_parser("dump", help="print entries as JSON lines")
    dump.add_argument("location", help=where)
    dump.add_argument("--from", dest="from_op_id", type=int, default=None, help="first op_id to print")
    dump.add_argument("--limit", type=int, default=None)
    verify = actions.add_parser("verify", help="check every entry (every frame of a directory); name the first bad one")
    verify.add_argument("location", help=where)
    trim = actions.add_parser("trim", help="drop old entries (whole segments of a directory)")
    trim.add_argument("location", help=where)
    how = trim.add_mutually_exclusive_group(required=True)
    how.add_argument("--before", type=int, metavar="OP_ID", help="drop entries below this op_id")
    how.add_argument("--keep-bytes", type=int, metavar="N", help="keep at most N bytes of the newest entries")
    images = actions.add_parser(
        "images", help="document images (updateLookup, pre- and post-images): show what is kept, or turn them on"
    )
    images.add_argument("location", help=where)
    turn = images.add_mutually_exclusive_group()
    turn.add_argument("--on", action="store_true", help="keep them for every collection (or for --collection)")
    turn.add_argument("--off", action="store_true", help="stop keeping them for --collection")
    images.add_argument("--db", help="with --collection: the collection's database")
    images.add_argument("--collection", help="turn images on or off for this collection alone (needs --db)")
    repair = actions.add_parser(
        "repair", help="rebuild a directory's indexes from its segments and cut a torn tail, saying what it does"
    )
    repair.add_argument("location", help="oplog directory")
    repair.add_argument("--dry-run", action="store_true", help="show exactly what it would do; change nothing")
    repair.add_argument(
        "--truncate-at-damage", action="store_true",
        help="cut the newest segment at a damaged frame, dropping the op_ids it lists (refused otherwise)",
    )
    _capture_parser(commands)
    _consumers_parser(commands)
    return parser


def _consumers_parser(commands: Any) -> None:
    consumers = commands.add_parser(
        "consumers", help="named consumers' positions: list them, move one (reset), forget one (delete)",
        description="rxcs consumers LOCATION lists; rxcs consumers reset|delete LOCATION NAME changes one.",
    )
    actions = consumers.add_subparsers(dest="action", required=True, parser_class=_Parser)
    where = f"oplog directory, or {_REDIS_URL_FORMS}"
    listing = actions.add_parser("list", help="position, lag (entries, seconds), last commit, scope (the default)")
    listing.add_argument("location", help=where)
    listing.add_argument("--json", action="store_true", help="one JSON document per consumer")
    reset = actions.add_parser("reset", help="move a consumer: its next run resumes there")
    reset.add_argument("location", help=where)
    reset.add_argument("name", help="the consumer or group to move")
    reset.add_argument("--to", required=True, metavar="TOKEN|BEGINNING|NOW",
                       help="a resume token, the oldest retained entry, or the end of the oplog")
    delete = actions.add_parser("delete", help="forget a consumer: its next run starts afresh")
    delete.add_argument("location", help=where)
    delete.add_argument("name", help="the consumer or group whose checkpoints go")


_CONSUMERS_ACTIONS: Final = ("list", "reset", "delete", "-h", "--help")


def _with_default_action(argv: list[str]) -> list[str]:
    """``rxcs consumers LOCATION`` is ``rxcs consumers list LOCATION``."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] == "--log-level" else 1
    if index + 1 < len(argv) and argv[index] == "consumers" and argv[index + 1] not in _CONSUMERS_ACTIONS:
        return [*argv[: index + 1], "list", *argv[index + 1:]]
    return argv


def _capture_parser(commands: Any) -> None:
    capture = commands.add_parser("capture", help="record the changes a PostgreSQL or SQLite database commits")
    capture.set_defaults(usage_of=capture)
    sources = capture.add_subparsers(dest="source", metavar="SOURCE", parser_class=_Parser)
    oplog_help = f"oplog directory (created when missing), or {_REDIS_URL_FORMS}"
    postgres = sources.add_parser("postgres", help="logical decoding (pgoutput): snapshot, then stream")
    postgres.add_argument("dsn", help="libpq connection string or URL (postgresql://user@host/db)")
    postgres.add_argument("--oplog", required=True, help=oplog_help)
    postgres.add_argument("--tables", action="append", metavar="T[,T...]",
                          help="schema.table or table (public); default: every table of the publication")
    postgres.add_argument("--slot", default="rxcs", help="replication slot (default rxcs)")
    postgres.add_argument("--publication", default="rxcs", help="publication, created when missing (default rxcs)")
    postgres.add_argument("--db", help="the namespace's db (default: the database's name)")
    postgres.add_argument("--namespace", choices=["database", "schema"], default="database",
                          help="db is the database (default) or the schema")
    postgres.add_argument("--no-snapshot", action="store_true", help="stream only; do not record existing rows")
    postgres.add_argument("--name", help="the capture's name in the entries' source (default postgres:SLOT)")
    sqlite = sources.add_parser("sqlite", help="a trigger outbox inside the application's transactions")
    sqlite.add_argument("database", help="SQLite database file")
    sqlite.add_argument("--oplog", required=True, help=oplog_help)
    sqlite.add_argument("--tables", action="append", metavar="T[,T...]", help="default: every table with a key")
    sqlite.add_argument("--db", help="the namespace's db (default: the file's name without suffix)")
    sqlite.add_argument("--no-snapshot", action="store_true", help="do not record rows that exist when installing")
    sqlite.add_argument("--name", help="the capture's name in the entries' source (default sqlite:DB)")
    status = sources.add_parser("status", help="a PostgreSQL capture's slot: lag, WAL held, slots left behind")
    status.add_argument("dsn", help="libpq connection string or URL")
    status.add_argument("--slot", default="rxcs", help="the capture's slot (default rxcs)")
    status.add_argument("--oplog", help="also read the capture's last recorded position from this oplog")
    status.add_argument("--name", help="the capture's name in the entries' source (default postgres:SLOT)")
    drop = sources.add_parser("drop-slot", help="drop a replication slot left behind (it holds WAL)")
    drop.add_argument("dsn", help="libpq connection string or URL")
    drop.add_argument("slot")


def _configure_logging(*, as_json: bool, level: str) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _build_parser().parse_args(_with_default_action(list(sys.argv[1:] if argv is None else argv)))
        if args.command is None or getattr(args, _SUBCOMMANDS.get(args.command, "command")) is None:
            sys.stderr.write(args.usage_of.format_help())  # what may follow: the help of the command given so far
            return USAGE_ERROR
        level = args.log_level or ("error" if args.command == "oplog" else "warning")
        _configure_logging(as_json=args.log_json, level=level)
        if args.command == "demo":
            return _demo(args)
        if args.command == "watch":
            return _watch(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "capture":
            return _capture(args)
        if args.command == "consumers":
            return _consumers(args)
        return _oplog(args)
    except UsageError as exc:
        _say(f"rxcs: error: {exc}", sys.stderr)
        return USAGE_ERROR
    except CommandFailed as exc:
        _say(f"rxcs {args.command}: {exc}", sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader of stdout went away (`rxcs watch ... | head`): end quietly
        _silence_stdout()
        return BROKEN_PIPE


class _CtrlC:
    """While active, Ctrl-C raises KeyboardInterrupt as usual, except inside ``held()``: there it waits for the end."""

    def __init__(self) -> None:
        self._holding = False
        self._pending = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupted(self, signum: int, frame: object) -> None:
        if self._holding:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of it does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# -- watch ------------------------------------------------------------------------


def _parse_json(text: str, option: str) -> Any:
    try:
        return extjson.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: not valid JSON ({exc})") from None
    except ValueError as exc:  # valid JSON, but an Extended JSON value in it is not (a bad $date...)
        raise UsageError(f"{option}: {exc}") from None


def _watch_options(args: argparse.Namespace, oplog_id: uuid.UUID) -> WatchOptions:
    """The stream's options, checked; the start: a token given, else where the last run stopped, else the
    beginning or now."""
    options: dict[str, Any] = {
        "db": args.db,
        "collection": args.collection,
        "full_document": args.full_document,
        "full_document_before_change": args.full_document_before_change,
        "show_expanded_events": args.show_expanded_events,
    }
    if args.match is not None:
        options["pipeline"] = [{"$match": _parse_json(args.match, "--match")}]
    elif args.pipeline is not None:
        options["pipeline"] = _parse_json(args.pipeline, "--pipeline")
    if args.resume_after:
        options["resume_after"] = args.resume_after
    elif args.start_after:
        options["start_after"] = args.start_after
    else:
        stopped = _where_the_last_run_stopped(args, oplog_id)
        if stopped is not None:
            options["start_after" if stopped.invalidate else "resume_after"] = stopped
        elif args.from_beginning:
            options["start_at_operation_time"] = rxcs.BEGINNING
    try:
        return WatchOptions(**options)
    except RxcsError as exc:
        raise UsageError(str(exc)) from None


def _where_the_last_run_stopped(args: argparse.Namespace, oplog_id: uuid.UUID) -> rxcs.ResumeToken | None:
    """The later of the --resume-file token and, when events go to a file, the token of its last line.

    The token is saved after its event is written, so a run killed between
    the two leaves the file one event ahead of the token: resuming from the
    file's last line then writes every event exactly once.
    """
    if not args.resume_file:
        return None
    saved = None
    path = Path(args.resume_file)
    if path.exists():
        try:
            saved = rxcs.ResumeToken.parse(path.read_text().strip())
        except (OSError, UnicodeDecodeError, rxcs.InvalidResumeToken) as exc:
            raise UsageError(f"--resume-file {args.resume_file}: {exc}") from None
    written = _last_written_token(sys.stdout, oplog_id) if args.format == "jsonl" else None
    if saved is None or (written is not None and saved.oplog_id == written.oplog_id and written > saved):
        return written or saved
    return saved


def _last_written_token(out: TextIO, oplog_id: uuid.UUID) -> rxcs.ResumeToken | None:
    """The token of the last whole event line of ``out``, when it is a file opened for appending (``>>``).

    A torn last line (a run killed while writing it) is cut off first: the
    event is written again, whole. Anything else (a pipe, a terminal, a line
    that is not an event of this oplog) gives None.
    """
    try:
        fd = out.fileno()
        status = os.fstat(fd)
        appending = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(status.st_mode) or not appending or status.st_size == 0:
        return None
    try:  # the descriptor is write-only: read the same file through another (Linux names it in /proc)
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.fstat(reader).st_ino != status.st_ino:
            return None
        line, torn = _last_line(reader, status.st_size)
    finally:
        os.close(reader)
    if torn.startswith(b"{"):
        os.ftruncate(fd, status.st_size - len(torn))
        _say(f"rxcs watch: cut the torn last line ({len(torn)} bytes) the last run left in its output", sys.stderr)
    try:
        token = rxcs.ResumeToken.parse(json.loads(line)["_id"])
    except (ValueError, KeyError, TypeError):
        return None
    return token if token.oplog_id == oplog_id else None


def _last_line(fd: int, size: int) -> tuple[bytes, bytes]:
    """The last newline-terminated line of a file (without its newline), and what follows it."""
    chunk, start, data = 64 * 1024, size, b""
    while start > 0:
        begin = max(0, start - chunk)
        data = os.pread(fd, start - begin, begin) + data
        start, chunk = begin, chunk * 2
        end = data.rfind(b"\n")
        if end != -1 and (data.rfind(b"\n", 0, end) != -1 or start == 0):
            return data[data.rfind(b"\n", 0, end) + 1 : end], data[end + 1 :]
    return b"", data


def _save_token(path: Path, token: rxcs.ResumeToken) -> None:
    """Write the token atomically: a crash leaves the old token or the new one."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(f"{token}\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be positive")
    location = _checked_location(args.location)
    resume_file = Path(args.resume_file) if args.resume_file else None
    with _open_oplog(location, readonly=True) as oplog:
        options = _watch_options(args, oplog.oplog_id)
        try:
            stream = watch_with(oplog, options).iterate()
        except _FAILURES as exc:
            raise CommandFailed(f"{type(exc).__name__}: {exc}") from None
        except RxcsError as exc:
            raise UsageError(str(exc)) from None
        printed = 0
        last = stream.resume_token  # of the last event written out: what a new run resumes after
        try:
            with stream, _CtrlC() as ctrl_c:
                while stream.alive:
                    event = stream.try_next()
                    token = stream.resume_token
                    if event is None:  # nothing to write: the position may have moved past filtered entries
                        if token != last:
                            with ctrl_c.held():
                                last = token
                                if resume_file is not None:
                                    _save_token(resume_file, last)
                        continue
                    with ctrl_c.held():  # an event written out is one whose token is reported and saved
                        _print_event(event, args.format, sys.stdout)
                        last = token
                        if resume_file is not None:
                            _save_token(resume_file, last)
                    printed += 1
                    if args.count is not None and printed >= args.count:
                        break
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            _silence_stdout()
            _say(f"resume token: {last}", sys.stderr)
            return BROKEN_PIPE
        except RxcsError as exc:
            _say(f"rxcs watch: {type(exc).__name__}: {exc}", sys.stderr)
            _say(f"resume token: {last}", sys.stderr)
            return 1
        _say(f"resume token: {last}", sys.stderr)
    return 0


_REDIS_SCHEMES = (
    "redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://",
    "rediss+cluster://",
)


def _checked_location(location: str) -> str:
    """The location, once it is a Redis URL or an existing directory."""
    if not location.startswith(_REDIS_SCHEMES) and not Path(location).is_dir():
        raise UsageError(f"{location}: no oplog directory there")
    return location


def _open_oplog(location: str, *, readonly: bool) -> rxcs.Oplog:
    """A FileOplog directory (readonly unless writing) or a Redis URL.

    No oplog there is a usage error; a damaged or unreachable one a failure. The message names the
    location once: the oplog's own errors mostly name it already.
    """
    try:
        return _open(location, readonly=readonly)
    except RxcsError as exc:
        message = str(exc) if location in str(exc) else f"{location}: {exc}"
        if isinstance(exc, _FAILURES):
            raise CommandFailed(f"{type(exc).__name__}: {message}") from None
        raise UsageError(message) from None


def _open(location: str, *, readonly: bool, **options: Any) -> rxcs.Oplog:
    if location.startswith(_REDIS_SCHEMES):
        return rxcs.open_oplog(location, **options)
    return rxcs.open_oplog(location, readonly=readonly, **options)


def _print_event(event: Any, form: str, out: TextIO) -> None:
    document = event.to_document() if isinstance(event, ChangeEvent) else event
    out.write(extjson.dumps(document, indent=2 if form == "pretty" else None))
    out.write("\n")
    out.flush()


# -- serve ----------------------------------------------------------------------------


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {path}: cannot read it ({exc})") from None
    if not token or len(token.split()) != 1:
        raise UsageError(f"--token-file {path}: must hold one token on one line")
    return token


def _serve(args: argparse.Namespace) -> int:
    try:
        from rxcs import http
        from rxcs.http._server import is_loopback
    except ImportError as exc:
        raise UsageError(f"rxcs serve needs the HTTP extra ({exc.name} is missing): install rxcs[http]") from None
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.max_watchers < 1:
        raise UsageError("--max-watchers must be positive")
    if args.ready_max_lag is not None and args.ready_max_lag < 0:
        raise UsageError("--ready-max-lag must not be negative")
    if args.token_file is None and not is_loopback(args.host):
        raise UsageError(f"--host {args.host} is not loopback: give --token-file so that clients must authenticate")
    token = _read_token(args.token_file) if args.token_file is not None else None
    with _open_oplog(_checked_location(args.location), readonly=True) as oplog:
        try:
            http.serve(
                oplog, host=args.host, port=args.port, token=token, allowed_origins=args.allow_origin,
                max_watchers=args.max_watchers, ready_max_lag=args.ready_max_lag,
                on_ready=lambda url: _say(f"rxcs serve: {url} (Ctrl-C to stop)", sys.stdout),
            )
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


# -- oplog maintenance ------------------------------------------------------------


FAILED = 1  # oplog commands: damage found, or the operation failed (storage unreachable, repair refused)
LOCKED = 3  # oplog commands that write (trim, repair): another process holds the oplog's writer lock


def _oplog(args: argparse.Namespace) -> int:
    """Run an ``rxcs oplog`` action: 0 ok, 1 damage found or failed, 2 usage error, 3 locked by a writer.

    Whatever goes wrong is one line on stderr, ``rxcs oplog <action>: ...``.
    """
    action = args.action
    try:
        return _oplog_action(args)
    except UsageError as exc:
        status, message = USAGE_ERROR, str(exc)
    except OplogLockedError as exc:
        status, message = LOCKED, str(exc)
    except (OplogCorruptedError, OplogUnavailableError, CommandFailed) as exc:
        status, message = FAILED, str(exc)
    except RxcsError as exc:  # not an oplog there, or one this rxcs cannot open
        status, message = USAGE_ERROR, str(exc)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # what was printed before the failure comes first
    _say(f"rxcs oplog {action}: {message}", sys.stderr)
    return status


def _oplog_action(args: argparse.Namespace) -> int:
    from rxcs.oplog.file import META_NAME  # FileOplog needs fcntl: imported where a directory is used

    location = _checked_location(args.location)
    writes = args.action in ("trim", "repair") or (args.action == "images" and (args.on or args.off))
    if writes and not location.startswith(_REDIS_SCHEMES) and not (Path(location) / META_NAME).exists():
        raise UsageError(f"{location}: no oplog here (no {META_NAME})")  # writing must not create one
    if args.action == "repair" and location.startswith(_REDIS_SCHEMES):
        raise UsageError(f"{location}: repair works on a FileOplog directory; a Redis stream has no files to repair")
    # Images for every collection are turned on as an oplog is opened; the setting stays with the oplog.
    every = args.action == "images" and args.on and args.collection is None
    with _open(location, readonly=not writes, **({"document_images": True} if every else {})) as oplog:
        if args.action == "info":
            _say(extjson.dumps(oplog.describe(), indent=2), sys.stdout)
            health = check_oplog(oplog)  # info is a probe too: exit 1 when the oplog cannot be used now
            if not health.healthy:
                raise CommandFailed(f"unhealthy: {'; '.join(health.problems)}")
            return 0
        if args.action == "dump":
            return _dump(oplog, args.from_op_id, args.limit)
        if args.action == "verify":
            return _verify(oplog)
        if args.action == "repair":
            return _repair(oplog, dry_run=args.dry_run, truncate_at_damage=args.truncate_at_damage)
        if args.action == "images":
            return _images(oplog, args)
        return _trim(oplog, args.before, args.keep_bytes)


def _consumers(args: argparse.Namespace) -> int:
    """Run an ``rxcs consumers`` action: 0 ok, 1 no such consumer, 2 usage error (a bad name, token or location)."""
    location = _checked_location(args.location)
    with _open_oplog(location, readonly=True) as oplog:
        try:
            if args.action == "list":
                found = rxcs.list_consumers(oplog)
                if args.json:
                    for info in found:
                        _say(json.dumps(info.to_document()), sys.stdout)
                else:
                    _say(_consumers_table(found), sys.stdout)
                return 0
            if args.action == "delete":
                if not rxcs.delete_consumer(oplog, args.name):
                    _say(f"rxcs consumers delete: no consumer named {args.name!r}", sys.stderr)
                    return FAILED
                _say(f"deleted consumer {args.name}", sys.stdout)
                return 0
            to = args.to
            target: Any = rxcs.BEGINNING if to.upper() == "BEGINNING" else "now" if to.upper() == "NOW" else to
            token = rxcs.reset_consumer(oplog, args.name, target)
            _say(f"consumer {args.name} now resumes after op_id {token.op_id} ({token})", sys.stdout)
            return 0
        except (rxcs.InvalidOptionError, rxcs.InvalidResumeToken, rxcs.ConsumerMismatchError,
                rxcs.ChangeStreamHistoryLost) as exc:
            _say(f"rxcs consumers {args.action}: {exc}", sys.stderr)
            return USAGE_ERROR
        except RxcsError as exc:
            _say(f"rxcs consumers {args.action}: {exc}", sys.stderr)
            return FAILED


def _consumers_table(found: list[rxcs.ConsumerInfo]) -> str:
    """The consumers as an aligned table, one per line."""
    if not found:
        return "no consumers"
    rows = [("NAME", "POSITION", "LAG", "LAG_S", "COMMITTED", "SCOPE")]
    for info in found:
        scope = "*" if info.db is None else info.db if info.collection is None else f"{info.db}.{info.collection}"
        rows.append((
            info.name, str(info.op_id) + (" (history lost)" if info.history_lost else ""), str(info.lag_entries),
            "-" if info.lag_seconds is None else f"{info.lag_seconds:.1f}",
            "-" if info.committed_at is None else info.committed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            scope + (" +pipeline" if info.pipeline else "")
            + ("" if info.members is None else f"  group of {len(info.members)}: " + " ".join(
                f"{member}={len(partitions)}" for member, partitions in info.members.items())),
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _dump(oplog: rxcs.Oplog, from_op_id: int | None, limit: int | None) -> int:
    if limit is not None and limit < 0:
        raise UsageError("--limit must not be negative")
    after = (oplog.first_op_id if from_op_id is None else max(from_op_id, oplog.first_op_id)) - 1
    remaining = limit
    out = sys.stdout
    batch_size = 1000
    while remaining is None or remaining > 0:
        try:
            with oplog.cursor(after) as cursor:
                batch = cursor.read(batch_size if remaining is None else min(batch_size, remaining))
        except RxcsError:
            if batch_size == 1:
                raise
            batch_size = 1  # a read fails whole: go one entry at a time to print every entry before the damage
            continue
        if not batch:
            break
        for entry in batch:
            out.write(extjson.dumps(_entry_document(entry)))
            out.write("\n")
        after = batch[-1].op_id
        if remaining is not None:
            remaining -= len(batch)
    out.flush()
    return 0


def _entry_document(entry: rxcs.OplogEntry) -> dict[str, Any]:
    document: dict[str, Any] = {
        "op_id": entry.op_id, "op": entry.op, "ns": entry.ns.to_document(),
        "clusterTime": entry.cluster_time, "wallTime": entry.wall_time,
    }
    shown = ("op_id", "op", "db", "coll", "cluster_time", "wall_time_ms")
    document.update(
        (name, value) for name, value in entry._asdict().items() if name not in shown and value is not None
    )
    return document


def _verify(oplog: Any) -> int:
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = oplog.verify(progress=progress.update if progress is not None else None)
    finally:
        if progress is not None:
            progress.done()
    _say(f"ok: {result}" if result is not None else "ok", sys.stdout)
    return 0


def _repair(oplog: rxcs.Oplog, *, dry_run: bool, truncate_at_damage: bool) -> int:
    """Print each step, done or (dry run, or refused) to be done; a refusal raises, naming the damage."""
    from rxcs.oplog.file import FileOplog

    if not isinstance(oplog, FileOplog):
        raise UsageError(f"repair works on a FileOplog directory, not a {type(oplog).__name__}")
    plan = oplog.repair(dry_run=dry_run, truncate_at_damage=truncate_at_damage)
    done = not dry_run and plan.refusal is None
    for step in plan.steps:
        _say(step.describe(done=done), sys.stdout)
    if plan.refusal is not None:
        raise plan.refusal
    if not plan.steps:
        _say("nothing to repair", sys.stdout)
    return 0


class _Progress:
    """A one-line progress bar for a terminal."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = 0.0

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        width = 40
        filled = width * done // max(total, 1)
        self._out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self._out.flush()

    def done(self) -> None:
        self._out.write("\n")
        self._out.flush()


def _images(oplog: rxcs.Oplog, args: argparse.Namespace) -> int:
    """Print what document images the oplog keeps, after turning them on or off as asked."""
    if (args.db is None) != (args.collection is None):
        raise UsageError("--db and --collection go together")
    if args.off and args.collection is None:
        raise UsageError("--off needs --db and --collection: images kept for every collection stay on")
    if args.collection is not None:
        if not (args.on or args.off):
            raise UsageError("--collection needs --on or --off")
        oplog.modify_collection(args.db, args.collection, {IMAGES_OPTION: {"enabled": bool(args.on)}})
    images = oplog.document_images
    described: dict[str, Any] = {"kept": images is not None}
    if images is not None:
        oplog.sync()
        described.update(images.describe())
    _say(extjson.dumps(described, indent=2), sys.stdout)
    return 0


def _trim(oplog: Any, before: int | None, keep_bytes: int | None) -> int:
    if keep_bytes is not None:
        if keep_bytes < 0:
            raise UsageError("--keep-bytes must not be negative")
        if not hasattr(oplog, "op_id_keeping_bytes"):
            raise UsageError(f"--keep-bytes needs a FileOplog; trim a {type(oplog).__name__} with --before")
        before = oplog.op_id_keeping_bytes(keep_bytes)
    assert before is not None
    dropped = oplog.trim(before_op_id=before)
    _say(f"dropped {dropped} entries; oldest retained op_id is now {oplog.first_op_id}", sys.stdout)
    return 0


# -- capture ----------------------------------------------------------------------------


def _tables(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    tables = [table.strip() for value in values for table in value.split(",") if table.strip()]
    if not tables:
        raise UsageError("--tables names no table")
    return tables


def _capture(args: argparse.Namespace) -> int:
    import rxcs.capture

    if args.source == "status":
        return _capture_status(args)
    if args.source == "drop-slot":
        try:
            rxcs.capture.drop_postgres_slot(args.dsn, args.slot)
        except RxcsError as exc:
            _say(f"rxcs capture: {exc}", sys.stderr)
            return 1
        _say(f"dropped slot {args.slot}", sys.stdout)
        return 0
    location = args.oplog
    try:
        oplog = rxcs.open_oplog(location if location.startswith(_REDIS_SCHEMES) else Path(location))
    except RxcsError as exc:
        raise UsageError(f"--oplog {location}: {exc}") from None
    try:
        if args.source == "postgres":
            capture: Any = rxcs.capture.postgres(
                args.dsn, oplog, tables=_tables(args.tables), slot=args.slot, publication=args.publication,
                db=args.db, namespace=args.namespace, snapshot=not args.no_snapshot, name=args.name,
            )
        else:
            capture = rxcs.capture.sqlite(
                args.database, oplog, tables=_tables(args.tables), db=args.db, snapshot=not args.no_snapshot,
                name=args.name,
            )
    except RxcsError as exc:
        oplog.close()
        raise UsageError(str(exc)) from None
    previous = {number: signal.signal(number, lambda *_: capture.stop()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        capture.run()
    except RxcsError as exc:
        _say(f"rxcs capture: {type(exc).__name__}: {exc}", sys.stderr)
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        oplog.close()
    return 0


def _capture_status(args: argparse.Namespace) -> int:
    import rxcs.capture
    from rxcs.capture._pgoutput import format_lsn, parse_lsn
    from rxcs.capture._position import newest_position

    try:
        slots = rxcs.capture.postgres_slots(args.dsn)
    except RxcsError as exc:
        _say(f"rxcs capture status: {exc}", sys.stderr)
        return 1
    mine = next((slot for slot in slots if slot.slot == args.slot), None)
    report: dict[str, Any] = {"slot": None if mine is None else _plain_record(mine)}
    warnings = []
    if mine is None:
        warnings.append(f"no slot {args.slot!r}: no capture has run with it, or it was dropped")
    warnings.extend(
        f"slot {slot.slot!r} is not being read and holds {slot.retained_bytes} bytes of WAL on the server; "
        f"drop it (rxcs capture drop-slot DSN {slot.slot}) if no capture will read it again"
        for slot in slots if not slot.active
    )
    if args.oplog:
        with _open_oplog(_checked_location(args.oplog), readonly=True) as oplog:
            position = newest_position(oplog, args.name or f"postgres:{args.slot}")
        recorded: dict[str, Any] | None = None
        if position is not None:
            lsn = format_lsn(position.lsn)
            recorded = {"lsn": lsn, "snapshot": position.snapshot, "op_id": position.op_id}
            if position.committed is not None:
                recorded["committed"] = position.committed
            if mine is not None:
                behind = parse_lsn(mine.server_lsn) - position.lsn
                recorded["behind_bytes"] = max(0, behind)
        report["recorded"] = recorded
    report["other_slots"] = [_plain_record(slot) for slot in slots if slot.slot != args.slot]
    report["warnings"] = warnings
    _say(extjson.dumps(report, indent=2), sys.stdout)
    return 0


def _plain_record(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


# -- demo -----------------------------------------------------------------------------

_COLORS = {
    "insert": "32", "update": "33", "replace": "36", "delete": "31", "drop": "35", "rename": "35",
    "dropDatabase": "35", "invalidate": "1;31", "create": "34", "createIndexes": "34", "dropIndexes": "34",
}
_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Leslie", "Margaret", "Ken", "Radia"]


def _shop(rng: random.Random) -> Iterator[rxcs.Change]:
    """An endless, plausible stream of shop changes."""
    yield rxcs.Change.create_collection("shop", "users")
    yield rxcs.Change.create_index("shop", "users", {"key": {"email": 1}, "unique": True})
    users: list[int] = []
    orders: list[int] = []
    next_user = next_order = 1
    step = 0
    while True:
        step += 1
        if step % 40 == 0:
            yield rxcs.Change.rename_collection("shop", "orders", "shop", f"orders_{step // 40}")
            yield rxcs.Change.create_collection("shop", "orders")
            orders.clear()
            continue
        roll = rng.random()
        if roll < 0.3 or not users:
            name = rng.choice(_NAMES)
            user = {"_id": next_user, "name": name, "email": f"{name.lower()}{next_user}@example.org", "orders": 0}
            users.append(next_user)
            next_user += 1
            yield rxcs.Change.insert("shop", "users", user)
        elif roll < 0.6:
            order = {
                "_id": next_order, "user": rng.choice(users), "total": round(rng.uniform(5, 250), 2),
                "status": "new",
            }
            orders.append(next_order)
            next_order += 1
            yield rxcs.Change.insert("shop", "orders", order)
        elif roll < 0.8 and orders:
            order_id = rng.choice(orders)
            status = rng.choice(["paid", "shipped", "delivered"])
            yield rxcs.Change.update("shop", "orders", order_id, updated_fields={"status": status})
        elif roll < 0.9 and len(users) > 3:
            user_id = users.pop(rng.randrange(len(users)))
            yield rxcs.Change.delete("shop", "users", user_id)
        else:
            user_id = rng.choice(users)
            yield rxcs.Change.replace(
                "shop", "users", user_id,
                {"_id": user_id, "name": rng.choice(_NAMES), "email": f"user{user_id}@example.org", "vip": True},
            )


def _demo(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be positive")
    if args.interval < 0:
        raise UsageError("--interval must not be negative")
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    rng = random.Random(args.seed)
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="rxcs-demo-") as directory:
        path = Path(directory) / "oplog"
        with rxcs.open_oplog(path) as oplog:
            out.write(f"rxcs demo: a shop writing to {path}; watching shop.* (Ctrl-C to stop)\n")
            out.flush()
            stop = threading.Event()
            with rxcs.watch(oplog, "shop", show_expanded_events=True).iterate() as stream:
                producer = threading.Thread(
                    target=_produce, args=(oplog, _shop(rng), args.interval, stop), name="demo-producer"
                )
                producer.start()
                shown = 0
                try:
                    for event in stream:
                        out.write(_demo_line(event, color) + "\n")
                        out.flush()
                        shown += 1
                        if args.count is not None and shown >= args.count:
                            break
                except KeyboardInterrupt:
                    pass
                finally:
                    stop.set()
                    producer.join()
            out.write(f"rxcs demo: {shown} events (the temporary oplog is deleted)\n")
            out.flush()
    return 0


def _produce(oplog: rxcs.Oplog, changes: Iterator[rxcs.Change], interval: float, stop: threading.Event) -> None:
    for change in changes:
        if stop.is_set():
            return
        oplog.append(change)
        if interval and stop.wait(interval):
            return


def _demo_line(event: ChangeEvent, color: bool) -> str:
    kind = str(event.operation_type)
    clock = event.wall_time.strftime("%H:%M:%S.%f")[:-3]
    detail: Any
    if event.update_description is not None:  # the change as an update document would write it
        update = event.update_description
        detail = {"$set": update.updated_fields} if update.updated_fields else {}
        if update.removed_fields:
            detail["$unset"] = dict.fromkeys(update.removed_fields, "")
    elif event.full_document is not None:
        detail = event.full_document
    elif event.to is not None:
        detail = {"to": str(event.to)}
    elif event.operation_description is not None:
        detail = event.operation_description
    else:
        detail = ""
    key = extjson.dumps(event.document_key) if event.document_key is not None else ""
    text = extjson.dumps(detail) if detail != "" else ""
    label = f"{kind:<13}"
    if color:
        label = f"\033[{_COLORS.get(kind, '0')}m{label}\033[0m"
    return f"{clock}  #{event.op_id:<5} {label} {event.ns!s:<16} {key:<12} {text}"
