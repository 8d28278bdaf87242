"""Helpers for batching tests on the Stable Diffusion adapter: run jobs so that they queue for
the device together, read a result's pixels, and compare images up to batch-size rounding."""

from __future__ import annotations

import threading
from typing import Any

from adapters.stable_diffusion.model import StableDiffusionModel
from tests.support.harness import wait_until
from tests.support.sd_jobs import StepContext, decode

DEADLINE = 120.0


def pixels(output: list[dict[str, Any]]) -> list[Any]:
    import numpy as np

    return [np.asarray(decode(item["image"]), dtype=np.int16) for item in output]


def assert_same_images(batched: list[Any], alone: list[Any], other: Any) -> None:
    """Equal up to batch-size rounding (one level in 255 on a few pixels), while ``other``
    (another job's image) is far from them."""
    import numpy as np

    assert len(batched) == len(alone)
    for got, want in zip(batched, alone, strict=True):
        difference = np.abs(got - want)
        assert difference.max() <= 2, f"batched image differs by up to {difference.max()}"
        assert (difference == 0).mean() >= 0.99
        # ... while images of other jobs differ on most pixels (the tiny random weights make
        # low-contrast images): the tolerance could not hide a mixed-up job.
        assert (np.abs(got - other) > 2).mean() > 0.3, "another job's image is as close"


def run_together(
    model: StableDiffusionModel, jobs: dict[str, dict[str, Any]],
    contexts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``jobs`` from their own threads, all waiting for the device before any runs: the
    device thread is held by a call until every job has queued behind it."""
    contexts = contexts or {}
    answers: dict[str, Any] = {}
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        assert release.wait(DEADLINE)

    holder = threading.Thread(target=model.device_queue.call, args=(hold,), daemon=True)
    holder.start()
    assert holding.wait(DEADLINE)

    def run(name: str) -> None:
        try:
            answers[name] = model.run(jobs[name], contexts.get(name) or StepContext())
        except BaseException as exc:
            answers[name] = exc

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in jobs]
    for thread in threads:
        thread.start()
    wait_until(lambda: model.device_queue.waiting == len(jobs), timeout=DEADLINE,
               what="every job to queue for the device")
    release.set()
    for thread in [holder, *threads]:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    return answers
