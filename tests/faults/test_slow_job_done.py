"""A job API that is merely slower at accepting results (issue 26, item 3).

Undelivered results did not count against anything, so a job-done answering in 20 ms made a
worker at ``CONCURRENCY=4`` take 2,468 jobs while delivering 370. Now the worker holds at most
``MAX_UNDELIVERED`` jobs from take to accepted result (never fewer than its slots): taking slows
to what the job API accepts, and the held count is measured here, sampled throughout. Pings name
a bounded list of jobs (running ones first), so a backlog never makes every ping too long.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from adapters.clock import ManualClock
from adapters.runpod.job_api import RunPodJobApi
from adapters.runpod.wire import PING_IDS_CHARS
from fakeplatform import FakeJobApiServer
from tests.support.fault_kit import Rig, poll_until

BOUND = 16
JOBS = 300


def test_a_job_api_slow_to_accept_results_slows_taking_and_the_held_bound_is_never_passed(
    rig: Rig,
) -> None:
    rig.api.inject_fault("done", delay_s=0.05, count=1_000_000)
    ids = [rig.submit({"n": n}) for n in range(JOBS)]
    held: list[int] = []
    done = threading.Event()

    def sample() -> None:  # the fake's view: jobs handed out and not yet answered
        while not done.wait(0.005):
            held.append(len(rig.api.taken) - len(rig.api.results))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    worker = rig.start(CONCURRENCY="4", MAX_UNDELIVERED=str(BOUND))
    try:
        assert rig.api.wait_until(lambda s: len(s.results) == JOBS, timeout=120)
    finally:
        done.set()
        sampler.join(5)
    assert max(held) <= BOUND, f"held {max(held)} jobs at once (bound {BOUND})"
    assert max(held) >= 8  # the bound was reached, not just respected by a fast API
    # The fake records the last result before its slow answer reaches the worker: the gauge
    # falls to 0 when that answer arrives, not at the instant the fake counts the result.
    poll_until(lambda: rig.metric("undelivered_results") == 0, 30, "the undelivered gauge at 0")
    assert worker.terminate() == 0
    rig.assert_delivered_once(*ids)


def test_a_ping_names_a_bounded_list_of_jobs_the_first_given_first() -> None:
    fake = FakeJobApiServer(long_poll_s=0.05).start()
    api = RunPodJobApi(take_url=fake.take_url, result_url=fake.result_url,
                       ping_url=fake.ping_url, api_key=None, worker_id="w",
                       clock=ManualClock())
    ids = [f"running-{n}" for n in range(4)] + [f"undelivered-{n:05d}-{'x' * 30}"
                                                for n in range(20_000)]
    try:
        api.ping(ids)
        assert fake.wait_until(lambda s: len(s.pings) == 1)
    finally:
        api.close()
        fake.stop()
    named = fake.pings[0][1]
    assert named[:4] == tuple(ids[:4])
    assert list(named) == ids[:len(named)]
    assert len(",".join(named)) <= PING_IDS_CHARS < 3 * len(",".join(named))
    assert len(urlsplit(fake.ping_url).path) < 200
