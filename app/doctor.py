"""``python -m app doctor``: is this pod ready to work? A table of checks, and what to fix.

It checks the configuration (and names that look like mistyped settings), that the job API
and the bucket answer (without taking a job), that outputs outlive the pod and an idle pod can
delete itself, the GPU, which weights were found where (a folder, or a hub id in which cache)
and the LoRA folder, that the weights load, and the free disk and memory. It connects only to
what the configuration names (the job API's host, the bucket's endpoint) and prints no secret.
The exit code is 0 only when no check failed (warnings allowed).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from app.settings import Settings, load_settings
from app.settings_typos import suspicious_settings
from app.setup_hint import SETUP
from domain.errors import ConfigurationError, PodworkerError

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MIN_FREE_DISK = 2 * 1024**3
MIN_FREE_MEMORY = 1 * 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_job_api(settings: Settings) -> Check:
    """An HTTP request to the job API's host that takes no job: a ping when a ping URL is set
    (the platform expects those), else a GET of the take URL's origin (any answer counts)."""
    from adapters.http.client import HttpClient, HttpFailure
    from adapters.http.parts import fill, host_of

    if settings.local_mode:
        return Check("job API", SKIP, "local mode: no take webhook configured")
    if settings.JOB_QUEUE is not None:  # jobs on Redis Streams instead of RunPod's webhooks
        from app.queue_wiring import check_queue

        return check_queue(settings)
    assert settings.WEBHOOK_GET_WORK is not None
    parts = urlsplit(settings.WEBHOOK_GET_WORK)
    host = host_of(settings.WEBHOOK_GET_WORK)
    if settings.WEBHOOK_PING:
        url = fill(settings.WEBHOOK_PING, pod_id=settings.RUNPOD_POD_ID or "doctor")
    else:
        url = f"{parts.scheme}://{parts.netloc}/"
    headers = {}
    if settings.AI_API_KEY is not None:
        headers["Authorization"] = settings.AI_API_KEY.get_secret_value()
    try:
        response = HttpClient(max_connections=1).request(
            "GET", url, headers=headers, deadline_s=settings.JOB_API_TIMEOUT / 1000,
            max_answer_bytes=64 * 1024)
    except HttpFailure as exc:
        return Check("job API", FAIL, f"{host} did not answer ({exc})",
                     "check WEBHOOK_GET_WORK and that the job API is reachable from this pod")
    if response.status in (401, 403):
        return Check("job API", FAIL, f"{host} refused the key (HTTP {response.status})",
                     "check AI_API_KEY (or RUNPOD_AI_API_KEY)")
    if response.status >= 500:
        return Check("job API", FAIL, f"{host} answered HTTP {response.status}",
                     "the job API is failing; try again later")
    return Check("job API", OK, f"{host} answered HTTP {response.status}")


def check_storage(settings: Settings) -> Check:
    from app.bootstrap import build_storage, storage_kind

    kind = storage_kind(settings)
    try:
        storage = build_storage(settings)
    except ConfigurationError as exc:
        return Check("storage", FAIL, str(exc), "fix the BUCKET_* settings")
    check = getattr(storage, "check", None)
    if kind is None or not callable(check):
        where = getattr(storage, "root", None)
        if where is not None and not settings.local_mode:  # a pod's disk goes with the pod
            return Check("storage", WARN, f"local folder {where}: the images stay on this "
                         "pod's disk, which is deleted with the pod, and clients get a path "
                         "they cannot open", "set the BUCKET_* settings (or STORAGE=base64 for "
                         "small images)")
        if where is not None:
            return Check("storage", OK, f"local folder {where}")
        return Check("storage", OK, f"{settings.STORAGE} (no check available)")
    try:
        check()
    except PodworkerError as exc:
        return Check("storage", FAIL, str(exc), "fix the BUCKET_* settings or the bucket")
    endpoint = urlsplit(settings.BUCKET_ENDPOINT_URL or "").netloc
    return Check("storage", OK, f"bucket answers at {endpoint}")


def check_self_termination(settings: Settings) -> Check:
    """Can an idle pod delete itself? It needs RUNPOD_API_KEY and RUNPOD_POD_ID."""
    if settings.local_mode:
        return Check("pod control", SKIP, "local mode: no pod to delete")
    if settings.never_self_terminates:
        why = "WORKER_ZERO=true" if settings.WORKER_ZERO else "TERMINATE_IDLE_TIME=0"
        return Check("pod control", OK, f"this pod never deletes itself ({why})")
    if settings.JOB_QUEUE is not None:  # as bootstrap wires it: nothing to delete
        return Check("pod control", OK, f"idle for {settings.TERMINATE_IDLE_TIME / 1000:g} s, "
                     "the worker exits 0 and its Kubernetes Job completes")
    key = settings.RUNPOD_API_KEY.get_secret_value() if settings.RUNPOD_API_KEY else ""
    missing = [name for name, value in (("RUNPOD_API_KEY", key),
                                        ("RUNPOD_POD_ID", settings.RUNPOD_POD_ID)) if not value]
    if missing:
        return Check("pod control", WARN, f"{' and '.join(missing)} not set: when idle, the "
                     "worker exits but cannot delete its pod, which goes on costing money",
                     "set RUNPOD_API_KEY (RunPod sets RUNPOD_POD_ID on its pods)")
    return Check("pod control", OK, f"idle for {settings.TERMINATE_IDLE_TIME / 1000:g} s, the "
                 f"pod deletes itself through {urlsplit(settings.RUNPOD_API_URL).netloc}")


