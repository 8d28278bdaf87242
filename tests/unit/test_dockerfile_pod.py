"""The Dockerfile's promises the pod depends on, checked by a static parse (no Docker engine).

Exec-form ENTRYPOINT and CMD (so SIGTERM reaches the worker), a user that is not root, weights
baked by the project's own script from the MODEL_ID build argument and found at MODEL_PATH,
nothing downloaded at run time, valid production settings, and a health check that works.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.settings import Settings, load_settings
from tests.support.dockerfile_kit import Instruction, Stage, ancestry, flag, option

ROOT_USERS = {"root", "0"}

# Variables the image sets for something other than podworker's settings.
NOT_SETTINGS = {
    "PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK", "VIRTUAL_ENV",
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES", "PYTORCH_CUDA_ALLOC_CONF",
}


def test_entrypoint_and_cmd_are_exec_form_so_sigterm_reaches_the_worker(final: Stage) -> None:
    entrypoint = json.loads(final.of("ENTRYPOINT")[-1].args)
    cmd = json.loads(final.of("CMD")[-1].args)

    assert all(isinstance(word, str) for word in [*entrypoint, *cmd])
    assert entrypoint[-3:] == ["python", "-m", "app"]
    assert cmd == ["run"]
    if entrypoint[0] == "tini":  # an init that forwards signals, installed in this stage
        assert entrypoint[:2] == ["tini", "--"]
        assert any("install" in r.args and " tini" in r.args for r in final.of("RUN"))
    else:
        assert entrypoint == ["python", "-m", "app"]


def test_the_worker_runs_as_a_user_that_is_not_root_and_owns_the_state_dir(
    final: Stage,
) -> None:
    entrypoint_line = final.of("ENTRYPOINT")[-1].line
    users = [u for u in final.of("USER") if u.line < entrypoint_line]
    assert users, "the final stage sets no USER before its ENTRYPOINT"
    user, _, group = users[-1].args.partition(":")
    assert user not in ROOT_USERS
    assert group not in ROOT_USERS

    state_dir = final.env()["STATE_DIR"]
    setup = " ".join(r.args for r in final.of("RUN"))
    created = re.search(rf"useradd\b[^&;]*--uid {user}\b[^&;]* (\w+)\s*(&&|;|$)", setup)
    name = created.group(1) if created else user
    assert created or not user.isdigit(), f"no useradd creates uid {user}"
    owned = rf"(install -d -o {name}\b|chown[^&;]* {name}\b)[^&;]* {state_dir}\b"
    assert re.search(owned, setup), f"{state_dir} (STATE_DIR) must be made writable by {name}"


def test_weights_are_baked_by_the_project_script_from_the_model_id_argument(
    instructions: list[Instruction], bake: tuple[Stage, Instruction]
) -> None:
    stage, run = bake

    assert re.search(r"--model\s+\"?\$\{?MODEL_ID\}?\"?(\s|$)", run.args), run.args
    assert re.search(r"--revision\s+\"?\$\{?MODEL_REVISION\}?\"?(\s|$)", run.args), run.args
    assert option(run.args, "--dest").startswith("/")
    # A global ARG reaches a stage only when the stage declares it again.
    defaults = {i.args.split("=", 1)[0]: i.args for i in instructions if i.stage == -1}
    for name in ("MODEL_ID", "MODEL_REVISION"):
        assert "=" in defaults.get(name, ""), f"ARG {name} needs a default before the first FROM"
        assert name in stage.args(), f"stage {stage.name} must declare ARG {name} to use it"
    secrets = [f for f in run.flags if "type=secret" in f]
    assert any("id=hf_token" in f for f in secrets), "the hub token comes as a build secret"


def test_model_path_is_the_bake_destination_and_reaches_the_final_image(
    final: Stage, bake: tuple[Stage, Instruction]
) -> None:
    stage, run = bake
    dest = option(run.args, "--dest")

    assert final.env()["MODEL_PATH"] == dest
    if stage is not final:
        copies = [c for c in final.of("COPY") if flag(c, "from") == stage.name]
        assert any(
            (dest + "/").startswith(src.rstrip("/") + "/") and src == target
            for c in copies
            for src, target in [c.args.split()]
        ), f"the final stage must COPY --from={stage.name} the baked {dest}"


def test_nothing_is_downloaded_at_run_time_but_the_bake_may_download(
    all_stages: list[Stage], final: Stage, bake: tuple[Stage, Instruction]
) -> None:
    env = final.env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert env.get("MODEL_ALLOW_DOWNLOAD", "false") == "false"

    stage, run = bake
    before_bake = [
        i for s in ancestry(all_stages, stage) for i in s.of("ENV")
        if s is not stage or i.line < run.line
    ]
    assert not any("HF_HUB_OFFLINE" in i.args for i in before_bake), (
        "HF_HUB_OFFLINE set before the bake would stop it from downloading"
    )


def test_the_image_sets_the_production_settings_and_they_are_valid(
    final: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = final.env()
    assert env["MODEL"] == "stable_diffusion"
    assert env["STATE_DIR"] == "/var/lib/podworker"
    assert env["LOG_FORMAT"] == "json"
    assert env["HEALTH_PORT"] == "8080"

    settings_names = set(Settings.model_fields)
    unknown = set(env) - settings_names - NOT_SETTINGS
    assert not unknown, f"ENV names that are not podworker settings (typos?): {sorted(unknown)}"
    for name in settings_names:
        monkeypatch.delenv(name, raising=False)
    for name in set(env) & settings_names:
        monkeypatch.setenv(name, env[name])
    settings = load_settings(env_file=None)
    assert str(settings.STATE_DIR) == env["STATE_DIR"]
    assert settings.HEALTH_PORT == 8080


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_the_health_check_passes_only_while_the_health_port_answers_200(
    final: Stage, health_server: tuple[ThreadingHTTPServer, type[_Health]]
) -> None:
    check = final.of("HEALTHCHECK")[-1]
    assert check.args.startswith("CMD [")
    argv = json.loads(check.args.removeprefix("CMD"))
    assert argv[0] == "python" and "127.0.0.1" in argv[-1] and "/health" in argv[-1]
    assert any("8080" in e.args for e in final.of("EXPOSE"))
    server, handler = health_server

    def probe(port: int) -> int:
        env = {"HEALTH_PORT": str(port), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
        ).returncode

    port = server.server_address[1]
    assert probe(port) == 0
    handler.status = 503  # starting or draining
    assert probe(port) == 1
    server.shutdown()
    server.server_close()
    assert probe(port) == 1  # nothing listening
