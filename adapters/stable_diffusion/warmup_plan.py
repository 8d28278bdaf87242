"""Which graphs a compiled pipeline needs: the few row counts a call is padded to, and the
warm-up jobs that make each graph once.

Why: compiled graphs are static (``dynamic=False``), so every row count a call can have is a
graph to compile at load. Padding each call to :func:`batch_rows` (1, 2, 4, 8... up to the most
rows a call makes) keeps that a handful per size, at the price of a few thrown-away images in
calls whose row count is not one of them. Pure functions: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence


def batch_rows(max_rows: int) -> list[int]:
    """The rows a compiled call is padded to: the powers of two below ``max_rows``, then
    ``max_rows`` itself (1, 2, 4, 8 for 8; 1, 2, 4, 6 for 6), so a worker compiles a few graphs
    per size rather than one per row count, and a call never has more rows than it allows."""
    rows = [1 << k for k in range(max(1, max_rows).bit_length()) if 1 << k < max_rows]
    return [*rows, max(1, max_rows)]


def padded_rows(rows: int, max_rows: int) -> int:
    """The smallest of :func:`batch_rows` that holds ``rows`` (``rows`` itself beyond them)."""
    return next((n for n in batch_rows(max_rows) if n >= rows), rows)


def warmup_plan(
    sizes: Sequence[tuple[int, int]], max_outputs: int
) -> list[tuple[int, int, int, bool]]:
    """``(width, height, outputs, guided)`` jobs that make every graph a padded call can need
    (:func:`batch_rows`), each once: per size, ``n`` outputs with guidance (UNet batch 2n, VAE
    batch n), and without (UNet batch n) when no earlier job made that UNet batch."""
    plan: list[tuple[int, int, int, bool]] = []
    for width, height in sizes:
        unet_batches: set[int] = set()
        for n in batch_rows(max_outputs):
            plan.append((width, height, n, True))
            unet_batches.add(2 * n)
            if n not in unet_batches:
                plan.append((width, height, n, False))
                unet_batches.add(n)
    return plan


def unet_graphs(sizes: Sequence[tuple[int, int]], max_outputs: int) -> int:
    """How many UNet graphs :func:`warmup_plan` makes."""
    served = batch_rows(max_outputs)
    return len(sizes) * len(set(served) | {2 * n for n in served})