def check_gpu(settings: Settings) -> Check:
    try:
        import torch
    except ImportError:
        return Check("GPU", WARN, "torch is not installed", "install the [sd] extra for models")
    if not torch.cuda.is_available():
        status = FAIL if settings.MODEL_DEVICE == "cuda" else WARN
        return Check("GPU", status, "no CUDA GPU visible: models run on the CPU",
                     "run on a GPU pod, or set MODEL_DEVICE=cpu on purpose")
    name = torch.cuda.get_device_name(0)
    free, total = torch.cuda.mem_get_info(0)
    return Check("GPU", OK, f"{name}, {free / 1024**3:.1f} of {total / 1024**3:.1f} GiB free")


def check_weights(settings: Settings) -> Check:
    """Which weights MODEL_PATH names, and where they were found (without loading them)."""
    from app.sd_wiring import found_weights, hub_caches

    if settings.MODEL != "stable_diffusion":
        return Check("weights", SKIP, f"MODEL={settings.MODEL} brings its own")
    path = settings.MODEL_PATH
    if path is None:
        status = OK if settings.local_mode else FAIL
        return Check("weights", status, "MODEL_PATH unset: a tiny random pipeline (local runs "
                     "only)", "set MODEL_PATH to a folder of weights or a hub id")
    folder = Path(path).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            return Check("weights", FAIL, f"folder {folder} has no model_index.json",
                         "MODEL_PATH must be a diffusers pipeline folder")
        return Check("weights", OK, f"folder {folder} ({_weights_size(folder)})")
    found = found_weights(path, settings)
    if found is None:
        searched = ", ".join(f"{cache}{'' if cache.is_dir() else ' (absent)'}"
                             for cache in hub_caches(settings))
        status = WARN if settings.MODEL_ALLOW_DOWNLOAD else FAIL
        return Check("weights", status, f"{path} is not a folder and is in no cache searched: "
                     f"{searched}", "bake the weights, put them on the volume, add their cache "
                     "to MODEL_CACHE_DIRS, or allow downloads (MODEL_ALLOW_DOWNLOAD=true)")
    from adapters.stable_diffusion.weights_cache import missing_parts

    missing = missing_parts(found.snapshot)
    detail = (f"{found.hub_id} found in {found.cache} (snapshot {found.revision[:12]}, "
              f"{_weights_size(found.snapshot)})")
    if missing:
        return Check("weights", FAIL, f"{detail}, without {', '.join(missing)}",
                     "the cached copy is incomplete: download it again")
    return Check("weights", OK, detail)


def check_loras(settings: Settings) -> Check:
    """The LoRA folder and whether URL LoRAs are fetched."""
    if settings.MODEL != "stable_diffusion":
        return Check("LoRAs", SKIP, f"MODEL={settings.MODEL}")
    urls = "URLs fetched" if settings.LORA_URL_FETCH else "no URLs"
    if settings.LORA_DIR is None:
        return Check("LoRAs", SKIP if not settings.LORA_URL_FETCH else OK,
                     f"no LORA_DIR; {urls}")
    if not settings.LORA_DIR.is_dir():
        return Check("LoRAs", FAIL, f"LORA_DIR {settings.LORA_DIR} is not a folder",
                     "mount the volume holding the LoRAs, or fix LORA_DIR")
    count = sum(1 for _ in settings.LORA_DIR.rglob("*.safetensors"))
    return Check("LoRAs", OK, f"{count} .safetensors file(s) in {settings.LORA_DIR}; {urls}")


