"""A fetch for a job that is stopped meanwhile (a LoRA URL that trickles, say) is cut at the
stop, not at its own deadline: the job answers its stop in time, and the worker is never left
waiting on a download past ``OVERRUN_GRACE`` (which would end it with exit code 3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.clock import SystemClock
from adapters.http.safe_fetch import FetchRefused
from adapters.stable_diffusion.lora_fields import LoraRequest
from adapters.stable_diffusion.lora_sources import LoraLibrary
from domain.errors import InvalidInput
from domain.execution import RunningJob
from domain.job import Job
from tests.support.image_fetch_kit import STAND_IN_PUBLIC, fetcher
from tests.support.image_server import ImageServer, Route

DEADLINE_S = 120.0  # the fetch's own deadline: far beyond what the test waits


@pytest.fixture
def trickling() -> Iterator[ImageServer]:
    body = b"x" * 4096  # one byte every 0.2 s: about 14 minutes in all
    with ImageServer({"/slow.safetensors": Route(body=body, trickle_s=0.2)},
                     host=STAND_IN_PUBLIC) as server:
        yield server


def running_job() -> RunningJob:
    """A job as the worker runs it: ``on_cancel`` hooks run when it is stopped."""
    job = Job(id="lora-job", input={}, taken_at=time.monotonic())
    return RunningJob(job, started=time.monotonic(), timeout_s=600, clock=SystemClock())


def stop_when_requested(server: ImageServer, job: RunningJob) -> threading.Thread:
    """Stops ``job`` once the server has been asked for the file (the download is under way)."""

    def stop() -> None:
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        job.cancel("stopped by the platform")

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def test_a_job_stop_cuts_a_fetch_at_once_not_at_its_deadline(trickling: ImageServer) -> None:
    job = running_job()
    stopper = stop_when_requested(trickling, job)
    started = time.monotonic()

    with pytest.raises(FetchRefused, match="cancelled"):
        fetcher(deadline_s=DEADLINE_S).fetch(trickling.url("/slow.safetensors"),
                                             on_cancel=job.on_cancel)

    assert time.monotonic() - started < DEADLINE_S / 4  # cut by the stop, long before 120 s
    stopper.join(5)


def test_a_fetch_for_a_job_already_stopped_is_cut_before_its_answer(
    trickling: ImageServer,
) -> None:
    job = running_job()
    job.cancel("stopped by the platform")
    started = time.monotonic()

    with pytest.raises(FetchRefused, match="cancelled"):
        fetcher(deadline_s=DEADLINE_S).fetch(trickling.url("/slow.safetensors"),
                                             on_cancel=job.on_cancel)
    assert time.monotonic() - started < DEADLINE_S / 4


def test_a_lora_download_cut_by_a_stop_leaves_nothing_behind_and_a_later_one_is_untouched(
    trickling: ImageServer, tmp_path: Path,
) -> None:
    library = LoraLibrary(None, tmp_path / "cache", fetcher=fetcher(deadline_s=DEADLINE_S))
    job = running_job()
    stopper = stop_when_requested(trickling, job)
    request = LoraRequest(source="url", value=trickling.url("/slow.safetensors"), scale=1.0)
    started = time.monotonic()

    with pytest.raises(InvalidInput, match="cancelled"):
        library.resolve([request], on_cancel=job.on_cancel)

    assert time.monotonic() - started < DEADLINE_S / 4
    assert list((tmp_path / "cache").rglob("*")) == []  # the partial download was dropped
    assert library.fetches == 0
    stopper.join(5)
