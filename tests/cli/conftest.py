"""The session's Redis server, for the commands that take a Redis URL."""

from __future__ import annotations

from redis_server import redis_server  # noqa: F401 - a fixture, used by name
