"""The Docker engine as the image tests use it: the client, containers, and waiting.

The client is Debian's (``/usr/bin/docker``, whose BuildKit is built in; a newer client without
the buildx plugin cannot build with BuildKit) unless ``DOCKER`` names another. Containers run on
the host's network (the engine runs without a bridge), so a worker in one reaches the fake job
API on the host's loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]

T = TypeVar("T")
_PAUSE = threading.Event()  # never set: a wait that is not a bare sleep


class EngineMissing(Exception):
    """No Docker engine (or no debootstrap) here; the message says what is missing."""


def docker_client() -> str:
    """The docker command to use: $DOCKER, else Debian's client, else the one on PATH."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if found is None:
        raise EngineMissing("no docker client (apt-get install docker.io)")
    return found


def docker(*args: str, timeout: float = 120, check: bool = True,
           input: bytes | None = None, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS``; text output; raise with its stderr when ``check`` and it failed."""
    completed = subprocess.run(
        [docker_client(), *args], capture_output=True, text=input is None, timeout=timeout,
        check=False, input=input, env=env,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... exited {completed.returncode}:\n"
            f"{tail(completed.stderr)}\n{tail(completed.stdout)}"
        )
    return completed


def check_engine() -> None:
    """Raise EngineMissing unless a client reaches a running engine."""
    client = docker_client()
    try:
        info = subprocess.run([client, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineMissing(f"{client} info failed: {exc}") from exc
    if info.returncode != 0 or not info.stdout.strip():
        raise EngineMissing(f"no Docker engine answers ({tail(info.stderr, 300)}); start "
                            "dockerd --iptables=false --bridge=none")


def wait_for(probe: Callable[[], T | None], timeout: float, interval: float = 0.5,
             what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy, and return that; AssertionError at the
    deadline. Each pause is an interruptible wait, not a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        _PAUSE.wait(interval)


# --- containers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_args(env: dict[str, str]) -> list[str]:
    return [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]


@dataclass
class Container:
    """A container started with ``docker run --detach``; removed by ``remove()``."""

    id: str

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker("inspect", self.id).stdout)
        return data[0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def logs(self) -> str:
        completed = docker("logs", self.id, check=False)
        return completed.stdout + completed.stderr

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines."""
        events = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def wait_exit(self, timeout: float) -> int:
        def exited() -> dict[str, Any] | None:
            state = self.state()
            return state if state["Status"] == "exited" else None

        return int(wait_for(exited, timeout, what=f"container {self.id[:12]} to exit")["ExitCode"])

    def remove(self) -> None:
        docker("rm", "--force", self.id, check=False)


def run_detached(image: str, env: dict[str, str], *args: str) -> Container:
    completed = docker("run", "--detach", "--network", "host", *env_args(env), *args, image)
    return Container(completed.stdout.strip())


def started(containers: list[Container]) -> Iterator[Callable[..., Container]]:
    """A factory of detached containers, all removed at the end (for fixtures)."""

    def start(image: str, env: dict[str, str], *args: str) -> Container:
        container = run_detached(image, env, *args)
        containers.append(container)
        return container

    try:
        yield start
    finally:
        for container in containers:
            container.remove()


def tail(text: str, limit: int = 3000) -> str:
    text = text or ""
    return text if len(text) <= limit else "..." + text[-limit:]
