"""The job API misbehaving: refusing connections, answering 500 or 429, answering too slowly.

Each test runs the real worker process against the fake job API on loopback and checks that no
result is lost or delivered twice, that the worker is still up, and that it asked a failing API
only a few times (the backoff is 0.25 s doubling to 5 s, jittered by 20%, at least what a
``Retry-After`` asks; RunPod's own SDK worker retries at once, 1,000 to 2,500 times a second).
"""

from __future__ import annotations

import time

from tests.support.fault_kit import Rig, poll_until

# Four backoff waits (0.25 + 0.5 + 1 + 2 s, less 20% jitter) lie between failures n and n + 4.
FOUR_BACKOFFS_S = (0.25 + 0.5 + 1 + 2) * 0.8 - 0.1  # less the polling slack


def test_a_job_api_refusing_connections_is_retried_with_backoff_and_the_job_in_flight_is_delivered_when_it_is_back(  # noqa: E501
    rig: Rig,
) -> None:
    worker = rig.start()
    in_flight = rig.submit({"_echo": {"sleep_ms": 1500}, "n": 1})
    rig.wait_taken(in_flight)
    rig.stop_api()  # connection refused from now on; the model is still on the job

    seen: list[float] = []

    def failed_once() -> bool:
        seen.append(rig.metric("take_errors"))
        return seen[-1] >= 1

    start = poll_until(failed_once, 20, "the first failed take")
    end = poll_until(lambda: rig.metric("take_errors") >= seen[-1] + 4, 30, "4 more failed takes")
    assert end - start >= FOUR_BACKOFFS_S, f"4 retries in {end - start:.2f} s: no backoff"
    assert worker.proc.poll() is None, "the worker must stay up through the outage"
    assert in_flight not in rig.api.results

    rig.start_api()
    after = rig.submit({"n": 2})
    assert rig.wait_result(in_flight, timeout=30) == {"output": {"n": 1}}
    assert rig.wait_result(after, timeout=30) == {"output": {"n": 2}}
    poll_until(lambda: worker.saw("api_recovered"), 10, "the recovery log line")
    warnings = [e for e in worker.events() if e.get("event") == "take_failed"]
    assert 1 <= len(warnings) <= 2, "a warning now and then, not a line per try"
    assert worker.terminate() == 0
    rig.assert_delivered_once()


def test_take_answering_500_is_retried_with_backoff_and_the_waiting_job_runs_once_it_stops(
    rig: Rig,
) -> None:
    worker = rig.start()
    warm = rig.submit({"n": 1})
    rig.wait_result(warm)
    rig.api.inject_fault("take", status=500, count=1000)
    base = rig.api.requests["take"]
    start = poll_until(lambda: rig.api.requests["take"] >= base + 1, 10, "a take answered 500")
    waiting = rig.submit({"n": 2})  # queued while every take fails
    end = poll_until(lambda: rig.api.requests["take"] >= base + 5, 30, "4 more takes")
    assert end - start >= FOUR_BACKOFFS_S, f"4 retries in {end - start:.2f} s: no backoff"
    assert rig.api.status(waiting) == {"id": waiting, "status": "IN_QUEUE"}

    rig.api.clear_faults()
    assert rig.wait_result(waiting, timeout=15) == {"output": {"n": 2}}
    assert rig.metric("take_errors") >= 5
    assert worker.proc.poll() is None
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_take_answering_429_waits_as_long_as_retry_after_asks(rig: Rig) -> None:
    worker = rig.start()
    rig.wait_result(rig.submit({"n": 1}))
    rig.api.inject_fault("take", status=429, retry_after=1, count=3)
    base = rig.api.requests["take"]
    start = poll_until(lambda: rig.api.requests["take"] >= base + 1, 10, "a take answered 429")
    job = rig.submit({"n": 2})
    rig.wait_taken(job, timeout=20)
    taken_after = time.monotonic()
    takes = rig.api.requests["take"] - base
    # three Retry-After: 1 waits, then the take that gets the job (and perhaps the next one);
    # the upper bound leaves room for a loaded machine, the lower one is the behaviour
    assert 3 * 1.0 - 0.1 <= taken_after - start < 3 * 1.2 + 4.0, f"{taken_after - start:.2f} s"
    assert 4 <= takes <= 5, f"{takes} takes for three 429s"
    assert rig.wait_result(job) == {"output": {"n": 2}}
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_takes_slower_than_the_take_timeout_are_abandoned_at_the_timeout_and_retried(
    rig: Rig,
) -> None:
    worker = rig.start(JOB_TAKE_TIMEOUT="1000")
    rig.wait_result(rig.submit({"n": 1}))
    # a gateway that holds two takes 2.5 s, then answers 504 (they hand out no job)
    rig.api.inject_fault("take", delay_s=2.5, status=504, count=2)
    base = rig.api.requests["take"]
    start = poll_until(lambda: rig.api.requests["take"] >= base + 1, 10, "a slow take")
    job = rig.submit({"n": 2})
    rig.wait_taken(job, timeout=20)
    taken_after = time.monotonic()
    takes = rig.api.requests["take"] - base  # read now: the worker takes on while it posts
    # two 1 s read timeouts and two short backoffs, not two 2.5 s waits for the answers
    assert 2.0 <= taken_after - start < 12, f"{taken_after - start:.2f} s"
    assert rig.wait_result(job) == {"output": {"n": 2}}
    assert rig.metric("take_errors") >= 2
    assert takes <= 4, f"{takes} takes for two slow ones and the one that got the job"
    timeouts = [e for e in worker.events() if e.get("event") == "take_failed"]
    assert any("timed out" in e["message"] for e in timeouts)
    assert worker.terminate() == 0
    rig.assert_delivered_once()
