"""A ``RedisOplog`` on a Redis Cluster: the ``redis+cluster://`` URL, and which node its blocking reads go to.

One oplog lives in one hash slot: its keys share the hash tag ``{NAME}``, and
every script declares them, so ``redis.cluster.RedisCluster`` routes every
command and script to the primary serving the slot and follows ``MOVED`` and
``ASK`` itself. What it cannot route is what ``RedisOplog`` sends on a
connection of its own: the blocking ``XREAD`` of a wait, and the ``CLIENT
ID`` / ``CLIENT UNBLOCK`` that wake it. ``SlotRoute`` says which server those
go to (the one client's server, or the node serving the stream's slot), and
learns from the redirections and faults the waits meet. A cluster's
transient states (a slot on the move, a failover under way) are connection
faults to ``RedisOplog``: retried within ``retry_for``. See docs/redis.md.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Final, final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import KWARGS_DISABLED_KEYS, REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.connection import parse_url as _parse_url
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from rxcs.errors import InvalidLocationError, OplogUnavailableError

__all__ = ["CLUSTER_FAULTS", "CLUSTER_SCHEMES", "SlotRoute", "cluster_address", "open_cluster"]

CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
# A slot on the move (ASK, TRYAGAIN, MOVED redis-py gave up on), a failover under way (CLUSTERDOWN,
# MASTERDOWN), a slot nobody serves yet: what RedisOplog retries on a cluster, as it does a lost connection.
CLUSTER_FAULTS: Final = (AskError, TryAgainError, ClusterError, SlotNotCoveredError)
_DEFAULT_PORT: Final = 6379
# Connection options that make no sense for a cluster's nodes, or that rxcs sets itself.
_NOT_TAKEN: Final = frozenset({"host", "port", "db", "connection_pool", "redis_connect_func", "nodes_flag", "path"})
# redis-py's cluster client and URL parser carry no annotations.
parse_url: Any = _parse_url
_Node: Any = ClusterNode


def cluster_address(cluster: RedisCluster) -> str:
    """``redis+cluster://host:port,...``: the client's seed nodes, without credentials."""
    client: Any = cluster
    seeds = getattr(client, "startup_nodes", None) or client.get_nodes()
    nodes = seeds.values() if isinstance(seeds, dict) else seeds
    scheme = "rediss+cluster" if client.nodes_manager.connection_kwargs.get("ssl") else "redis+cluster"
    return f"{scheme}://" + ",".join(str(node.name) for node in nodes)


