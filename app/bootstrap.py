"""The composition root: builds the worker and its stages from settings. Every adapter can be
swapped.

``build_worker(settings, job_api=..., model=..., ...)`` uses the adapters it is given and builds
production ones for the rest, from the settings. Heavy adapters (boto3, diffusers) are imported
here, inside the functions that need them, so a worker that does not use them never loads them.
Settings (milliseconds) become a frozen :class:`~app.config.WorkerConfig` (seconds) here, once.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from adapters.clock import SystemClock
from adapters.host.memory import ProcessMemory
from adapters.host.start_history import FileStartHistory
from adapters.local.echo_model import EchoModel
from adapters.local.job_api import InMemoryJobApi
from adapters.local.outbox import InMemoryOutbox
from adapters.local.pod_control import RecordingPodControl
from adapters.local.start_history import InMemoryStartHistory
from adapters.local.storage import DataUrlStorage, LocalFolderStorage
from adapters.outbox.journal import FileOutbox
from adapters.runpod.job_api import RunPodJobApi
from app.config import WorkerConfig, config_from
from app.heartbeat import Heartbeat
from app.intake import Intake
from app.job_stops import JobStops
from app.messages import Inbox
from app.metrics import Metrics
from app.model_runner import ModelRunner
from app.plugins import FactoryFailed, FactoryRaised, OneByOneStorage, load_factory
from app.posting import Poster
from app.recycling import Recycler
from app.settings import Settings, StorageKind
from app.stages import Board, Stages
from app.startup import StartupPhases
from app.storing import Storer
from app.worker import Worker
from domain.errors import ConfigurationError
from domain.ports import (
    Clock,
    JobApi,
    JobStopSource,
    MemoryGauge,
    Model,
    PodControl,
    StartHistory,
    Storage,
)
from domain.scrubbing import Scrubber

log = logging.getLogger("podworker.bootstrap")


def secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


LIBRARY_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN")
"""Secrets that libraries a model uses read from the environment (Hugging Face's hub, boto's
credential chain): scrubbed too, since a library may log them while the model loads, and a
failed start's job error carries the log's tail."""


def redactor_for(settings: Settings, environ: Mapping[str, str] | None = None) -> Scrubber:
    """The scrubber that knows every secret in ``settings``, and the :data:`LIBRARY_SECRETS`
    set in ``environ`` (the process's environment by default)."""
    environ = os.environ if environ is None else environ
    return Scrubber(
        [*(secret(getattr(settings, name))
           for name in ("AI_API_KEY", "RUNPOD_API_KEY", "BUCKET_ACCESS_KEY_ID",
                        "BUCKET_SECRET_ACCESS_KEY")),
         settings.queue_password,
         *(environ.get(name) for name in LIBRARY_SECRETS)]
    )


PROCESS_WORKER_ID = f"podworker-{uuid.uuid4().hex[:12]}"
"""This process's worker id when RUNPOD_POD_ID is unset: made once, so the ``pod_id`` in the logs
and the ``workerId`` the platform sees (take, ping and result URLs) are the same id."""


def worker_id(settings: Settings) -> str:
    """RUNPOD_POD_ID, else this process's own random id (the same on every call)."""
    return settings.RUNPOD_POD_ID or PROCESS_WORKER_ID


def build_job_api(settings: Settings, clock: Clock, pod_id: str) -> RunPodJobApi:
    """The RunPod HTTP job API (it is also the job-stop source)."""
    assert settings.WEBHOOK_GET_WORK is not None
    if settings.WEBHOOK_POST_OUTPUT is None:
        raise ConfigurationError(
            "invalid setting WEBHOOK_POST_OUTPUT: required when WEBHOOK_GET_WORK is set "
            "(or RUNPOD_WEBHOOK_POST_OUTPUT)"
        )
    config = config_from(settings).job_api
    return RunPodJobApi(
        take_url=settings.WEBHOOK_GET_WORK,
        result_url=settings.WEBHOOK_POST_OUTPUT,
        ping_url=settings.WEBHOOK_PING,
        stream_url=settings.WEBHOOK_POST_STREAM,
        api_key=secret(settings.AI_API_KEY),
        worker_id=pod_id,
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.request_timeout_s,
        take_timeout=config.take_timeout_s,
        max_input_bytes=settings.MAX_INPUT_BYTES,
        clock=clock,
        scrub=redactor_for(settings),
    )


def build_pod_control(
    settings: Settings, pod_id: str, interrupt: threading.Event | None = None
) -> PodControl:
    """RunPod's GraphQL pod control when a key and a pod id are set; else a recorder."""
    api_key = secret(settings.RUNPOD_API_KEY)
    if settings.local_mode or not api_key or not settings.RUNPOD_POD_ID:
        if not settings.local_mode and not settings.never_self_terminates:
            log.warning(
                "RUNPOD_API_KEY or RUNPOD_POD_ID is not set: when idle, this worker will exit "
                "but cannot delete its pod", extra={"event": "no_pod_control"},
            )
        return RecordingPodControl(pod_id)
    from adapters.runpod.pod_control import RunPodPodControl

    return RunPodPodControl(settings.RUNPOD_API_URL, api_key, settings.RUNPOD_POD_ID,
                            scrub=redactor_for(settings), interrupt=interrupt)


def storage_kind(settings: Settings) -> StorageKind | None:
    """The built-in storage chosen, or None for a ``module:factory`` one."""
    if ":" in settings.STORAGE:
        return None
    kind = StorageKind(settings.STORAGE)
    if kind is StorageKind.AUTO:
        return StorageKind.S3 if settings.BUCKET_ENDPOINT_URL else StorageKind.LOCAL
    return kind


def build_storage(settings: Settings, interrupt: threading.Event | None = None) -> Storage:
    """The storage STORAGE names; ``interrupt`` (the worker's stop) ends S3's retry waits."""
    kind = storage_kind(settings)
    if kind is None:
        return OneByOneStorage(load_factory(settings.STORAGE, "STORAGE", settings, ("store",)))
    if kind is StorageKind.LOCAL:
        return LocalFolderStorage(settings.OUTPUT_DIR)
    if kind is StorageKind.BASE64:
        return DataUrlStorage()
    from adapters.s3.storage import S3Storage

    if not settings.BUCKET_ENDPOINT_URL:
        raise ConfigurationError("invalid setting BUCKET_ENDPOINT_URL: required with STORAGE=s3")
    monthly = settings.BUCKET_NAMING == "monthly"
    if monthly and settings.BUCKET_NAME:
        log.warning("BUCKET_NAMING=monthly: BUCKET_NAME is ignored", extra={"event": "config"})
    storage: Storage = S3Storage(
        endpoint_url=settings.BUCKET_ENDPOINT_URL,
        access_key_id=secret(settings.BUCKET_ACCESS_KEY_ID),
        secret_access_key=secret(settings.BUCKET_SECRET_ACCESS_KEY),
        bucket=None if monthly else settings.BUCKET_NAME,
        bucket_naming=settings.BUCKET_NAMING.value,
        region=settings.BUCKET_REGION,
        public_urls=settings.BUCKET_PUBLIC_URLS,
        url_expiry_s=settings.BUCKET_URL_EXPIRY,
        timeout_s=settings.BUCKET_TIMEOUT / 1000,
        interrupt=interrupt,
    )
    return storage


def build_model(settings: Settings) -> Model:
    """``echo``, ``stable_diffusion``, or ``module:factory`` (called with the settings; one that
    raises gives :class:`~app.plugins.FactoryFailed`, a model whose load fails with its error)."""
    name = settings.MODEL  # validated and normalised by the settings
    if name == "echo":
        return EchoModel(delay_s=settings.ECHO_DELAY_MS / 1000, fail=settings.ECHO_FAIL)
    if name == "stable_diffusion":
        from app.sd_wiring import build_stable_diffusion

        return build_stable_diffusion(settings)
    try:
        return load_factory(name, "MODEL", settings, ("load", "run"))  # type: ignore[no-any-return]
    except FactoryRaised as exc:  # a model that could not start, not a mistaken setting
        return FactoryFailed(name, exc.error)


def build_worker(
    settings: Settings,
    *,
    job_api: JobApi | None = None,
    stop_source: JobStopSource | None = None,
    storage: Storage | None = None,
    pod_control: PodControl | None = None,
    model: Model | None = None,
    outbox: FileOutbox | InMemoryOutbox | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    config: WorkerConfig | None = None,
    history: StartHistory | None = None,
    memory: MemoryGauge | None = None,
) -> Worker:
    """The worker with the given adapters, and production ones (from settings) for the rest."""
    clock = clock or SystemClock()
    startup = StartupPhases(clock)  # the start-up deadline counts from here
    pod_id = worker_id(settings)
    if job_api is None:
        if settings.local_mode:
            raise ConfigurationError("local mode needs a job source: use app.local_run")
        if settings.JOB_QUEUE is not None:  # jobs on Redis Streams (a team's own cluster)
            from app.queue_wiring import build_queue_job_api, build_queue_pod_control

            queue_api = build_queue_job_api(settings, clock, pod_id, redactor_for(settings))
            job_api, stop_source = queue_api, stop_source or queue_api
            pod_control = pod_control or build_queue_pod_control(pod_id)
        else:
            http_api = build_job_api(settings, clock, pod_id)
            job_api = http_api
            if stop_source is None and http_api.stop_polling:
                stop_source = http_api
    interrupt = threading.Event()
    storage = storage or build_storage(settings, interrupt)
    pod_control = pod_control or build_pod_control(settings, pod_id, interrupt)
    startup.phase("import")  # the model's module and factory
    return assemble(
        config=config or config_from(settings),
        job_api=job_api,
        stop_source=stop_source,
        storage=storage,
        pod_control=pod_control,
        model=model or build_model(settings),
        outbox=outbox if outbox is not None else open_outbox(settings),
        clock=clock,
        metrics=metrics or Metrics(),
        scrub=redactor_for(settings),
        interrupt=interrupt,
        startup=startup,
        history=history or (InMemoryStartHistory() if settings.local_mode
                            else FileStartHistory(settings.STATE_DIR)),
        memory=memory,
    )


def assemble(
    *,
    config: WorkerConfig,
    job_api: JobApi,
    stop_source: JobStopSource | None,
    storage: Storage,
    pod_control: PodControl,
    model: Model,
    outbox: FileOutbox | InMemoryOutbox,
    clock: Clock,
    metrics: Metrics,
    scrub: Scrubber,
    interrupt: threading.Event | None = None,
    startup: StartupPhases | None = None,
    history: StartHistory | None = None,
    memory: MemoryGauge | None = None,
) -> Worker:
    """Wire the stages around the controller (tests call this with fakes directly)."""
    inbox = Inbox()
    memory = memory or ProcessMemory()
    poster = Poster(job_api=job_api, outbox=outbox, clock=clock, metrics=metrics, inbox=inbox,
                    scrub=scrub, lanes=config.slots)
    storer = Storer(storage=storage, outbox=outbox, marks=outbox, poster=poster, clock=clock,
                    metrics=metrics, max_result_bytes=config.max_result_bytes, scrub=scrub)
    board = Board()
    stages = Stages(
        intake=Intake(job_api, clock, inbox),
        runner=ModelRunner(model, clock, inbox, scrub, concurrency=config.slots,
                           on_chunk=storer.stream, aggregate=config.stream_aggregate,
                           startup=startup or StartupPhases(clock)),
        storer=storer,
        poster=poster,
        heartbeat=Heartbeat(job_api, config.ping_interval_s, lambda: board.snapshot.in_flight),
        job_stops=JobStops(stop_source, clock, inbox) if stop_source is not None else None,
    )
    metrics.gauge("undelivered_results", "Results not yet accepted by the job API.",
                  lambda: float(board.snapshot.undelivered))
    metrics.gauge("seconds_since_last_job", "Seconds since the last result was delivered.",
                  lambda: clock.now() - board.snapshot.last_activity)
    metrics.gauge("process_resident_bytes", "Resident memory of the worker process (MAX_RSS_MB).",
                  lambda: float(memory.rss_bytes() or 0))
    return Worker(stages=stages, inbox=inbox, outbox=outbox, marks=outbox, board=board,
                  pod_control=pod_control, clock=clock, config=config, metrics=metrics,
                  recycler=Recycler(config.recycle, memory),
                  history=history or InMemoryStartHistory(), scrub=scrub, interrupt=interrupt)


def open_outbox(settings: Settings) -> FileOutbox:
    try:
        return FileOutbox(settings.STATE_DIR / "outbox")
    except OSError as exc:
        raise ConfigurationError(
            f"invalid setting STATE_DIR: cannot keep the outbox in {settings.STATE_DIR} "
            f"({exc.strerror or exc})"
        ) from None


def build_local_job_api(jobs: list[dict[str, Any]], clock: Clock) -> InMemoryJobApi:
    api = InMemoryJobApi(clock)
    api.submit_many(jobs)
    return api
