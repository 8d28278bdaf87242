"""The fake platform's client side (what ``runpod.Endpoint`` calls) and its stream route, over
real HTTP on loopback; and its command line. No sleeps: waits are threads joined with
deadlines and the fake's ``wait_until``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import API_KEY, WORKER_ID
from tests.support.platform_calls import AUTH, done, http, in_thread, take, untimed

ROOT = Path(__file__).resolve().parents[2]
BASE = "/v2/ep-test"
__all__ = ["http"]  # the fixture, used by name


def chunk(http: requests.Session, fake: FakeJobApiServer, job_id: str,
          body: Any) -> requests.Response:
    return http.post(f"{fake.url}/v2/fake/job-stream/{WORKER_ID}/{job_id}?isStream=false",
                     data=json.dumps(body), headers=AUTH, timeout=10)


def client(http: requests.Session, fake: FakeJobApiServer, method: str, route: str,
           body: Any = None) -> requests.Response:
    return http.request(method, f"{fake.url}{BASE}/{route}", json=body,
                        headers={"Authorization": "Bearer client-key"}, timeout=10)


def test_stream_chunks_are_recorded_in_order_and_handed_out_once_each_then_the_end(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    for n in (1, 2):
        assert chunk(http, fake_api, job_id, {"output": f"part {n}"}).status_code == 200
    first = client(http, fake_api, "GET", f"stream/{job_id}").json()
    assert first == {"status": "IN_PROGRESS",
                     "stream": [{"output": "part 1"}, {"output": "part 2"}]}
    assert client(http, fake_api, "GET", f"stream/{job_id}").json()["stream"] == []
    chunk(http, fake_api, job_id, {"output": "part 3"})
    done(http, fake_api, job_id, {"output": []})
    assert client(http, fake_api, "GET", f"stream/{job_id}").json() == {
        "status": "COMPLETED", "stream": [{"output": "part 3"}]}
    assert client(http, fake_api, "GET", f"stream/{job_id}").json() == {
        "status": "COMPLETED", "stream": []}
    assert fake_api.streamed == [(job_id, "part 1"), (job_id, "part 2"), (job_id, "part 3")]
    assert fake_api.late_stream == []


def test_the_stream_route_wants_the_key_a_known_job_and_an_output(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    url = f"{fake_api.url}/v2/fake/job-stream/{WORKER_ID}/{job_id}"
    assert http.post(url, json={"output": 1}, timeout=5).status_code == 401
    assert chunk(http, fake_api, "nobody", {"output": 1}).status_code == 404
    assert chunk(http, fake_api, job_id, {"chunk": 1}).status_code == 400
    assert client(http, fake_api, "GET", "stream/nobody").status_code == 404
    fake_api.inject_fault("stream", status=503)
    assert chunk(http, fake_api, job_id, {"output": 1}).status_code == 503
    assert fake_api.streamed == []


def test_runsync_answers_once_the_job_is_done(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    thread, out = in_thread(lambda: client(http, fake_api, "POST", "runsync", {"input": {"a": 1}}))
    with requests.Session() as worker:  # the client's session waits in the other thread
        job = take(worker, fake_api).json()
        done(worker, fake_api, job["id"], {"output": {"b": 2}})
    thread.join(timeout=10)
    answer = out[0].json()
    assert untimed(answer) == {"id": job["id"], "status": "COMPLETED", "output": {"b": 2}}
    assert answer["workerId"] == WORKER_ID


def test_runsync_answers_the_status_as_it_is_when_the_wait_runs_out(
    http: requests.Session,
) -> None:
    with FakeJobApiServer(long_poll_s=0.05, runsync_wait_s=0.2) as fake:
        answer = client(http, fake, "POST", "runsync", {"input": {}}).json()
    assert answer == {"id": answer["id"], "status": "IN_QUEUE"}


def test_a_failed_job_can_be_retried_and_is_handed_out_again(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({"x": 1})
    take(http, fake_api)
    done(http, fake_api, job_id, {"error": "boom"})
    assert client(http, fake_api, "POST", f"retry/{job_id}").json() == {
        "id": job_id, "status": "IN_QUEUE"}
    assert take(http, fake_api).json() == {"id": job_id, "input": {"x": 1}}
    done(http, fake_api, job_id, {"output": "fine"})
    assert untimed(fake_api.status(job_id)) == {"id": job_id, "status": "COMPLETED",
                                                "output": "fine"}
    assert client(http, fake_api, "POST", f"retry/{job_id}").status_code == 400
    assert client(http, fake_api, "POST", "retry/nobody").status_code == 404
    assert fake_api.health()["jobs"]["retried"] == 1 and fake_api.duplicates == []


def test_health_counts_jobs_by_status_and_the_workers_seen_idle_or_running(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    ok, bad, running, _queued = (fake_api.submit({}) for _ in range(4))
    for job_id in (ok, bad, running):
        take(http, fake_api, worker="w-busy" if job_id == running else WORKER_ID)
    done(http, fake_api, ok, {"output": 1})
    done(http, fake_api, bad, {"error": "boom"})
    http.get(f"{fake_api.url}/v2/fake/ping/w-idle", headers=AUTH, timeout=5)
    assert client(http, fake_api, "GET", "health").json() == {
        "jobs": {"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 1, "retried": 0},
        "workers": {"idle": 2, "running": 1},
    }


def test_purge_queue_drops_the_queued_jobs_only(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    running = fake_api.submit({})
    take(http, fake_api)
    queued = [fake_api.submit({}) for _ in range(3)]
    assert client(http, fake_api, "POST", "purge-queue").json() == {
        "removed": 3, "status": "completed"}
    assert [fake_api.status(j)["status"] for j in queued] == ["CANCELLED"] * 3  # type: ignore[index]
    assert fake_api.status(running)["status"] == "IN_PROGRESS"  # type: ignore[index]
    assert take(http, fake_api).status_code == 204


def test_the_fake_api_command_prints_export_lines_serves_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"id": "from-file", "input": {"x": 1}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "fake-api", "--port", "0", "--jobs", str(jobs),
         "--long-poll", "0.1", "--api-key", API_KEY],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].endswith("runpod_client.py"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            lines.append(line.rstrip("\n"))
        printed = {}
        for line in lines:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                printed[name] = value.strip("'")
            else:  # a comment or one of the two commands: nothing else to paste
                assert line.startswith(("#", ".venv/bin/podworker ", ".venv-runpod/")), line
        base = printed["RUNPOD_ENDPOINT_BASE_URL"].removesuffix("/v2")
        assert printed["RUNPOD_WEBHOOK_GET_JOB"] == f"{base}/v2/fake/job-take/$ID?gpu=fake"
        assert printed["RUNPOD_WEBHOOK_POST_OUTPUT"] == \
            f"{base}/v2/fake/job-done/$RUNPOD_POD_ID/$ID?gpu=fake"
        assert printed["RUNPOD_WEBHOOK_POST_STREAM"] == \
            f"{base}/v2/fake/job-stream/$RUNPOD_POD_ID/$ID?gpu=fake"
        assert printed["RUNPOD_WEBHOOK_PING"] == f"{base}/v2/fake/ping/$RUNPOD_POD_ID?gpu=fake"
        assert printed["RUNPOD_AI_API_KEY"] == API_KEY
        assert printed["RUNPOD_API_URL"] == f"{base}/graphql"
        assert (printed["RUNPOD_ENDPOINT_ID"], printed["STORAGE"]) == ("fake", "base64")
        assert printed["RUNPOD_API_KEY"]  # the client's key: runpod refuses to run without one
        assert lines[-1] == ".venv-runpod/bin/python examples/runpod_client.py"
        assert (ROOT / "examples" / "runpod_client.py").is_file()
        taken = requests.get(f"{base}/v2/fake/job-take/w", headers=AUTH, timeout=5)
        assert taken.json() == {"id": "from-file", "input": {"x": 1}}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
