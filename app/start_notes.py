"""What the worker says first: its mode, where its jobs come from and where images go, and any
setting that looks mistyped.

Why: the mode is decided by whether a take webhook is set, so settings pasted without
``export`` (or misspelt) silently give a local run of ``test_inputs.json`` instead of a worker
taking jobs. One line at start saying which it is, and why, makes that visible.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from app.settings import Settings, StorageKind
from app.settings_typos import suspicious_settings

log = logging.getLogger("podworker.start")


def log_start(
    settings: Settings, *, test_input: Path | None, env_file: str | Path | None,
    environ: Mapping[str, str], handler: bool = False,
) -> None:
    """Log the mode line, then one warning per setting that looks mistyped (for a RunPod
    ``handler``, whose environment is its own too, only near-misses of podworker's names)."""
    log.info(mode_line(settings, test_input), extra={"event": "mode"})
    for suspect in suspicious_settings(environ, env_file, prefixes=not handler):
        log.warning(suspect.describe(), extra={"event": "unknown_setting"})


def mode_line(settings: Settings, test_input: Path | None = None) -> str:
    """``local run (...): ...`` or ``pod mode: ...``: where the jobs come from and the images
    go."""
    images = f"images {outputs_place(settings)}"
    if settings.local_mode:
        why = "TEST_LOCAL=true" if settings.TEST_LOCAL else "no take webhook or JOB_QUEUE is set"
        jobs = test_input or settings.TEST_INPUT_FILE
        line = (f"local run ({why}): the jobs in {jobs}, results printed on standard output, "
                f"{images}")
        if not settings.TEST_LOCAL:
            line += ("; to take jobs from a job API, export WEBHOOK_GET_WORK (or "
                     "RUNPOD_WEBHOOK_GET_JOB) and its companions, or JOB_QUEUE")
        return line
    from adapters.http.parts import host_of
    from app.bootstrap import worker_id

    if settings.JOB_QUEUE is not None:  # host_of drops a password the URL may hold
        source = f"the Redis queue {settings.JOB_QUEUE_NAME} at {host_of(settings.JOB_QUEUE)}"
    else:
        source = f"the job API at {host_of(settings.WEBHOOK_GET_WORK or '')}"
    return f"pod mode: taking jobs from {source} as worker {worker_id(settings)}, {images}"


def outputs_place(settings: Settings) -> str:
    """Where binary outputs go, in a few words."""
    from app.bootstrap import storage_kind

    kind = storage_kind(settings)
    if kind is StorageKind.LOCAL:
        return f"written under {settings.OUTPUT_DIR}/"
    if kind is StorageKind.BASE64:
        return "returned inside the results as data URLs"
    if kind is StorageKind.S3:
        from adapters.http.parts import host_of

        monthly = settings.BUCKET_NAMING == "monthly"
        bucket = "this month's bucket (MM-YY)" if monthly else f"bucket {settings.BUCKET_NAME}"
        endpoint = settings.BUCKET_ENDPOINT_URL
        return f"uploaded to {bucket} at {host_of(endpoint) if endpoint else '?'}"
    return f"stored by {settings.STORAGE}"
