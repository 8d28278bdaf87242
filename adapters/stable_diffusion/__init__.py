"""Stable Diffusion on diffusers (SD 1.x/2.x, SDXL, SD3, Flux), behind the ``Model`` port.

Where to look:

- ``model.py``: :class:`~.model.StableDiffusionModel`, the adapter itself (load once, run jobs).
- the job's input: ``schema.py`` (the fields, one line for every problem), ``limits.py``
  (:class:`~.limits.SdLimits`), ``field_checks.py``, ``refiner_fields.py``, ``schedulers.py``;
- the family: ``families.py`` (which pipeline a folder holds, its defaults), ``pipelines.py``
  (load once, img2img and inpainting from the same weights), ``loading.py``, ``refiner.py``;
- the device: ``device_queue.py`` (the one thread that runs every pipeline call, and dynamic
  batching), ``batches.py`` (which jobs share a call), ``generation.py`` (one call),
  ``steps.py`` (progress and cancel per step), ``acceleration.py`` (SDPA, channels-last,
  safe ``torch.compile``), ``faults.py`` (out of memory, device lost);
- images: ``input_images.py`` (reading what a job sends), ``job_images.py`` (making them ready
  for the pipeline), ``output_images.py`` (uint8 on the device, PNG on the store thread);
- ``baking.py`` (``python -m app bake-weights``) and ``tiny/`` (tiny random pipelines of every
  family, built offline).

Importing this package imports nothing: torch and diffusers load with the model.
"""
