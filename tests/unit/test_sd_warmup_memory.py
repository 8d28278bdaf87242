"""A warm-up that runs out of memory on a large call drops that row count and every larger one
(the worker serves the rest); one image that does not fit still fails the load."""

from __future__ import annotations

import logging

import pytest

from adapters.stable_diffusion.batches import Work
from adapters.stable_diffusion.families import family_spec
from adapters.stable_diffusion.generation import warm_up
from domain.errors import OutOfMemory

SD = family_spec("sd")


class Device:
    """A fake device call that runs out of memory from ``limit`` rows on, and records calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[tuple[int, int, float]] = []

    def __call__(self, works: list[Work]) -> None:
        (work,) = works
        rows = len(work.seeds)
        self.calls.append((work.images.width, rows, work.params.guidance_scale))
        if rows >= self.limit:
            raise OutOfMemory(f"CUDA out of memory making {rows} image(s)")


def test_rows_that_run_out_of_memory_are_dropped_with_every_larger_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = Device(limit=4)

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        fit = warm_up(device, SD, [(64, 64), (128, 128)], max_rows=8, compiled=True)

    assert fit == 2
    rows_tried = [(width, rows) for width, rows, _ in device.calls]
    assert (64, 8) not in rows_tried, "a larger call was tried after a smaller one ran out"
    assert (64, 4) in rows_tried and (128, 2) in rows_tried
    assert not [rows for _, rows in rows_tried if rows > 4]
    assert [r.message for r in caplog.records if "ran out of memory" in r.message] == [
        "warm-up: 4 images of 64x64 in one call ran out of memory (CUDA out of memory making "
        "4 image(s)): this worker makes at most 2 per call"
    ]


def test_a_later_size_can_lower_the_rows_again() -> None:
    class Sized(Device):
        def __call__(self, works: list[Work]) -> None:
            work = works[0]
            self.limit = 2 if work.images.width == 128 else 8
            super().__call__(works)

    device = Sized(limit=8)

    assert warm_up(device, SD, [(64, 64), (128, 128)], max_rows=4, compiled=True) == 1


def test_when_one_image_does_not_fit_the_load_fails_as_before() -> None:
    with pytest.raises(OutOfMemory, match="warm-up failed: CUDA out of memory"):
        warm_up(Device(limit=1), SD, [(64, 64)], max_rows=4, compiled=True)


def test_an_uncompiled_warm_up_makes_one_image_and_keeps_the_rows() -> None:
    device = Device(limit=2)

    assert warm_up(device, SD, [(64, 64)], max_rows=4, compiled=False) == 4
    assert [rows for _, rows, _ in device.calls] == [1]
