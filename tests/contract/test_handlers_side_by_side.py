"""The oracle: each handler of ``tests/handlers/``, unchanged, under RunPod's SDK worker and
under podworker (``python -m app handler``), same jobs, same fake platform; a client must see the
same thing (status, output, error, stream chunks, progress, ``stopPod``).

What differs is written down here, once, in ``podworker_differences``, and in the README's
"Already have a RunPod handler?" table; each is podworker being better on purpose:

1. an ``{"error": ...}`` that is not a string: the SDK sends the object, which the platform does
   not mark failed (the job shows COMPLETED with an error); podworker sends its JSON text, so the
   job is FAILED;
2. a raised exception: the SDK puts the whole traceback (and host name, worker id, SDK version)
   in the job's error, which the client sees; podworker's error is the last line of that
   traceback (``ValueError: number is required``) and the traceback goes to the worker's log.

Both workers run from ``.venv-runpod`` (``make setup``). The SDK takes a job a second at
concurrency 1, so these tests take some seconds each.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from fakeplatform import FakeJobApiServer
from tests.support.handler_runs import API_KEY, HandlerRun, Side, client_view
from tests.support.official_runpod import runpod_python
from tests.support.s3_server import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

View = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """A corpus handler, its flags and environment, and the jobs both workers get."""

    handler: str
    jobs: dict[str, dict[str, Any]]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)  # job id -> updates to wait for
    s3: bool = False  # rp_upload to a bucket (moto on loopback)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> s3Config...


JOB_BUCKET = "bucket-of-the-request"
JOB_SECRET = "request-secret-Zq81vT"  # the request's own S3 secret: never in podworker's log


CASES = [
    Case("minimal.py", {"min-1": {"name": "Ada"}, "min-2": {}}),
    Case("sd_style.py", {
        "sd-1": {"prompt": "a lighthouse", "num_outputs": 2, "width": 16, "seed": 7},
        "sd-2": {"prompt": "a lighthouse", "width": "wide"},  # refused by rp_validator
        "sd-3": {"width": 8},  # no prompt
    }, args=("--model_tag", "tiny-tag"), s3=True),
    Case("async_stream.py", {
        "as-1": {"prompt": "one two three"},
        "as-2": {"prompt": "four five", "fail_at_end": True},
        "as-3": {"prompt": "six"},
    }),
    Case("progress_refresh.py", {
        "pr-1": {"workflow": "portrait"},
        "pr-2": {"workflow": "broken"},
        "pr-3": {"workflow": "upscale", "refresh": True},
    }, progress={"pr-1": 1, "pr-2": 1, "pr-3": 1}),
    Case("local_server.py", {"ls-1": {"text": "hello"}, "ls-2": {"text": "proxy me"}}),
    Case("bucket_per_job.py", {"bk-1": {"text": "to the request's bucket"}, "bk-2": {}},
         s3=True, fields={"bk-1": {"s3Config": {
             "bucketName": JOB_BUCKET, "accessId": FAKE_ACCESS_KEY_ID,
             "accessSecret": JOB_SECRET, "endpointUrl": "<s3>"}}}),
    Case("raises.py", {"rs-1": {"number": 4}, "rs-2": {}}),
    Case("raises.py", {"gen-1": {"count": 3}, "gen-2": {"count": 3, "raise_at": 1}},
         env={"HANDLER": "generator"}),
]


@pytest.fixture(scope="module")
def python() -> Path:
    return runpod_python()


def run_side(side: Side, case: Case, python: Path, folder: Path,
             env: dict[str, str]) -> tuple[dict[str, View], HandlerRun, int]:
    """Run ``case``'s jobs on a fresh platform under ``side``; what a client saw of each, the
    run (for its log) and the worker's exit code."""
    with FakeJobApiServer(long_poll_s=0.5, api_key=API_KEY) as platform:
        for job_id, job_input in case.jobs.items():
            platform.submit(job_input, job_id, with_endpoint(case.fields.get(job_id), env))
        run = HandlerRun(side, python, platform, case.handler, folder, case.args,
                         {**case.env, **env})
        try:
            finished = platform.wait_until(
                lambda s: all(s.jobs[j].final for j in case.jobs), timeout=120)
            assert finished, f"{side}: not every job finished:\n{run.log()[-4000:]}"
            # the SDK posts progress on a thread of its own: it may land after the result
            platform.wait_until(lambda s: all(len(s.jobs[j].progress) >= n
                                              for j, n in case.progress.items()), timeout=30)
            views = {job_id: client_view(platform, job_id) for job_id in case.jobs}
        finally:
            code = run.stop()
    return views, run, code


def with_endpoint(fields: dict[str, Any] | None, env: dict[str, str]) -> dict[str, Any] | None:
    """``fields`` with the S3 server's address in place of ``<s3>`` in an ``s3Config``."""
    if not fields or "s3Config" not in fields:
        return fields
    config = {key: env["BUCKET_ENDPOINT_URL"] if value == "<s3>" else value
              for key, value in fields["s3Config"].items()}
    return {**fields, "s3Config": config}


def podworker_differences(sdk: View) -> View:
    """What podworker shows for a job the SDK showed as ``sdk``: the differences above."""
    view = dict(sdk)
    error = sdk["error"]
    if error is not None and not isinstance(error, str):  # 1: failed, with the JSON text
        view["status"], view["error"] = "FAILED", json.dumps(error)
    elif isinstance(error, str) and "Traceback (most recent call last)" in error:  # 2
        view["error"] = last_traceback_line(error)
    return view


