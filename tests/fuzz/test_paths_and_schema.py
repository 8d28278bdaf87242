"""Fuzzed job ids against the places they become paths and keys; fuzzed inputs against the
Stable Diffusion schema.

Job ids become file names in the outbox, folders in local storage and S3 key prefixes; output
extensions become file names too. Whatever they hold (``../``, slashes, NUL, unicode, 300
characters), every file lands in its own folder, the id comes back unchanged, and an extension
that is not plain letters and digits is refused. The schema answers every input with a
validated value or one ``InvalidInput`` line, within every limit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.local.storage import LocalFolderStorage
from adapters.outbox.journal import FileOutbox
from adapters.s3.storage import object_key
from adapters.stable_diffusion.limits import SEED_MAX
from domain.errors import InvalidInput, UploadFailed
from domain.job import Artifact, Job, JobResult, safe_name
from tests.support.fuzz_kit import (
    CASES,
    FUZZ_LIMITS,
    TRICKY,
    fuzz_settings,
    odd_text,
    parse_sd,
    sd_inputs,
)

PATH_EXAMPLES = 2500
SCHEMA_EXAMPLES = 3000

any_ids = st.one_of(
    odd_text,
    st.lists(st.sampled_from(["..", ".", "", "a", "%2F", "\\", "\x00"]), min_size=1, max_size=8)
    .map("/".join),
    st.integers(min_value=120, max_value=400).map(lambda n: "../" * (n // 3)),
    st.text(min_size=1, max_size=300),
)
extensions = st.one_of(
    st.sampled_from(["png", "jpg", "webp", "PNG", "a1"]),
    odd_text,
    st.sampled_from(["../../escape", "/abs", "png/../../x", "", ".", "..", "p" * 17]),
)


def test_job_ids_and_extensions_never_put_a_file_outside_its_folder(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    outbox_root, outputs = sandbox / "state" / "outbox", sandbox / "outputs"
    outbox = FileOutbox(outbox_root, fsync=False)
    storage = LocalFolderStorage(outputs)
    count = 0

    @fuzz_settings(PATH_EXAMPLES)
    @given(job_id=any_ids, extension=extensions, index=st.integers(min_value=0, max_value=99))
    def check(job_id: str, extension: str, index: int) -> None:
        nonlocal count
        name = safe_name(job_id)
        assert name and "/" not in name and "\\" not in name and name not in (".", "..")
        assert not name.startswith(".") and len(name) <= 128 + 13

        outbox.put(JobResult.failure(job_id, "x"))
        assert [r.job_id for r in outbox.pending()] == [job_id]  # the id comes back unchanged
        outbox.remove(job_id)
        assert outbox.pending() == []
        assert outbox.started(Job(job_id, {}, 0.0)) == 0
        assert [i for i, _ in outbox.interrupted()] == [job_id]
        outbox.finished(job_id)
        assert outbox.interrupted() == []

        artifact = Artifact(b"data", "image/png", extension)
        plain = extension.isascii() and extension.isalnum() and len(extension) <= 16
        try:
            stored = Path(storage.store(job_id, index, artifact))
        except UploadFailed:
            assert not plain, f"extension {extension!r} refused"
        else:
            assert plain, f"extension {extension!r} accepted"
            assert stored.parent == outputs.resolve() / name
            assert stored.read_bytes() == b"data"
        try:
            key = object_key(job_id, index, artifact)
        except UploadFailed:
            assert not plain
        else:
            assert plain and key == f"{name}/{index}.{extension}"
        count += 1

    try:
        check()
    finally:
        outbox.close()
    assert {p.name for p in tmp_path.iterdir()} == {"sandbox"}
    assert {p.name for p in sandbox.iterdir()} <= {"state", "outputs"}
    escaped = [p for p in outputs.rglob("*") if not p.resolve().is_relative_to(outputs.resolve())]
    assert escaped == []
    # the storage's temporary files are hidden (".3.x8k2.tmp"); "3.tmp" is an output whose
    # generated extension was "tmp"
    assert [p for p in outputs.rglob(".*.tmp")] == [], "temporary files left behind"
    assert {p.name for p in outbox_root.iterdir()} <= {"journal.jsonl", ".lock"}
    CASES["job ids and extensions (outbox, local storage, S3 keys)"] += count
    print(f"paths: {count} generated cases")
    assert count >= PATH_EXAMPLES


def test_two_different_odd_job_ids_get_different_names() -> None:
    count = 0

    @fuzz_settings(500)
    @given(first=any_ids, second=any_ids)
    def check(first: str, second: str) -> None:
        nonlocal count
        if first != second and safe_name(first) != first and safe_name(second) != second:
            assert safe_name(first) != safe_name(second)
        count += 1

    check()
    CASES["distinct odd job ids, distinct names"] += count
    assert count >= 500


def test_a_plain_job_id_shaped_like_an_odd_ids_name_gets_its_own_folder(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    odd = "a/b"
    lookalike = safe_name(odd)  # a plain id, which safe_name keeps as it is
    first = storage.store(odd, 0, Artifact(b"first job's image"))
    second = storage.store(lookalike, 0, Artifact(b"second job's image"))
    assert object_key(odd, 0, Artifact(b"")) != object_key(lookalike, 0, Artifact(b""))
    assert first != second
    assert Path(first).read_bytes() == b"first job's image"


def test_every_fuzzed_input_is_validated_within_the_limits_or_refused_in_one_line() -> None:
    count = 0

    @fuzz_settings(SCHEMA_EXAMPLES)
    @given(raw=sd_inputs())
    def check(raw: dict[str, Any]) -> None:
        nonlocal count
        try:
            params = parse_sd(raw)
        except InvalidInput as exc:
            message = str(exc)
            assert message.startswith("invalid input: ") and "\n" not in message
            assert "https://errors.pydantic.dev" not in message and len(message) <= 4000
            for value in raw.values():  # a long text is never echoed whole
                if isinstance(value, str) and len(value) > 40:
                    assert value not in message
        else:
            assert params.prompt.strip() and len(params.prompt) <= FUZZ_LIMITS.max_prompt_chars
            if params.width is None or params.height is None:  # the init_image's size, later
                assert params.init_image is not None and params.width == params.height
            else:
                assert params.width % 8 == 0 and params.height % 8 == 0
                assert params.width >= 64 and params.height >= 64
                assert params.width * params.height <= FUZZ_LIMITS.max_pixels
            assert 1 <= params.num_outputs <= FUZZ_LIMITS.max_outputs
            assert 1 <= params.num_inference_steps <= FUZZ_LIMITS.max_steps
            assert math.isfinite(params.guidance_scale) and 0 <= params.guidance_scale <= 20
            assert params.seed is None or 0 <= params.seed <= SEED_MAX
            assert (params.prompt_strength is not None) == (params.init_image is not None)
            assert params.mask is None or params.init_image is not None
            for name in ("image", "mask_image"):  # diffusers' names, not ours
                assert name not in raw, f"{name} accepted"
        count += 1

    check()
    CASES["Stable Diffusion inputs (schema)"] += count
    print(f"schema: {count} generated cases")
    assert count >= SCHEMA_EXAMPLES


def test_no_tricky_piece_survives_into_a_name() -> None:
    """Every piece in ``TRICKY`` (slashes, NUL, dots...) is cleaned out of a name."""
    for piece in TRICKY:
        name = safe_name(f"job{piece}id")
        assert "/" not in name and "\\" not in name and "\x00" not in name
