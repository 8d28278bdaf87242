"""The real ``RunPodJobApi`` against real HTTP servers on loopback (the fake job API, replay
servers, and a closed port): taking jobs, posting results and progress, pinging, and polling for
jobs to stop. How requests are built from URL templates, how odd answers are read and how the
API key is kept out of errors and logs is in ``test_runpod_job_api_urls_answers_and_secrets.py``.
Retry policies get a sleep recorder: nothing here sleeps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from adapters.clock import ManualClock
from adapters.http.parts import parse_retry_after
from adapters.runpod.job_api import RunPodJobApi
from domain.errors import ApiUnavailable, RateLimited, RejectedByApi, TransientError
from domain.job import JobResult
from domain.ports import JobApi, JobStopSource
from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import API_KEY, WORKER_ID, SleepRecorder
from tests.support.replay_server import Recorded, ReplayServer

MakeApi = Callable[..., RunPodJobApi]
Replay = Callable[..., ReplayServer]


def test_the_adapter_conforms_to_the_job_api_and_job_stop_ports(make_job_api: MakeApi) -> None:
    api = make_job_api("http://127.0.0.1:9")
    as_job_api: JobApi = api
    as_stop_source: JobStopSource = api
    assert callable(as_job_api.take) and callable(as_stop_source.jobs_to_stop)


def test_takes_results_and_pings_share_one_kept_alive_connection(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    api = make_job_api(fake_api.url)
    for n in range(5):
        fake_api.submit({"n": n})
    for _ in range(5):
        [job] = api.take(job_in_progress=False)
        api.post_progress(job.id, {"step": 1})
        api.post_result(JobResult.success(job.id, job.input))
        api.ping([job.id])
    assert len(fake_api.results) == 5
    assert fake_api.stats()["connections"] == 1


def test_take_stamps_jobs_with_the_clock_and_returns_one_submitted_during_the_long_poll(
    make_job_api: MakeApi,
) -> None:
    with FakeJobApiServer(long_poll_s=5.0, api_key=API_KEY) as fake:
        api = make_job_api(fake.url, clock=ManualClock(start=42.0))
        taken: list[object] = []
        thread = threading.Thread(target=lambda: taken.extend(api.take(job_in_progress=True)))
        started = time.monotonic()
        thread.start()
        assert fake.wait_until(lambda s: s.requests["take"] == 1, timeout=4)
        job_id = fake.submit({"prompt": "fox"})
        thread.join(timeout=10)
        assert time.monotonic() - started < 4.5  # answered on submit, not at the 5 s poll's end
    [job] = taken
    assert (job.id, job.input, job.taken_at) == (job_id, {"prompt": "fox"}, 42.0)  # type: ignore[attr-defined]


def test_take_waits_one_long_poll_then_returns_no_job_without_asking_again(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    api = make_job_api(fake_api.url)
    started = time.monotonic()
    assert api.take(job_in_progress=False) == []
    assert time.monotonic() - started >= fake_api.long_poll_s * 0.9
    assert fake_api.requests["take"] == 1


def test_take_gives_up_on_a_server_slower_than_the_take_timeout(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    fake_api.inject_fault("take", delay_s=30)
    api = make_job_api(fake_api.url, take_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ApiUnavailable, match="timed out"):
        api.take(job_in_progress=False)
    assert time.monotonic() - started < 3


def test_take_reports_429_with_the_retry_after_seconds_and_does_not_retry_by_itself(
    fake_api: FakeJobApiServer, make_job_api: MakeApi, sleeps: SleepRecorder
) -> None:
    fake_api.inject_fault("take", status=429, retry_after=3)
    api = make_job_api(fake_api.url)
    with pytest.raises(RateLimited) as caught:
        api.take(job_in_progress=False)
    assert caught.value.retry_after == 3.0
    assert fake_api.requests["take"] == 1
    assert sleeps.waits == []


def test_take_reads_a_retry_after_date_against_the_answer_s_own_date(
    replay: Replay, make_job_api: MakeApi
) -> None:
    server = replay(Recorded(429, {"Date": "Wed, 21 Oct 2015 07:28:00 GMT",
                                   "Retry-After": "Wed, 21 Oct 2015 07:28:07 GMT"}))
    with pytest.raises(RateLimited) as caught:
        make_job_api(server.url).take(job_in_progress=False)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), (None, None), ("", None)],
)
def test_retry_after_values_are_read_as_seconds_or_ignored(
    value: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(value) == seconds


def test_post_result_is_one_try_and_a_429_says_how_long_to_wait(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    job_id = fake_api.submit({"n": 1})
    api = make_job_api(fake_api.url)
    [job] = api.take(job_in_progress=False)
    fake_api.inject_fault("done", status=429, retry_after=2, count=1)
    with pytest.raises(RateLimited) as caught:
        api.post_result(JobResult.success(job.id, "ok"))
    assert caught.value.retry_after == 2
    api.post_result(JobResult.success(job.id, "ok"))  # the worker's post stage tries again
    assert fake_api.results[job_id] == {"output": "ok"}
    assert fake_api.requests["done"] == 2
    assert fake_api.duplicates == []


def test_post_result_answered_with_a_server_error_is_transient_and_not_retried_here(
    fake_api: FakeJobApiServer, make_job_api: MakeApi, sleeps: SleepRecorder
) -> None:
    job_id = fake_api.submit({"n": 1})
    api = make_job_api(fake_api.url)
    api.take(job_in_progress=False)
    fake_api.inject_fault("done", status=503, count=100)
    with pytest.raises(TransientError, match="503"):
        api.post_result(JobResult.success(job_id, "ok"))
    assert fake_api.requests["done"] == 1  # the outbox and the post stage retry, not this
    assert sleeps.waits == []
    assert fake_api.results == {}


def test_post_result_to_an_unreachable_api_is_transient_and_names_only_the_host(
    closed_port_url: str, make_job_api: MakeApi
) -> None:
    api = make_job_api(closed_port_url)
    with pytest.raises(ApiUnavailable) as caught:
        api.post_result(JobResult.success("job-1", "ok"))
    assert str(caught.value).startswith(f"job API at {closed_port_url.removeprefix('http://')}")
    assert "gpu=" not in str(caught.value)


def test_a_result_for_a_job_the_api_does_not_know_is_rejected_at_once(
    fake_api: FakeJobApiServer, make_job_api: MakeApi, sleeps: SleepRecorder
) -> None:
    api = make_job_api(fake_api.url)
    with pytest.raises(RejectedByApi, match="404"):
        api.post_result(JobResult.success("never-queued", "ok"))
    assert fake_api.requests["done"] == 1
    assert sleeps.waits == []


def test_ping_and_progress_never_raise_when_the_api_is_down(
    closed_port_url: str, make_job_api: MakeApi, sleeps: SleepRecorder
) -> None:
    api = make_job_api(closed_port_url)
    api.ping(["job-1"])
    api.post_progress("job-1", {"step": 3})
    assert len(sleeps.waits) == 1  # a ping gets one quick retry; progress none (it is coalesced)


def test_ping_and_progress_never_raise_on_a_refusal_either(
    fake_api: FakeJobApiServer, make_job_api: MakeApi, sleeps: SleepRecorder
) -> None:
    api = make_job_api(fake_api.url, api_key="wrong-key")
    api.ping(["job-1"])
    api.post_progress("unknown-job", {"step": 3})
    assert fake_api.requests["ping"] == 1  # a 4xx is not retried
    assert sleeps.waits == []


def test_ping_names_the_held_jobs_only_when_busy(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    api = make_job_api(fake_api.url)
    api.ping([])
    api.ping(["job-a", "job-b"])
    assert fake_api.pings == [(WORKER_ID, ()), (WORKER_ID, ("job-a", "job-b"))]


def test_without_a_ping_url_ping_sends_nothing(
    replay: Replay, make_job_api: MakeApi
) -> None:
    server = replay(Recorded(200))
    make_job_api(server.url, ping_url=None).ping(["job-a"])
    assert server.captured == []


def test_jobs_to_stop_returns_the_jobs_the_platform_cancelled(
    fake_api: FakeJobApiServer, make_job_api: MakeApi
) -> None:
    job_id = fake_api.submit({"n": 1})
    api = make_job_api(fake_api.url)
    api.take(job_in_progress=False)
    assert api.jobs_to_stop() == []  # a long poll that ended empty
    fake_api.cancel(job_id)
    assert api.jobs_to_stop() == [job_id]
    assert api.stop_polling is True


def test_jobs_to_stop_is_off_without_a_job_take_url_and_says_so_once(
    replay: Replay, make_job_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    server = replay(Recorded(204))
    api = make_job_api(server.url, take_url=f"{server.url}/take/$ID")
    with caplog.at_level(logging.INFO, logger="adapters.runpod.job_api"):
        assert [api.jobs_to_stop() for _ in range(3)] == [[], [], []]
    assert api.stop_polling is False
    assert len(caplog.records) == 1
    assert server.captured == []


def test_jobs_to_stop_raises_a_transient_error_when_the_api_is_down(
    closed_port_url: str, make_job_api: MakeApi
) -> None:
    with pytest.raises(ApiUnavailable):
        make_job_api(closed_port_url).jobs_to_stop()
