"""RunPod's own code (PyPI ``runpod``, pinned) against the fake platform, for contract tests.

The SDK lives in ``.venv-runpod`` (made by ``make setup``; ``bench/runpod_venv.py``); its
worker and its client run there in subprocesses, from small scripts written here.
``RecordingPlatform`` is the fake platform noting every exchange (request and answer), from
which ``contracts/`` files are written.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.runpod_venv import RunpodVenvError, runpod_venv
from fakeplatform import FakeJobApiServer, Reply
from tests.support.harness import wait_until
from tests.support.replay_server import Captured

SDK_API_KEY = "contract-job-api-key"

SDK_WORKER = '''\
"""RunPod's SDK worker with the handler SDK_MODE names (written by the contract tests)."""
import asyncio
import os

import runpod

MODE = os.environ["SDK_MODE"]
CONCURRENCY = int(os.environ.get("SDK_CONCURRENCY", "1"))


async def streaming(job):
    for i in range(int(job["input"].get("chunks", 3))):
        yield {"i": i, "text": f"chunk-{i}"}
    if job["input"].get("hang"):
        await asyncio.sleep(300)  # until the platform stops the job


def plain(job):
    if job["input"].get("progress"):
        runpod.serverless.progress_update(job, {"step": 1})
    if job["input"].get("fail"):
        return {"error": job["input"]["fail"]}
    return job["input"]


config = {"handler": plain if MODE == "plain" else streaming}
if MODE == "stream_aggregate":
    config["return_aggregate_stream"] = True
if CONCURRENCY > 1:
    config["concurrency_modifier"] = lambda current: CONCURRENCY
runpod.serverless.start(config)
'''

SDK_CLIENT = '''\
"""RunPod's SDK client: runs the calls in argv[1] (JSON) and prints one JSON line per call."""
import json
import os
import sys

import runpod

runpod.api_key = os.environ["SDK_CLIENT_KEY"]
runpod.endpoint_url_base = os.environ["SDK_ENDPOINT_URL_BASE"]
endpoint = runpod.Endpoint(os.environ["SDK_ENDPOINT_ID"])
jobs = {}
for step in json.loads(sys.argv[1]):
    call, name, arg = step["call"], step.get("job"), step.get("input")
    if "id" in step:  # a job run earlier, by another process
        jobs[name] = runpod.endpoint.runner.Job(endpoint.endpoint_id, step["id"],
                                                endpoint.rp_client)
    if call == "run":
        jobs[name] = endpoint.run(arg)
        answer = jobs[name].job_id
    elif call == "run_sync":
        answer = endpoint.run_sync(arg, timeout=step.get("timeout", 60))
    elif call == "status":
        answer = jobs[name].status()
    elif call == "status_raw":  # the whole answer of GET /status, as the client reads it
        answer = jobs[name]._fetch_job()
    elif call == "output":
        answer = jobs[name].output(timeout=step.get("timeout", 60))
    elif call == "stream":
        answer = list(jobs[name].stream())
    elif call == "cancel":
        answer = jobs[name].cancel()
    elif call == "health":
        answer = endpoint.health()
    elif call == "purge_queue":
        answer = endpoint.purge_queue()
    elif call == "retry":  # not an Endpoint method in 1.12; the client's own request
        answer = endpoint.rp_client.post(f"{endpoint.endpoint_id}/retry/{jobs[name].job_id}",
                                         None)
    else:
        raise SystemExit(f"unknown call {call}")
    print(json.dumps({"call": call, "job": name, "answer": answer}), flush=True)
