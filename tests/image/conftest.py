"""Fixtures of the image tests: the engine, the built image, the fake job API on loopback.

Where no Docker engine runs, the image tests skip and say why; in CI (``CI=true``) they fail
instead, since a skipped image test there would hide an image that no longer builds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image import docker_kit, image_build
from tests.image.docker_kit import Container, EngineMissing
from tests.image.fake_api_process import FakeApi
from tests.image.image_build import Build

TIMINGS: dict[str, object] = {}
"""Seconds per step of the session's build (and the image's size), for the closing summary."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def engine() -> None:
    """A running Docker engine and the Debian base image; skip (fail in CI) without them."""
    try:
        docker_kit.check_engine()
        seconds = image_build.ensure_base_image()
    except EngineMissing as exc:
        if in_ci():
            pytest.fail(f"CI=true and the image tests cannot run: {exc}")
        pytest.skip(f"image tests need a Docker engine: {exc}")
    if seconds:
        TIMINGS["base image (debootstrap + import), s"] = seconds


@pytest.fixture(scope="session")
def build_context(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context: the working tree's files plus build-inputs/ (tiny weights, CPU torch)."""
    return image_build.make_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="session")
def built(build_context: Path) -> Build:
    build = image_build.build_image(build_context, image_build.IMAGE)
    # The test image it replaced, now untagged: removed, so repeated runs do not fill the disk.
    docker_kit.docker("image", "prune", "--force", "--filter",
                      "label=org.opencontainers.image.title=podworker", check=False)
    TIMINGS["image build, s"] = build.seconds
    TIMINGS["image build, steps not cached"] = len(build.steps_run)
    for step in build.steps_run:
        TIMINGS[f"  ran: {step[:90]}"] = ""
    TIMINGS["image size, MB"] = image_build.image_size(build.tag) / 1e6
    return build


@pytest.fixture(scope="session")
def image(built: Build) -> str:
    return built.tag


@pytest.fixture
def start() -> Iterator[Callable[..., Container]]:
    """``start(image, env, *docker_run_args)``: a detached container, removed at the end."""
    yield from docker_kit.started([])


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
