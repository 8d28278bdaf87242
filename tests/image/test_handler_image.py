"""A RunPod handler's image, built from the README's Dockerfile on the ``worker`` target, run for
real: ``make test-image``.

The worker target is built from the production Dockerfile with the image test's build
arguments (a debootstrap base, CPU torch); the handler image is the README's handler Dockerfile
("Already have a RunPod handler?") with a test handler (``tests/handlers/progress_refresh.py``)
and a ``requirements.txt`` of ``runpod==1.12.0``, installed from PyPI at build time (the CA
bundle mounted for pip, as the production build does). Then, on the real container: a local run
with ``--test_input`` and no network prints the result and exits 0; as a worker against
``python -m app fake-api`` it answers jobs, and a job that asks for ``refresh_worker`` is
delivered before the container exits 7 (renewed); the worker image holds no weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.image import docker_kit, image_build
from tests.image.docker_kit import Container, docker
from tests.image.fake_api_process import FakeApi
from tests.unit.test_dockerfile_worker import readme_dockerfile

pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

WORKER_IMAGE = "podworker:image-test-worker"
HANDLER_IMAGE = "podworker:image-test-handler"
HANDLER = docker_kit.REPO / "tests" / "handlers" / "progress_refresh.py"
PIP_WITH_CA = ("RUN --mount=type=secret,id=ca_certs "
               "if [ -s /run/secrets/ca_certs ]; then export PIP_CERT=/run/secrets/ca_certs; fi "
               "&& pip install")


@pytest.fixture(scope="session")
def worker_image(build_context: Path) -> str:
    image_build.build_image(build_context, WORKER_IMAGE, target="worker")
    return WORKER_IMAGE


@pytest.fixture(scope="session")
def handler_image(worker_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("handler-context")
    dockerfile = readme_dockerfile()
    assert "RUN pip install" in dockerfile
    (context / "Dockerfile").write_text(dockerfile.replace("RUN pip install", PIP_WITH_CA))
    shutil.copy(HANDLER, context / "handler.py")
    (context / "requirements.txt").write_text("runpod==1.12.0\n")
    args = ["build", "--progress=plain", "--network", "host", "--tag", HANDLER_IMAGE,
            "--build-arg", f"WORKER_IMAGE={worker_image}"]
    if image_build.CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca_certs,src={image_build.CA_BUNDLE}"]
    docker(*args, str(context), timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return HANDLER_IMAGE


def test_the_worker_image_holds_no_weights_and_runs_the_echo_model(worker_image: str) -> None:
    probe = "import os; print(os.path.exists('/models'), os.environ['MODEL'])"
    shown = docker("run", "--rm", "--network", "none", "--entrypoint", "python", worker_image,
                   "-c", probe, timeout=120).stdout.split()
    assert shown == ["False", "echo"]


def test_the_handler_runs_as_uid_1000_in_a_folder_it_may_write_in(handler_image: str) -> None:
    probe = ("import os; open('written-by-the-handler', 'w').write('x'); "
             "print(os.getuid(), os.getcwd())")  # rp_download writes in the working folder
    shown = docker("run", "--rm", "--network", "none", "--entrypoint", "python", handler_image,
                   "-c", probe, timeout=120).stdout.split()
    assert shown == ["1000", "/handler"]


def test_a_handler_image_runs_a_local_test_input_and_prints_the_result(handler_image: str) -> None:
    job = json.dumps({"input": {"workflow": "portrait"}})
    done = docker("run", "--rm", "--network", "none", handler_image, "handler", "handler.py",
                  "--test_input", job, timeout=300)
    printed = json.loads(done.stdout[done.stdout.index("{"):])
    assert printed == {"id": "local_test",
                       "output": {"status": "success", "workflow": "portrait"}}


def test_a_handler_image_answers_jobs_and_leaves_after_a_refresh_worker_job_is_delivered(
    handler_image: str, fake_api: FakeApi, start: Callable[..., Container],
) -> None:
    env = {**fake_api.worker_env, "RUNPOD_POD_ID": "handler-image-pod",
           "HEALTH_PORT": str(docker_kit.free_port()), "HEALTH_HOST": "127.0.0.1",
           "TERMINATE_IDLE_TIME": "0"}
    container = start(handler_image, env)
    first = fake_api.wait_final(fake_api.submit({"workflow": "portrait"}), timeout=300)
    assert first["status"] == "COMPLETED", container.logs()
    assert first["output"] == {"status": "success", "workflow": "portrait"}
    broken = fake_api.submit({"workflow": "broken"})
    assert fake_api.wait_final(broken, timeout=60)["error"] == (
        '{"node": "KSampler", "message": "Value not in list"}')
    last = fake_api.submit({"workflow": "upscale", "refresh": True})
    assert fake_api.wait_final(last, timeout=60)["status"] == "COMPLETED"
    assert container.wait_exit(timeout=60) == 7, container.logs()  # renewed
    assert any(e.get("event") == "handler_registered" for e in container.events())
