"""Where an oplog keeps its consumers' checkpoints: a small store of named JSON records beside the entries.

A record is a plain JSON document (``rxcs.consumers`` gives it meaning: a
named consumer's resume token, scope and pipeline, or a group's members,
leases and partition checkpoints). Each backend keeps its records with its
entries, so whoever can open the oplog finds them:

- ``FileCheckpoints``: one file per name in the oplog directory's
  ``consumers/`` folder, replaced atomically (written to a temporary file,
  fsynced, renamed, the folder fsynced): a process killed at any point leaves
  the old record or the new one, never a mix. ``update`` holds an OS file
  lock, so processes of one host change a record one at a time.
- ``RedisCheckpoints``: one field per name in the hash ``{STREAM}:consumers``
  (the stream's hash slot); ``update`` is an optimistic ``WATCH``/``MULTI``
  transaction, so hosts sharing the oplog change a record one at a time.
- ``MemoryCheckpoints``: a dict under a lock.

Names are 1 to 100 characters of letters, digits, ``_``, ``-`` and ``.``,
not starting with a dot: they are file names on disk.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, final

from rxcs.errors import InvalidOptionError, RxcsError
from rxcs.log import log
from rxcs.oplog import osio

__all__ = [
    "CheckpointStore",
    "FileCheckpoints",
    "MemoryCheckpoints",
    "Record",
    "RedisCheckpoints",
    "check_name",
    "trim_floor",
    "warn_trimmed_past",
]

Record = dict[str, Any]
"""A checkpoint record: a JSON document."""

_NAME: Final = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}")
FOLDER: Final = "consumers"
_SUFFIX: Final = ".json"


def check_name(name: object, what: str = "consumer") -> str:
    """Return ``name`` when it can name a consumer (or group, or member); raise ``InvalidOptionError`` otherwise.

    Examples:
        >>> check_name("billing-v2")
        'billing-v2'
        >>> check_name("../etc")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rxcs.errors.InvalidOptionError: consumer name '../etc' is not allowed: use 1 to 100 letters, digits, ...
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidOptionError(
            f"{what} name {name!r} is not allowed: use 1 to 100 letters, digits, '_', '-' or '.', not starting with '.'"
        )
    return name


class CheckpointStore(abc.ABC):
    """Named records kept with an oplog. ``save`` and ``delete`` of one name are atomic; ``update`` is a
    read-modify-write that no other ``update`` of the same store interleaves with, across processes."""

    def __init__(self) -> None:
        self.warned: set[tuple[str, int]] = set()  # (name, needs) a trim passed and a warning named: said once

    @abc.abstractmethod
    def load(self, name: str) -> Record | None:
        """The record of ``name``, or None."""

    @abc.abstractmethod
    def load_all(self) -> dict[str, Record]:
        """Every record, by name."""

    @abc.abstractmethod
    def save(self, name: str, record: Record) -> None:
        """Replace the record of ``name`` (atomically: a crash leaves the old one or the new one)."""

    @abc.abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the record of ``name``; False when there was none."""

    @abc.abstractmethod
    def update(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        """Apply ``change`` to the record of ``name`` (None: absent) and store what it returns, atomically.

        ``change`` may be called more than once (an optimistic backend retries
        it after a concurrent change) and must only compute. Returning None
        leaves the record as it was. Returns the record stored (or found).
        """


def needs(store: CheckpointStore) -> dict[str, int]:
    """The first op_id each record still needs (its ``needs_op_id``), by name; {} when they cannot be read."""
    try:
        records = store.load_all()
    except (RxcsError, OSError) as exc:  # a trim goes on without them, and says so
        log.warning("consumer checkpoints unreadable; trimming without them", error=repr(exc))
        return {}
    found = {}
    for name, record in records.items():
        need = record.get("needs_op_id")
        if isinstance(need, int) and not isinstance(need, bool):
            found[name] = need
    return found


def trim_floor(store: CheckpointStore, before_op_id: int, *, retain: bool) -> int:
    """Where a trim to ``before_op_id`` may go: no further than the oldest checkpoint's need when ``retain``."""
    if not retain:
        return before_op_id
    found = needs(store)
    return min(before_op_id, *found.values()) if found else before_op_id


def warn_trimmed_past(store: CheckpointStore, first_op_id: int, oplog_id: str) -> None:
    """Log a warning naming the consumers whose checkpoints a trim, now at ``first_op_id``, left behind."""
    found = needs(store)
    passed = sorted(name for name, op_id in found.items() if op_id < first_op_id)
    warned = store.warned
    fresh = [name for name in passed if (name, found[name]) not in warned]
    warned.update((name, found[name]) for name in passed)
    if fresh:
        log.warning(
            "oplog trimmed past consumer checkpoints; they will fail with ChangeStreamHistoryLost",
            oplog_id=oplog_id, consumers=fresh, first_op_id=first_op_id,
        )


