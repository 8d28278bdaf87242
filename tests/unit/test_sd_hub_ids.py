"""A MODEL_PATH that is a hub id not in the local cache: one line saying what to do (never the
"set SD_PIPELINE" lead, which is no help there), a download that cannot reach the hub fails at
once instead of after half a minute of retries, and the hub's warnings are printed once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.limits import SdLimits
from domain.errors import ModelError
from tests.support.ports import free_port

pytest.importorskip("huggingface_hub")

REPO = "someone/podworker-test-never-cached"


def test_a_hub_id_not_in_the_cache_with_downloads_off_says_how_to_allow_them() -> None:
    with pytest.raises(ModelError) as raised:
        pipelines.checked_family(None, REPO, SdLimits(), allow_download=False)

    assert str(raised.value) == (
        f"could not load a Stable Diffusion pipeline from {REPO!r}: not a local folder, not in "
        "the local Hugging Face cache, and downloads are off: allow them with "
        "MODEL_ALLOW_DOWNLOAD=true, or set MODEL_PATH to a folder of diffusers weights")


def test_a_hub_that_cannot_be_reached_fails_at_once_without_the_retrying_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    port = free_port()  # nothing listens there
    downloads: list[Any] = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_url",
                        lambda repo, name: f"http://127.0.0.1:{port}/{repo}/resolve/main/{name}")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: downloads.append(a))

    with pytest.raises(ModelError) as raised:
        pipelines.checked_family(None, REPO, SdLimits(), allow_download=True)

    message = str(raised.value)
    assert message.startswith(
        f"could not load a Stable Diffusion pipeline from {REPO!r} (not a local folder, not in "
        f"the local Hugging Face cache): could not download {REPO!r}: the Hugging Face Hub could "
        "not be reached: does this machine have network access? (")
    assert "SD_PIPELINE" not in message
    assert downloads == []  # the download, which retries for ~25 s, was never started


def test_the_hubs_warnings_reach_the_workers_handler_only(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub.utils import logging as hub_logging

    from adapters.stable_diffusion.loading import quiet_hub_logs

    library = hub_logging.get_logger("huggingface_hub")
    library.addHandler(logging.StreamHandler())  # what huggingface_hub's first import does
    quiet_hub_logs()
    with caplog.at_level(logging.WARNING):
        hub_logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s")

    assert library.handlers == [] and library.propagate
    assert [r.getMessage() for r in caplog.records] == ["Retrying in 1s"]
    assert "Retrying" not in capfd.readouterr().err  # not printed by a handler of its own
