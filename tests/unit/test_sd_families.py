"""Pipeline families: detection from model_index.json, and each family's defaults and limits.

Pure: no torch, no diffusers, no network; the weights folders here hold only a model_index.json
(and, for Flux, a transformer/config.json telling dev from schnell). Each family's input schema
otherwise is in test_sd_family_schema.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.families import (
    BY_NAME,
    FLUX_SCHNELL,
    SPECS,
    Family,
    check_limits,
    detect_family,
    family_spec,
)
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import ModelError
from tests.support.sd_family_kit import ALL, spec

REPO_ROOT = Path(__file__).resolve().parents[2]


def weights(tmp_path: Path, class_name: object) -> Path:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return tmp_path


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "family"),
    [
        ("StableDiffusionPipeline", "sd"),
        ("StableDiffusionInpaintPipeline", "sd"),
        ("StableDiffusionXLPipeline", "sdxl"),
        ("StableDiffusionXLImg2ImgPipeline", "sdxl"),
        ("StableDiffusion3Pipeline", "sd3"),
        ("FluxPipeline", "flux"),
        ("FluxImg2ImgPipeline", "flux"),
    ],
)
def test_the_family_is_read_from_model_index_class_name(
    tmp_path: Path, class_name: str, family: str
) -> None:
    assert detect_family(weights(tmp_path, class_name)).family == family


def test_sd_pipeline_forces_a_family_whatever_the_folder_says(tmp_path: Path) -> None:
    folder = weights(tmp_path, "StableDiffusionPipeline")

    assert detect_family(folder, forced="FLUX").family == Family.FLUX
    assert detect_family(tmp_path / "absent", forced="sdxl").family == Family.SDXL
    assert detect_family(folder, forced="auto").family == Family.SD


def flux_weights(tmp_path: Path, transformer_config: str | None,
                 class_name: str = "FluxPipeline") -> Path:
    folder = weights(tmp_path, class_name)
    if transformer_config is not None:
        (folder / "transformer").mkdir()
        (folder / "transformer" / "config.json").write_text(transformer_config)
    return folder


@pytest.mark.parametrize("class_name", ["FluxPipeline", "FluxImg2ImgPipeline",
                                        "FluxInpaintPipeline"])
def test_a_flux_transformer_without_guidance_embedding_is_flux_schnell(
    tmp_path: Path, class_name: str
) -> None:
    folder = flux_weights(tmp_path, json.dumps({"guidance_embeds": False}), class_name)

    found = detect_family(folder)

    assert found == FLUX_SCHNELL
    assert (found.family, found.name, found.label) == (Family.FLUX, "flux-schnell", "Flux schnell")


@pytest.mark.parametrize(
    "transformer_config",
    [json.dumps({"guidance_embeds": True}), None, "{not json", "[false]", json.dumps({}),
     json.dumps({"guidance_embeds": 0})],
    ids=["dev", "missing", "unreadable", "not an object", "no key", "not a boolean"],
)
def test_flux_is_dev_unless_its_transformer_config_says_guidance_embeds_false(
    tmp_path: Path, transformer_config: str | None
) -> None:
    found = detect_family(flux_weights(tmp_path, transformer_config))

    assert found == SPECS[Family.FLUX]
    assert (found.name, found.default_steps, found.default_guidance) == ("flux", 28, 3.5)


def test_forcing_flux_still_tells_schnell_from_a_readable_folder(tmp_path: Path) -> None:
    schnell = flux_weights(tmp_path, json.dumps({"guidance_embeds": False}))

    assert detect_family(schnell, forced="flux") == FLUX_SCHNELL
    assert detect_family(tmp_path / "absent", forced="flux") == SPECS[Family.FLUX]
    assert detect_family(schnell, forced="sd3") == SPECS[Family.SD3]


def test_forcing_flux_schnell_gives_schnell_whatever_the_transformer_config_says(
    tmp_path: Path,
) -> None:
    dev = flux_weights(tmp_path, json.dumps({"guidance_embeds": True}))

    assert detect_family(dev) == SPECS[Family.FLUX]
    assert detect_family(dev, forced="flux-schnell") == FLUX_SCHNELL
    assert detect_family(tmp_path / "absent", forced=" FLUX-Schnell ") == FLUX_SCHNELL


def test_every_spec_is_found_by_its_own_name_and_no_other() -> None:
    assert [family_spec(name) for name in ALL] == [spec(name) for name in ALL]
    assert list(BY_NAME) == ALL
    with pytest.raises(ValueError, match=r"choose auto, sd, sdxl, sd3, flux, flux-schnell$"):
        family_spec("schnell")


def test_an_unknown_forced_family_is_a_model_error_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"SD_PIPELINE: unknown pipeline family 'sd4'.*sdxl"):
        detect_family(tmp_path, forced="sd4")


@pytest.mark.parametrize("class_name", ["KandinskyPipeline", 42, None])
def test_a_pipeline_of_no_known_family_is_refused_by_name(tmp_path: Path, class_name: Any) -> None:
    with pytest.raises(ModelError, match="which podworker does not run"):
        detect_family(weights(tmp_path, class_name))


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_a_missing_or_unreadable_model_index_says_to_set_sd_pipeline(
    tmp_path: Path, content: str | None
) -> None:
    if content is not None:
        (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(ModelError, match="set SD_PIPELINE"):
        detect_family(tmp_path)


def test_every_pipeline_class_belongs_to_one_family_only() -> None:
    names = [n for s in SPECS.values() for n in s.class_names]
    assert len(names) == len(set(names)) == 12


# --- defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "side", "steps", "guidance", "scheduler"),
    [
        ("sd", 512, 25, 7.5, "DDIM"),
        ("sdxl", 1024, 25, 7.5, "EULER"),
        ("sd3", 1024, 28, 7.0, None),
        ("flux", 1024, 28, 3.5, None),
        ("flux-schnell", 1024, 4, 0.0, None),
    ],
)
def test_a_prompt_alone_gets_each_familys_documented_defaults(
    family: str, side: int, steps: int, guidance: float, scheduler: str | None
) -> None:
    parsed = parse_family_input({"prompt": "a cat"}, spec(family))

    assert (parsed.width, parsed.height) == (side, side)
    assert parsed.num_inference_steps == steps
    assert parsed.guidance_scale == guidance
    assert parsed.scheduler == scheduler
    assert parsed.num_outputs == 1
    assert (parsed.seed, parsed.negative_prompt, parsed.init_image, parsed.mask) == (None,) * 4
    assert parsed.prompt_strength is None


@pytest.mark.parametrize("family", ALL)
def test_null_means_the_familys_default(family: str) -> None:
    nulls = {k: None for k in ("width", "height", "num_inference_steps", "guidance_scale",
                               "seed", "num_outputs", "init_image", "mask", "prompt_strength")}
    assert parse_family_input({"prompt": "a", **nulls}, spec(family)) == parse_family_input(
        {"prompt": "a"}, spec(family)
    )


@pytest.mark.parametrize("family", ALL)
def test_the_default_limits_accept_every_familys_defaults(family: str) -> None:
    check_limits(spec(family), SdLimits())


def test_limits_below_a_familys_defaults_are_refused_when_wiring() -> None:
    with pytest.raises(ValueError, match="SD_MAX_PIXELS must be at least 1048576"):
        check_limits(spec("sdxl"), SdLimits(max_pixels=768 * 768))
    with pytest.raises(ValueError, match="SD_MAX_STEPS must be at least 28"):
        check_limits(spec("flux"), SdLimits(max_steps=25))
    check_limits(spec("sd"), SdLimits(max_pixels=512 * 512, max_steps=25))


@pytest.mark.parametrize(
    ("family", "tokens"),
    [("sd", None), ("sdxl", None), ("sd3", None), ("flux", 512), ("flux-schnell", 256)],
)
def test_flux_dev_and_schnell_each_have_their_t5_prompt_length_and_the_others_none(
    family: str, tokens: int | None
) -> None:
    assert spec(family).max_sequence_length == tokens


def test_flux_schnell_takes_an_explicit_guidance_scale_as_templates_send_one() -> None:
    parsed = parse_family_input({"prompt": "a cat", "guidance_scale": 3.5}, spec("flux-schnell"))

    assert (parsed.guidance_scale, parsed.num_inference_steps) == (3.5, 4)


def test_the_limits_are_checked_against_the_variants_own_defaults() -> None:
    few_steps = SdLimits(max_steps=25)

    check_limits(FLUX_SCHNELL, few_steps)  # 4 steps by default
    with pytest.raises(ValueError, match="Flux takes 28 steps by default"):
        check_limits(SPECS[Family.FLUX], few_steps)
    with pytest.raises(ValueError, match="Flux schnell makes 1024x1024 images by default"):
        check_limits(FLUX_SCHNELL, SdLimits(max_pixels=768 * 768))


def test_the_readmes_families_table_gives_each_specs_defaults() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("| family | `_class_name` |")[1].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    specs = {f"`{name}`": s for name, s in BY_NAME.items()}

    assert [row[0] for row in rows] == list(specs)
    for family, _, encoders, size, steps, guidance, negative, _, sides, _ in rows:
        expected = specs[family]
        tokens = expected.max_sequence_length
        assert ("tokens" in encoders) == (tokens is not None), family
        assert tokens is None or encoders.endswith(f"T5 ({tokens} tokens)"), family
        assert size == f"{expected.default_side}²", family
        assert (int(steps), float(guidance.split()[0])) == (
            expected.default_steps, expected.default_guidance), family
        assert negative == ("yes" if expected.negative_prompt else "no"), family
        assert sides == f"\N{MULTIPLICATION SIGN}{expected.side_multiple}", family


def test_importing_the_families_and_image_modules_imports_no_ml_library() -> None:
    code = (
        "import sys\n"
        "import adapters.stable_diffusion.families, adapters.stable_diffusion.job_images\n"
        "import adapters.stable_diffusion.schema\n"
        "import adapters.stable_diffusion.input_images, adapters.http.safe_fetch\n"
        "import adapters.stable_diffusion.tiny\n"
        "import adapters.stable_diffusion.tiny.families, adapters.stable_diffusion.tiny.sd1\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'PIL', 'numpy')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


def test_a_hub_id_is_detected_from_the_local_cache_without_a_download(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--someone--sdxl-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    weights(snapshot, "StableDiffusionXLPipeline")
    (tmp_path / "models--someone--sdxl-model" / "refs").mkdir()
    (tmp_path / "models--someone--sdxl-model" / "refs" / "main").write_text("abc123")

    assert detect_family("someone/sdxl-model", cache_dir=tmp_path).family == Family.SDXL
    with pytest.raises(ModelError, match="set SD_PIPELINE"):
        detect_family("someone/not-cached", cache_dir=tmp_path)


def test_a_cached_hub_id_of_flux_schnell_is_told_from_its_cached_transformer_config(
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "models--someone--schnell" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    flux_weights(snapshot, json.dumps({"guidance_embeds": False}))
    (tmp_path / "models--someone--schnell" / "refs").mkdir()
    (tmp_path / "models--someone--schnell" / "refs" / "main").write_text("abc123")

    assert detect_family("someone/schnell", cache_dir=tmp_path) == FLUX_SCHNELL
    assert detect_family("someone/schnell", "flux", cache_dir=tmp_path) == FLUX_SCHNELL
