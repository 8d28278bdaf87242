"""``python -m app bake-weights`` for real, on a local folder: the tiny pipeline as the source.

The image build runs this same command (see the Dockerfile's ``weights`` stage), so these tests
are its stand-in where no Docker engine is: the bake runs in a subprocess through the CLI, its
output loads through the worker's production model and makes a PNG, and its refusals and
failures are one line and leave nothing behind. One test rebuilds the ``weights`` stage's file
tree from the Dockerfile's COPY lines and bakes from it alone, so a module the bake needs but
the stage leaves out fails here, not in the image build.

Nothing here reaches the network: sources are local folders, and the one hub id is tried with
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import baking as bake_module
from adapters.stable_diffusion.baking import RECORD_NAME, WEIGHT_SUFFIXES
from adapters.stable_diffusion.model import StableDiffusionModel
from app.cli import main

pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[2]
PREFIX = "podworker bake-weights:"


@dataclass(frozen=True)
class Baked:
    dest: Path
    returncode: int
    stdout: str
    stderr: str


class RecordingContext:
    """A job context that records progress; never cancels."""

    def __init__(self) -> None:
        self.updates: list[Any] = []

    @property
    def job_id(self) -> str:
        return "job-bake"

    def check_cancelled(self) -> None:
        return None

    def progress(self, update: Any) -> None:
        self.updates.append(update)


def offline_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"HF_TOKEN", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf-home"))
    return env


def bake_cli(*args: str, tmp: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "bake-weights", *args],
        cwd=cwd, env=offline_env(tmp), capture_output=True, text=True, timeout=110, check=False,
    )


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(PREFIX)]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def baked(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Baked:
    """The tiny pipeline baked once, through the CLI in a subprocess, as the image build does."""
    tmp = tmp_path_factory.mktemp("bake")
    dest = tmp / "models" / "sd"
    completed = bake_cli("--model", str(tiny_sd_path), "--dest", str(dest), tmp=tmp)
    return Baked(dest, completed.returncode, completed.stdout, completed.stderr)


def test_the_cli_bakes_a_local_pipeline_and_lists_what_it_wrote(baked: Baked) -> None:
    assert baked.returncode == 0, baked.stderr
    assert "Traceback" not in baked.stderr
    files = sorted(p.relative_to(baked.dest).as_posix() for p in baked.dest.rglob("*")
                   if p.is_file())
    for name in files:
        assert re.search(rf"^  {re.escape(name)}\s+\d", baked.stdout, re.M), name
    last = baked.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{PREFIX} {len(files)} files, ")
    assert "verified" in last


def test_the_baked_folder_runs_a_job_through_the_production_model(baked: Baked) -> None:
    model = StableDiffusionModel(str(baked.dest), device="cpu")
    model.load()
    ctx = RecordingContext()

    output = model.run(
        {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3,
         "seed": 7},
        ctx,
    )

    image = PIL_Image.open(io.BytesIO(output[0]["image"].data))
    assert (image.format, image.size) == ("PNG", (64, 64))
    assert ctx.updates == [{"step": s, "of": 3} for s in (1, 2, 3)]


def test_the_weights_are_safetensors_under_the_names_the_worker_loads(
    baked: Baked, tiny_sd_path: Path
) -> None:
    weights = sorted(
        p.relative_to(baked.dest).as_posix()
        for p in baked.dest.rglob("*") if p.suffix in WEIGHT_SUFFIXES
    )

    assert weights == [
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert (baked.dest / "model_index.json").is_file()
    record = json.loads((baked.dest / RECORD_NAME).read_text())
    assert record == {"model": str(tiny_sd_path.resolve()), "revision": None,
                      "variant": None, "dtype": "float16"}


def test_the_baked_files_are_readable_by_any_user(baked: Baked) -> None:
    for path in [baked.dest, *baked.dest.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = 0o555 if path.is_dir() else 0o444
        assert mode & wanted == wanted, f"{path}: {oct(mode)}"


def test_the_bake_leaves_nothing_beside_its_destination(baked: Baked) -> None:
    assert [p.name for p in baked.dest.parent.iterdir()] == ["sd"]


def test_baking_the_same_model_again_downloads_nothing_and_changes_nothing(
    baked: Baked, tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(baked.dest)

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(bake_module, "save_pipeline", no_download)

    code = main(["bake-weights", "--model", str(tiny_sd_path), "--dest", str(baked.dest)])

    assert code == 0
    assert "already baked (nothing downloaded)" in capsys.readouterr().out
    assert snapshot(baked.dest) == before


def test_a_destination_holding_another_bake_is_refused_and_left_alone(
    baked: Baked, tiny_sd_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "sd"
    shutil.copytree(baked.dest, dest)
    before = snapshot(dest)

    code = main(["bake-weights", "--model", str(tiny_sd_path), "--dest", str(dest),
                 "--dtype", "float32"])

    assert code == 1
    [line] = our_lines(capsys.readouterr().err)
    assert "already holds another bake: dtype 'float16' (not 'float32')" in line
    assert snapshot(dest) == before


def test_a_non_empty_destination_without_a_bake_is_refused_and_left_alone(
    tiny_sd_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "sd"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")

    code = main(["bake-weights", "--model", str(tiny_sd_path), "--dest", str(dest)])

    assert code == 1
    [line] = our_lines(capsys.readouterr().err)
    assert "is not empty and holds no podworker bake" in line
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_a_missing_source_folder_fails_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-pipeline"
    dest = tmp_path / "models" / "sd"

    completed = bake_cli("--model", str(missing), "--dest", str(dest), tmp=tmp_path)

    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        f"{PREFIX} model folder '{missing}' not found (and it is not a hub id)"
    ]
    assert not (tmp_path / "models").exists()


def test_a_folder_that_is_not_a_pipeline_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"not a pipeline")

    code = main(["bake-weights", "--model", str(tmp_path), "--dest", str(tmp_path / "sd")])

    assert code == 1
    assert our_lines(capsys.readouterr().err) == [
        f"{PREFIX} model folder '{tmp_path}' is not a diffusers pipeline (no model_index.json)"
    ]
    assert not (tmp_path / "sd").exists()


def test_a_hub_model_with_no_network_fails_with_one_line_saying_why(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "sd"

    completed = bake_cli("--model", "nobody/no-such-model", "--dest", str(dest), tmp=tmp_path)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    [line] = our_lines(completed.stderr)
    assert completed.stderr.strip().splitlines()[-1] == line
    assert line.startswith(f"{PREFIX} could not download 'nobody/no-such-model': downloads are off")
    assert "HF_HUB_OFFLINE" in line
    assert list((tmp_path / "models").iterdir()) == []


def test_a_bake_that_does_not_load_fails_the_build_and_leaves_nothing_at_the_destination(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def save_a_broken_pipeline(request: Any, source: str, target: Path, **kwargs: Any) -> None:
        shutil.copytree(source, target)
        (target / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")

    monkeypatch.setattr(bake_module, "save_pipeline", save_a_broken_pipeline)
    dest = tmp_path / "models" / "sd"

    code = main(["bake-weights", "--model", str(tiny_sd_path), "--dest", str(dest)])

    assert code == 1
    [line] = our_lines(capsys.readouterr().err)
    assert line.startswith(f"{PREFIX} the baked pipeline does not work: could not load")
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("given_as", ["token file", "HF_TOKEN"])
def test_the_hub_token_is_passed_to_the_download_and_never_shown(
    given_as: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from diffusers import StableDiffusionPipeline

    token = "hf_SecretTokenValue123"
    token_file = tmp_path / "hf_token"
    if given_as == "token file":
        token_file.write_text(token + "\n")
        monkeypatch.setenv("HF_TOKEN", "hf_ignored_when_the_file_has_one")
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    received: dict[str, Any] = {}

    def refuse(source: str, **kwargs: Any) -> None:
        received.update(kwargs, source=source)
        raise OSError(f"401 Client Error: Unauthorized (token {token} is not allowed)")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)

    code = main(["bake-weights", "--model", "owner/gated-model", "--dest",
                 str(tmp_path / "sd"), "--revision", "abc123", "--variant", "fp16",
                 "--token-file", str(token_file)])

    assert code == 1
    assert received["source"] == "owner/gated-model"
    assert received["token"] == token
    assert (received["revision"], received["variant"]) == ("abc123", "fp16")
    assert received["local_files_only"] is False
    assert received["safety_checker"] is None
    out, err = capsys.readouterr()
    assert token not in out + err
    [line] = our_lines(err)
    assert "gated or private" in line and "***" in line


# --- the Dockerfile's weights stage -----------------------------------------------------------


def weights_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, target) of each COPY in the Dockerfile's ``weights`` stage."""
    copies: list[tuple[list[str], str]] = []
    in_stage = False
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            in_stage = line.split()[-1] == "weights"
        elif in_stage and line.startswith("COPY "):
            words = line.split()[1:]
            assert not any(w.startswith("--") for w in words), line
            copies.append((words[:-1], words[-1]))
    assert copies, "the Dockerfile has no COPY in a stage named weights"
    return copies


def build_weights_stage_tree(root: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, target in weights_stage_copies():
        for source in sources:
            src = REPO / source
            dst = root / target
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=ignore)
            else:
                if target.endswith("/") or len(sources) > 1:
                    dst = dst / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


_RUN_AND_REPORT_MODULES = """
import json, os, runpy, sys
sys.argv = ["app", "bake-weights", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("app", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
root = os.path.realpath(os.getcwd())
outside = sorted(
    name for name, module in list(sys.modules.items())
    if name.split(".")[0] in {"app", "adapters", "domain"}
    and not os.path.realpath(getattr(module, "__file__", None) or root).startswith(root)
)
print(json.dumps({"code": code, "outside": outside}))
"""


def test_the_dockerfile_weights_stage_copies_every_module_the_bake_imports(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "build"
    build_weights_stage_tree(tree)
    dest = tmp_path / "models" / "sd"

    completed = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT_MODULES,
         "--model", str(tiny_sd_path), "--dest", str(dest)],
        cwd=tree, env=offline_env(tmp_path), capture_output=True, text=True, timeout=110,
        check=False,
    )

    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["outside"] == [], "modules the weights stage does not COPY"
    assert report["code"] == 0, completed.stderr
    assert (dest / "model_index.json").is_file()
