"""The warm-up plan: every UNet and VAE batch a job can need, for every served size, each once."""

from __future__ import annotations

import pytest

from adapters.stable_diffusion.acceleration import CompileOptions
from adapters.stable_diffusion.warmup_plan import batch_rows, padded_rows, unet_graphs, warmup_plan


@pytest.mark.parametrize(("max_rows", "rows"), [
    (1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]),
    (16, [1, 2, 4, 8, 16]),
])
def test_calls_are_padded_to_powers_of_two_and_never_past_the_most_rows_a_call_makes(
    max_rows: int, rows: list[int],
) -> None:
    assert batch_rows(max_rows) == rows
    for n in range(1, max_rows + 1):
        padded = padded_rows(n, max_rows)
        assert padded in rows
        assert padded >= n
        assert not [r for r in rows if n <= r < padded], "not the smallest that holds n"


@pytest.mark.parametrize("max_outputs", [1, 2, 3, 4, 8])
def test_the_plan_makes_every_unet_and_vae_batch_a_job_can_need_and_no_other(
    max_outputs: int,
) -> None:
    plan = warmup_plan([(512, 512), (768, 512)], max_outputs)

    for size in ((512, 512), (768, 512)):
        jobs = [(n, guided) for w, h, n, guided in plan if (w, h) == size]
        unet = [2 * n if guided else n for n, guided in jobs]
        vae = {n for n, _ in jobs}
        served = {padded_rows(n, max_outputs) for n in range(1, max_outputs + 1)}
        assert set(unet) == served | {2 * n for n in served}
        assert len(unet) == len(set(unet)), "a job that makes no new graph"
        assert vae == served
    assert unet_graphs([(512, 512), (768, 512)], max_outputs) == len(plan)


def test_four_outputs_at_one_size_take_four_warm_up_jobs() -> None:
    assert warmup_plan([(512, 512)], 4) == [
        (512, 512, 1, True), (512, 512, 1, False), (512, 512, 2, True), (512, 512, 4, True),
    ]


def test_eight_images_per_call_take_five_unet_graphs_per_size_not_twelve() -> None:
    assert unet_graphs([(512, 512)], 8) == 5  # UNet batches 1, 2, 4, 8, 16
    assert unet_graphs([(512, 512), (768, 768)], 8) == 10


def test_compile_options_know_which_modes_use_cuda_graphs() -> None:
    assert CompileOptions(mode="reduce-overhead").cuda_graphs
    assert CompileOptions(mode="max-autotune").cuda_graphs
    assert not CompileOptions(mode="max-autotune-no-cudagraphs").cuda_graphs
    assert not CompileOptions(mode="reduce-overhead", backend="eager").cuda_graphs
