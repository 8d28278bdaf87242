"""Fuzzed jobs through the worker loop: every one answered clearly, the worker never stops.

One worker (the real ``Worker`` with its model, delivery and heartbeat threads) runs for the
whole test on the in-memory job API, a file outbox and folder storage inside a sandbox folder,
with a model that validates inputs with the Stable Diffusion schema and returns one image.
Each example is one job payload as the wire would carry it. Every payload with a readable id
gets exactly one result: the validated input, or an error saying ``invalid input: ...``; every
payload without one is rejected and answered by nobody. Nothing is written outside the
sandbox's ``state`` and ``outputs`` folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from adapters.local.storage import LocalFolderStorage
from adapters.outbox.journal import FileOutbox, peek
from app.stages import ExitCode
from domain.errors import InvalidInput
from domain.lifecycle import LifecyclePolicy
from tests.support.fuzz_kit import (
    CASES,
    SchemaCheckingModel,
    envelopes,
    fuzz_settings,
    over_the_wire,
    parse_sd,
    readable_id,
    runnable_id,
)
from tests.support.harness import make_harness, wait_until

WORKER_EXAMPLES = 3000
MAX_INPUT_BYTES = 4096


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def expected_error(job_input: Any) -> str | None:
    """The error the worker must answer ``job_input`` with, or None when it is valid."""
    if not isinstance(job_input, dict):
        return None  # checked by prefix below: the envelope was malformed
    size = len(json.dumps(job_input, separators=(",", ":")).encode())
    if size > MAX_INPUT_BYTES:
        return f"invalid input: input is {size} bytes, over the limit of {MAX_INPUT_BYTES} bytes"
    try:
        parse_sd(job_input)
    except InvalidInput as exc:
        return str(exc)
    return None


# thousands of cases through a real worker: minutes on a loaded 2-core machine (a safety net,
# not a time budget)
@pytest.mark.timeout(900)
def test_every_fuzzed_job_gets_one_clear_answer_and_the_worker_keeps_running(
    tmp_path: Path,
) -> None:
    sandbox = tmp_path / "sandbox"
    state, outputs = sandbox / "state", sandbox / "outputs"
    outbox = FileOutbox(state / "outbox", fsync=False)
    harness = make_harness(
        sandbox,
        model=SchemaCheckingModel(),
        outbox=outbox,
        storage=LocalFolderStorage(outputs),
        policy=LifecyclePolicy(idle_ttl=None, execution_timeout=30.0),
        max_input_bytes=MAX_INPUT_BYTES,
    ).start()
    api = harness.api
    count = 0

    @fuzz_settings(WORKER_EXAMPLES)
    @given(payload=envelopes())
    def check(payload: Any) -> None:
        nonlocal count
        payload = over_the_wire(payload)
        # the last answer is fully accounted for: hypothesis may hand out the same id again, and
        # an id the worker still holds would be a duplicate, answered by its first copy
        wait_until(lambda: harness.worker.snapshot.in_flight == (), timeout=10,
                   what="the worker to hold nothing")
        job_id = readable_id(payload)
        answers = [r for r in api.posted if r.job_id == job_id]
        rejected = len(api.rejected)
        api.submit_raw(payload)
        if job_id is None:
            wait_until(lambda: len(api.rejected) > rejected, timeout=10, what="the rejection")
            assert harness.thread is not None and harness.thread.is_alive(), "the worker stopped"
            assert job_id not in {r.job_id for r in api.posted}
            count += 1
            return
        wait_until(lambda: sum(r.job_id == job_id for r in api.posted) > len(answers),
                   timeout=10, what="the job's answer")
        assert harness.thread is not None and harness.thread.is_alive(), "the worker stopped"
        [result] = [r for r in api.posted if r.job_id == job_id][len(answers):]
        job_input = payload.get("input")
        if not runnable_id(job_id):  # too long or unprintable: answered, never run
            assert result.error is not None and result.error.startswith("invalid input: job id ")
        elif not isinstance(job_input, dict):
            assert result.error is not None
            assert result.error.startswith("invalid input: input must be a JSON object, got ")
        elif (error := expected_error(job_input)) is not None:
            assert result.error == error
        else:
            assert result.error is None, result.error
            assert result.output["input"] == parse_sd(job_input).model_dump(mode="json")
            stored = Path(result.output["image"]).resolve()
            assert stored.is_relative_to(outputs.resolve()) and stored.is_file()
        if result.error is not None:
            assert result.error.startswith("invalid input: ")
            assert "\n" not in result.error and len(result.error) <= 4000
        count += 1

    try:
        check()
        assert harness.stop() is ExitCode.OK
    finally:
        harness.worker.request_stop("test over")
        outbox.close()
    assert set(sandbox.iterdir()) <= {state, outputs}, "something was written beside them"
    assert {p.name for p in tmp_path.iterdir()} == {"sandbox"}
    assert {p.name for p in files_under(state)} <= {"journal.jsonl", ".lock"}
    assert peek(state / "outbox") == [], "a result was left in the outbox"
    CASES["job payloads (worker loop, SD schema)"] += count
    print(f"worker loop: {count} generated cases")
    assert count >= WORKER_EXAMPLES

