"""``redis+sentinel://`` locations: a ``RedisOplog`` that finds its primary, and its replicas, through Sentinel.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]?stream=NAME``
(``rediss+sentinel://`` for TLS to the Redis servers) names the Sentinels
and the service they monitor. The clients made here ask a Sentinel for the
primary's address whenever they connect, so after a failover the next
connection reaches the new primary; ``read_from=replica`` adds a second
client, for reads, that connects to a replica. The password in the URL is
the Redis servers'; ``sentinel_password`` (and ``sentinel_username``) in the
query are the Sentinels' own, when they ask for one.

At open, the Sentinels are asked once, directly: none answering is an
``OplogUnavailableError`` naming each address and its error, and Sentinels
that answer but know no such service are an ``InvalidLocationError`` naming
the services they do know. Nothing is written in either case.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, final
from urllib.parse import unquote, urlsplit

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from rxcs.errors import InvalidLocationError, OplogUnavailableError

__all__ = ["SCHEMES", "SentinelClients", "open_sentinel_clients", "sentinel_address"]

SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
READ_FROM = ("primary", "replica")
_DEFAULT_PORT = 26379
_ASK_TIMEOUT = 2.0  # seconds to wait for one Sentinel at open


@final
@dataclass(frozen=True)
class SentinelClients:
    """The clients an oplog opened through Sentinel uses: writes (and reads) on the primary, reads on a replica."""

    primary: redis.Redis
    reader: redis.Redis | None
    sentinel: Sentinel
    where: str

    def close(self) -> None:
        """Close every connection these clients made, the Sentinels' too."""
        for client in (self.primary, self.reader):
            if client is not None:
                client.connection_pool.disconnect(inuse_connections=False)
        for sentinel in self.sentinel.sentinels:
            with contextlib.suppress(redis.RedisError):
                sentinel.close()


def open_sentinel_clients(url: str, shown: str, read_from: str | None, options: dict[str, Any]) -> SentinelClients:
    """The clients of a ``redis+sentinel://`` URL (rxcs's own options already taken out), once a Sentinel
    has named the service's primary; ``shown`` is the URL as errors may show it (without its password)."""
    if read_from not in (None, *READ_FROM):
        raise InvalidLocationError(f"{shown}: read_from must be primary or replica, not {read_from!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_host_port(shown, host) for host in hosts.split(",")]
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2:
        raise InvalidLocationError(f"{shown}: the path must be /SERVICE or /SERVICE/DB, not {parts.path!r}")
    service = unquote(path[0])
    db = path[1] if len(path) == 2 else "0"
    # redis-py parses the credentials, the database and the connection options, as for a redis:// URL.
    placeholder = f"{scheme}://{userinfo + '@' if userinfo else ''}sentinel-primary/{db}"
    query = [pair for pair in parts.query.split("&") if pair]
    sentinel_options: dict[str, Any] = {}
    rest = []
    for pair in query:
        key, _, value = pair.partition("=")
        if key in ("sentinel_password", "sentinel_username"):
            sentinel_options[key.removeprefix("sentinel_")] = unquote(value)
        else:
            rest.append(pair)
    try:
        kwargs = parse_url(placeholder + ("?" + "&".join(rest) if rest else ""))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise InvalidLocationError(f"{shown}: {exc}") from None
    for key in ("host", "port", "connection_class"):
        kwargs.pop(key, None)
    if scheme == "rediss":
        kwargs["ssl"] = True
    kwargs.update(options)
    for key in ("socket_connect_timeout", "socket_timeout", "socket_keepalive"):
        if key in kwargs:
            sentinel_options.setdefault(key, kwargs[key])
    sentinel_options.setdefault("socket_timeout", _ASK_TIMEOUT)
    where = f"{scheme}+sentinel://{hosts}/{service}/{db}"
    _check_service(where, sentinels, service, sentinel_options)
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_options, **kwargs)  # type: ignore[no-untyped-call]
    primary: redis.Redis = manager.master_for(service, redis_class=redis.Redis)  # type: ignore[no-untyped-call]
    reader: redis.Redis | None = None
    if read_from == "replica":
        reader = manager.slave_for(service, redis_class=redis.Redis)  # type: ignore[no-untyped-call]
    return SentinelClients(primary, reader, manager, where)


def sentinel_address(pool: SentinelConnectionPool) -> str:
    """``redis+sentinel://host:port,.../SERVICE/DB`` for a client made by ``open_sentinel_clients``."""
    hosts = ",".join(
        f"{sentinel.connection_pool.connection_kwargs.get('host')}:"
        f"{sentinel.connection_pool.connection_kwargs.get('port')}"
        for sentinel in pool.sentinel_manager.sentinels
    )
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    return f"{scheme}+sentinel://{hosts}/{pool.service_name}/{pool.connection_kwargs.get('db', 0)}"


def _host_port(shown: str, text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host (port 26379) of a Sentinel."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(_DEFAULT_PORT)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, str(_DEFAULT_PORT)
    if not host:
        raise InvalidLocationError(f"{shown}: a Sentinel address is empty (hosts are separated by commas)")
    try:
        number = int(port)
    except ValueError:
        raise InvalidLocationError(f"{shown}: the port of Sentinel {text!r} is not a number") from None
    if not 0 < number < 65536:
        raise InvalidLocationError(f"{shown}: the port of Sentinel {text!r} is out of range")
    return host, number


def _check_service(where: str, sentinels: list[tuple[str, int]], service: str, options: dict[str, Any]) -> None:
    """Ask each Sentinel for the service's primary until one names it; a clear error when none does."""
    faults: list[str] = []
    known: set[str] = set()
    for host, port in sentinels:
        with redis.Redis(host, port, **options) as sentinel:
            try:
                if sentinel.sentinel_get_master_addr_by_name(service):
                    return
                masters = sentinel.sentinel_masters()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                faults.append(f"{host}:{port}: {exc}")
                continue
            except redis.ResponseError as exc:
                faults.append(f"{host}:{port} is not a Sentinel ({exc})")
                continue
            known.update(name if isinstance(name, str) else name.decode() for name in masters)
    if len(faults) == len(sentinels):
        raise OplogUnavailableError(f"{where}: no Sentinel answered: {'; '.join(faults)}")
    monitored = ", ".join(sorted(known)) or "none"
    raise InvalidLocationError(
        f"{where}: the Sentinels know no service {service!r} (they monitor: {monitored})"
        + (f"; others did not answer: {'; '.join(faults)}" if faults else "")
    )
