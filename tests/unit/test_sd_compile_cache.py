"""The compile cache folder: artifacts another image made, or a damaged file, are ignored with a
warning and never fail a start; the warm-up marker is read only for its own key."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from adapters.stable_diffusion.compile_cache import ArtifactCache, WarmupMarker, cache_key

torch = pytest.importorskip("torch")

KEY = {"torch": "2.11.0+cu130", "triton": "3.6.0", "diffusers": "0.42.1",
       "device": "NVIDIA H200 sm90", "mode": "default", "model": "/weights/sd15"}


def ignored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if getattr(r, "event", None) == "compile_cache_ignored"]


def write(cache: ArtifactCache, header: object, payload: bytes) -> None:
    cache.folder.mkdir(parents=True, exist_ok=True)
    cache.path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


def test_artifacts_made_for_another_torch_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ArtifactCache(tmp_path, KEY)
    other = {**KEY, "torch": "2.9.1+cu128"}
    write(cache, {"key": other, "sha256": "whatever"}, b"artifacts")

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        assert cache.load(torch) is False

    assert len(ignored(caplog)) == 1 and "2.9.1+cu128" in ignored(caplog)[0]


def test_a_corrupt_artifacts_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ArtifactCache(tmp_path, KEY)
    write(cache, {"key": KEY, "sha256": "0" * 64}, b"half a file")

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        assert cache.load(torch) is False

    assert len(ignored(caplog)) == 1 and "corrupt" in ignored(caplog)[0]


def test_a_file_torch_cannot_read_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib

    cache = ArtifactCache(tmp_path, KEY)
    payload = b"not torch's serialisation at all"
    write(cache, {"key": KEY, "sha256": hashlib.sha256(payload).hexdigest()}, payload)

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        assert cache.load(torch) is False

    assert len(ignored(caplog)) == 1 and "refused by torch" in ignored(caplog)[0]


@pytest.mark.parametrize("content", [b"", b"\xff\xfe not json\n", b"[1, 2]\npayload"])
def test_an_unreadable_header_is_ignored_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    cache = ArtifactCache(tmp_path, KEY)
    cache.path.write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        assert cache.load(torch) is False

    assert len(ignored(caplog)) == 1


def test_no_file_is_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        assert ArtifactCache(tmp_path / "none", KEY).load(torch) is False
    assert ignored(caplog) == []


def test_the_file_name_changes_with_anything_in_the_key(tmp_path: Path) -> None:
    names = {ArtifactCache(tmp_path, {**KEY, field: "other"}).path.name for field in KEY}
    assert len(names | {ArtifactCache(tmp_path, KEY).path.name}) == len(KEY) + 1


def test_the_key_names_torch_triton_and_the_device() -> None:
    key = cache_key(torch, "cpu", mode="default", model="/weights")
    assert key["torch"] == torch.__version__
    assert key["device"] == "cpu" and key["mode"] == "default" and key["model"] == "/weights"
    assert "triton" in key and "diffusers" in key


def test_a_warm_up_marker_counts_only_for_its_own_key(tmp_path: Path) -> None:
    WarmupMarker(tmp_path, KEY).begin()

    assert WarmupMarker(tmp_path, KEY).crashed_before() is not None
    assert WarmupMarker(tmp_path, {**KEY, "torch": "2.12.0"}).crashed_before() is None
    WarmupMarker(tmp_path, KEY).end()
    assert WarmupMarker(tmp_path, KEY).crashed_before() is None
