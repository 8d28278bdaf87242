"""Strategies and helpers for the fuzz run (``tests/fuzz``): bad job bodies, odd ids, bad inputs.

What is generated is what a job API could really send: bytes that are not JSON, JSON that is
not an object, envelopes with missing or non-string ids, ids with ``../``, slashes and odd
unicode, inputs with the wrong type in every Stable Diffusion field, inputs over the size
limits. ``CASES`` counts the examples each fuzz test ran; ``tests/fuzz/conftest.py`` prints the
total at the end of the run.
"""

from __future__ import annotations

import base64
import collections
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from adapters.local.echo_model import TINY_PNG
from adapters.stable_diffusion.families import Family, family_spec
from adapters.stable_diffusion.limits import UNSUPPORTED_FIELDS, SdLimits
from adapters.stable_diffusion.lora_fields import LORA_FIELDS
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES
from adapters.stable_diffusion.schema import FamilyInput, field_names, parse_family_input
from domain.job import MAX_ANSWERED_ID_LENGTH, MAX_JOB_ID_LENGTH, Artifact
from domain.ports import JobContext

CASES: collections.Counter[str] = collections.Counter()
"""Examples run per fuzz test (test name -> count)."""


def fuzz_settings(max_examples: int) -> settings:
    """Explicit example counts, no deadline (loopback and threads vary), no database files."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --- text and JSON values ------------------------------------------------------------------
TRICKY = (
    "../", "..", ".", "/", "\\", "..\\", "%2e%2e%2f", "%2F", "%00", "\x00", "\n", "\r\n", "\t",
    "\u202e", "\u200b", "\ufeff", "\ud800", "\udfff", "🙂", "e\u0301", "ﬁ", "İ", "C:\\",
    "~", "$ID", "$RUNPOD_POD_ID", "?", "#", "&", "=", " ", "'", '"', "{", "}", "<script>",
    "/etc/passwd", "NUL", "CON", ".json", ".tmp",
)
"""Pieces that have broken path, URL and log handling elsewhere."""

odd_text: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(TRICKY) | st.text(max_size=4), max_size=8).map("".join),
)

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=10,
)

readable_job_ids: st.SearchStrategy[str] = st.one_of(
    st.from_regex(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-e[12]", fullmatch=True),  # RunPod-like
    st.lists(st.sampled_from([t for t in TRICKY if t.isprintable()]) | st.text(
        st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=4
    ), min_size=1, max_size=8).map("".join),
    st.integers(min_value=0, max_value=10**12).map(str),
)
"""Ids the worker can answer under: RunPod's shape, and printable text with ``../`` and
slashes."""

job_ids: st.SearchStrategy[Any] = st.one_of(
    readable_job_ids,
    odd_text,
    st.lists(st.sampled_from(["..", ".", "", "a", "b c", "%2F", "~"]), min_size=1, max_size=6)
    .map("/".join),
    st.integers(min_value=MAX_JOB_ID_LENGTH - 10, max_value=MAX_JOB_ID_LENGTH + 10).map(
        lambda n: "j" * n
    ),
    st.integers(min_value=-(10**30), max_value=10**30),
    json_values,
)


def readable_id(payload: object) -> str | None:
    """The id the worker must answer under, or None when none can be read (the spec: a string
    or an integer, not a boolean, 1 to 1024 characters a URL can carry, i.e. encodable as UTF-8;
    over 256 characters or unprintable, the job is answered with an error, not run)."""
    if not isinstance(payload, dict):
        return None
    raw = payload.get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = str(raw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text if 0 < len(text) <= MAX_ANSWERED_ID_LENGTH else None


def runnable_id(job_id: str) -> bool:
    """Whether a job with this (readable) id is run, rather than answered with an error."""
    return len(job_id) <= MAX_JOB_ID_LENGTH and job_id.isprintable()


# --- Stable Diffusion inputs ---------------------------------------------------------------
FUZZ_LIMITS = SdLimits(max_prompt_chars=300, max_pixels=512 * 768, max_outputs=3, max_steps=40)
SD = family_spec(Family.SD.value)
FIELD_NAMES = tuple(name for name in field_names(SD) if name not in LORA_FIELDS)
"""The fields an SD 1.x job may send, as the production schema (:mod:`adapters.stable_diffusion.
schema`) has them, but the LoRA fields: the fuzzed schema has no LoRA set-up, so it refuses them
whatever they hold (tests/unit/test_sd_lora_fields.py checks them)."""
_PNG_B64 = base64.b64encode(TINY_PNG).decode()


def parse_sd(raw: Any, limits: SdLimits = FUZZ_LIMITS) -> FamilyInput:
    """Validate ``raw`` exactly as the Stable Diffusion model does for an SD 1.x pipeline."""
    return parse_family_input(raw, SD, limits)

_in_range: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(
        st.text(min_size=1, max_size=40),
        odd_text,
        st.text(st.characters(exclude_categories=[]), max_size=10),  # lone surrogates too
    ).filter(lambda text: bool(text.strip())),
    "negative_prompt": st.none() | st.text(max_size=40) | odd_text,
    "width": st.integers(min_value=8, max_value=64).map(lambda n: n * 8),
    "height": st.integers(min_value=8, max_value=64).map(lambda n: n * 8),
    "num_outputs": st.integers(min_value=1, max_value=3),
    "num_images": st.integers(min_value=1, max_value=3),
    "num_inference_steps": st.integers(min_value=1, max_value=40) | st.just(25.0),
    "guidance_scale": st.floats(min_value=0, max_value=20) | st.integers(min_value=0, max_value=20),
    "scheduler": st.sampled_from(
        [*SCHEDULER_NAMES, "k_euler", "Euler A", "DPMSolverMultistep", "klms", "k-lms", None]
    ),
    "seed": st.none() | st.integers(min_value=0, max_value=2**32 - 1),
    "init_image": st.sampled_from([_PNG_B64, f"data:image/png;base64,{_PNG_B64}"]),
    "mask": st.sampled_from([_PNG_B64, f"data:image/png;base64,{_PNG_B64}"]),
    "prompt_strength": st.floats(min_value=0.1, max_value=1.0) | st.just(1),
}
"""Values each field accepts under ``FUZZ_LIMITS`` (width and height together stay under the
pixel cap)."""

_out_of_range: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.sampled_from(["", "   ", "\n\t"])
    | st.integers(min_value=301, max_value=320).map(lambda n: "p" * n),
    "negative_prompt": st.integers(min_value=301, max_value=310).map(lambda n: "n" * n),
    "width": st.integers(min_value=-8, max_value=7000).filter(lambda n: n < 64 or n % 8 != 0)
    | st.sampled_from([6144 + 8, 511.5]),
    "height": st.integers(min_value=-8, max_value=7000).filter(lambda n: n < 64 or n % 8 != 0)
    | st.sampled_from([2048, 511.5]),
    "num_outputs": st.integers(min_value=-2, max_value=0) | st.integers(min_value=4, max_value=9),
    "num_images": st.integers(min_value=-2, max_value=0) | st.integers(min_value=4, max_value=9),
    "num_inference_steps": st.integers(min_value=-3, max_value=0)
    | st.integers(min_value=41, max_value=10**6) | st.just(2.5),
    "guidance_scale": st.floats(max_value=-0.001) | st.floats(min_value=20.001)
    | st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    "scheduler": st.sampled_from(["nope", "", "DDIMM", "ddim\u0000", "EulerAncestral"]) | odd_text,
    "seed": st.integers(max_value=-1) | st.integers(min_value=2**32),
    "init_image": st.sampled_from(["", "not base64 at all!", "http://example.com/a.png",
                                   "data:text/plain;base64,aGk="]),
    "mask": st.sampled_from(["", "%%%", "ftp://example.com/m.png"]),
    "prompt_strength": st.floats(max_value=-0.001) | st.floats(min_value=1.001)
    | st.sampled_from([float("nan"), 0.0]),
}
"""Values of the right type that each field refuses."""

_wrong_types: st.SearchStrategy[Any] = st.one_of(
    json_values,
    st.sampled_from(["512", "true", "1e3", "NaN", "", "DDIM "]),
    st.sampled_from([True, False, None, [], {}, [512], {"value": 512}]),
)
_extra_keys = st.sampled_from(
    [*sorted(UNSUPPORTED_FIELDS), "num_inference_step", "Prompt", "sampler"]
) | odd_text


@st.composite
def sd_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A Stable Diffusion input, in one of three shapes: valid (every field absent or in
    range); valid but for one field (out of range, a wrong type, or an unknown or unsupported
    field besides); or chaos (every field anything, extra fields too)."""
    shape = draw(st.sampled_from(["valid", "one bad", "one bad", "chaos"]))
    names = [n for n in FIELD_NAMES if n != draw(st.sampled_from(["num_outputs", "num_images"]))]
    raw: dict[str, Any] = {"prompt": draw(_in_range["prompt"])}
    for name in names:
        if name != "prompt" and draw(st.booleans()):
            raw[name] = draw(_in_range[name])
    if shape == "one bad":
        kind = draw(st.sampled_from(["out of range", "wrong type", "extra field", "missing"]))
        name = draw(st.sampled_from(names))
        if kind == "out of range":
            raw[name] = draw(_out_of_range[name])
        elif kind == "wrong type":
            raw[name] = draw(_wrong_types)
        elif kind == "extra field":
            raw[draw(_extra_keys)] = draw(json_values)
        else:
            raw.pop("prompt")
    elif shape == "chaos":
        for name in FIELD_NAMES:
            choice = draw(st.sampled_from(["absent", "in range", "out of range", "wrong type"]))
            if choice == "absent":
                raw.pop(name, None)
            elif choice == "in range":
                raw[name] = draw(_in_range[name])
            elif choice == "out of range":
                raw[name] = draw(_out_of_range[name])
            else:
                raw[name] = draw(_wrong_types)
        for key in draw(st.lists(_extra_keys, max_size=2)):
            raw[key] = draw(json_values)
    return raw


