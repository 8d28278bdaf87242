"""redis-py's errors, translated into the worker's: what is worth trying again, what is not.

Exists so the job API's callers see only the domain's errors (``domain.errors``)::

    redis.RedisError
    ├── ConnectionError, TimeoutError, BusyLoadingError    -> ApiUnavailable (transient)
    │   (refused, reset, cut at a deadline, Redis loading its data after a restart)
    ├── AuthenticationError, NoPermissionError             -> ApiUnavailable, saying to check
    │                                                         REDIS_PASSWORD (the worker keeps
    │                                                         its results and tries again)
    ├── ResponseError: READONLY, OOM, BUSY, LOADING,        -> ApiUnavailable (a failover, a full
    │   MASTERDOWN, TRYAGAIN, CLUSTERDOWN, NOGROUP            Redis, the group lost with its data)
    └── anything else (WRONGTYPE: a key of the queue        -> RejectedByApi (permanent: trying
        holds something else; DataError)                      again cannot help)

Messages name the Redis host and port and Redis's own words, never the URL's password
(redis-py does not put it in its errors; every message still passes the worker's scrubber).
"""

from __future__ import annotations

import redis

from domain.errors import ApiUnavailable, PodworkerError, RejectedByApi

_TRANSIENT_REPLIES = ("READONLY", "OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN",
                      "CLUSTERDOWN", "NOGROUP", "NOREPLICAS")


def lost_group(exc: BaseException) -> bool:
    """Redis answered that the consumer group does not exist (its data was lost or flushed)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP")


def translated(exc: BaseException, where: str, what: str) -> PodworkerError:
    """``exc`` (raised while doing ``what`` on the Redis at ``where``) as a domain error."""
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return ApiUnavailable(f"Redis at {where} refused {what}: {text} (check REDIS_PASSWORD "
                              "and the user's permissions)")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return ApiUnavailable(f"Redis at {where} unreachable ({what}): {text}")
    if isinstance(exc, redis.ResponseError) and text.startswith(_TRANSIENT_REPLIES):
        return ApiUnavailable(f"Redis at {where} could not {what} for now: {text}")
    return RejectedByApi(f"Redis at {where} refused to {what}: {text}")