'''


def runpod_python() -> Path:
    """``.venv-runpod``'s python (``make setup`` made it): RunPod's SDK with podworker beside
    it. Nothing is installed here; without it the test fails in CI and skips elsewhere."""
    try:
        return runpod_venv().python
    except (RunpodVenvError, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"RunPod's SDK is needed in CI: {exc}")
        pytest.skip(str(exc))


@dataclass(frozen=True)
class Exchange(Captured):
    """One request the fake received (``Captured``: method, target, headers, body) and its
    answer."""

    reply: Reply = field(default_factory=lambda: Reply(0))

    def request_json(self) -> Any:
        return self.json()

    def reply_json(self) -> Any:
        return json.loads(self.reply.body) if self.reply.body else None


class RecordingPlatform(FakeJobApiServer):
    """The fake platform, noting every exchange in ``exchanges`` (in arrival order of the
    answers)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._log_lock = threading.Lock()
        self.exchanges: list[Exchange] = []

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        reply = super().handle(method, target, headers, body)
        with self._log_lock:
            self.exchanges.append(Exchange(method, target, dict(headers), body, reply))
        return reply

    def seen(self, route: str) -> list[Exchange]:
        """The exchanges on ``route`` (``job-take``, ``job-stream``, ``status``...)."""
        with self._log_lock:
            return [e for e in self.exchanges if route_of(e.path) == route]


def route_of(path: str) -> str:
    """The route segment of a path: after ``/v2/<endpoint id>/`` when present."""
    segments = path.split("/")[1:]
    return segments[2] if segments[:1] == ["v2"] and len(segments) > 2 else segments[0]


class SdkWorker:
    """RunPod's SDK worker in a subprocess, pointed at ``platform``."""

    def __init__(self, python: Path, platform: FakeJobApiServer, tmp: Path, mode: str,
                 *, pod_id: str = "pod-7x9k2m", concurrency: int = 1,
                 template: str | None = None) -> None:
        script = tmp / "sdk_worker.py"
        script.write_text(SDK_WORKER)
        self.log_path = tmp / f"sdk-worker-{mode}.log"
        take = template or platform.take_url
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "RUNPOD_WEBHOOK_GET_JOB": take,
            "RUNPOD_WEBHOOK_POST_OUTPUT": same_query(platform.result_url, take),
            "RUNPOD_WEBHOOK_POST_STREAM": same_query(platform.stream_url, take),
            "RUNPOD_WEBHOOK_PING": same_query(platform.ping_url, take),
            "RUNPOD_AI_API_KEY": SDK_API_KEY, "RUNPOD_POD_ID": pod_id,
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
            "SDK_MODE": mode, "SDK_CONCURRENCY": str(concurrency),
        }
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([str(python), str(script)], cwd=tmp, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.log() or self.proc.poll() is not None,
                   timeout=timeout, what=f"SDK worker log line {text!r}")
        assert text in self.log(), f"the SDK worker exited first:\n{self.log()[-3000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def same_query(template: str, take: str) -> str:
    """``template`` under the take template's base (endpoint id, query), as RunPod sets them."""
    take_split, split = urlsplit(take), urlsplit(template)
    parts = take_split.path.split("/")  # ['', 'v2', '<endpoint>', 'job-take', '$ID']
    rest = split.path.split("/")[3:]
    return f"{take_split.scheme}://{take_split.netloc}/{'/'.join(parts[1:3] + rest)}" + (
        f"?{take_split.query}" if take_split.query else "")


def run_sdk_client(python: Path, platform: FakeJobApiServer, tmp: Path,
                   steps: list[dict[str, Any]], endpoint_id: str = "ep-contract",
                   timeout: float = 120.0) -> list[Any]:
    """Run RunPod's client on ``steps``; the answers in order (the test fails on an error)."""
    script = tmp / "sdk_client.py"
    script.write_text(SDK_CLIENT)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8",
        "SDK_CLIENT_KEY": "contract-client-key", "SDK_ENDPOINT_URL_BASE": platform.endpoint_url,
        "SDK_ENDPOINT_ID": endpoint_id,
    }
    done = subprocess.run([str(python), str(script), json.dumps(steps)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"RunPod's client failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return [json.loads(line)["answer"] for line in done.stdout.splitlines() if line.strip()]