job_inputs: st.SearchStrategy[Any] = st.one_of(
    sd_inputs(),
    sd_inputs(),
    sd_inputs(),
    sd_inputs(),
    json_values,  # not an object, mostly
    st.integers(min_value=3000, max_value=6000).map(lambda n: {"prompt": "x" * n}),
)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """What one take answer may hold for one job: usually an object with an id and an input,
    with either missing or odd; sometimes not an object at all."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_values)
    envelope: dict[str, Any] = {}
    which = draw(st.integers(min_value=0, max_value=5))
    if which > 0:
        envelope["id"] = draw(readable_job_ids if which > 2 else job_ids)
    if draw(st.integers(min_value=0, max_value=5)) > 0:
        envelope["input"] = draw(job_inputs)
    if draw(st.booleans()):
        envelope[draw(odd_text)] = draw(json_values)
    return envelope


def over_the_wire(value: Any) -> Any:
    """``value`` as a job API's JSON would deliver it (NaN and unicode escapes included)."""
    return json.loads(json.dumps(value))


# --- a model that only validates -----------------------------------------------------------
class SchemaCheckingModel:
    """Validates each input with the Stable Diffusion schema, as the real model does first, and
    returns the validated input with one tiny image (so outputs are stored). No diffusers."""

    def __init__(self, limits: SdLimits = FUZZ_LIMITS) -> None:
        self.limits = limits
        self.runs = 0

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.runs += 1
        params = parse_sd(job_input, self.limits)
        ctx.check_cancelled()
        return {"input": params.model_dump(), "image": Artifact(TINY_PNG)}
