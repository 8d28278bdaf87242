"""The Dockerfile's ``worker`` target (the base of a handler's or your own model's image) and
the README's handler Dockerfile built on it, checked by a static parse and hadolint.

The worker stage repeats the runtime stage's system packages, user, state folder, health check
and entry point line for line (so it keeps every promise ``test_dockerfile_pod.py`` checks on
the runtime, and BuildKit builds those lines once) and leaves out the weights. ``make
test-image`` builds both images for real (tests/image/test_handler_image.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from app.settings import load_settings
from tests.support.dockerfile_kit import REPO, Instruction, Stage, ancestry, parse, stages
from tests.unit.test_dockerfile import hadolint

MODEL_SETTINGS = {"MODEL", "MODEL_PATH", "MODEL_DEVICE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}


@pytest.fixture(scope="module")
def worker(all_stages: list[Stage]) -> Stage:
    found = [stage for stage in all_stages if stage.name == "worker"]
    assert len(found) == 1, "the Dockerfile has no `worker` stage (docker build --target worker)"
    return found[0]


def readme_dockerfile() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```dockerfile\n(# Dockerfile of a handler image.*?)```", readme, re.S)
    assert block is not None, "the README's handler Dockerfile is gone"
    return block.group(1)


def test_the_worker_target_has_no_weights_and_no_weight_settings(
    worker: Stage, all_stages: list[Stage],
) -> None:
    chain = ancestry(all_stages, worker)
    assert [stage.name for stage in chain] == ["base", "worker"]  # never the weights stage
    copies = [i for stage in chain for i in stage.of("COPY")]
    assert not [c for c in copies if "--from=weights" in c.flags or "/models" in c.args]
    env = worker.env()
    assert not MODEL_SETTINGS - {"MODEL"} & set(env)
    assert env["MODEL"] == "echo"


def test_the_worker_target_keeps_the_runtimes_user_packages_health_check_and_entry_point(
    worker: Stage, final: Stage,
) -> None:
    def lines(stage: Stage, keyword: str) -> list[str]:
        return [i.args for i in stage.of(keyword)]

    for keyword in ("USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "WORKDIR"):
        assert lines(worker, keyword) == lines(final, keyword), keyword
    installs = [r for r in lines(final, "RUN") if "apt-get install" in r]
    assert installs and installs == [r for r in lines(worker, "RUN") if "apt-get install" in r]
    code = [c.args for c in final.of("COPY") if "--from=weights" not in c.flags]
    assert [c.args for c in worker.of("COPY")] == [c for c in code if "test_inputs" not in c]
    runtime_env = {k: v for k, v in final.env().items() if k not in MODEL_SETTINGS}
    assert {k: v for k, v in worker.env().items() if k != "MODEL"} == runtime_env


def test_the_worker_targets_settings_are_valid(
    worker: Stage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.settings import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in worker.env().items():
        if name in Settings.model_fields:
            monkeypatch.setenv(name, value)
    settings = load_settings(env_file=None)
    assert settings.MODEL == "echo" and settings.HEALTH_PORT == 8080


def test_the_readmes_handler_dockerfile_builds_on_the_worker_target_and_runs_the_handler(
    tmp_path: Path,
) -> None:
    text = readme_dockerfile()
    parsed: list[Instruction] = parse(text)
    (only,) = stages(parsed)
    assert "docker build --target worker" in text
    assert only.parent == "${WORKER_IMAGE}"
    assert [a.args for a in parsed if a.keyword == "ARG"] == ["WORKER_IMAGE=podworker:worker"]
    assert json.loads(only.of("CMD")[-1].args) == ["handler", "handler.py"]
    assert only.of("USER")[-1].args == "1000:1000"  # back to the worker's user after pip
    assert any("pip install" in r.args and "requirements.txt" in r.args for r in only.of("RUN"))

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    completed = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings = json.loads(completed.stdout or "[]")
    assert findings == [], [f"line {f['line']}: {f['code']} {f['message']}" for f in findings]
