"""One pipeline call: the images of one or more jobs of one key, as 8-bit pixels on the host.

What a call promises (the model runs it on its device thread):

- the jobs' images in order, one per seed, each from its own CPU ``torch.Generator`` (see
  :mod:`.batches` for what is shared and what is per row);
- errors mapped as :mod:`.faults` says (``OutOfMemory``, ``DeviceLost``, ``ModelError``), raised
  ``from None`` with the failed call's frames cleared, and for ``OutOfMemory``/``DeviceLost``
  the memory given back first; ``PodworkerError``s from the step callback (a job stopped, every
  job of a batch stopped) pass unchanged;
- with ``compilation``, no graph is compiled during a job (``serving``); while ``warming``, they
  are; a compiled call is padded to the next of its few row counts (``Compilation.padded``: the
  last job's last seed repeated) and the extra images dropped; with ``eager`` (jobs with LoRAs,
  whose layers the graphs were not traced on) the compiled forwards are not used at all
  (dynamo's ``force_eager`` stance);
- jobs with ``use_refiner`` (one key: all of them or none) go through two calls, both in
  ``inference_mode``: the base to ``high_noise_frac`` as latents, then ``refiner`` from there
  (:mod:`.refiner`), on the same generators, the step reporter moved to its second stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.acceleration import Compilation
from adapters.stable_diffusion.batches import Work, batch_arguments
from adapters.stable_diffusion.families import FamilySpec
from adapters.stable_diffusion.faults import free_memory, job_error
from adapters.stable_diffusion.job_images import JobImages
from adapters.stable_diffusion.output_images import to_pixels
from adapters.stable_diffusion.refiner import refiner_arguments
from adapters.stable_diffusion.steps import StepReporter
from adapters.stable_diffusion.warmup_plan import batch_rows, warmup_plan
from domain.errors import DeviceLost, ModelError, OutOfMemory, PodworkerError

log = logging.getLogger("podworker.model")


def generate(
    torch: Any, pipe: Any, spec: FamilySpec, works: list[Work], on_step: StepReporter | None, *,
    device: str, compilation: Compilation | None, warming: bool = False, refiner: Any = None,
    eager: bool = False,
) -> Any:
    """uint8 pixels (rows x H x W x 3) for ``works`` from one call of ``pipe`` (two, with
    ``refiner``, the refiner pipeline, when the jobs ask for it)."""
    rows = sum(len(work.seeds) for work in works)
    if compilation is not None and compilation.active and not eager:
        works = padded(works, compilation.padded(rows) - rows)
    first = works[0]
    seeds = [seed for work in works for seed in work.seeds]
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    arguments = batch_arguments(pipe, spec, works, generators=generators, on_step=on_step)
    refining = refiner is not None and first.params.use_refiner
    if refining:
        arguments |= {"denoising_end": first.params.high_noise_frac, "output_type": "latent"}
    serving: Any = (contextlib.nullcontext() if compilation is None or warming
                    else torch.compiler.set_stance("force_eager") if eager
                    else compilation.serving())
    try:
        with torch.inference_mode(), serving:
            images = pipe(**arguments).images
            if refining:
                if on_step is not None:
                    on_step.next_stage()
                images = refiner(**refiner_arguments(works, images, generators=generators,
                                                     on_step=on_step)).images
            return to_pixels(torch, images[:rows])
    except PodworkerError:
        raise  # ExecutionTimeout / JobCancelled / BatchAbandoned from the step callback
    except Exception as exc:
        jobs = f" for {len(works)} jobs" if len(works) > 1 else ""
        error = job_error(
            torch, exc, device=device,
            oom_advice=f"making {rows} image(s) of {first.images.width}x"
            f"{first.images.height}{jobs}: ask for fewer num_outputs or a smaller width/height",
        )
    # The failed call's frames were cleared: give their memory back before reporting.
    if isinstance(error, OutOfMemory | DeviceLost):
        free_memory(torch, device.startswith("cuda"))
    raise error from None


def padded(works: list[Work], extra: int) -> list[Work]:
    """``works`` with ``extra`` more rows: the last job's last seed again (images dropped after;
    a job alone stays one prompt with more ``num_images_per_prompt``)."""
    if extra <= 0:
        return works
    last = works[-1]
    return [*works[:-1], dataclasses.replace(last, seeds=[*last.seeds, *[last.seeds[-1]] * extra])]


def warm_up(
    call: Callable[[list[Work]], Any], spec: FamilySpec, sizes: Sequence[tuple[int, int]], *,
    max_rows: int, compiled: bool,
) -> int:
    """Run what jobs will run: with ``compiled``, one short call per graph a call can need (see
    ``warmup_plan``: every size, every padded batch up to ``max_rows`` images); without, one
    image at the first size. Returns the most rows a call may make: ``max_rows``, or less when
    a larger call ran out of memory while compiling (that row count and every larger one are
    dropped, with a warning; one image that does not fit raises ``OutOfMemory``). Raises
    ``ModelError`` ("warm-up failed: ...") or ``OutOfMemory``/``DeviceLost``."""
    plan = warmup_plan(sizes, max_rows) if compiled else [(*sizes[0], 1, True)]
    fit = max_rows
    for width, height, outputs, guided in plan:
        if outputs > fit:
            continue
        params = pipelines.warmup_input(spec, width, height, outputs, guided)
        work = Work(params, JobImages("text2img", width, height), list(range(outputs)),
                    (params.num_inference_steps,))
        try:
            call([work])
        except PodworkerError as exc:
            if isinstance(exc, OutOfMemory) and outputs > 1:
                fit = max(n for n in batch_rows(max_rows) if n < outputs)
                log.warning("warm-up: %d images of %dx%d in one call ran out of memory (%s): "
                            "this worker makes at most %d per call", outputs, width, height,
                            exc, fit, extra={"event": "warmup_rows_dropped"})
                continue
            kind = type(exc) if isinstance(exc, ModelError) else ModelError
            raise kind(f"warm-up failed: {exc}") from None
    return fit
