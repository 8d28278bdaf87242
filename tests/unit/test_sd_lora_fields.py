"""The LoRA job fields (``loras``, ``lora``, ``lora_scale``) as the schema checks them, for every
family: what is accepted, and the one-line message for everything else."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.lora_fields import LoraPolicy, LoraRequest, url_label
from adapters.stable_diffusion.schema import parse_family_input
from tests.support.sd_family_kit import ALL, problems, spec

FOLDER = LoraPolicy(folder=True, max_per_job=3)
EVERYWHERE = LoraPolicy(folder=True, urls=True, max_per_job=3)


def asked(raw: dict[str, Any], family: str = "sd",
          policy: LoraPolicy = EVERYWHERE) -> tuple[LoraRequest, ...]:
    return parse_family_input({"prompt": "a cat", **raw}, spec(family), loras=policy).adapters


@pytest.mark.parametrize("family", ALL)
def test_every_family_takes_loras_and_the_shorthand_in_order_with_their_scales(
    family: str,
) -> None:
    assert asked({"loras": [{"name": "pixel-art", "scale": 0.5}, {"path": "styles/x.safetensors"},
                            {"url": "https://example.com/y.safetensors"}]}, family) == (
        LoraRequest("name", "pixel-art", 0.5, "loras[0]"),
        LoraRequest("path", "styles/x.safetensors", 1.0, "loras[1]"),
        LoraRequest("url", "https://example.com/y.safetensors", 1.0, "loras[2]"),
    )
    assert asked({"lora": "pixel-art", "lora_scale": 2}, family) == (
        LoraRequest("name", "pixel-art", 2.0, "lora"),)
    assert asked({"lora": "sub/x.safetensors"}, family)[0].source == "path"
    assert asked({"lora": "HTTPS://example.com/z"}, family)[0].source == "url"
    assert asked({"loras": [], "lora": None}, family) == ()


def test_a_worker_without_lora_refuses_every_lora_field_by_name() -> None:
    message = problems({"prompt": "a", "loras": [{"name": "x"}]}, "flux")
    assert message == ("invalid input: loras: LoRA is off on this worker (it has no LORA_DIR, "
                       "and LORA_URL_FETCH is off)")
    assert "lora: LoRA is off on this worker" in problems({"prompt": "a", "lora": "x"}, "sdxl")


def test_each_bad_entry_is_named_with_its_index_in_one_line() -> None:
    message = problems({"prompt": "a", "loras": [
        {"name": "x", "scale": 2.5}, {"path": "../up.safetensors"}, "x", {"name": "y", "url": "u"},
        {"name": "x"}, {"nam": "z"},
    ]}, "sd", loras=LoraPolicy(folder=True, max_per_job=9))

    assert message == (
        "invalid input: loras[0].scale: must be between 0 and 2 (got 2.5); loras[1].path: must "
        "stay inside LORA_DIR (a relative path without '..'; got '../up.safetensors'); "
        "loras[2]: must be an object such as {\"name\": ..., \"scale\": 0.8} (got 'x'); "
        "loras[3]: give exactly one of name, path or url; loras[5].nam: unknown field (a LoRA "
        "has one of name, path or url, and scale)"
    )


@pytest.mark.parametrize(("raw", "message"), [
    ({"loras": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]},
     "loras: at most 3 LoRAs per job (LORA_MAX_PER_JOB; got 4)"),
    ({"loras": [{"name": "a"}, {"name": "a", "scale": 0.3}]},
     "loras[1]: the same LoRA as loras[0] (give it once, with the scale wanted)"),
    ({"loras": [{"name": "a"}], "lora": "b"}, "loras: give loras or lora, not both"),
    ({"loras": {"name": "a"}}, "loras: must be a list of LoRAs (got an object)"),
    ({"lora_scale": 0.5}, "lora_scale: only with lora (the scale of that LoRA)"),
    ({"lora": "a", "lora_scale": "1"}, "lora_scale: must be a number (got '1')"),
    ({"lora": "a", "lora_scale": True}, "lora_scale: must be a number (got true)"),
    ({"lora": 5}, "lora: must be a string: a LoRA name, path or URL (got 5)"),
    ({"lora": "  "}, "lora: must not be empty"),
    ({"lora": "/etc/passwd.safetensors"}, "lora: must stay inside LORA_DIR"),
    ({"lora": "a\\b"}, "lora: must not hold a backslash or NUL"),
    ({"loras": [{"name": ".hidden"}]}, "loras[0].name: a file name in LORA_DIR, no folder"),
    ({"loras": [{"url": "ftp://x/y"}]}, "loras[0].url: must be an http(s) URL (got 'ftp://x/y')"),
    ({"loras": [{"url": "https://x/y"}]}, "loras[0].url: URLs are not fetched by this worker "
     "(LORA_URL_FETCH is off): put the LoRA in LORA_DIR and give its name"),
])
def test_lora_values_out_of_bounds_are_refused_naming_the_field(raw: dict[str, Any],
                                                                message: str) -> None:
    assert message in problems({"prompt": "a", **raw}, "sd", loras=FOLDER)


def test_names_and_paths_need_a_lora_folder_and_urls_need_fetching() -> None:
    urls_only = LoraPolicy(urls=True)
    assert "loras[0].name: this worker has no LORA_DIR to find names in (give a url)" in problems(
        {"prompt": "a", "loras": [{"name": "x"}]}, "sd3", loras=urls_only)
    assert asked({"lora": "https://x/y"}, "sd3", urls_only)[0].source == "url"


def test_a_url_is_shown_without_its_query_or_user() -> None:
    label = url_label("https://user:pw@example.com/models/x.safetensors?token=secret#frag")
    assert label == "https://example.com/models/x.safetensors"
    assert LoraRequest("url", "https://h/p?token=t", 1.0, "lora").label == "lora https://h/p"
    assert LoraRequest("name", "pixel", 1.0, "loras[2]").label == "loras[2] 'pixel'"
