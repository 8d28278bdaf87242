"""``python -m app fake-api`` in a subprocess, driven over HTTP as a client would.

Through the command line, not by importing the fake, so that the image tests depend only on
what the command promises: it prints the settings a worker needs (``NAME='value'`` lines) and
serves ``POST /run``, ``GET /status/<id>`` and ``GET /stats``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.image.docker_kit import REPO, wait_for

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


class FakeApi:
    """``python -m app fake-api`` in a subprocess, driven over HTTP as a client would."""

    API_KEY = "image-test-job-api-key"

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "fake-api.out"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "fake-api", "--host", "127.0.0.1", "--port", "0",
             "--long-poll", "1", "--api-key", self.API_KEY],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
        )
        printed = wait_for(self._settings, timeout=60, what="the fake API to listen")
        self.url = printed["RUNPOD_ENDPOINT_BASE_URL"].removesuffix("/v2")
        self.worker_env = {
            "RUNPOD_WEBHOOK_GET_JOB": printed["RUNPOD_WEBHOOK_GET_JOB"],
            "RUNPOD_WEBHOOK_POST_OUTPUT": printed["RUNPOD_WEBHOOK_POST_OUTPUT"],
            "RUNPOD_WEBHOOK_PING": printed["RUNPOD_WEBHOOK_PING"],
            "RUNPOD_AI_API_KEY": self.API_KEY,
            "RUNPOD_API_URL": printed["RUNPOD_API_URL"],
        }

    def _settings(self) -> dict[str, str] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"fake-api exited: {self.log_path.read_text()}")
        values = {}
        for line in self.log_path.read_text().splitlines():
            name, sep, value = line.removeprefix("export ").partition("=")
            if sep and line.startswith("export "):
                values[name] = value.strip("'")
        return values if "RUNPOD_ENDPOINT_BASE_URL" in values else None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def submit(self, job_input: dict[str, Any]) -> str:
        job_id: str = self._call("POST", "/run", {"input": job_input})["id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self._call("GET", f"/status/{job_id}")
        return status

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call("GET", "/stats")
        return stats

    def wait_final(self, job_id: str, timeout: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            status = self.status(job_id)
            return status if status["status"] in FINAL else None

        return wait_for(finished, timeout, what=f"job {job_id} to finish")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self._log.close()
