"""Finding a hub id's pipeline in Hugging Face caches laid out as huggingface_hub and RunPod's
model cache lay them out, without the network (adapters/stable_diffusion/weights_cache.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from adapters.stable_diffusion.weights_cache import find_in_caches, missing_parts, repo_folder

HUB_ID = "acme/tiny-sd"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def snapshot(cache: Path, commit: str, *, parts: tuple[str, ...] = ("unet", "vae"),
             mtime: float | None = None) -> Path:
    folder = repo_folder(cache, HUB_ID) / "snapshots" / commit
    folder.mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "X"],
             "vae": ["diffusers", "Y"], "safety_checker": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    for part in parts:
        (folder / part).mkdir()
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def test_a_runpod_cache_without_refs_gives_its_snapshot(tmp_path: Path) -> None:
    cache = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    folder = snapshot(cache, COMMIT_A)

    found = find_in_caches(HUB_ID, [tmp_path / "absent", cache])

    assert found is not None
    assert (found.cache, found.snapshot, found.revision) == (cache, folder, COMMIT_A)
    assert repo_folder(cache, HUB_ID).name == "models--acme--tiny-sd"


def test_refs_main_names_the_snapshot_else_the_newest_one_is_taken(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    older = snapshot(cache, COMMIT_A, mtime=1_000_000)
    snapshot(cache, COMMIT_B, mtime=2_000_000)
    newest = find_in_caches(HUB_ID, [cache])
    assert newest is not None and newest.revision == COMMIT_B and newest.snapshots == 2

    (repo_folder(cache, HUB_ID) / "refs").mkdir()
    (repo_folder(cache, HUB_ID) / "refs" / "main").write_text(COMMIT_A + "\n")
    named = find_in_caches(HUB_ID, [cache])

    assert named is not None and named.snapshot == older


def test_the_first_cache_holding_a_pipeline_wins_and_a_cache_without_one_is_passed(
    tmp_path: Path,
) -> None:
    empty_repo = tmp_path / "one"
    (repo_folder(empty_repo, HUB_ID) / "snapshots" / COMMIT_A).mkdir(parents=True)  # no index
    second = tmp_path / "two"
    snapshot(second, COMMIT_B)
    third = tmp_path / "three"
    snapshot(third, COMMIT_A)

    found = find_in_caches(HUB_ID, [empty_repo, second, third])

    assert found is not None and found.cache == second
    assert find_in_caches("acme/other", [second, third]) is None
    assert find_in_caches(HUB_ID, []) is None


def test_a_snapshot_missing_a_part_its_index_names_is_told(tmp_path: Path) -> None:
    complete = snapshot(tmp_path / "a", COMMIT_A)
    cut_short = snapshot(tmp_path / "b", COMMIT_A, parts=("vae",))

    assert missing_parts(complete) == []  # safety_checker [null, null] needs no folder
    assert missing_parts(cut_short) == ["unet"]
