"""Redis crashing in the middle of a run, with its append-only file (AOF) on, then back.

The workers (real processes, backoff schedules at a tenth of real time) back off while Redis is
away and go on when it is back; a reader of the results stream (what an API server does)
counts every announcement it sees.

- The Redis process killed (SIGKILL), ``appendfsync always`` (the manifest's setting): nothing
  Redis acknowledged is lost: every job is announced exactly once, no submit is lost.
- The machine under Redis crashing with ``appendfsync everysec`` (Redis's default): what the
  last fsync did not cover (up to about a second) is lost. Simulated by cutting the AOF back to
  its size some results earlier, after the kill. What that window costs is counted: submits
  lost (the client submits those again: a submit is idempotent per id), results announced
  before the crash and again after their job ran again; only jobs whose result the cut tail
  held (read from the tail itself: under ``everysec`` Redis may answer before it writes the
  file, so no clock tells the window) come again. Every job still ends with exactly one final
  result, and no entry is left pending.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamqueue import layout
from streamqueue.client import JobQueue
from tests.support.harness import wait_until
from tests.support.redis_queue_kit import Books, redis_worker_env
from tests.support.redis_server import RedisServer, RedisServerFactory
from tests.support.worker_process import WorkerProcess

JOBS = 600


class ResultsReader:
    """Follows ``<name>:results`` from the start across Redis restarts, as an API server
    would, keeping the job id of every announcement, in order."""

    def __init__(self, server: RedisServer, queue: str) -> None:
        self.seen: list[str] = []
        self._key = layout.Layout(queue).results
        self._client: Any = redis.Redis.from_url(server.url, socket_timeout=2,
                                                 socket_connect_timeout=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cursor: bytes = b"0-0"
        while not self._stop.is_set():
            try:
                answer = self._client.xread({self._key: cursor}, count=1000, block=200)
            except redis.RedisError:
                self._stop.wait(0.05)  # Redis away: try again shortly
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    self.seen.append(fields[b"id"].decode())

    def counts(self) -> Counter[str]:
        return Counter(self.seen)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


@pytest.fixture
def cleanup() -> Iterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in things:
        getattr(thing, "close")()  # noqa: B009


def run_with_a_crash(server: RedisServer, queue: str, tmp_path: Path, cleanup: list[object],
                     *, late: int, lose_tail: bool = False
                     ) -> tuple[JobQueue, ResultsReader, list[WorkerProcess], bytes, list[str]]:
    """Submit JOBS jobs, start two workers, crash Redis a quarter of the way (``late`` more
    submits just before); ``lose_tail``: the AOF loses what was written since 30 results
    before (returned: the cut tail); wait until both workers saw the crash; start Redis
    again."""
    client = JobQueue.from_url(server.url, queue, result_ttl_s=3600)
    reader = ResultsReader(server, queue)
    cleanup += [client, reader]
    ids = [f"job-{i}" for i in range(JOBS)]
    client.submit_many([(job_id, {"i": i, "_echo": {"sleep_ms": 5}})
                        for i, job_id in enumerate(ids)])
    workers = [WorkerProcess(redis_worker_env(server, queue, tmp_path, f"w{n}", CONCURRENCY="4"),
                             tmp_path, f"w{n}", time_scale=0.1) for n in range(2)]
    cleanup += workers
    wait_until(lambda: len(reader.seen) >= JOBS // 4, timeout=120, what="a quarter done")
    synced = server.aof_tail() if lose_tail else None  # what the last fsync covered
    seen_then = len(reader.seen)
    wait_until(lambda: len(reader.seen) >= seen_then + 30, timeout=60, what="30 more results")
    late_ids = [f"late-{i}" for i in range(late)]
    if late_ids:
        client.submit_many([(job_id, {"late": True}) for job_id in late_ids])
    server.kill()
    lost = server.lose_aof_tail(synced) if synced is not None else b""
    for worker in workers:
        worker.wait_for("take_failed", timeout=60)
    server.start()  # the same port and folder: the append-only file is loaded
    return client, reader, workers, lost, ids + late_ids


@pytest.mark.slow
@pytest.mark.timeout(360)  # several worker processes on a loaded 2-core machine
def test_redis_killed_mid_run_with_aof_always_loses_nothing_acknowledged_and_workers_go_on(
    redis_server_factory: RedisServerFactory, redis_queue: str, tmp_path: Path,
    cleanup: list[object],
) -> None:
    server = redis_server_factory(appendonly=True, appendfsync="always")
    client, reader, workers, _lost, ids = run_with_a_crash(
        server, redis_queue, tmp_path, cleanup, late=50)
    states = client.wait_all(ids, timeout_s=180)  # every submit survived: none unknown
    assert all(state.status == layout.COMPLETED for state in states.values())
    wait_until(lambda: set(reader.counts()) >= set(ids), timeout=30, what="every announcement")
    assert set(reader.counts().values()) == {1}  # nothing announced, lost, then run again
    books = Books.read(server, redis_queue, ids)
    assert Counter(books.announced) == Counter(ids)
    assert books.pending == 0
    for worker in workers:
        worker.wait_for("api_recovered", timeout=30)
        assert worker.terminate() == 0
    taken_over = sum(int(record["attempt"]) > 1 for record in books.records.values())
    duplicates = books.stats.get("duplicate_results", 0)
    # A second result comes only from a lease that lapsed meanwhile, or from a post Redis wrote
    # (fsynced) but whose answer the kill cut off: sent again once Redis is back, then dropped.
    # Each worker has one post in flight per lane (a lane per model slot: CONCURRENCY=4).
    in_flight_at_kill = 2 * 4
    assert duplicates <= taken_over + in_flight_at_kill
    print(f"\nappendfsync always: {len(ids)} jobs, every one announced once; duplicate results "
          f"{duplicates} (counted, not delivered), taken over {taken_over} (Redis away past a "
          "lease)")


@pytest.mark.slow
@pytest.mark.timeout(360)  # several worker processes on a loaded 2-core machine
def test_a_machine_crash_losing_the_unsynced_aof_tail_costs_only_that_window_and_it_is_counted(
    redis_server_factory: RedisServerFactory, redis_queue: str, tmp_path: Path,
    cleanup: list[object],
) -> None:
    server = redis_server_factory(appendonly=True, appendfsync="everysec")
    client, reader, workers, lost, ids = run_with_a_crash(
        server, redis_queue, tmp_path, cleanup, late=50, lose_tail=True)
    lost_submits = 0
    for job_id in ids:  # what an API server does after a crash: submit what Redis forgot
        if client.submit_many([(job_id, {"late": True} if job_id.startswith("late-")
                                else {"i": int(job_id.split("-")[1]), "_echo": {"sleep_ms": 5}})]
                              )[0].added:
            lost_submits += 1
    states = client.wait_all(ids, timeout_s=180)
    assert all(state.status == layout.COMPLETED for state in states.values())
    books = Books.read(server, redis_queue, ids)
    assert Counter(books.announced) == Counter(ids)  # Redis's own books: one result each
    assert books.pending == 0
    wait_until(lambda: set(reader.counts()) >= set(ids), timeout=30, what="every announcement")
    twice = [job_id for job_id, n in reader.counts().items() if n > 1]
    # Only jobs the cut tail names (a bulk string of Redis's wire format) came again.
    in_cut = {job_id for job_id in twice if f"\r\n{job_id}\r\n".encode() in lost}
    assert twice and set(twice) == in_cut, f"announced twice, never cut: {set(twice) - in_cut}"
    assert lost_submits == 50  # the late submits were all after the last sync
    for worker in workers:
        assert worker.terminate() == 0
    print(f"\nAOF cut back to its last sync: {len(ids)} jobs; lost in the crash and counted: "
          f"{lost_submits} submit(s) (submitted again), {len(twice)} result(s) announced "
          f"before the crash and again after a rerun; every job final once")
