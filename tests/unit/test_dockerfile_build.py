"""How the image is built, checked by a static parse of the Dockerfile (no Docker engine).

CUDA torch installed before the locked dependencies, production defaults for every build
argument the image test changes, build inputs only bind-mounted, dependencies installed before
any code is copied, and a requirements.lock that agrees with pyproject.toml.
"""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from tests.support.dockerfile_kit import (
    DOCKERFILE,
    LOCK,
    Instruction,
    Stage,
    flag,
    lock_entries,
    runtime_requirements,
)


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
