"""Every way a LoRA can be wrong gets one clear job error naming it, and leaves the model as it
was: the next job without LoRA is the base image bit for bit, and a good LoRA still works.

The cases: an unknown name, a file that is not safetensors (a pickle under a .safetensors name),
a truncated file, a .ckpt, a safetensors file with no LoRA in it, a LoRA for another
architecture (other shapes; no layer in common; some layers in common), a rank above
``LORA_MAX_RANK``, more LoRAs than ``LORA_MAX_PER_JOB``, and paths that would leave ``LORA_DIR``
(``..``, an absolute path, a symlink out).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.lora_sources import LoraLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import InvalidInput
from tests.support.sd_jobs import StepContext
from tests.support.sd_lora_kit import SMALL, lora_folder, lora_model, run_pixels, same

pytest.importorskip("peft")

JOB: dict[str, Any] = {"prompt": "a red barn", "seed": 8, **SMALL}


def refusal(model: StableDiffusionModel, job_input: dict[str, Any]) -> str:
    with pytest.raises(InvalidInput) as caught:
        model.run({**JOB, **job_input}, StepContext())
    return str(caught.value)


@pytest.fixture
def folder(tmp_path: Path, tiny_lora: Callable[..., Path]) -> Path:
    import torch
    from safetensors.torch import save_file

    loras = lora_folder(tmp_path / "loras", {
        "good": tiny_lora("sd"),
        "for-sdxl": tiny_lora("sdxl"),
        "for-flux": tiny_lora("flux"),
        "rank-8": tiny_lora("sd", rank=8),
    })
    torch.save({"unet.x.lora_A.weight": torch.zeros(4, 4)}, loras / "pickled.safetensors")
    good = (loras / "good.safetensors").read_bytes()
    (loras / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (loras / "old.ckpt").write_bytes(b"not read")
    save_file({"conv.weight": torch.zeros(2, 2)}, str(loras / "checkpoint.safetensors"))
    return loras


def test_each_bad_lora_fails_its_job_naming_it_and_the_model_is_left_as_it_was(
    tiny_sd_path: Path, folder: Path, tmp_path: Path,
) -> None:
    model = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "cache",
                       lora_limits=LoraLimits(max_rank=4, max_per_job=2))
    base = run_pixels(model, JOB)
    good = run_pixels(model, {"lora": "good", **JOB})
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "unknown": ({"loras": [{"name": "nope"}]},
                    "invalid input: loras[0] 'nope': no such LoRA in LORA_DIR"),
        "pickle": ({"lora": "pickled"}, "invalid input: lora 'pickled': not a readable "
                   "safetensors file (LoRAs are read from .safetensors only, never from pickles)"),
        "truncated": ({"lora": "truncated"}, "lora 'truncated': not a readable safetensors"),
        "ckpt": ({"lora": "old.ckpt"}, "lora 'old.ckpt': only .safetensors files are read "
                 "(never pickles: .ckpt, .pt, .bin)"),
        "no lora": ({"lora": "checkpoint"}, "lora 'checkpoint': holds no LoRA weights"),
        "other shapes": ({"lora": "for-sdxl"}, "invalid input: lora 'for-sdxl': does not fit "
                         "this Stable Diffusion 1.x/2.x model (a LoRA for another "
                         "architecture?): RuntimeError: size mismatch for "),
        "no layer": ({"loras": [{"name": "good"}, {"name": "for-flux"}]},
                     "invalid input: loras[1] 'for-flux': does not fit this Stable Diffusion "
                     "1.x/2.x model (none of its layers is in this model"),
        "rank": ({"lora": "rank-8"}, "invalid input: lora 'rank-8': rank 8 is above the "
                 "highest this worker takes (4, LORA_MAX_RANK)"),
        "too many": ({"loras": [{"name": "good"}, {"name": "nope"}, {"name": "rank-8"}]},
                     "invalid input: loras: at most 2 LoRAs per job (LORA_MAX_PER_JOB; got 3)"),
        "two bad": ({"loras": [{"name": "nope"}, {"name": "rank-8", "scale": 0.5}]},
                    "invalid input: loras[0] 'nope': no such LoRA in LORA_DIR; loras[1] "
                    "'rank-8': rank 8 is above"),
    }
    for case, (job_input, message) in cases.items():
        got = refusal(model, job_input)
        assert got.startswith(message) or message in got, (case, got)
        assert "\n" not in got
        assert same(run_pixels(model, JOB), base), case
        assert same(run_pixels(model, {"lora": "good", **JOB}), good), case
    assert model.adapters is not None and model.adapters.loads == 1  # good only, kept loaded


def test_a_lora_sharing_only_some_layers_with_the_model_is_refused(
    tiny_family_path: Callable[[str], Path], tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    # The tiny Flux and SD3 transformers share the names of their first blocks, not the rest.
    folder = lora_folder(tmp_path / "loras", {"flux-style": tiny_lora("flux")})
    model = lora_model(tiny_family_path("sd3"), folder, cache_dir=tmp_path / "cache")
    base = run_pixels(model, JOB)

    message = refusal(model, {"lora": "flux-style"})

    assert message == ("invalid input: lora 'flux-style': does not fit this Stable Diffusion 3 "
                       "model (some of its layers are not in this model: a LoRA for another "
                       "architecture?)")
    assert model.device_queue.call(model.pipeline.get_list_adapters) in ({}, {"transformer": []})
    assert same(run_pixels(model, JOB), base)


def test_paths_that_would_leave_the_lora_folder_are_refused(
    tiny_sd_path: Path, folder: Path, tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes((folder / "good.safetensors").read_bytes())
    os.symlink(outside / "secret.safetensors", folder / "link.safetensors")
    os.symlink(outside, folder / "linked-dir")
    model = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "cache")

    refusals = {
        "../outside/secret.safetensors": "must stay inside LORA_DIR (a relative path without "
                                         "'..'",
        "styles/../../outside/secret.safetensors": "must stay inside LORA_DIR",
        str(outside / "secret.safetensors"): "must stay inside LORA_DIR",
        "link.safetensors": "leads outside LORA_DIR (a symlink out?): refused",
        "linked-dir/secret.safetensors": "leads outside LORA_DIR (a symlink out?): refused",
    }
    for path, message in refusals.items():
        assert message in refusal(model, {"loras": [{"path": path}]}), path
    assert "a file name in LORA_DIR, no folder" in refusal(model, {"loras": [{"name": "../x"}]})
    assert re.search(r"loras\[0\]\.name: .*backslash", refusal(
        model, {"loras": [{"name": "..\\outside"}]}))
    assert model.adapters is not None and model.adapters.loads == 0
