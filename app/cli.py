"""The command line: ``python -m app`` / ``podworker``. Parse, load settings, build, run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from app.bake import add_bake_arguments
from app.signals import StopBeforeStart
from domain.errors import ConfigurationError

if TYPE_CHECKING:
    from app.settings import Settings
    from domain.ports import Model, Storage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podworker",
        description="Turns a GPU pod into a self-managing job worker for RunPod's job API.",
    )
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the worker (local mode when TEST_LOCAL=true or no take webhook is set)",
        description="Run the worker. With TEST_LOCAL=true, or when no take webhook is "
        "configured, run the jobs in test_inputs.json locally, print their results and exit "
        "(0: all succeeded, 1: one failed).",
    )
    run.add_argument("--test-input", type=Path, help="local mode: jobs file to run")
    run.add_argument("--env-file", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sub.add_parser(
        "fake-api",
        help="serve a fake RunPod job API on loopback (for local runs, tests, benchmarks); "
        "'fake-api --help' lists its options",
        add_help=False,
    )

    sub.add_parser(
        "queue",
        help="submit, follow and cancel jobs on the Redis queue JOB_QUEUE names; "
        "'queue --help' lists its commands",
        add_help=False,
    )

    sub.add_parser(
        "handler",
        help="run a RunPod SDK handler file unchanged: 'handler handler.py [its flags]' "
        "('handler --help' says more)",
        add_help=False,
    )

    sub.add_parser(
        "doctor",
        help="check the configuration, job API, bucket, GPU, weights, disk and memory",
        description="Check that this pod is ready to work: settings, job API and bucket "
        "reachable (no job is taken), GPU, weights load, free disk and memory. Prints a table "
        "with what to fix; exit code 0 only when every check passed.",
    )

    tiny = sub.add_parser(
        "make-tiny-model",
        help="build a tiny Stable Diffusion pipeline with random weights into DIR",
        description="Build a tiny Stable Diffusion pipeline (random weights, a few channels, "
        "its own tokenizer files) and save it with save_pretrained. No network needed.",
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument(
        "--family",
        choices=("sd", "sdxl", "sd3", "flux", "flux-schnell", "sdxl-refiner"),
        default="sd",
        help="the pipeline family: sd (SD 1.x, the default), sdxl, sd3, flux (Flux dev), "
        "flux-schnell, or sdxl-refiner (an SDXL refiner, for SD_REFINER_PATH)",
    )

    bake = sub.add_parser(
        "bake-weights",
        help="download a Stable Diffusion pipeline into DIR and check that it loads (image build)",
        description="Bake weights into the image at build time: load MODEL (a hub id or a "
        "pipeline folder) once, save it as safetensors into DIR (whole or not at all), then "
        "load DIR as the worker does, with local files only. Exit code 0 only when it loads.",
    )
    add_bake_arguments(bake)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # transformers and diffusers print notices (a missing optional torchvision, say) as plain
    # lines of their own, which would break the worker's one-JSON-object-a-line logs
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if argv[:1] == ["queue"]:  # its own commands, with the queue named by the settings
        return _queue(argv[1:])
    if argv[:1] == ["fake-api"]:  # its own options, parsed by the fake server
        from fakeplatform.cli import main as fake_api_main

        return int(fake_api_main(argv[1:]) or 0)
    parser = _parser()
    if argv[:1] == ["handler"]:  # the handler's own flags follow its file: not parsed here
        from app.handler_command import handler_main

        try:
            return handler_main(argv[1:])
        except ConfigurationError as exc:
            print(f"podworker: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv or ["run"])
    command = args.command or "run"
    if command == "run":
        from app.signals import install_early

        install_early()  # from here on, SIGTERM is handled (StopBeforeStart until built)
    try:
        if command == "doctor":
            from app.doctor import run_doctor

            return run_doctor(env_file=args.env_file)
        if command == "make-tiny-model":
            from adapters.stable_diffusion.tiny import make_tiny_model

            print(make_tiny_model(args.directory, family=args.family))
            return 0
        if command == "bake-weights":
            from app.bake import bake_from_args

            return bake_from_args(args)
        return _run(args)
    except ConfigurationError as exc:
        print(f"podworker: {exc}", file=sys.stderr)
        return 2
    except StopBeforeStart as stop:
        _stopped_during_start_up(stop)
        leave(0)
    except ModuleNotFoundError as exc:  # a Python without podworker's dependencies
        from app.setup_hint import missing_dependency

        print(missing_dependency(exc), file=sys.stderr)
        return 2


def _queue(argv: list[str]) -> int:
    from app.settings import load_settings
    from streamqueue.cli import main as queue_main

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"podworker: {exc}", file=sys.stderr)
        return 2
    return queue_main(argv, url=settings.JOB_QUEUE, password=settings.queue_password,
                      name=settings.JOB_QUEUE_NAME, result_ttl_s=settings.JOB_RESULT_TTL,
                      max_input_bytes=settings.MAX_INPUT_BYTES)


def _run(args: argparse.Namespace) -> int:
    from app.local_run import run_local
    from app.settings import load_settings
    from app.start_notes import log_start

    settings = load_settings(env_file=args.env_file)
    if not settings.local_mode:
        return serve(settings, env_file=args.env_file)
    configure_for(settings, local=True)
    test_input = getattr(args, "test_input", None)
    log_start(settings, test_input=test_input, env_file=args.env_file, environ=os.environ)
    code = run_local(settings, test_input)
    leave(code)
    return code  # not reached


def configure_for(settings: Settings, *, local: bool) -> None:
    """Logging as the settings say: readable lines in a local run (``LOG_FORMAT=auto``), JSON
    lines carrying the pod id otherwise."""
    from app.bootstrap import redactor_for, worker_id
    from app.logs import configure_logging

    fmt = settings.LOG_FORMAT.value
    if fmt == "auto" and local:
        fmt = "text"  # a person is reading: readable lines
    configure_logging(
        debug=settings.DEBUG,
        fmt=fmt,
        redactor=redactor_for(settings),
        static=None if local else {"pod_id": worker_id(settings)},
    )


def serve(settings: Settings, *, model: Model | None = None,
          storage: Storage | None = None, env_file: str | None = ".env",
          handler: bool = False) -> int:
    """The worker on the job API (``model`` and ``storage``, or those the settings name),
    until it stops. ``env_file`` is the settings file, checked for mistyped names (``handler``:
    a RunPod handler file's, whose own settings are not flagged)."""
    from app.bootstrap import build_worker
    from app.signals import install_stop_handlers
    from app.start_notes import log_start
    from app.startup import HardDeadline

    configure_for(settings, local=False)
    log_start(settings, test_input=None, env_file=env_file, environ=os.environ, handler=handler)
    deadline = HardDeadline(settings.STARTUP_TIMEOUT / 1000).arm()  # the last resort
    try:
        worker = build_worker(settings, model=model, storage=storage)
    except BaseException:
        deadline.disarm()
        raise
    deadline.disarm_when(worker.startup.done)
    install_stop_handlers(worker.request_stop)
    if settings.HEALTH_PORT:
        from app.health import start_health_server

        start_health_server(worker, settings.HEALTH_HOST, settings.HEALTH_PORT)
    code = int(worker.run())
    leave(code)
    return code  # not reached


def _stopped_during_start_up(stop: StopBeforeStart) -> None:
    """One line saying so: a log line when logging is set up, else a plain one on stderr."""
    if logging.getLogger().handlers:
        logging.getLogger("podworker.cli").info(
            "stopped during start-up (%s); nothing was taken", stop.signal_name,
            extra={"event": "stop_requested", "reason": str(stop)})
    else:
        print(f"podworker: stopped during start-up ({stop.signal_name}); nothing was taken",
              file=sys.stderr)


def leave(code: int) -> NoReturn:
    """Exit with ``code`` now, whatever threads a model left behind.

    Results are delivered (or in the outbox) by the time the worker returns; a non-daemon thread
    a model started would otherwise keep the process, and the pod, alive after "stopped". Logs
    and standard streams are flushed first, since ``os._exit`` skips Python's own clean-up.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