def open_cluster(url: str, redis_options: dict[str, Any], redact: str, rxcs_options: tuple[str, ...]) -> RedisCluster:
    """A ``RedisCluster`` client for ``redis+cluster://[[user]:password@]host:port[,host:port...][/][?options]``.

    ``url`` has rxcs's own options taken out already; ``redact`` is the URL to
    name in errors, ``rxcs_options`` the names of rxcs's own options (for the
    error naming an unknown one). Every host is a seed: the client asks the first that
    answers for the slot map. The rest of the query and ``redis_options`` are
    redis-py's connection options, checked here (``RedisCluster`` drops the
    ones it does not know in silence). Nothing is written.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "rediss+cluster"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [_seed(text, redact) for text in hosts.split(",")]
    if parts.path not in ("", "/", "/0"):
        raise InvalidLocationError(f"{redact}: a Redis Cluster has only database 0, not {parts.path.lstrip('/')!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key in [key for key, _ in query] + list(redis_options):
        if key in _NOT_TAKEN or key not in REDIS_ALLOWED_KEYS or key in KWARGS_DISABLED_KEYS:
            raise InvalidLocationError(
                f"{redact}: unknown parameter {key!r}; rxcs takes {', '.join(rxcs_options)} "
                "and redis-py its connection options (socket_timeout, ...)"
            )
    single = urlunsplit(("rediss" if tls else "redis", f"{userinfo}@localhost" if userinfo else "localhost", "/0",
                         urlencode(query), ""))
    try:
        options = parse_url(single)
    except ValueError as exc:
        raise InvalidLocationError(f"{redact}: {exc}") from None
    for key in ("host", "port", "db"):
        options.pop(key, None)
    if options.pop("connection_class", None) is not None or tls:
        options["ssl"] = True
    options.update(redis_options)
    retry = options.pop("retry", None) or Retry(NoBackoff(), 0)  # rxcs retries, measuring the outage itself
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_keepalive", True)
    address = _redacted_address(tls, seeds)
    try:
        # require_full_coverage=False: only the stream's own slot matters; RedisOplog checks it.
        return RedisCluster(
            startup_nodes=[_Node(host, port) for host, port in seeds], require_full_coverage=False,
            retry=retry, **options,
        )
    except redis.AuthenticationError as exc:
        raise OplogUnavailableError(f"the Redis Cluster at {address} refused the credentials: {exc}") from None
    except (RedisClusterException, redis.RedisError) as exc:
        message = str(exc)
        if "cluster mode is not enabled" in message.lower() or "cluster support disabled" in message.lower():
            raise InvalidLocationError(
                f"{redact}: a seed node is not in cluster mode; open a single server as redis://"
            ) from None
        raise OplogUnavailableError(f"cannot reach the Redis Cluster at {address}: no seed node answered "
                                    f"({_first_line(message)})") from None


def _seed(text: str, redact: str) -> tuple[str, int]:
    """``(host, port)`` of one ``host[:port]`` of the URL (``[v6]:port`` too)."""
    found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(\d+))?", text)
    if found is None:
        raise InvalidLocationError(f"{redact}: {text!r} is not a host:port")
    port = int(found.group(2)) if found.group(2) else _DEFAULT_PORT
    if not 0 < port < 65536:
        raise InvalidLocationError(f"{redact}: port {port} of {text!r} is out of range")
    return unquote(found.group(1).strip("[]")), port


def _redacted_address(tls: bool, seeds: list[tuple[str, int]]) -> str:
    scheme = "rediss+cluster" if tls else "redis+cluster"
    return f"{scheme}://" + ",".join(f"{host}:{port}" for host, port in seeds)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


@final
class SlotRoute:
    """The server a ``RedisOplog``'s own connections go to: the client's one server, or the slot's primary.

    ``server()`` gives a name for it (``""`` for a single server) and a
    ``redis.Redis`` whose connection pool reaches it; a wait records the name
    with its client id, so ``server_named`` finds where to send ``CLIENT
    UNBLOCK``. ``redirected`` takes a ``MOVED`` (the slot map is patched) or an
    ``ASK`` (the next ``server()`` is the importing node, with ``ASKING``);
    ``lost`` reloads the slot map after a connection fault, so a wait finds
    a promoted replica.
    """

    __slots__ = ("_ask", "_client", "_single", "slot")

    def __init__(self, client: redis.Redis | RedisCluster, key: str) -> None:
        cluster: Any = None if isinstance(client, redis.Redis) else client
        self._single = client if isinstance(client, redis.Redis) else None
        self._client = cluster
        self._ask: str | None = None
        self.slot: int | None = None if cluster is None else int(cluster.keyslot(key))

    @property
    def cluster(self) -> bool:
        return self._client is not None

    def server(self) -> tuple[str, redis.Redis, bool]:
        """``(name, client of that server, whether the next command needs ASKING)``."""
        client = self._client
        if self._single is not None:
            return "", self._single, False
        ask, self._ask = self._ask, None
        if ask is not None:
            node = client.get_node(node_name=ask)
            if node is not None:
                return str(node.name), client.get_redis_connection(node), True
        node = client.nodes_manager.get_node_from_slot(self.slot)
        return str(node.name), client.get_redis_connection(node), False

    def server_named(self, name: str) -> redis.Redis | None:
        """The client of the server ``server()`` once named, if the cluster still has it."""
        client = self._client
        if self._single is not None:
            return self._single
        node = client.get_node(node_name=name)
        return None if node is None else client.get_redis_connection(node)

    def servers(self) -> list[redis.Redis]:
        """Every server's client that has a connection pool (to close them)."""
        client = self._client
        if self._single is not None:
            return [self._single]
        return [node.redis_connection for node in client.get_nodes() if node.redis_connection is not None]

    def covered(self) -> bool:
        """Whether a primary serves the slot (the slot map reloaded once when not)."""
        client = self._client
        if client is None:
            return True
        for attempt in range(2):
            try:
                client.nodes_manager.get_node_from_slot(self.slot)
            except SlotNotCoveredError:
                if attempt == 0:
                    self.lost()
                continue
            return True
        return False

    def redirected(self, exc: AskError) -> None:
        """Follow a ``MOVED`` or ``ASK`` a command sent on our own connection met."""
        client = self._client
        if client is None:
            return
        if isinstance(exc, MovedError):
            with contextlib.suppress(KeyError, RedisClusterException, redis.RedisError):
                client.nodes_manager.move_slot(exc)
        else:
            self._ask = f"{exc.host}:{exc.port}"
            if client.get_node(node_name=self._ask) is None:
                self.lost()

    def lost(self) -> None:
        """Reload the slot map (after a connection fault or a cluster state); a failure leaves it as it was."""
        client = self._client
        if client is not None:
            with contextlib.suppress(RedisClusterException, redis.RedisError, OSError):
                client.nodes_manager.initialize()
