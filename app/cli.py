"""The command line: ``python -m app`` / ``podworker``. Parse, load settings, build, run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from app.bake import add_bake_arguments
from domain.errors import ConfigurationError


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
    if argv[:1] == ["fake-api"]:  # its own options, parsed by the fake server
        from fakeplatform.cli import main as fake_api_main

        return int(fake_api_main(argv[1:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv or ["run"])
    command = args.command or "run"
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
    except ModuleNotFoundError as exc:  # a Python without podworker's dependencies
        from app.setup_hint import missing_dependency

        print(missing_dependency(exc), file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from app.bootstrap import build_worker, redactor_for, worker_id
    from app.local_run import run_local
    from app.logs import configure_logging
    from app.settings import load_settings
    from app.signals import install_stop_handlers
    from app.start_notes import log_start

    settings = load_settings(env_file=args.env_file)
    fmt = settings.LOG_FORMAT.value
    if fmt == "auto" and settings.local_mode:
        fmt = "text"  # a person is reading: readable lines
    configure_logging(
        debug=settings.DEBUG,
        fmt=fmt,
        redactor=redactor_for(settings),
        static=None if settings.local_mode else {"pod_id": worker_id(settings)},
    )
    log_start(settings, test_input=getattr(args, "test_input", None), env_file=args.env_file,
              environ=os.environ)
    if settings.local_mode:
        code = run_local(settings, getattr(args, "test_input", None))
    else:
        worker = build_worker(settings)
        install_stop_handlers(worker.request_stop)
        if settings.HEALTH_PORT:
            from app.health import start_health_server

            start_health_server(worker, settings.HEALTH_HOST, settings.HEALTH_PORT)
        code = int(worker.run())
    leave(code)
    return code  # not reached


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
