"""Stable Diffusion text-to-image on diffusers, behind the ``Model`` port.

- :class:`StableDiffusionModel` (``model.py``): loads a pipeline once, runs one job at a time.
- :class:`SdInput`, :class:`SdLimits`, :func:`parse_input` (``schema.py``): the input schema.
- :func:`make_tiny_model` (``tiny.py``): a tiny random-weight pipeline, built offline.
- ``acceleration.py`` (SDPA, channels-last, safe torch.compile and its warm-up plan),
  ``faults.py`` (CUDA errors: out of memory, device lost), ``images.py`` (uint8 on the device,
  PNG on the store thread), ``loading.py`` (finding and loading a pipeline), ``baking.py``
  (``python -m app bake-weights``), ``schedulers.py``, ``steps.py``.

Importing this package imports neither torch nor diffusers; they are loaded by
``StableDiffusionModel.load()`` and ``make_tiny_model()``.
"""

from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.schema import SdInput, SdLimits, parse_input
from adapters.stable_diffusion.tiny import make_tiny_model

__all__ = ["SdInput", "SdLimits", "StableDiffusionModel", "make_tiny_model", "parse_input"]
