"""The pod image, built from the Dockerfile and run for real: ``make test-image``.

The build is the production Dockerfile with three build arguments changed: a Debian base made
with debootstrap (``BASE_IMAGE``), torch's CPU wheel from a folder of the build context
(``TORCH_WHEEL_DIR``) and the tiny Stable Diffusion pipeline as the model (``MODEL_ID``), which
the build bakes through ``python -m app bake-weights`` as it would real weights. Everything
else (the locked dependencies, the user, tini, the health check, the environment) is what a
pod runs. The containers run on the CPU with ``MODEL_DEVICE=cpu``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.image import docker_kit, image_build
from tests.image.docker_kit import Container, docker
from tests.image.fake_api_process import FakeApi
from tests.image.image_build import Build

# The first test that needs the image waits for the build (minutes when nothing is cached).
pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

CPU = {"MODEL_DEVICE": "cpu"}
SMALL_JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3}
STOP_TIMEOUT_S = 60


def worker_env(api: FakeApi, health_port: int, **extra: str) -> dict[str, str]:
    return {
        **api.worker_env, **CPU,
        "RUNPOD_POD_ID": "image-test-pod",
        "HEALTH_PORT": str(health_port),
        "HEALTH_HOST": "127.0.0.1",  # host networking: keep the port on loopback
        "TERMINATE_IDLE_TIME": "0",
        **extra,
    }


def python_in(image: str, program: str, timeout: float = 120) -> str:
    """What ``program`` prints, run by the image's python as the image's user, with no network."""
    return docker("run", "--rm", "--network", "none", "--entrypoint", "python", image,
                  "-c", program, timeout=timeout).stdout


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except OSError:
        return 0, ""


def test_the_image_builds_from_the_lock_with_cpu_torch_and_prints_its_size(built: Build) -> None:
    size = image_build.image_size(built.tag)
    print(f"\npod image {built.tag}: {size / 1e6:.0f} MB, built in {built.seconds:.0f} s "
          f"({len(built.steps_run)} steps not cached)")

    versions = python_in(built.tag,
                         "import torch, diffusers; print(torch.__version__, diffusers.__version__)")
    torch_version, diffusers_version = versions.split()
    assert torch_version.startswith(image_build.TORCH_VERSION) and "+cpu" in torch_version
    lock = (docker_kit.REPO / "requirements.lock").read_text()
    assert f"diffusers=={diffusers_version} " in lock
    assert size < 4e9, "the CPU test image should stay well under 4 GB"


def test_the_worker_runs_as_uid_1000_with_a_writable_state_dir_and_code_it_cannot_change(
    image: str,
) -> None:
    probe = """