def _encode(record: Record) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def _decode(data: bytes | str, where: str) -> Record:
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise RxcsError(f"{where}: not a checkpoint record ({exc})") from None
    if not isinstance(record, dict):
        raise RxcsError(f"{where}: not a checkpoint record (a JSON {type(record).__name__})")
    return record


@final
class MemoryCheckpoints(CheckpointStore):
    """Records in memory, for ``MemoryOplog``."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load(self, name: str) -> Record | None:
        with self._lock:
            data = self._records.get(check_name(name))
        return None if data is None else _decode(data, name)

    def load_all(self) -> dict[str, Record]:
        with self._lock:
            records = dict(self._records)
        return {name: _decode(data, name) for name, data in sorted(records.items())}

    def save(self, name: str, record: Record) -> None:
        data = _encode(record)
        with self._lock:
            self._records[check_name(name)] = data

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._records.pop(check_name(name), None) is not None

    def update(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        check_name(name)
        with self._lock:
            data = self._records.get(name)
            found = None if data is None else _decode(data, name)
            new = change(found)
            if new is None:
                return found
            self._records[name] = _encode(new)
            return new


@final
class FileCheckpoints(CheckpointStore):
    """Records as files in ``DIRECTORY/consumers/``, each replaced by an atomic rename."""

    def __init__(self, oplog_directory: Path) -> None:
        super().__init__()
        self._folder = oplog_directory / FOLDER
        self._thread_lock = threading.Lock()  # flock is per open file: threads of one process queue here first

    @property
    def folder(self) -> Path:
        """Where the records are."""
        return self._folder

    def _path(self, name: str) -> Path:
        return self._folder / f"{check_name(name)}{_SUFFIX}"

    def load(self, name: str) -> Record | None:
        path = self._path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _decode(data, str(path))

    def load_all(self) -> dict[str, Record]:
        try:
            names = sorted(os.listdir(self._folder))
        except FileNotFoundError:
            return {}
        records = {}
        for file_name in names:
            if file_name.endswith(_SUFFIX) and not file_name.startswith("."):
                name = file_name[: -len(_SUFFIX)]
                record = self.load(name)
                if record is not None:
                    records[name] = record
        return records

    def save(self, name: str, record: Record) -> None:
        path = self._path(name)
        data = _encode(record)
        self._folder.mkdir(exist_ok=True)
        temporary = self._folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            osio.write_whole(path, data, temporary, durable=True)
        except BaseException:
            osio.unlink(temporary, missing_ok=True)
            raise

    def delete(self, name: str) -> bool:
        path = self._path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        osio.fsync_directory(self._folder)
        return True

    def update(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        self._path(name)
        with self._locked():
            found = self.load(name)
            new = change(found)
            if new is None:
                return found
            self.save(name, new)
            return new

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._folder.mkdir(exist_ok=True)
        with self._thread_lock:
            fd = os.open(self._folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock


@final
class RedisCheckpoints(CheckpointStore):
    """Records as fields of one Redis hash beside the oplog's stream."""

    def __init__(self, client: Any, key: str) -> None:
        super().__init__()
        self._client = client
        self._key = key

    @property
    def key(self) -> str:
        """The hash holding the records."""
        return self._key

    def load(self, name: str) -> Record | None:
        data = self._client.hget(self._key, check_name(name))
        return None if data is None else _decode(data, f"{self._key}[{name}]")

    def load_all(self) -> dict[str, Record]:
        fields = self._client.hgetall(self._key) or {}
        records = {}
        for raw_name, data in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            records[name] = _decode(data, f"{self._key}[{name}]")
        return dict(sorted(records.items()))

    def save(self, name: str, record: Record) -> None:
        self._client.hset(self._key, check_name(name), _encode(record))

    def delete(self, name: str) -> bool:
        return bool(self._client.hdel(self._key, check_name(name)))

    def update(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        import redis  # the backend's own dependency: this store exists only with it

        check_name(name)
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._key)
                    data = pipe.hget(self._key, name)
                    found = None if data is None else _decode(data, f"{self._key}[{name}]")
                    new = change(found)
                    if new is None:
                        pipe.unwatch()
                        return found
                    pipe.multi()
                    pipe.hset(self._key, name, _encode(new))
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # another host changed a record meanwhile: compute again on what it wrote
