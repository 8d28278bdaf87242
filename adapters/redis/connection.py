"""Connections to the queue's Redis: two pools, deadlines on every reply, no hidden retries.

Why two pools: a take blocks in Redis (``XREADGROUP ... BLOCK``) for up to ``block_s``, so its
socket must wait longer than that, while a result or a renewal must give up within
``timeout_s``. redis-py has one socket timeout per pool, so blocking reads get a pool of their
own (``block_s + timeout_s``).

Why no retries: redis-py retries a failed command by default (ten times, backing off up to
10 s, sleeping where nothing can interrupt it). Here it tries once and the error reaches the
worker, which owns every backoff (``domain.waiting``) and waits on its stop event.

What a deadline covers: connecting (``timeout_s``) and each reply (a socket timeout). redis-py
reads a reply as it comes and has no overall deadline or size cap of its own; the worker asks
for at most a batch of entries and leaves an entry larger than ``max_input_bytes`` in Redis (the
take script sends only its size), so what one reply can carry stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from domain.errors import ConfigurationError


@dataclass(frozen=True)
class Connections:
    """The pool for quick commands, the pool for blocking reads, and where they go."""

    quick: redis.Redis
    blocking: redis.Redis
    where: str  # host:port (or the socket path), for messages: never the password
    block_s: float  # the longest a blocking read may block (its pool waits this much longer)

    def close(self) -> None:
        self.quick.close()
        self.blocking.close()


def where_of(url: str) -> str:
    """``host:port`` of a Redis URL, for messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "unix socket"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def connect(url: str, *, password: str | None, timeout_s: float, block_s: float) -> Connections:
    """Pools for ``url`` (``redis://``, ``rediss://`` or ``unix://``); ``password`` (when set)
    wins over one in the URL. Nothing is sent until the first command."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError("invalid setting JOB_QUEUE: must start with redis://, "
                                 "rediss:// or unix://")
    options: dict[str, object] = {"socket_connect_timeout": timeout_s,
                                  "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
    if password is not None:
        options["password"] = password
    quick = redis.Redis.from_url(url, socket_timeout=timeout_s, **options)
    blocking = redis.Redis.from_url(url, socket_timeout=block_s + timeout_s, **options)
    return Connections(quick, blocking, where_of(url), block_s)
