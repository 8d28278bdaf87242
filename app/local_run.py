"""The local run (the seed's ``TEST_LOCAL`` mode): run the jobs in ``test_inputs.json``.

It uses the same worker as production with local adapters: an in-memory job API fed from the
file, local-folder storage (or S3 when a bucket is configured), a pod control that only
records, an in-memory outbox. It prints each result as JSON on standard output and exits 0
when every job succeeded, 1 when one failed, 4 when the model could not be loaded (each job's
result then says why).

Standard output holds the results and nothing else: whatever the model (or a library) prints
while the worker runs goes to standard error, so ``podworker run > results.json`` is JSON. A
job whose output folder already holds files from an earlier run is named in a warning before
they are replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from adapters.clock import SystemClock
from adapters.local.outbox import InMemoryOutbox
from adapters.local.pod_control import RecordingPodControl
from adapters.local.storage import LocalFolderStorage
from adapters.local.test_inputs import read_test_inputs
from app.bootstrap import build_local_job_api, build_worker, storage_kind
from app.config import config_from
from app.settings import Settings, StorageKind
from app.signals import install_stop_handlers
from app.stages import ExitCode
from domain.job import JobResult
from domain.ports import Model

log = logging.getLogger("podworker.local")


def run_local(
    settings: Settings,
    test_input: Path | None = None,
    *,
    out: TextIO | None = None,
    model: Model | None = None,
    jobs: list[dict[str, Any]] | None = None,
) -> int:
    """Run ``jobs`` (or those in ``test_input``, else ``TEST_INPUT_FILE``); print the results;
    0 when every job succeeded, else 1 (or the worker's own exit code: 4 when the model could
    not be loaded)."""
    out = out or sys.stdout
    if jobs is None:
        jobs = read_test_inputs(test_input or settings.TEST_INPUT_FILE)
    warn_about_earlier_outputs(settings, [str(job["id"]) for job in jobs])
    clock = SystemClock()
    api = build_local_job_api(jobs, clock)
    with contextlib.redirect_stdout(sys.stderr):  # the model's prints stay off the results
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
        error = f"model could not be loaded: {failure.error if failure is not None else ''}"
        results = [JobResult.failure(str(job["id"]), error) for job in jobs]
    records = [result.to_json() for result in results]
    print(json.dumps(records[0] if len(records) == 1 else records, indent=2), file=out)
    if code is not ExitCode.OK:
        return int(code)
    all_ok = len(results) == len(jobs) and all(result.ok for result in results)
    return int(ExitCode.OK if all_ok else ExitCode.JOB_FAILED)


def warn_about_earlier_outputs(settings: Settings, job_ids: list[str]) -> None:
    """A warning for each job whose output folder already holds files (an earlier run's, such
    as another family's images): they are about to be replaced."""
    if storage_kind(settings) is not StorageKind.LOCAL:
        return
    storage = LocalFolderStorage(settings.OUTPUT_DIR)
    for job_id in job_ids:
        folder = storage.folder_of(job_id)
        with contextlib.suppress(OSError):
            if folder.is_dir() and any(folder.iterdir()):
                log.warning(
                    "%s holds an earlier run's outputs: this run replaces them (move them away, "
                    "or set OUTPUT_DIR, to keep them)", folder, extra={"event": "outputs_replaced"},
                )
