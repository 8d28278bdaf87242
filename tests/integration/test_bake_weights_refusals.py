"""``python -m app bake-weights``'s refusals and failures: one line each, nothing left behind.

A destination that is not empty and holds no bake, a missing source folder, a folder that is not
a pipeline, a hub id with no network, a bake that does not load, and a hub token that is passed
to the download and never shown. Nothing here reaches the network: the hub id is tried with
``HF_HUB_OFFLINE=1``, the hub download is replaced. The bakes that succeed are in
test_bake_weights.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import baking as bake_module
from app.cli import main
from tests.support.bake_kit import PREFIX, bake_cli, our_lines

pytest.importorskip("torch")
pytest.importorskip("PIL.Image")


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
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


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
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("given_as", ["token file", "HF_TOKEN"])
def test_the_hub_token_is_passed_to_the_download_and_never_shown(
    given_as: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from diffusers import DiffusionPipeline

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

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)

    code = main(["bake-weights", "--model", "owner/gated-model", "--dest",
                 str(tmp_path / "sd"), "--revision", "abc123", "--variant", "fp16",
                 "--dtype", "float16", "--token-file", str(token_file)])

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
