"""The attention self-test at load: a fused backend that returns NaN, raises, or disagrees with
math attention is switched off before any job runs; one that has no kernel for the input is
left alone (torch would not pick it either)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.attention_check import BACKENDS, check_attention

torch = pytest.importorskip("torch")


class Backends:
    """Every backend enabled; ``faults`` says how each misbehaves; switches are recorded."""

    def __init__(self, **faults: str) -> None:
        self.faults = faults
        self.switched: list[tuple[str, bool]] = []

    def run(self, name: str, q: Any, k: Any, v: Any) -> Any:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        fault = self.faults.get(name)
        if fault == "nan":
            return torch.full_like(out, float("nan"))
        if fault == "wrong":
            return out + 1
        if fault == "raises":
            raise RuntimeError("cuDNN Frontend error: No execution plans support the graph.")
        if fault == "no kernel":
            raise RuntimeError("No available kernel. Aborting execution.")
        return out

    def switch(self, name: str, on: bool) -> None:
        self.switched.append((name, on))

    def first_left(self, q: Any, k: Any, v: Any) -> str:
        off = {name for name, on in self.switched if not on}
        return next((name for name in BACKENDS if name not in off), "math")


def check(backends: Backends) -> Any:
    return check_attention(torch, "cpu", torch.float32, run=backends.run,
                           switch=backends.switch, enabled=lambda name: True,
                           choose=backends.first_left)


def test_a_backend_that_returns_nan_is_switched_off_and_the_next_one_serves() -> None:
    backends = Backends(cudnn="nan")

    report = check(backends)

    assert backends.switched == [("cudnn", False)]
    assert "non-finite" in report.disabled["cudnn"]
    assert report.serving == "flash"


def test_a_backend_that_raises_or_disagrees_is_switched_off_too() -> None:
    backends = Backends(cudnn="raises", flash="wrong")

    report = check(backends)

    assert backends.switched == [("cudnn", False), ("flash", False)]
    assert "No execution plans" in report.disabled["cudnn"]
    assert "differs from math attention" in report.disabled["flash"]
    assert report.serving == "efficient"


def test_healthy_backends_and_ones_without_a_kernel_for_the_input_stay_on() -> None:
    backends = Backends(flash="no kernel")

    report = check(backends)

    assert backends.switched == []
    assert report.disabled == {}
    assert report.serving == "cudnn"
