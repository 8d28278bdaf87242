"""The schedulers a job may ask for: a whitelist of names, mapped to diffusers scheduler classes.

Why a whitelist: diffusers has dozens of schedulers, some of which do not fit a text-to-image SD
pipeline, and a class name taken from user input must never be looked up freely. The names are
the ones RunPod's Stable Diffusion worker templates accept (worker-sdxl 2.1.0's
``DPMSolverSinglestep`` and worker-stable_diffusion_v1's ``DPM-M``/``DPM-S``/``EULER-D``
included), with their common spellings as aliases; matching ignores case, ``-``, ``_`` and
spaces, so ``k_euler_ancestral``, ``EULER-A`` and ``Euler A`` all mean the same scheduler.

This module is pure: it names diffusers classes as strings and imports diffusers only inside
:func:`scheduler_class`, so the input schema can validate a name without importing torch.
"""

from __future__ import annotations

import importlib.util
from typing import Any

# canonical name -> (diffusers class name, aliases besides the canonical name)
_SCHEDULERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "DDIM": ("DDIMScheduler", ()),
    "DDPM": ("DDPMScheduler", ()),
    "PNDM": ("PNDMScheduler", ()),
    "K-LMS": ("LMSDiscreteScheduler", ("KLMS", "K_LMS", "LMS")),
    "EULER": ("EulerDiscreteScheduler", ("K_EULER", "K-EULER", "EULER-D")),
    "EULER-A": (
        "EulerAncestralDiscreteScheduler",
        ("EULER_A", "K_EULER_ANCESTRAL", "EULER-ANCESTRAL", "K_EULER_A"),
    ),
    "DPM++": ("DPMSolverMultistepScheduler",
              ("DPMSolverMultistep", "DPM++ 2M", "DPMPP", "DPM-M")),
    "DPM-S": ("DPMSolverSinglestepScheduler", ("DPMSolverSinglestep", "DPM++ S")),
    "HEUN": ("HeunDiscreteScheduler", ("K_HEUN", "K-HEUN")),
}

SCHEDULER_NAMES: tuple[str, ...] = tuple(sorted(_SCHEDULERS))
"""The canonical names, as error messages list them."""


def _key(name: str) -> str:
    return "".join(c for c in name.upper() if c not in "-_ ")


_BY_KEY: dict[str, str] = {
    _key(alias): canonical
    for canonical, (_cls, aliases) in _SCHEDULERS.items()
    for alias in (canonical, *aliases)
}


def canonical_scheduler(name: str) -> str | None:
    """The canonical whitelist name for ``name`` (any alias, any case), or None if unknown."""
    return _BY_KEY.get(_key(name))


def scheduler_class_name(canonical: str) -> str:
    """The diffusers class name behind a canonical name (``"DDIM"`` -> ``"DDIMScheduler"``)."""
    return _SCHEDULERS[canonical][0]


def scheduler_class(canonical: str) -> Any:
    """The diffusers scheduler class behind a canonical name. Imports diffusers.

    Raises ``KeyError`` for a name outside the whitelist. A class whose extra dependency is
    missing (``LMSDiscreteScheduler`` needs scipy) comes back as diffusers' placeholder, which
    raises ``ImportError`` when used.
    """
    import diffusers

    return getattr(diffusers, scheduler_class_name(canonical))


def prepare_schedulers(config: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """One scheduler instance per whitelisted name, all from a pipeline's scheduler ``config``,
    and the names that cannot be made here with the reason (K-LMS needs scipy). Imports
    diffusers. Made once at load, so a job's scheduler swap is an attribute assignment."""
    schedulers: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for name in SCHEDULER_NAMES:
        cls = scheduler_class(name)
        try:
            schedulers[name] = cls.from_config(config)
        except ImportError:
            missing = [
                b for b in getattr(cls, "_backends", []) if importlib.util.find_spec(b) is None
            ]
            needs = " and ".join(missing) or "a package that is not installed"
            unavailable[name] = f"{scheduler_class_name(name)} needs {needs}"
    return schedulers, unavailable
