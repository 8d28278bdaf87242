"""Attention checked at load: the SDPA backends that may serve jobs give finite answers that
match the math backend, and the log says which one serves.

Why: PyTorch picks a fused attention kernel per call (cuDNN, flash, memory-efficient), and on
Hopper with torch >= 2.10 and a recent cuDNN it prefers cuDNN attention; diffusers users have
met "No execution plans support the graph" errors and NaN images with it. A backend that fails
here would fail (or silently blacken) every job, so it is switched off for the process before
any job runs, and torch falls back to the next one.

What :func:`check_attention` promises: each fused backend that is enabled is run alone on a
fixed input shaped like a UNet's attention (in the model's dtype, on its device) and compared
with the math backend in float32; one that raises (other than "no kernel for these inputs",
which only means torch would not pick it either), returns a non-finite value, or differs by
more than :data:`TOLERANCE` is switched off, with the reason kept. The report names the backend
torch then picks for that input.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.stable_diffusion.faults import describe, forget

log = logging.getLogger("podworker.model")

BACKENDS = ("cudnn", "flash", "efficient")
"""torch's fused attention backends, each with a switch in ``torch.backends.cuda``."""
_SWITCH = {"cudnn": "enable_cudnn_sdp", "flash": "enable_flash_sdp",
           "efficient": "enable_mem_efficient_sdp"}
_ENABLED = {"cudnn": "cudnn_sdp_enabled", "flash": "flash_sdp_enabled",
            "efficient": "mem_efficient_sdp_enabled"}
_SDP = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION",
        "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}
TOLERANCE = 0.05
"""Largest difference from float32 math attention accepted (values are about unit size)."""
SHAPE = (2, 8, 1024, 64)  # batch, heads, tokens (a 32x32 latent), head width


@dataclass
class AttentionReport:
    serving: str  # the backend torch picks after the check ("math" when none is left)
    disabled: dict[str, str] = field(default_factory=dict)  # backend -> why it was switched off

    def describe(self) -> str:
        off = "; ".join(f"{name} off: {why}" for name, why in self.disabled.items())
        return f"{self.serving}" + (f" ({off})" if off else "")


def check_attention(
    torch: Any, device: str, dtype: Any, *,
    run: Callable[[str, Any, Any, Any], Any] | None = None,
    switch: Callable[[str, bool], None] | None = None,
    enabled: Callable[[str], bool] | None = None,
    choose: Callable[[Any, Any, Any], str] | None = None,
) -> AttentionReport:
    """Check every enabled fused backend and switch off the bad ones (module docstring).

    ``run(backend, q, k, v)``, ``switch(backend, on)``, ``enabled(backend)`` and ``choose(q, k,
    v)`` default to torch's own; tests inject them to make a backend misbehave."""
    run = run or (lambda name, q, k, v: _run_alone(torch, name, q, k, v))
    switch = switch or (lambda name, on: getattr(torch.backends.cuda, _SWITCH[name])(on))
    enabled = enabled or (lambda name: bool(getattr(torch.backends.cuda, _ENABLED[name])()))
    choose = choose or (lambda q, k, v: _chosen(torch, q, k, v))
    generator = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(SHAPE, generator=generator).to(device=device, dtype=dtype)
               for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    disabled: dict[str, str] = {}
    for name in BACKENDS:
        if not enabled(name):
            continue
        why = _fault(torch, functools.partial(run, name, q, k, v), reference)
        if why is not None:
            switch(name, False)
            disabled[name] = why
            log.warning("attention backend %s switched off: %s", name, why,
                        extra={"event": "attention_backend_off"})
    report = AttentionReport(serving=choose(q, k, v), disabled=disabled)
    log.info("attention: %s serves jobs", report.describe(), extra={"event": "attention"})
    return report


def _fault(torch: Any, call: Callable[[], Any], reference: Any) -> str | None:
    try:
        out = call()
    except RuntimeError as exc:
        text = describe(exc)
        forget(exc)
        return None if "No available kernel" in text else f"raised {text}"
    out = out.float()
    if not bool(torch.isfinite(out).all()):
        return "non-finite output (NaN or inf)"
    difference = float((out - reference).abs().max())
    if difference > TOLERANCE:
        return f"differs from math attention by {difference:.3g} (> {TOLERANCE})"
    return None


def _run_alone(torch: Any, name: str, q: Any, k: Any, v: Any) -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, _SDP[name])]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _chosen(torch: Any, q: Any, k: Any, v: Any) -> str:
    """The backend SDPA picks for ``q, k, v`` now (torch's private chooser; "unknown" without)."""
    try:
        from torch.nn.attention import SDPBackend

        picked = SDPBackend(torch._fused_sdp_choice(q, k, v))
    except Exception as exc:
        forget(exc)
        return "unknown"
    names = {getattr(SDPBackend, value): key for key, value in _SDP.items()}
    return names.get(picked, picked.name.lower())
