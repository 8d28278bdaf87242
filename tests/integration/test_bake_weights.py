"""``python -m app bake-weights`` for real, on a local folder: the tiny pipeline as the source.

The image build runs this same command (see the Dockerfile's ``weights`` stage), so these tests
are its stand-in where no Docker engine is: the bake runs in a subprocess through the CLI, its
output loads through the worker's production model and makes a PNG, and baking it again changes
nothing. Its refusals and failures (one line, nothing left behind) are in
test_bake_weights_refusals.py. One test rebuilds the ``weights`` stage's file tree from the
Dockerfile's COPY lines and bakes from it alone, so a module the bake needs but the stage leaves
out fails here, not in the image build.

Nothing here reaches the network: sources are local folders.
"""

from __future__ import annotations

import io
import json
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
from tests.support.bake_kit import PREFIX, REPO, bake_cli, offline_env, our_lines, snapshot

pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")


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
