"""The names RunPod's Stable Diffusion worker templates give this worker's fields, and the fields
they send that do nothing here: a job written for a template runs here as it is.

Read from the templates' input schemas and ``test_input.json`` files, at these versions:

==========================================  =================================================
template                                    what it sends that this worker names otherwise
==========================================  =================================================
runpod-workers/worker-sdxl 2.1.0            ``image_url`` (our ``init_image``), ``strength``
(commit 94b18ff)                            (our ``prompt_strength`` with an image; without
                                            one, its refiner's strength), ``num_images``,
                                            ``refiner_inference_steps``, ``high_noise_frac``
runpod-workers/worker-sdxl-turbo 1.1.1      ``num_images``
runpod-workers/worker-stable_diffusion_v1   ``nsfw``, ``prompt_strength`` without an image;
(ba94608) and _v2 (06c9373)                 the rest as here (``init_image``, ``mask``,
                                            ``num_outputs``)
==========================================  =================================================

:func:`translated` renames a template's names to this worker's before the schema checks them
(``num_images`` is the schema's own alias), so every check and limit applies as to our names,
and messages name the field as the job sent it. A template name sent together with ours
(``image_url`` and ``init_image``) is refused by the schema, naming both. ``null`` is "the
default", as for every field. Fields that change nothing here are dropped with a note for the
job's output: ``strength`` or ``prompt_strength`` without an image (the templates fill in and
send their default, 0.3 or 0.8, with text-to-image jobs), ``nsfw`` (no safety checker is
loaded, as the templates load none). The refiner's fields are the schema's own
(:mod:`.refiner_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEMPLATE_NAMES = {"image_url": "init_image", "strength": "prompt_strength"}
"""A template's name -> this worker's."""

IGNORED = {"nsfw": "this worker loads no safety checker (RunPod's templates load none either)"}
"""Fields a template takes that change nothing here -> why."""

STRENGTH_WITHOUT_IMAGE = (
    "{name}: ignored: it sets how far an image-to-image job moves from its image, and this job "
    "has none (RunPod's templates send it with text-to-image jobs too)"
)


def translated(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """``raw`` with the templates' names as this worker's, which of our names were sent under a
    template's name (ours -> theirs, for messages), and the notes on fields dropped."""
    job = dict(raw)
    sent_as: dict[str, str] = {}
    notes: list[str] = []
    for theirs, ours in TEMPLATE_NAMES.items():
        if theirs not in job:
            continue
        if job[theirs] is None:  # null: the default, as for every field
            del job[theirs]
        elif job.get(ours) is None:  # else both were sent: the schema refuses the pair
            job.pop(ours, None)
            job[ours] = job.pop(theirs)
            sent_as[ours] = theirs
    if job.get("prompt_strength") is not None and job.get("init_image") is None:
        name = sent_as.pop("prompt_strength", "prompt_strength")
        del job["prompt_strength"]
        notes.append(STRENGTH_WITHOUT_IMAGE.format(name=name))
    for name, why in IGNORED.items():
        if name in job and job.pop(name) is not None:
            notes.append(f"{name}: ignored: {why}")
    return job, sent_as, notes
