"""The LoRA settings as the composition root wires them: LORA_DIR and LORA_URL_FETCH decide what
jobs may name, LORA_CACHE_MAX must hold one job's LoRAs, fetched LoRAs are kept under
STATE_DIR."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.sd_wiring import lora_library
from app.settings import load_settings
from domain.errors import ConfigurationError


def settings(tmp_path: Path, **values: Any) -> Any:
    return load_settings(env_file=None, STATE_DIR=tmp_path / "state", **values)


def test_without_a_lora_folder_or_url_fetching_jobs_get_no_lora(tmp_path: Path) -> None:
    assert lora_library(settings(tmp_path)) is None


def test_a_lora_folder_lets_jobs_name_files_in_it_and_urls_only_when_fetching_is_on(
    tmp_path: Path,
) -> None:
    folder = lora_library(settings(tmp_path, LORA_DIR=tmp_path / "loras", LORA_MAX_PER_JOB=2,
                                   LORA_CACHE_MAX=3, LORA_MAX_RANK=64))
    fetching = lora_library(settings(tmp_path, LORA_URL_FETCH=True, LORA_URL_TIMEOUT=5000,
                                     LORA_MAX_BYTES=1000))

    assert folder is not None and fetching is not None
    assert (folder.policy.folder, folder.policy.urls, folder.policy.max_per_job) == (True, False,
                                                                                    2)
    assert (folder.limits.cache_max, folder.limits.max_rank) == (3, 64)
    assert (fetching.policy.folder, fetching.policy.urls) == (False, True)
    assert fetching.fetcher is not None
    assert (fetching.fetcher.policy.deadline_s, fetching.fetcher.policy.max_bytes) == (5.0, 1000)
    assert fetching.cache_dir == tmp_path / "state" / "lora-cache"


def test_a_lora_cache_smaller_than_one_jobs_loras_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(
            "LORA_CACHE_MAX (2) must be at least LORA_MAX_PER_JOB (4)")):
        lora_library(settings(tmp_path, LORA_DIR=tmp_path, LORA_CACHE_MAX=2))