import json, os
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.remove(os.path.join(path, ".probe"))
        return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "state_dir": writable(os.environ["STATE_DIR"]),
    "not_writable": [p for p in ("/app", "/app/app", "/app/adapters", "/app/domain",
                                 "/models/sd", "/opt/venv/lib", "/usr") if writable(p)],
}))
"""
    found = json.loads(python_in(image, probe).strip().splitlines()[-1])

    assert (found["uid"], found["gid"]) == (1000, 1000)
    assert found["state_dir"] is True
    assert found["not_writable"] == [], f"writable by the worker: {found['not_writable']}"


def test_without_webhooks_the_container_runs_test_inputs_through_the_baked_weights_and_exits_0(
    image: str, start: Callable[..., Container], tmp_path: Path
) -> None:
    container = start(image, CPU)

    assert container.wait_exit(timeout=300) == 0, container.logs()
    docker("cp", f"{container.id}:/var/lib/podworker/outputs", str(tmp_path / "outputs"))
    pngs = sorted((tmp_path / "outputs").rglob("*.png"))
    wanted = json.loads((docker_kit.REPO / "test_inputs.json").read_text())["input"]
    assert len(pngs) == wanted["num_outputs"]
    for png in pngs:
        with Image.open(png) as picture:
            assert picture.format == "PNG"
            assert picture.size == (wanted["width"], wanted["height"])
    loaded = [e for e in container.events() if e.get("event") == "model_loaded"]
    assert loaded, container.logs()


def test_a_pod_without_a_gpu_exits_4_at_start_telling_one_job_why_and_taking_no_other(
    image: str, start: Callable[..., Container], fake_api: FakeApi
) -> None:
    env = worker_env(fake_api, docker_kit.free_port())
    del env["MODEL_DEVICE"]  # the image's own MODEL_DEVICE=cuda, on a machine with no GPU
    told = fake_api.submit(SMALL_JOB)
    waiting = fake_api.submit(SMALL_JOB)
    container = start(image, env)

    assert container.wait_exit(timeout=300) == 4, container.logs()
    status = fake_api.status(told)
    assert status["status"] == "FAILED"
    assert status["error"].startswith("the worker could not start: "), status
    assert "(phase " in status["error"]
    assert fake_api.status(waiting)["status"] == "IN_QUEUE"
    assert any(e.get("event") == "model_load_failed" for e in container.events())


def test_with_webhooks_it_takes_and_answers_jobs_reports_healthy_and_serves_metrics(
    image: str, start: Callable[..., Container], fake_api: FakeApi
) -> None:
    port = docker_kit.free_port()
    container = start(image, worker_env(fake_api, port))
    jobs = [fake_api.submit({**SMALL_JOB, "seed": seed}) for seed in (1, 2, 3)]

    for seed, job in zip((1, 2, 3), jobs, strict=True):
        status = fake_api.wait_final(job, timeout=300)
        assert status["status"] == "COMPLETED", (status, container.logs())
        [image_out] = status["output"]
        assert image_out["seed"] == seed
        assert image_out["image"].endswith(".png")

    health = docker_kit.wait_for(
        lambda: container.state().get("Health", {}).get("Status") == "healthy",
        timeout=150, interval=2, what="docker inspect to show the container healthy",
    )
    assert health

    # The fake shows a job COMPLETED as the result arrives; the worker counts it (and turns
    # ready) once the answer reaches it, so both are polled for, not read once.
    def settled() -> bool:
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
        return bool(re.search(r"^podworker_jobs_done_total 3\.0$", metrics, re.MULTILINE)
                    and 'podworker_state{state="ready"} 1.0' in metrics)

    docker_kit.wait_for(settled, timeout=60, interval=1,
                        what="/metrics to count the 3 jobs done and show the worker ready")
    code, _metrics = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    top = docker("top", container.id, "-o", "pid,uid,args").stdout.splitlines()
    worker_lines = [line for line in top if "-m app run" in line]
    assert worker_lines and all(line.split()[1] == "1000" for line in worker_lines), top
    assert fake_api.stats()["duplicates"] == 0

    docker("stop", "--time", str(STOP_TIMEOUT_S), container.id, timeout=STOP_TIMEOUT_S + 30)
    assert container.wait_exit(timeout=30) == 0


def test_docker_stop_during_a_job_delivers_that_job_takes_no_other_and_exits_0_in_time(
    image: str, start: Callable[..., Container], fake_api: FakeApi
) -> None:
    port = docker_kit.free_port()
    container = start(image, worker_env(fake_api, port))
    slow = fake_api.submit({**SMALL_JOB, "width": 256, "height": 256,
                            "num_inference_steps": 20, "seed": 7})
    docker_kit.wait_for(lambda: fake_api.status(slow)["status"] == "IN_PROGRESS",
                        timeout=300, what="the container to take the job")
    waiting = fake_api.submit({**SMALL_JOB, "seed": 8})

    began = time.monotonic()
    docker("stop", "--time", str(STOP_TIMEOUT_S), container.id, timeout=STOP_TIMEOUT_S + 30)
    took = time.monotonic() - began

    assert container.wait_exit(timeout=30) == 0, container.logs()
    assert took < STOP_TIMEOUT_S, f"docker stop took {took:.0f} s: SIGKILL, not a clean stop"
    delivered = fake_api.status(slow)
    assert delivered["status"] == "COMPLETED", (delivered, container.logs())
    assert delivered["output"][0]["seed"] == 7
    assert fake_api.status(waiting)["status"] == "IN_QUEUE"
    assert any(e.get("event") == "stop_requested" for e in container.events()), container.logs()


def test_torch_compile_works_in_the_image_as_the_worker_user(image: str) -> None:
    program = """
import os, torch
f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
x = torch.arange(8.0)
assert torch.allclose(f(x), torch.sin(x) * 2 + 1)
print(os.getuid(), os.environ["PYTORCH_CUDA_ALLOC_CONF"])
"""
    printed = python_in(image, program, timeout=600)

    assert printed.split() == ["1000", "expandable_segments:True"]


def test_a_build_with_an_hf_token_secret_leaves_no_trace_in_its_history_or_any_layer(
    built: Build, build_context: Path, tmp_path: Path
) -> None:
    token = "hf_" + secrets.token_hex(20)
    token_file = tmp_path / "hf_token"
    token_file.write_text(token)
    # A revision of its own makes this build bake again, with the secret mounted; the revision
    # lands in the bake's record file, which shows that the layer scan reads file contents.
    revision = "token-check-" + secrets.token_hex(6)

    build = image_build.build_image(build_context, image_build.TOKEN_IMAGE, revision=revision,
                                   secrets=[f"id=hf_token,src={token_file}"])
    try:
        assert build.ran("bake-weights"), "the bake step came from the cache: it saw no secret"
        history = docker("history", "--no-trunc", build.tag).stdout
        config = docker("inspect", build.tag).stdout
        found = image_build.image_contains(build.tag, [token.encode(), revision.encode()])
    finally:
        docker("rmi", build.tag, check=False)

    assert token not in build.log
    assert token not in history
    assert token not in config
    assert found[token.encode()] == []
    assert any("podworker-bake.json" in place for place in found[revision.encode()])
