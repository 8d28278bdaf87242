"""The Redis job API's contract, against a real redis-server: take, result, progress, stream,
cancel, lease renewal, takeover, the poison cap (idle exit: ``test_redis_worker_life.py``).

Each test has a queue of its own on the session's Redis; leases are short (a fraction of a
second) so takeovers happen in test time; every wait is a take that blocks or a poll with a
deadline, never a sleep.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from domain.errors import ApiUnavailable, RejectedByApi
from domain.job import Job, JobResult
from domain.ports import JobApi, JobStopSource
from streamqueue import layout
from streamqueue.client import JobQueue
from tests.support.harness import wait_until
from tests.support.redis_queue_kit import QueueApis
from tests.support.redis_server import RedisServer


def take_until(api: JobApi, count: int, timeout: float = 10.0, max_jobs: int = 8) -> list[str]:
    """Take until ``count`` jobs came (each take blocks in Redis); their ids."""
    ids: list[str] = []

    def enough() -> bool:
        ids.extend(j.id for j in api.take(job_in_progress=False, max_jobs=max_jobs))
        return len(ids) >= count

    wait_until(enough, timeout=timeout, what=f"{count} job(s) taken")
    return ids


def pending_of(server: RedisServer, queue: str) -> int:
    keys = layout.Layout(queue)
    return int(server.client().xpending(keys.jobs, keys.group)["pending"])


def test_the_adapter_conforms_to_both_ports(queue_apis: QueueApis) -> None:
    api = queue_apis()
    as_api: JobApi = api
    as_stops: JobStopSource = api
    assert callable(as_api.take) and callable(as_stops.jobs_to_stop)


def test_take_returns_the_submitted_jobs_in_order_at_most_max_jobs_and_marks_them_in_progress(
    queue_apis: QueueApis, queue_client: JobQueue
) -> None:
    queue_client.submit_many([(f"j{i}", {"n": i}) for i in range(5)])
    api = queue_apis("worker-a")
    first = api.take(job_in_progress=False, max_jobs=3)
    assert [(j.id, j.input) for j in first] == [(f"j{i}", {"n": i}) for i in range(3)]
    assert all(j.problem is None for j in first)
    state = queue_client.status("j0")
    assert (state.status, state.worker, state.attempt) == (layout.IN_PROGRESS, "worker-a", 1)
    assert queue_client.status("j4").status == layout.IN_QUEUE
    assert [j.id for j in api.take(job_in_progress=True, max_jobs=8)] == ["j3", "j4"]


def test_an_empty_queue_gives_an_empty_take_after_blocking_in_redis(queue_apis: QueueApis) -> None:
    assert queue_apis().take(job_in_progress=False, max_jobs=4) == []


def test_a_result_is_stored_announced_and_its_entry_acknowledged_in_one_step(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    queue_client.submit_many([("ok", {"x": 1}), ("bad", {"x": 2})])
    api = queue_apis()
    take_until(api, 2)
    assert pending_of(redis_server, redis_queue) == 2
    api.post_result(JobResult.success("ok", {"images": ["s3://b/ok/0.png"]}))
    api.post_result(JobResult.failure("bad", "invalid input: width: must be a multiple of 8"))
    ok, bad = queue_client.status("ok"), queue_client.status("bad")
    assert (ok.status, ok.output, ok.error) == (layout.COMPLETED, {"images": ["s3://b/ok/0.png"]},
                                                None)
    assert (bad.status, bad.error) == (layout.FAILED,
                                       "invalid input: width: must be a multiple of 8")
    assert pending_of(redis_server, redis_queue) == 0
    assert announced(redis_server, redis_queue) == ["ok", "bad"]
    ttl = redis_server.client().ttl(queue_client.layout.job("ok"))
    assert 0 < ttl <= 3600
    assert queue_client.wait("ok", timeout_s=5).output == {"images": ["s3://b/ok/0.png"]}


def test_a_second_result_for_a_job_is_counted_and_dropped_so_the_client_sees_one(
    queue_apis: QueueApis, queue_client: JobQueue, caplog: pytest.LogCaptureFixture,
    redis_server: RedisServer, redis_queue: str,
) -> None:
    queue_client.submit({"x": 1}, "twice")
    api = queue_apis()
    take_until(api, 1)
    api.post_result(JobResult.success("twice", {"run": 1}))
    with caplog.at_level(logging.INFO):
        api.post_result(JobResult.success("twice", {"run": 2}))
    assert queue_client.status("twice").output == {"run": 1}
    assert announced(redis_server, redis_queue) == ["twice"]
    assert queue_client.health()["stats"] == {"duplicate_results": 1}
    assert any(getattr(r, "event", None) == "duplicate_result" for r in caplog.records)


def test_progress_updates_are_readable_by_the_client_and_never_raise(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    queue_client.submit({"x": 1}, "p")
    api = queue_apis()
    take_until(api, 1)
    for step in range(1, 4):
        api.post_progress("p", {"step": step, "of": 3})
    assert queue_client.progress("p") == {"step": 3, "of": 3}
    api.post_progress("p", {"not json": {1, 2}})  # refused quietly: best effort
    gone = queue_apis(url="redis://127.0.0.1:1/0")
    gone.post_progress("p", {"step": 4})  # Redis unreachable: still no exception
    assert queue_client.progress("p") == {"step": 3, "of": 3}


def test_streamed_chunks_reach_the_client_in_order_then_the_stream_ends_with_the_result(
    queue_apis: QueueApis, queue_client: JobQueue
) -> None:
    queue_client.submit({"x": 1}, "s")
    api = queue_apis()
    take_until(api, 1)
    for n in range(5):
        api.post_stream("s", {"i": n})
    api.post_result(JobResult(job_id="s", output=None, streamed=True))
    chunks = list(queue_client.stream("s", timeout_s=10))
    assert [(c.output, c.attempt) for c in chunks] == [({"i": n}, 1) for n in range(5)]
    with pytest.raises(RejectedByApi, match="not JSON"):
        api.post_stream("s", {"bad": {1}})


def test_a_job_cancelled_while_queued_is_never_run_and_its_entry_is_acknowledged(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    queue_client.submit_many([("c", {"x": 1}), ("d", {"x": 2})])
    assert queue_client.cancel("c") == layout.CANCELLED
    api = queue_apis()
    assert take_until(api, 1) == ["d"]
    assert queue_client.status("c").status == layout.CANCELLED
    assert queue_client.health()["stats"] == {"stale_entries": 1}
    assert pending_of(redis_server, redis_queue) == 1  # d's only


def test_a_running_job_cancelled_is_a_job_stop_for_its_worker_only_and_a_late_result_is_dropped(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    queue_client.submit_many([("mine", {"x": 1}), ("theirs", {"x": 2})])
    me, other = queue_apis("me"), queue_apis("other")
    assert take_until(me, 1, max_jobs=1) == ["mine"]
    assert take_until(other, 1, max_jobs=1) == ["theirs"]
    assert me.jobs_to_stop() == [] and other.jobs_to_stop() == []  # cursors set: nothing yet
    assert queue_client.cancel("mine") == layout.CANCELLED
    stops: list[str] = []

    def read() -> bool:
        stops.extend(me.jobs_to_stop())
        return bool(stops)

    wait_until(read, what="the cancel")
    assert stops == ["mine"]
    assert other.jobs_to_stop() == []
    assert pending_of(redis_server, redis_queue) == 1  # mine acknowledged at once
    me.post_result(JobResult.success("mine", {"too": "late"}))
    assert queue_client.status("mine").status == layout.CANCELLED
    assert queue_client.health()["stats"] == {"late_after_cancel": 1}
    assert queue_client.cancel("mine") == layout.CANCELLED  # cancelling again changes nothing


def test_the_heartbeat_renews_the_lease_so_no_other_worker_takes_the_job_over(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    queue_client.submit({"x": 1}, "long")
    holder, other = queue_apis("holder", lease_s=1.0), queue_apis("other", lease_s=1.0)
    take_until(holder, 1)
    stop = threading.Event()

    def heartbeat() -> None:  # the worker's heartbeat, at a tenth of the lease
        while not stop.is_set():
            holder.ping(["long"])
            stop.wait(0.1)

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    try:
        deadline = time.monotonic() + 3.0  # several leases
        while time.monotonic() < deadline:
            assert other.take(job_in_progress=False, max_jobs=1) == []
    finally:
        stop.set()
        beating.join(5)
    keys = layout.Layout(redis_queue)
    row = redis_server.client().xpending_range(keys.jobs, keys.group, "-", "+", 1)[0]
    assert (row["consumer"], row["times_delivered"]) == (b"holder", 1)
    assert queue_client.status("long").worker == "holder"


def test_a_job_whose_worker_stopped_renewing_is_taken_over_after_the_lease_and_answered_once(
    queue_apis: QueueApis, queue_client: JobQueue, caplog: pytest.LogCaptureFixture,
    redis_server: RedisServer, redis_queue: str,
) -> None:
    queue_client.submit({"x": 1}, "orphan")
    dead, alive = queue_apis("dead", lease_s=0.3), queue_apis("alive", lease_s=0.3)
    take_until(dead, 1)
    with caplog.at_level(logging.INFO):
        assert take_until(alive, 1, max_jobs=1) == ["orphan"]  # once the lease lapsed
    assert any(getattr(r, "event", None) == "job_taken_over" for r in caplog.records)
    state = queue_client.status("orphan")
    assert (state.worker, state.attempt) == ("alive", 2)
    with caplog.at_level(logging.INFO):
        dead.ping(["orphan"])  # it wakes up: its lease is gone
    assert any(getattr(r, "event", None) == "lease_lost" for r in caplog.records)
    alive.post_result(JobResult.success("orphan", {"by": "alive"}))
    dead.post_result(JobResult.success("orphan", {"by": "dead"}))
    assert queue_client.status("orphan").output == {"by": "alive"}
    assert announced(redis_server, redis_queue) == ["orphan"]
    assert queue_client.health()["stats"] == {"duplicate_results": 1}


def test_a_worker_late_with_its_heartbeat_never_takes_its_own_job_over(
    queue_apis: QueueApis, queue_client: JobQueue
) -> None:
    queue_client.submit({"x": 1}, "mine")
    late = queue_apis("late", lease_s=0.2)
    take_until(late, 1)
    wait_until(lambda: late.take(job_in_progress=False) == []  # each take blocks 0.1 s
               and queue_client.status("mine").started_ms is not None
               and _idle_ms(queue_client) > 400, what="two leases without a renewal")
    state = queue_client.status("mine")
    assert (state.worker, state.attempt) == ("late", 1)  # not "taken over" by itself
    late.post_result(JobResult.success("mine", {"ok": True}))
    assert queue_client.status("mine").output == {"ok": True}


def _idle_ms(queue: JobQueue) -> int:
    rows = queue._redis.xpending_range(queue.layout.jobs, queue.layout.group, "-", "+", 1)
    return int(rows[0]["time_since_delivered"]) if rows else 0


def test_a_job_that_outlived_max_attempts_workers_is_failed_without_running_again(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue_client.submit({"x": 1}, "poison")
    workers = [queue_apis(f"w{n}", lease_s=0.2, max_attempts=2) for n in range(3)]
    take_until(workers[0], 1)  # attempt 1: the worker dies
    assert take_until(workers[1], 1) == ["poison"]  # attempt 2: it dies too
    with caplog.at_level(logging.ERROR):  # a third run is refused, however often it is asked
        wait_until(lambda: workers[2].take(job_in_progress=False) == []
                   and queue_client.status("poison").final, what="the poison verdict")
    state = queue_client.status("poison")
    assert state.status == layout.FAILED
    assert state.error is not None and "taken 2 times" in state.error
    assert "JOB_MAX_ATTEMPTS=2" in state.error
    assert pending_of(redis_server, redis_queue) == 0
    assert queue_client.health()["stats"] == {"poisoned": 1}
    assert announced(redis_server, redis_queue) == ["poison"]
    assert any(getattr(r, "event", None) == "poison_job" for r in caplog.records)


def test_the_heartbeat_trims_what_every_worker_is_done_with_and_forgets_workers_long_gone(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    keys = layout.Layout(redis_queue)
    client = redis_server.client()
    queue_client.submit_many([(f"j{i}", {"i": i}) for i in range(300)])
    gone = queue_apis("gone")
    assert take_until(gone, 1, max_jobs=1) == ["j0"]
    gone.post_result(JobResult.success("j0", {}))  # it holds nothing now, and goes away
    api = queue_apis("tidy", maintain_every_s=0.0, forget_consumers_after_s=0.05)
    taken = take_until(api, 299, max_jobs=100)
    assert taken[-1] == "j299"
    for job_id in taken[:-1]:
        api.post_result(JobResult.success(job_id, {}))  # j299 stays pending: it must stay

    def forgotten() -> bool:
        api.ping(["j299"])  # the heartbeat tidies the queue (here at every beat)
        names = {c["name"] for c in client.xinfo_consumers(keys.jobs, keys.group)}
        return b"gone" not in names

    wait_until(forgotten, what="the long-gone consumer forgotten")
    assert client.xlen(keys.jobs) < 300  # trimmed below the pending entry
    assert client.xrange(keys.jobs, "-", "+")[-1][1][b"id"] == b"j299"
    assert {c["name"] for c in client.xinfo_consumers(keys.jobs, keys.group)} == {b"tidy"}
    api.post_result(JobResult.success("j299", {}))
    assert queue_client.status("j299").status == layout.COMPLETED


def test_entries_the_worker_cannot_use_are_answered_or_dropped_never_run_as_they_are(
    queue_apis: QueueApis, redis_server: RedisServer, redis_queue: str,
    queue_client: JobQueue,
) -> None:
    keys = layout.Layout(redis_queue)
    client = redis_server.client()
    queue_client.ensure_group()
    client.xadd(keys.jobs, {"job": "{}"})  # no id: nothing to answer
    client.xadd(keys.jobs, {"id": "not-json", "job": "{nope"})
    client.xadd(keys.jobs, {"id": "list-input", "job": json.dumps({"id": "x", "input": [1]})})
    client.xadd(keys.jobs, {"id": "huge", "job": json.dumps({"input": {"p": "x" * 200_000}})})
    client.xadd(keys.jobs, {"id": "bad\x07id", "job": json.dumps({"input": {}})})
    api = queue_apis(max_input_bytes=10_000)
    jobs = {j.id: j for j in api.take(job_in_progress=False, max_jobs=8)}
    assert set(jobs) == {"not-json", "list-input", "huge", "bad\x07id"}
    assert jobs["not-json"].problem == "the job is not JSON"
    # an id with a control character is answered with an error (the worker's loop posts it)
    assert "control or unprintable characters" in (jobs["bad\x07id"].problem or "")
    assert jobs["list-input"].problem == "input must be a JSON object, got a JSON array"
    assert jobs["huge"].problem is not None and "over the limit" in jobs["huge"].problem
    assert jobs["huge"].input == {}
    api.post_result(JobResult.failure("bad\x07id", jobs["bad\x07id"].problem or ""))
    refused = queue_client.status("bad\x07id")
    assert refused.status == layout.FAILED and "job id" in (refused.error or "")
    assert pending_of(redis_server, redis_queue) == 3  # the one without an id is acknowledged


def test_redis_unreachable_is_a_transient_error_naming_the_host(queue_apis: QueueApis) -> None:
    api = queue_apis(url="redis://127.0.0.1:1/0")
    with pytest.raises(ApiUnavailable, match=r"Redis at 127\.0\.0\.1:1 unreachable .*refused"):
        api.take(job_in_progress=False)
    with pytest.raises(ApiUnavailable):
        api.post_result(JobResult.success("j", {}))
    with pytest.raises(ApiUnavailable):
        api.jobs_to_stop()
    api.ping(["j"])  # never raises


def test_a_wrong_password_says_to_check_redis_password_and_shows_no_piece_of_it(
    redis_server_factory: object, redis_queue: str
) -> None:
    from tests.support.redis_server import RedisServerFactory

    assert isinstance(redis_server_factory, RedisServerFactory)
    server = redis_server_factory(password="right-Pa55word-4d1f9c")
    apis = QueueApis(server, redis_queue)
    try:
        api = apis(password="wrong-Pa55word-77e0aa")
        with pytest.raises(ApiUnavailable) as caught:
            api.take(job_in_progress=False)
        message = str(caught.value)
        assert "REDIS_PASSWORD" in message
        for secret in ("right-Pa55word-4d1f9c", "wrong-Pa55word-77e0aa"):
            assert not any(secret[i:i + 6] in message for i in range(len(secret) - 5))
        queue = apis.client()
        queue.submit({"x": 1}, "j")
        assert [j.id for j in apis().take(job_in_progress=False)] == ["j"]
    finally:
        apis.close()


def test_a_lost_consumer_group_is_made_again_and_taking_goes_on(
    queue_apis: QueueApis, queue_client: JobQueue, redis_server: RedisServer, redis_queue: str
) -> None:
    api = queue_apis()
    queue_client.submit({"x": 1}, "before")
    take_until(api, 1)
    redis_server.client().delete(layout.Layout(redis_queue).jobs)  # as if Redis lost it
    with pytest.raises(ApiUnavailable, match="NOGROUP"):
        api.take(job_in_progress=False)
    queue_client.submit({"x": 2}, "after")  # the client's group is gone too: it is made again
    wait_until(lambda: "after" in [j.id for j in _take_quietly(api)], what="a take after")


def _take_quietly(api: JobApi) -> list[Job]:
    try:
        return list(api.take(job_in_progress=False))
    except ApiUnavailable:
        return []


def announced(server: RedisServer, queue: str) -> list[str]:
    """The job ids on the results stream, in order, repeats kept."""
    keys = layout.Layout(queue)
    return [fields[b"id"].decode() for _id, fields in server.client().xrange(keys.results)]
