"""The local run (the seed's ``TEST_LOCAL`` mode): run the jobs in ``test_inputs.json``.

It uses the same worker as production with local adapters: an in-memory job API fed from the
file, local-folder storage (or S3 when a bucket is configured), a pod control that only
records, an in-memory outbox. It prints each result as JSON on standard output and exits 0
when every job succeeded, 1 when one failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from adapters.clock import SystemClock
from adapters.local.outbox import InMemoryOutbox
from adapters.local.pod_control import RecordingPodControl
from adapters.local.test_inputs import read_test_inputs
from app.bootstrap import build_local_job_api, build_worker
from app.config import config_from
from app.settings import Settings
from app.signals import install_stop_handlers
from app.stages import ExitCode
from domain.job import JobResult
from domain.ports import Model


def run_local(
    settings: Settings,
    test_input: Path | None = None,
    *,
    out: TextIO | None = None,
    model: Model | None = None,
    jobs: list[dict[str, Any]] | None = None,
) -> int:
    """Run ``jobs`` (or those in ``test_input``, else ``TEST_INPUT_FILE``); print the results;
    0 when every job succeeded, else 1 (or the worker's own exit code)."""
    out = out or sys.stdout
    if jobs is None:
        jobs = read_test_inputs(test_input or settings.TEST_INPUT_FILE)
    clock = SystemClock()
    api = build_local_job_api(jobs, clock)
    worker = build_worker(
        settings,
        job_api=api,
        stop_source=api,
        outbox=InMemoryOutbox(),
        pod_control=RecordingPodControl(),
        model=model,
        clock=clock,
        config=config_from(settings, stop_when_drained=True),
    )
    install_stop_handlers(worker.request_stop)
    code = worker.run()
    results = [api.results[str(job["id"])] for job in jobs if str(job["id"]) in api.results]
    if code in (ExitCode.MODEL_LOAD, ExitCode.STARTUP_TIMEOUT):
        failure = worker.start_failure
        why = worker.model_load_error or (failure.error if failure is not None else "")
        error = f"model could not be loaded: {why}"
        results = [JobResult.failure(str(job["id"]), error) for job in jobs]
    records = [result.to_json() for result in results]
    print(json.dumps(records[0] if len(records) == 1 else records, indent=2), file=out)
    if code not in (ExitCode.OK, ExitCode.MODEL_LOAD):
        return int(code)
    all_ok = len(results) == len(jobs) and all(result.ok for result in results)
    return int(ExitCode.OK if all_ok else ExitCode.JOB_FAILED)
