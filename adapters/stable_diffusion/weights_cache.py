"""A hub id's weights found in Hugging Face caches, offline: the platform's model cache, a
network volume, ``HF_HOME``.

A Hugging Face hub cache holds each model as ``models--<owner>--<name>/`` with the files of
each revision under ``snapshots/<commit>/`` and, when ``huggingface_hub`` downloaded it,
``refs/main`` naming the commit. RunPod's cached models use the same layout under
``/runpod-volume/huggingface-cache/hub`` (its documentation shows no ``refs`` there: a snapshot
folder per version). :func:`find_in_caches` looks in each cache in order and answers the
snapshot folder ``from_pretrained`` can read as a plain folder:

- the snapshot ``refs/main`` names, when it holds a ``model_index.json``;
- else the most recently written snapshot that holds one (several are logged by the caller);
- nothing when no cache has one (the caller's load then says what is wrong, or downloads when
  that is allowed).

Nothing here touches the network or reads the environment: the caches are handed in (the
composition root adds ``huggingface_hub``'s own, which follows ``HF_HOME``/``HF_HUB_CACHE``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FoundWeights:
    """Where a hub id's weights are: the cache, the snapshot folder to load, its commit, and
    how many snapshots with a pipeline that repository holds."""

    hub_id: str
    cache: Path
    snapshot: Path
    revision: str
    snapshots: int = 1


def repo_folder(cache: Path, hub_id: str) -> Path:
    """``<cache>/models--<owner>--<name>``, the folder a hub cache keeps ``hub_id`` in."""
    return cache / ("models--" + hub_id.replace("/", "--"))


def find_in_caches(hub_id: str, caches: Sequence[Path]) -> FoundWeights | None:
    """The first cache in ``caches`` holding a pipeline for ``hub_id`` (see the module
    docstring), or None."""
    for cache in caches:
        found = _find_in(hub_id, cache)
        if found is not None:
            return found
    return None


def missing_parts(snapshot: Path) -> list[str]:
    """The parts ``model_index.json`` names whose folder the snapshot lacks (a download cut
    short), in its order; empty when the index cannot be read."""
    try:
        index = json.loads((snapshot / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(index, dict):
        return []
    return [name for name, value in index.items()
            if not name.startswith("_") and isinstance(value, list) and value[:1] != [None]
            and not (snapshot / name).is_dir()]


def _find_in(hub_id: str, cache: Path) -> FoundWeights | None:
    repo = repo_folder(cache, hub_id)
    snapshots = repo / "snapshots"
    try:
        candidates = [folder for folder in snapshots.iterdir()
                      if (folder / "model_index.json").is_file()]
    except OSError:
        return None
    if not candidates:
        return None
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    chosen = next((folder for folder in candidates if folder.name == main), None)
    if chosen is None:
        chosen = max(candidates, key=lambda folder: folder.stat().st_mtime)
    return FoundWeights(hub_id, cache, chosen, chosen.name, len(candidates))
