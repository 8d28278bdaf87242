"""Several real worker processes (``python -m app run`` with ``JOB_QUEUE``) on one Redis stream.

- Two, then four workers share 2,000 jobs: each job reaches the client exactly once (one
  announcement on the results stream, one final record); a second result can only come from a
  run taken over after its lease lapsed (the documented window), and both are counted.
- A worker SIGKILLed in the middle of a job: after the lease another worker takes the job over
  and the client gets it once, from the second attempt.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamqueue import layout
from streamqueue.client import JobQueue
from tests.support.harness import wait_until
from tests.support.redis_queue_kit import Books, redis_worker_env
from tests.support.redis_server import RedisServer
from tests.support.worker_process import WorkerProcess

JOBS = 2000


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


def start_workers(count: int, server: RedisServer, queue: str, tmp_path: Path,
                  into: list[WorkerProcess], **extra: str) -> list[WorkerProcess]:
    for n in range(count):
        name = f"w{n}"
        env = redis_worker_env(server, queue, tmp_path, name, **extra)
        into.append(WorkerProcess(env, tmp_path, name))
    return into[-count:]


@pytest.mark.slow
@pytest.mark.timeout(360)  # several worker processes on a loaded 2-core machine
@pytest.mark.parametrize("count", [2, 4])
def test_workers_on_one_stream_deliver_2000_jobs_each_once_to_the_client(
    count: int, redis_server: RedisServer, redis_queue: str, queue_client: JobQueue,
    tmp_path: Path, workers: list[WorkerProcess],
) -> None:
    started = start_workers(count, redis_server, redis_queue, tmp_path, workers, CONCURRENCY="8")
    for worker in started:  # all taking before the jobs come, so that each gets some
        worker.wait_for("model_loaded", timeout=60)
    ids = [f"job-{i}" for i in range(JOBS)]
    began = time.monotonic()
    for first in range(0, JOBS, 250):  # submitted while the workers take
        queue_client.submit_many([(job_id, {"n": i}) for i, job_id in
                                  enumerate(ids[first:first + 250], start=first)])
    states = queue_client.wait_all(ids, timeout_s=240)
    took = time.monotonic() - began
    books = Books.read(redis_server, redis_queue, ids)
    announced = Counter(books.announced)
    assert len(announced) == JOBS and set(announced.values()) == {1}
    assert all(states[job_id].output == {"n": i} for i, job_id in enumerate(ids))
    assert books.statuses() == {layout.COMPLETED: JOBS}
    assert books.pending == 0
    per_worker = Counter(record["worker"] for record in books.records.values())
    assert set(per_worker) == {f"w{n}" for n in range(count)}  # every worker did some
    takeovers = sum(1 for record in books.records.values() if int(record["attempt"]) > 1)
    duplicates = books.stats.get("duplicate_results", 0)
    assert duplicates <= takeovers  # a second result only from a run whose lease lapsed
    print(f"\n{count} workers, {JOBS} jobs in {took:.1f} s: per worker {dict(per_worker)}, "
          f"taken over {takeovers}, duplicate results {duplicates} (counted, not delivered)")
    for worker in started:
        assert worker.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(360)  # several worker processes on a loaded 2-core machine
def test_a_worker_killed_mid_job_has_its_job_taken_over_after_the_lease_and_delivered_once(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    first, second = start_workers(2, redis_server, redis_queue, tmp_path, workers,
                                  CONCURRENCY="1")
    queue_client.submit({"_echo": {"sleep_ms": 1500}, "job": "victim"}, "victim")
    wait_until(lambda: queue_client.status("victim").status == layout.IN_PROGRESS,
               timeout=60, what="the victim job running")
    holder_name = queue_client.status("victim").worker
    holder, survivor = (first, second) if holder_name == "w0" else (second, first)
    killed_at = time.monotonic()
    holder.kill()  # SIGKILL: no result, no acknowledgement, the entry stays pending
    queue_client.submit_many([(f"after-{i}", {"i": i}) for i in range(20)])
    state = queue_client.wait("victim", timeout_s=60)
    recovered_after = time.monotonic() - killed_at
    assert (state.status, state.output) == (layout.COMPLETED, {"job": "victim"})
    assert (state.attempt, state.worker) == (2, "w1" if holder_name == "w0" else "w0")
    assert recovered_after >= 2.0  # not before the lease (JOB_LEASE=2000) lapsed
    survivor.wait_for("job_taken_over", job_id="victim")
    queue_client.wait_all([f"after-{i}" for i in range(20)], timeout_s=60)
    books = Books.read(redis_server, redis_queue, ["victim"])
    assert books.announced.count("victim") == 1
    assert books.stats.get("duplicate_results", 0) == 0
    assert books.pending == 0
    assert survivor.terminate() == 0

