"""RunPod's SDK (the ``runpod`` package), imported for a handler file and taken over.

Exists because a handler file imports ``runpod`` and calls ``runpod.serverless.start(config)``
(at its top level or under ``if __name__ == "__main__"``), which would start the SDK's own worker
loop. Here ``start`` is replaced by a function that only records the config, and
``progress_update`` by one that hands the update to the job's context (so it travels with
podworker's ordered, coalesced progress, never after the result). Everything else in the package
(``rp_validator``, ``rp_upload``, ``rp_download``, ``rp_cleanup``, ``RunPodLogger``) is the
SDK's own code, unchanged: the handler sees what it would see under the SDK.

Promises: ``import_sdk`` raises ``ConfigurationError`` saying how to install the SDK when it is
absent; the patches are installed before the handler file runs (so ``from runpod.serverless
import progress_update`` at its top gets podworker's) and stay for the life of the process.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

from domain.errors import ConfigurationError

StartHook = Callable[[dict[str, Any]], None]
ProgressHook = Callable[[Any, Any], None]


def import_sdk() -> ModuleType:
    """The ``runpod`` package; ``ConfigurationError`` when it is not installed."""
    try:
        return importlib.import_module("runpod")
    except ImportError as exc:
        raise ConfigurationError(
            "running a RunPod handler needs RunPod's SDK, the 'runpod' package, in this Python "
            f"environment (pip install runpod): it could not be imported ({exc})"
        ) from None


def take_over(runpod: ModuleType, on_start: StartHook, on_progress: ProgressHook) -> None:
    """Replace ``runpod.serverless.start`` and ``progress_update`` (in every module the SDK
    exposes them from) with ``on_start`` and ``on_progress``."""
    serverless = runpod.serverless

    def start(config: dict[str, Any]) -> None:
        on_start(config)

    def progress_update(job: Any, progress: Any) -> None:
        on_progress(job, progress)

    serverless.start = start
    serverless.progress_update = progress_update
    for name in ("runpod.serverless.modules.rp_progress",):
        try:
            module = importlib.import_module(name)
        except ImportError:  # another SDK release: the public name above is what handlers use
            continue
        module.progress_update = progress_update  # type: ignore[attr-defined]


def sdk_arguments() -> argparse.ArgumentParser:
    """The flags RunPod's SDK reads from ``sys.argv`` in ``start()`` (1.12), to strip them the
    way it does: the handler's own flags stay in ``sys.argv``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--rp_log_level", default=None)
    parser.add_argument("--rp_debugger", action="store_true", default=None)
    parser.add_argument("--rp_serve_api", action="store_true", default=None)
    parser.add_argument("--rp_api_port", type=int, default=8000)
    parser.add_argument("--rp_api_concurrency", type=int, default=1)
    parser.add_argument("--rp_api_host", default="localhost")
    parser.add_argument("--test_input", default=None)
    parser.add_argument("--test_output", default=None)
    return parser


def split_sdk_flags(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``(the SDK's flags, the rest)`` of a handler's arguments; ``--test_input`` parsed as JSON.

    Raises ``ConfigurationError`` when ``--test_input`` is not JSON."""
    known, rest = sdk_arguments().parse_known_args(argv)
    flags = vars(known)
    for name in ("test_input", "test_output"):
        if flags[name] is not None:
            try:
                flags[name] = json.loads(flags[name])
            except ValueError as exc:
                raise ConfigurationError(f"--{name} is not JSON: {exc}") from None
    return flags, rest