def _weights_size(folder: Path) -> str:
    files = [f for f in folder.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    tensors = sum(1 for f in files if f.suffix == ".safetensors")
    return f"{size / 1024**3:.2f} GiB, {tensors} safetensors file(s)"


def check_model(settings: Settings) -> Check:
    """Build and load the model as the worker does, timing each start-up phase."""
    from adapters.clock import SystemClock
    from app.bootstrap import build_model, redactor_for
    from app.startup import StartupPhases, accepts_report

    phases = StartupPhases(SystemClock())
    try:
        phases.phase("import")
        model = build_model(settings)
        phases.begin_load()
        load: Callable[..., object] = model.load
        load(*((phases,) if accepts_report(load) else ()))
    except ConfigurationError as exc:
        return Check("model", FAIL, str(exc), "fix MODEL / MODEL_PATH")
    except ModuleNotFoundError as exc:
        return Check("model", FAIL, f"the module {exc.name!r} is not installed in this Python",
                     SETUP)
    except Exception as exc:
        where, scrub = phases.current()[0], redactor_for(settings)  # a model's error may
        return Check("model", FAIL,  # carry a key: scrubbed like every other text
                     scrub(f"{settings.MODEL} did not load (phase {where}): {exc}"),
                     "the model's module or factory raised: fix it (or its libraries)"
                     if where == "import" else
                     "check MODEL_PATH holds the weights (baked into the image)")
    seconds = phases.finish()
    slow = settings.STARTUP_TIMEOUT and seconds * 1000 > settings.STARTUP_TIMEOUT / 2
    return Check("model", WARN if slow else OK,
                 f"{settings.MODEL} loaded in {seconds:.1f} s ({phases.summary()})",
                 "the start-up takes more than half of STARTUP_TIMEOUT: raise it" if slow else "")


def check_start_history(settings: Settings) -> Check:
    """Whether the worker's last starts failed (a crash loop), from ``STATE_DIR``."""
    from adapters.host.start_history import FileStartHistory

    earlier = FileStartHistory(settings.STATE_DIR).failed_in_a_row()
    if not earlier.count:
        return Check("starts", OK, "no failed start recorded")
    return Check("starts", WARN,
                 f"the last {earlier.count} start(s) failed in a row; the last in phase "
                 f"{earlier.phase}: {(earlier.error or '')[:300]}",
                 "fix what the error names; a start that succeeds clears this")


def check_disk(settings: Settings) -> Check:
    folder = settings.STATE_DIR if settings.STATE_DIR.exists() else Path.cwd()
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_DISK:
        return Check("disk", WARN, f"{free / 1024**3:.1f} GiB free at {folder}",
                     "free some disk: the outbox and local outputs need room")
    return Check("disk", OK, f"{free / 1024**3:.1f} GiB free at {folder}")


def check_memory(settings: Settings) -> Check:
    available = _available_memory()
    if available is None:
        return Check("memory", SKIP, "cannot read /proc/meminfo")
    status = OK if available >= MIN_FREE_MEMORY else WARN
    return Check("memory", status, f"{available / 1024**3:.1f} GiB available",
                 "" if status == OK else "the model may not fit in memory")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


CHECKS: list[Callable[[Settings], Check]] = [
    check_job_api, check_storage, check_self_termination, check_gpu, check_weights,
    check_loras, check_model, check_disk, check_memory, check_start_history,
]


def run_doctor(
    env_file: str | None = ".env", out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    out = out or sys.stdout
    typos = check_setting_names(os.environ if environ is None else environ, env_file)
    try:
        settings = load_settings(env_file=env_file)
    except ConfigurationError as exc:
        _print_table([Check("settings", FAIL, str(exc), "fix the variable named"), typos], out)
        return 1
    mode = "local mode: no take webhook or JOB_QUEUE is set" if settings.local_mode else "pod mode"
    if settings.TEST_LOCAL:
        mode = "local mode: TEST_LOCAL=true"
    checks = [Check("settings", OK, f"valid ({mode})"), typos]
    for check in CHECKS:
        try:
            checks.append(check(settings))
        except ModuleNotFoundError as exc:
            checks.append(Check(check.__name__.removeprefix("check_"), FAIL,
                                f"the module {exc.name!r} is not installed in this Python",
                                SETUP))
        except Exception as exc:  # a check must never crash the doctor
            checks.append(Check(check.__name__.removeprefix("check_"), FAIL,
                                f"{type(exc).__name__}: {exc}"))
    _print_table(checks, out)
    return 1 if any(c.status == FAIL for c in checks) else 0


def check_setting_names(environ: Mapping[str, str], env_file: str | None) -> Check:
    """Names in the environment or ``.env`` that look like settings but are none (typos)."""
    suspects = suspicious_settings(environ, env_file)
    if not suspects:
        return Check("setting names", OK, "no unknown name that looks like a setting")
    return Check("setting names", WARN, "; ".join(s.describe() for s in suspects),
                 "rename or remove them: podworker reads only the names in the README's table")


def _print_table(checks: list[Check], out: TextIO) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        line = f"{c.status:<4}  {c.name:<{width}}  {c.detail}"
        if c.fix and c.status in (FAIL, WARN):
            line += f"\n      {'':<{width}}  -> {c.fix}"
        print(line, file=out)
    failed = [c.name for c in checks if c.status == FAIL]
    print("all checks passed" if not failed else f"failed: {', '.join(failed)}", file=out)
    out.flush()
