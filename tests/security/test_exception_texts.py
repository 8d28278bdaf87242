"""The adapters' exceptions, reprs and log lines hold no piece of a secret, whatever the other
side answers: a refused connection, a 401 or a 400 whose body echoes the key (split by the
excerpt's cut, too), GraphQL errors naming the key, an S3 server whose error body names the
access key id. Checked on ``str``, ``repr`` and the full printed traceback of each exception.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator

import pytest

from adapters.runpod.job_api import RunPodJobApi
from adapters.runpod.pod_control import RunPodPodControl
from adapters.s3.storage import S3Storage
from domain.errors import PodworkerError
from domain.job import Artifact, JobResult
from tests.support.http_fixtures import SleepRecorder
from tests.support.leak_check import (
    JOB_KEY,
    POD_KEY,
    S3_KEY_ID,
    S3_SECRET,
    assert_no_secret,
    straddling,
)
from tests.support.replay_server import Recorded, ReplayServer
from tests.support.s3_server import S3ServerFactory
from tests.support.worker_process import ROOT


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    handler = LogLines()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def raised_by(call: Callable[[], object]) -> PodworkerError:
    with pytest.raises(PodworkerError) as info:
        call()
    return info.value


def assert_clean(exc: BaseException) -> None:
    printed = "".join(traceback.format_exception(exc))
    assert_no_secret(f"{type(exc).__name__}", f"{exc}\n{exc!r}\n{printed}")


def echo(status: int, body: str, content_type: str = "application/json") -> Recorded:
    return Recorded(status, {"Content-Type": content_type}, body.encode())


def job_api(base: str) -> RunPodJobApi:
    from adapters.clock import ManualClock

    return RunPodJobApi(
        take_url=f"{base}/v2/x/job-take/$ID?gpu=a", result_url=f"{base}/v2/x/job-done/$ID",
        ping_url=None, api_key=JOB_KEY, worker_id="w", connect_timeout=2, read_timeout=2,
        take_timeout=2, clock=ManualClock(), sleep=SleepRecorder(),
    )


@pytest.mark.parametrize(
    "answer",
    [
        echo(401, f'{{"error": "unknown key {JOB_KEY}"}}'),
        echo(400, '{"error":"' + straddling(JOB_KEY)["error"] + '"}'),
        echo(403, f"Authorization: {JOB_KEY}", "text/plain"),
        echo(500, f'{{"trace": "{JOB_KEY}"}}'),
        echo(200, f"<html>{JOB_KEY}</html>", "text/html"),
        echo(200, '[{"no id": "' + "y" * 80 + JOB_KEY + '"}]'),
    ],
    ids=["401-echo", "400-echo-across-the-cut", "403-text", "500", "200-not-json",
         "200-no-id-echo"],
)
def test_job_api_errors_and_warnings_hold_no_piece_of_the_key(
    answer: Recorded, log_lines: LogLines
) -> None:
    with ReplayServer(answer) as server:
        api = job_api(server.url)
        outcomes: list[BaseException] = []
        for call in (
            lambda: api.take(job_in_progress=False),
            lambda: api.post_result(JobResult.success("j", {"n": 1})),
            api.jobs_to_stop,
        ):
            try:
                call()
            except PodworkerError as exc:
                outcomes.append(exc)
        api.post_progress("j", {"step": 1})
        api.close()
    assert server.captured, "the server was asked"
    for outcome in outcomes:
        assert_clean(outcome)
    assert_no_secret("log lines", "\n".join(log_lines.lines))
    assert_no_secret("repr", repr(api))


def test_an_unreachable_job_api_raises_without_the_key(closed_port_url: str) -> None:
    api = job_api(closed_port_url)
    assert_clean(raised_by(lambda: api.take(job_in_progress=True)))
    assert_clean(raised_by(lambda: api.post_result(JobResult.failure("j", "x"))))
    api.close()


@pytest.mark.parametrize(
    "answer",
    [
        echo(401, f'{{"errors": [{{"message": "bad key {POD_KEY}"}}]}}'),
        echo(400, "z" * 180 + POD_KEY, "text/plain"),
        echo(200, '{"errors": [{"message": "' + straddling(POD_KEY)["error"] + '"}]}'),
        echo(200, f'{{"errors": ["Bearer {POD_KEY}", "a", "b", "c"]}}'),
        echo(503, f"upstream said {POD_KEY}", "text/plain"),
        echo(200, f"not json {POD_KEY}", "text/plain"),
    ],
    ids=["401", "400-across-the-cut", "graphql-error-across-the-cut", "graphql-errors",
         "503", "200-not-json"],
)
def test_pod_control_errors_hold_no_piece_of_the_key(
    answer: Recorded, log_lines: LogLines
) -> None:
    with ReplayServer(answer) as server:
        control = RunPodPodControl(server.url, POD_KEY, "pod-1", timeout=2,
                                   sleep=SleepRecorder())
        assert_clean(raised_by(control.terminate))
        control.close()
    assert all(c.headers["authorization"] == f"Bearer {POD_KEY}" for c in server.captured)
    assert_no_secret("log lines", "\n".join(log_lines.lines))
    assert_no_secret("repr", repr(control))


def s3_storage(endpoint: str) -> S3Storage:
    return S3Storage(endpoint_url=endpoint, access_key_id=S3_KEY_ID,
                     secret_access_key=S3_SECRET, bucket="outputs", sleep=SleepRecorder())


def test_s3_errors_hold_no_piece_of_the_keys_even_when_the_server_echoes_the_key_id(
    closed_port_url: str, s3_server_factory: S3ServerFactory, log_lines: LogLines
) -> None:
    xml = (
        "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id "
        f"{S3_KEY_ID} does not exist</Message><AWSAccessKeyId>{S3_KEY_ID}</AWSAccessKeyId>"
        "</Error>"
    )
    image = Artifact(b"\x89PNG")
    with ReplayServer(echo(403, xml, "application/xml")) as server:
        storage = s3_storage(server.url)
        assert_clean(raised_by(lambda: storage.store("job", 0, image)))
        assert_clean(raised_by(storage.check))
        assert_no_secret("repr", repr(storage))
        storage.close()
    with ReplayServer(echo(500, xml, "application/xml")) as server:
        storage = s3_storage(server.url)
        assert_clean(raised_by(lambda: storage.store_all("job", [image, image])))
        storage.close()
    storage = s3_storage(closed_port_url)
    assert_clean(raised_by(lambda: storage.store("job", 0, image)))
    storage.close()
    moto = s3_server_factory()
    moto.create_bucket("outputs")
    moto.enable_auth()  # a real S3 server that does not know the key id
    storage = s3_storage(moto.endpoint_url)
    error = raised_by(lambda: storage.store("job", 0, image))
    assert "InvalidAccessKeyId" in str(error)
    assert_clean(error)
    storage.close()
    assert_no_secret("log lines", "\n".join(log_lines.lines))


def test_a_bad_setting_is_reported_without_any_secret_value() -> None:
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "WEBHOOK_GET_WORK": "http://127.0.0.1:9/take/$ID",
        "WEBHOOK_POST_OUTPUT": "http://127.0.0.1:9/done/$ID",
        "AI_API_KEY": JOB_KEY,
        "RUNPOD_API_KEY": POD_KEY,
        "BUCKET_ACCESS_KEY_ID": S3_KEY_ID,
        "BUCKET_SECRET_ACCESS_KEY": S3_SECRET,
        "RUNPOD_API_URL": "ftp://example.invalid/graphql",  # invalid: not http
        "EXECUTION_TIMEOUT": "soon",  # invalid: not a number
        "MODEL": "echo",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "run", "--env-file", "/nonexistent"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "RUNPOD_API_URL" in done.stderr and "EXECUTION_TIMEOUT" in done.stderr
    assert_no_secret("stdout and stderr", done.stdout + done.stderr)
