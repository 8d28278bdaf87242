"""Pieces the Redis queue's tests share: adapters on a test Redis, worker processes on a queue,
and a reading of the queue's books.

``QueueApis`` makes ``RedisJobApi`` objects (one per pretend worker) with short leases and
blocks, and closes them at the end. ``redis_worker_env`` is ``python -m app run`` on a queue
(echo model, short lease and heartbeat). ``Books`` reads what the client sees: each job's
record, the results stream, the counters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.clock import SystemClock
from adapters.redis.connection import connect
from adapters.redis.job_api import RedisJobApi
from streamqueue.client import JobQueue
from streamqueue.layout import Layout
from tests.support.redis_server import RedisServer
from tests.support.worker_process import ROOT

BLOCK_S = 0.1


class QueueApis:
    """Worker-side adapters on one queue of one Redis, closed by ``close``."""

    def __init__(self, server: RedisServer, queue: str) -> None:
        self.server = server
        self.queue = queue
        self._made: list[RedisJobApi] = []

    def __call__(self, worker_id: str = "w1", *, lease_s: float = 30.0, max_attempts: int = 3,
                 password: str | None = None, url: str | None = None, block_s: float = BLOCK_S,
                 takeover_every_s: float | None = 0.0, result_ttl_s: int = 3600,
                 max_input_bytes: int = 1_000_000, maintain_every_s: float | None = None,
                 forget_consumers_after_s: float | None = None) -> RedisJobApi:
        connections = connect(url or self.server.url,
                              password=password if password is not None else self.server.password,
                              timeout_s=5.0, block_s=block_s)
        api = RedisJobApi(connections=connections, queue=self.queue, worker_id=worker_id,
                          clock=SystemClock(), lease_s=lease_s, max_attempts=max_attempts,
                          result_ttl_s=result_ttl_s, max_input_bytes=max_input_bytes,
                          takeover_every_s=takeover_every_s,
                          maintain_every_s=maintain_every_s,
                          forget_consumers_after_s=forget_consumers_after_s)
        self._made.append(api)
        return api

    def client(self) -> JobQueue:
        return JobQueue.from_url(self.server.url, self.queue, password=self.server.password,
                                 result_ttl_s=3600)

    def close(self) -> None:
        for api in self._made:
            api.close()


@pytest.fixture
def queue_apis(redis_server: RedisServer, redis_queue: str) -> Iterator[QueueApis]:
    apis = QueueApis(redis_server, redis_queue)
    try:
        yield apis
    finally:
        apis.close()


@pytest.fixture
def queue_client(redis_server: RedisServer, redis_queue: str) -> Iterator[JobQueue]:
    client = JobQueue.from_url(redis_server.url, redis_queue, result_ttl_s=3600)
    try:
        yield client
    finally:
        client.close()


def redis_worker_env(server: RedisServer, queue: str, state_dir: Path, name: str,
                     **extra: str) -> dict[str, str]:
    """Settings for ``python -m app run`` on ``queue``: the echo model, a 2 s lease renewed
    every 200 ms, never idle-exiting (unless ``extra`` says)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "BUCKET_", "AI_API_KEY", "MODEL", "JOB_",
                                "REDIS_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "JOB_QUEUE": server.url,
        "JOB_QUEUE_NAME": queue,
        "RUNPOD_POD_ID": name,
        "MODEL": "echo",
        "STATE_DIR": str(state_dir / name),
        "OUTPUT_DIR": str(state_dir / name / "outputs"),
        "LOG_FORMAT": "json",
        "TERMINATE_IDLE_TIME": "0",
        "SHUTDOWN_GRACE": "5000",
        "PING_INTERVAL": "200",
        "JOB_LEASE": "2000",
    })
    if server.password is not None:
        env["REDIS_PASSWORD"] = server.password
    env.update(extra)
    return env


@dataclass(frozen=True)
class Books:
    """What the queue says about a run, read once."""

    records: dict[str, dict[str, Any]]  # job id -> its record (decoded)
    announced: list[str]  # job ids on the results stream, in order, repeats kept
    stats: dict[str, int]
    pending: int  # entries delivered and not acknowledged

    @classmethod
    def read(cls, server: RedisServer, queue: str, job_ids: list[str]) -> Books:
        keys = Layout(queue)
        client = server.client()
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        records = {job_id: {k.decode(): v.decode() for k, v in record.items()}
                   for job_id, record in zip(job_ids, pipe.execute(), strict=True)}
        announced = [fields[b"id"].decode()
                     for _id, fields in client.xrange(keys.results, "-", "+")]
        stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
        pending = int(client.xpending(keys.jobs, keys.group)["pending"])
        return cls(records, announced, stats, pending)

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            status = record.get("status", "MISSING")
            counts[status] = counts.get(status, 0) + 1
        return counts
