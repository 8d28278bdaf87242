"""LoRAs given as URLs: refused unless LORA_URL_FETCH is on, and then fetched behind the same
SSRF guard as input images, capped in size, safetensors only, kept on disk by content hash.

A stand-in "public" host is a server on 127.0.0.2 that the fetcher's classifier calls public
(tests/support/image_fetch_kit.py), so nothing leaves the machine; a server on 127.0.0.1 is
what a job must not reach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.lora_sources import LoraLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import InvalidInput
from tests.support.image_fetch_kit import STAND_IN_PUBLIC, fetcher
from tests.support.image_server import ImageServer, Route
from tests.support.sd_jobs import StepContext
from tests.support.sd_lora_kit import SMALL, lora_model, run_pixels, same

pytest.importorskip("peft")

JOB: dict[str, Any] = {"prompt": "a windmill", "seed": 4, **SMALL}
BINARY = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def lora_bytes(tiny_lora: Callable[..., Path]) -> bytes:
    return tiny_lora("sd").read_bytes()


@pytest.fixture
def public_loras(lora_bytes: bytes) -> Iterator[ImageServer]:
    import io

    import torch

    pickled = io.BytesIO()
    torch.save({"unet.x.lora_A.weight": torch.zeros(2, 2)}, pickled)
    routes = {"/style.safetensors": Route(body=lora_bytes, headers=BINARY),
              "/moved": Route(302, headers={"Location": "/style.safetensors"}),
              "/pickle.safetensors": Route(body=pickled.getvalue(), headers=BINARY),
              "/to-loopback": Route(302, headers={"Location": "http://127.0.0.1:9/x"})}
    with ImageServer(routes, host=STAND_IN_PUBLIC) as server:
        yield server


def refusal(model: StableDiffusionModel, job_input: dict[str, Any]) -> str:
    with pytest.raises(InvalidInput) as caught:
        model.run({**JOB, **job_input}, StepContext())
    return str(caught.value)


def test_a_lora_url_is_refused_unfetched_while_lora_url_fetch_is_off(
    tiny_sd_path: Path, public_loras: ImageServer, tmp_path: Path,
) -> None:
    model = lora_model(tiny_sd_path, tmp_path / "loras", cache_dir=tmp_path / "cache")
    url = public_loras.url("/style.safetensors")

    for job_input in ({"lora": url}, {"loras": [{"url": url}]}):
        assert "URLs are not fetched by this worker (LORA_URL_FETCH is off)" in refusal(
            model, job_input)
    assert public_loras.requests == []


def test_an_allowed_lora_url_is_fetched_once_kept_by_content_hash_and_equals_the_same_file(
    tiny_sd_path: Path, public_loras: ImageServer, lora_bytes: bytes, tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    folder = tmp_path / "loras"
    folder.mkdir()
    (folder / "local-copy.safetensors").write_bytes(lora_bytes)
    model = lora_model(tiny_sd_path, folder, cache_dir=cache, fetcher=fetcher())
    url = public_loras.url("/moved")  # a redirect to the file, re-checked

    first = run_pixels(model, {**JOB, "lora": url})
    second = run_pixels(model, {**JOB, "loras": [{"url": url, "scale": 1.0}]})
    local = run_pixels(model, {**JOB, "lora": "local-copy"})

    digest = hashlib.sha256(lora_bytes).hexdigest()
    assert [p.name for p in cache.iterdir()] == [f"{digest}.safetensors"]
    assert [path for path, _ in public_loras.requests] == ["/moved", "/style.safetensors"]
    assert same(first, second) and same(first, local)
    assert model.loras is not None and model.loras.fetches == 1
    assert model.loras.hashed == 2  # the fetch's bytes once (not its file again), the copy once
    assert model.adapters is not None and model.adapters.loads == 1  # one content, one adapter


def test_lora_urls_to_private_addresses_are_refused_before_any_request(
    tiny_sd_path: Path, public_loras: ImageServer, lora_bytes: bytes, tmp_path: Path,
) -> None:
    with ImageServer({"/style.safetensors": Route(body=lora_bytes, headers=BINARY)}) as private:
        model = lora_model(tiny_sd_path, None, cache_dir=tmp_path / "cache", fetcher=fetcher())
        direct = refusal(model, {"lora": private.url("/style.safetensors")})
        metadata = refusal(model, {"lora": "http://169.254.169.254/latest/meta-data/x"})
        redirected = refusal(model, {"lora": public_loras.url("/to-loopback")})

        assert private.requests == []
    assert "lora http://127.0.0.1/style.safetensors: could not be fetched: 127.0.0.1: " \
        "loopback addresses are not fetched" in direct
    assert "169.254.169.254: cloud metadata service addresses are not fetched" in metadata
    assert "loopback addresses are not fetched" in redirected
    assert not (tmp_path / "cache").exists()


def test_a_lora_url_answering_too_much_or_a_pickle_is_refused_and_nothing_is_kept(
    tiny_sd_path: Path, public_loras: ImageServer, lora_bytes: bytes, tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    small = lora_model(tiny_sd_path, None, cache_dir=cache,
                       fetcher=fetcher(max_bytes=len(lora_bytes) - 1),
                       lora_limits=LoraLimits(max_bytes=len(lora_bytes) - 1))

    too_big = refusal(small, {"lora": public_loras.url("/style.safetensors")})
    pickle = refusal(small, {"lora": public_loras.url("/pickle.safetensors")})

    assert too_big.startswith(f"invalid input: lora http://{STAND_IN_PUBLIC}/style.safetensors: "
                              "could not be fetched")
    assert "not a readable safetensors file" in pickle
    assert not cache.exists() or [p for p in cache.iterdir()] == []


def test_a_token_in_a_lora_url_never_reaches_the_error(
    tiny_sd_path: Path, public_loras: ImageServer, tmp_path: Path,
) -> None:
    model = lora_model(tiny_sd_path, None, cache_dir=tmp_path / "cache", fetcher=fetcher())

    message = refusal(model, {"loras": [{"url": public_loras.url(
        "/missing.safetensors?token=hunter2-secret-token")}]})

    assert "answered HTTP 404" in message
    assert "hunter2" not in message and "token=" not in message


def test_a_job_stopped_while_its_lora_downloads_is_cancelled_not_failed_for_its_lora(
    tiny_sd_path: Path, lora_bytes: bytes, tmp_path: Path,
) -> None:
    import threading
    import time

    from adapters.clock import SystemClock
    from domain.errors import JobCancelled
    from domain.execution import RunningJob
    from domain.job import Job

    slow = {"/slow.safetensors": Route(body=lora_bytes, headers=BINARY, trickle_s=0.2)}
    with ImageServer(slow, host=STAND_IN_PUBLIC) as server:
        model = lora_model(tiny_sd_path, tmp_path / "loras", cache_dir=tmp_path / "cache",
                           fetcher=fetcher(deadline_s=120.0))
        job = RunningJob(Job(id="j", input={}, taken_at=time.monotonic()),
                         started=time.monotonic(), timeout_s=600, clock=SystemClock())

        def stop_once_asked() -> None:
            deadline = time.monotonic() + 60
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            job.cancel("stopped by the platform")

        threading.Thread(target=stop_once_asked, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(JobCancelled):
            model.run({**JOB, "lora": server.url("/slow.safetensors")}, job)
        assert time.monotonic() - started < 30  # the stop, not the fetch's 120 s deadline
