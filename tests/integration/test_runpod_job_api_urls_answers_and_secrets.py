"""The real ``RunPodJobApi`` against real HTTP servers on loopback (the fake job API, replay
servers, and a closed port): requests built from the URL templates (odd job ids, the query, the
headers), odd answers read without harm, and the API key kept out of errors, logs and repr.
Retry policies get a sleep recorder: nothing here sleeps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import pytest

from adapters.clock import ManualClock
from adapters.runpod.job_api import RunPodJobApi
from domain.errors import ApiUnavailable, ConfigurationError, PodworkerError
from domain.job import JobResult
from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import WORKER_ID
from tests.support.replay_server import Recorded, ReplayServer

MakeApi = Callable[..., RunPodJobApi]
Replay = Callable[..., ReplayServer]


@pytest.mark.parametrize(
    "job_id",
    ["a/b c?d&e#f%g", "x$RUNPOD_POD_ID-$ID", "ünïcødé-✓", "..", "plus+sign", "semi;colon=1"],
)
def test_odd_job_ids_reach_the_api_intact_inside_one_path_segment(
    fake_api: FakeJobApiServer, make_job_api: MakeApi, job_id: str
) -> None:
    fake_api.submit({"n": 1}, job_id=job_id)
    api = make_job_api(fake_api.url)
    [job] = api.take(job_in_progress=False)
    api.post_progress(job.id, "half")
    api.post_result(JobResult.success(job.id, "done"))
    assert fake_api.progress == [(job_id, "half")]
    assert fake_api.results == {job_id: {"output": "done"}}


def test_job_in_progress_starts_the_query_when_the_template_has_none(
    replay: Replay, make_job_api: MakeApi
) -> None:
    server = replay(Recorded(204))
    api = make_job_api(server.url, take_url=f"{server.url}/job-take/$ID")
    assert api.take(job_in_progress=True) == []
    assert server.captured[0].target == f"/job-take/{WORKER_ID}?job_in_progress=1"


def test_without_an_api_key_no_authorization_header_is_sent(
    replay: Replay, make_job_api: MakeApi
) -> None:
    server = replay(Recorded(204))
    make_job_api(server.url, api_key=None).take(job_in_progress=False)
    assert "authorization" not in server.captured[0].headers


def test_a_server_error_names_host_and_status_but_not_the_query(
    replay: Replay, make_job_api: MakeApi
) -> None:
    server = replay(Recorded(502))
    api = make_job_api(server.url, take_url=f"{server.url}/v2/e/job-take/$ID?token=abc123")
    with pytest.raises(ApiUnavailable) as caught:
        api.take(job_in_progress=False)
    message = str(caught.value)
    assert "502" in message
    assert server.url.removeprefix("http://") in message
    assert "abc123" not in message


def test_an_unreadable_take_answer_is_logged_briefly_and_gives_no_job(
    replay: Replay, make_job_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"<html>" + b"x" * 200_000 + b"</html>"
    server = replay(Recorded(200, {"Content-Type": "text/html"}, body))
    with caplog.at_level(logging.WARNING, logger="adapters.runpod.job_api"):
        assert make_job_api(server.url).take(job_in_progress=False) == []
    [record] = caplog.records
    assert "not JSON" in record.getMessage()
    assert "<html>" in record.getMessage()
    assert len(record.getMessage()) < 400


def test_objects_without_a_usable_id_are_logged_and_the_other_jobs_returned(
    replay: Replay, make_job_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'[{"input": {"a": 1}}, {"id": "good", "input": {}}, {"id": true, "input": {}}]'
    server = replay(Recorded(200, {"Content-Type": "application/json"}, body))
    with caplog.at_level(logging.WARNING, logger="adapters.runpod.job_api"):
        jobs = make_job_api(server.url).take(job_in_progress=False)
    assert [job.id for job in jobs] == ["good"]
    assert len(caplog.records) == 2
    assert all("without a usable id" in r.getMessage() for r in caplog.records)


def test_a_result_url_without_the_job_id_placeholder_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"\$ID"):
        RunPodJobApi(take_url="http://h/job-take/$ID", result_url="http://h/done",
                     ping_url=None, api_key=None, worker_id="w", clock=ManualClock())


def test_the_api_key_never_appears_in_errors_logs_or_repr(
    fake_api: FakeJobApiServer, replay: Replay, closed_port_url: str, make_job_api: MakeApi,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-CANARY-do-not-log-8c1f"
    echo = replay(Recorded(200, {}, f"not json {secret}".encode()),  # take
                  Recorded(400, {}, f'{{"error": "bad key {secret}"}}'.encode()),  # result
                  Recorded(200, {}, f'[{{"input": "{secret}"}}]'.encode()))  # take, stop...
    errors: list[PodworkerError] = []
    with caplog.at_level(logging.DEBUG):
        for base in (fake_api.url, closed_port_url, echo.url):
            api = make_job_api(base, api_key=secret)
            assert secret not in repr(api)
            attempts: list[Callable[[], object]] = [
                partial(api.take, job_in_progress=False),
                partial(api.post_result, JobResult.success("job-x", "ok")),
                partial(api.take, job_in_progress=False),
                api.jobs_to_stop,
            ]
            for attempt in attempts:
                try:
                    attempt()
                except PodworkerError as exc:
                    errors.append(exc)
            api.ping(["job-x"])
            api.post_progress("job-x", 1)
    assert len(errors) >= 6
    assert any("401" in str(e) for e in errors)
    assert any("refused" in str(e) and "[redacted]" in str(e) for e in errors)
    assert all(secret not in str(e) for e in errors)
    assert caplog.records
    assert secret not in caplog.text
