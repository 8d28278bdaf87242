"""Fixtures of the image tests: the engine, the built image, the fake job API on loopback.

Where no Docker engine runs, the image tests skip and say why; in CI (``CI=true``) they fail
instead, since a skipped image test there would hide an image that no longer builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image import docker_kit
from tests.image.docker_kit import Build, Container, EngineMissing

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
TIMINGS: dict[str, object] = {}
"""Seconds per step of the session's build (and the image's size), for the closing summary."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def engine() -> None:
    """A running Docker engine and the Debian base image; skip (fail in CI) without them."""
    try:
        docker_kit.check_engine()
        seconds = docker_kit.ensure_base_image()
    except EngineMissing as exc:
        if in_ci():
            pytest.fail(f"CI=true and the image tests cannot run: {exc}")
        pytest.skip(f"image tests need a Docker engine: {exc}")
    if seconds:
        TIMINGS["base image (debootstrap + import), s"] = seconds


@pytest.fixture(scope="session")
def build_context(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context: the working tree's files plus build-inputs/ (tiny weights, CPU torch)."""
    return docker_kit.make_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="session")
def built(build_context: Path) -> Build:
    build = docker_kit.build_image(build_context, docker_kit.IMAGE)
    TIMINGS["image build, s"] = build.seconds
    TIMINGS["image build, steps not cached"] = len(build.steps_run)
    for step in build.steps_run:
        TIMINGS[f"  ran: {step[:90]}"] = ""
    TIMINGS["image size, MB"] = docker_kit.image_size(build.tag) / 1e6
    return build


@pytest.fixture(scope="session")
def image(built: Build) -> str:
    return built.tag


@pytest.fixture
def start() -> Iterator[Callable[..., Container]]:
    """``start(image, env, *docker_run_args)``: a detached container, removed at the end."""
    yield from docker_kit.started([])


class FakeApi:
    """``python -m app fake-api`` in a subprocess, driven over HTTP as a client would."""

    API_KEY = "image-test-job-api-key"

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "fake-api.out"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "fake-api", "--host", "127.0.0.1", "--port", "0",
             "--long-poll", "1", "--api-key", self.API_KEY],
            cwd=docker_kit.REPO, stdout=self._log, stderr=subprocess.STDOUT,
        )
        printed = docker_kit.wait_for(self._settings, timeout=60, what="the fake API to listen")
        self.url = printed["FAKE_API_URL"]
        self.worker_env = {
            "RUNPOD_WEBHOOK_GET_JOB": printed["WEBHOOK_GET_WORK"],
            "RUNPOD_WEBHOOK_POST_OUTPUT": printed["WEBHOOK_POST_OUTPUT"],
            "RUNPOD_WEBHOOK_PING": printed["WEBHOOK_PING"],
            "RUNPOD_AI_API_KEY": self.API_KEY,
            "RUNPOD_API_URL": printed["RUNPOD_API_URL"],
        }

    def _settings(self) -> dict[str, str] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"fake-api exited: {self.log_path.read_text()}")
        values = {}
        for line in self.log_path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                values[name] = value.strip("'")
        return values if "RUNPOD_API_URL" in values else None

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

        return docker_kit.wait_for(finished, timeout, what=f"job {job_id} to finish")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[FakeApi]:
    api = FakeApi(tmp_path)
    try:
        yield api
    finally:
        api.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("pod image")
    for name, value in TIMINGS.items():
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{name}: {text}".rstrip(": "))