def last_traceback_line(error: str) -> str:
    """``<Type>: <message>``, the last line of the traceback in an SDK's error (its JSON
    ``error_traceback``, or the generator's ``handler: ... traceback: ...`` text)."""
    try:
        traceback = str(json.loads(error)["error_traceback"])
    except (ValueError, KeyError, TypeError):
        traceback = error
    return [line for line in traceback.splitlines() if line.strip()][-1]


def fetched(views: dict[str, View]) -> dict[str, View]:
    """``views`` with each uploaded image's URL replaced by its bytes' digest (the URLs are
    presigned and random; what they serve must be the same)."""
    out = {}
    for job_id, view in views.items():
        output = view["output"]
        if isinstance(output, dict) and "images" in output:
            images = []
            for image in output["images"]:
                answer = requests.get(image["image"], timeout=10)
                assert answer.status_code == 200, image
                images.append({**image, "image": hashlib.sha256(answer.content).hexdigest()})
            output = {**output, "images": images}
        out[job_id] = {**view, "output": output}
    return out


PodworkerCheck = Callable[[Case, dict[str, View], HandlerRun, int], None]


@pytest.mark.parametrize("case", CASES, ids=[
    c.handler.removesuffix(".py") + ("-" + c.env["HANDLER"] if c.env else "") for c in CASES])
def test_each_handler_shows_a_client_what_the_sdk_shows_but_for_the_documented_differences(
    case: Case, python: Path, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    env: dict[str, str] = {}
    if case.s3:
        s3: S3Server = request.getfixturevalue("s3_server")
        existing = {bucket["Name"] for bucket in s3.client().list_buckets()["Buckets"]}
        for bucket in {time.strftime("%m-%y"), JOB_BUCKET} - existing:  # the session's server
            s3.create_bucket(bucket)  # the month's: rp_upload's bucket when none is named
        env = {"BUCKET_ENDPOINT_URL": s3.endpoint_url, "BUCKET_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
               "BUCKET_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY}
    sdk, _, _ = run_side("sdk", case, python, tmp_path / "sdk", env)
    mine, run, code = run_side("podworker", case, python, tmp_path / "podworker", env)
    if case.s3:
        sdk, mine = fetched(sdk), fetched(mine)

    expected = {job_id: podworker_differences(view) for job_id, view in sdk.items()}
    assert mine == expected, f"podworker's log:\n{run.log()[-4000:]}"
    check = CHECKS.get(case.handler + case.env.get("HANDLER", ""))
    if check is not None:
        check(case, mine, run, code)


def check_sd_style(case: Case, views: dict[str, View], run: HandlerRun, code: int) -> None:
    assert views["sd-1"]["output"]["model_tag"] == "tiny-tag"  # its own flag reached it
    assert len(views["sd-1"]["output"]["images"]) == 2
    assert views["sd-2"]["status"] == views["sd-3"]["status"] == "FAILED"
    assert views["sd-3"]["error"] == '["prompt is a required input."]'


def check_progress_refresh(case: Case, views: dict[str, View], run: HandlerRun,
                           code: int) -> None:
    assert views["pr-3"]["stopPod"] and not views["pr-1"]["stopPod"]
    assert views["pr-1"]["progress"] == ["Working on portrait"]
    # after the job that asked for a fresh worker was delivered, podworker drained and left
    assert code == 7  # renewed (ask_for_fresh_worker), README "Exit codes"
    assert any(e.get("event") == "stop_requested" and "refresh_worker" in e.get("message", "")
               for e in run.events()), run.log()[-3000:]


def check_raises(case: Case, views: dict[str, View], run: HandlerRun, code: int) -> None:
    assert views["rs-2"]["error"] == "ValueError: number is required"
    raised = [e for e in run.events() if e.get("event") == "handler_raised"]
    assert len(raised) == 1 and raised[0]["job_id"] == "rs-2"
    assert "Traceback (most recent call last)" in raised[0]["exception"]
    assert 'raise ValueError("number is required")' in raised[0]["exception"]


def check_generator(case: Case, views: dict[str, View], run: HandlerRun, code: int) -> None:
    assert views["gen-2"] == {"status": "FAILED", "output": None,
                              "error": "RuntimeError: failed at 1", "stream": [{"n": 0}],
                              "progress": [], "stopPod": False}
    assert views["gen-1"]["output"] == []  # not aggregated: an empty list, as the SDK sends


def check_bucket_per_job(case: Case, views: dict[str, View], run: HandlerRun,
                         code: int) -> None:
    assert views["bk-1"]["status"] == "COMPLETED"
    assert views["bk-1"]["output"]["bucket"] == JOB_BUCKET  # the request's s3Config reached it
    assert views["bk-2"]["error"] == "this worker needs an s3Config with the request"
    assert JOB_SECRET not in run.log()


def check_async_stream(case: Case, views: dict[str, View], run: HandlerRun, code: int) -> None:
    chunks = [{"index": 0, "token": "one"}, {"index": 1, "token": "two"},
              {"index": 2, "token": "three"}]
    assert views["as-1"]["stream"] == chunks and views["as-1"]["output"] == chunks
    assert views["as-2"]["status"] == "FAILED"
    assert views["as-2"]["error"] == "the model stopped early"


CHECKS: dict[str, PodworkerCheck] = {
    "sd_style.py": check_sd_style,
    "progress_refresh.py": check_progress_refresh,
    "raises.py": check_raises,
    "raises.pygenerator": check_generator,
    "async_stream.py": check_async_stream,
    "bucket_per_job.py": check_bucket_per_job,
}


