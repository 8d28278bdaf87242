"""Running a handler file as RunPod's SDK runs it: as ``__main__``, with its own flags.

``python handler.py --model_tag x`` under the SDK becomes ``python -m app handler handler.py
--model_tag x`` here: the file runs as the ``__main__`` module (so both ``start()`` forms, at the
top level and under ``if __name__ == "__main__"``, are reached), with ``sys.argv`` as the SDK
would see it and its folder first on ``sys.path``. Its ``runpod.serverless.start(config)``
returns at once, handing over the config; the SDK's own flags (``--test_input``, ``--rp_*``) are
taken out of ``sys.argv`` there, as the SDK does.

Whatever the file does at import (load weights, start ComfyUI and poll it until it answers) is
the model's load: it runs once, before the first job, and an exception or ``sys.exit`` there is
a failed load (exit code 4), its message in the log.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.runpod_handler.sdk import ProgressHook, import_sdk, split_sdk_flags, take_over
from domain.errors import ModelError

log = logging.getLogger("podworker.handler")


@dataclass(frozen=True)
class HandlerConfig:
    """What ``runpod.serverless.start(config)`` was given, as podworker uses it."""

    handler: Callable[..., Any]
    concurrency_modifier: Callable[[int], Any] | None = None
    return_aggregate_stream: bool = False
    refresh_worker: bool = False
    sdk_flags: dict[str, Any] | None = None

    @classmethod
    def from_start(cls, config: object, sdk_flags: dict[str, Any]) -> HandlerConfig:
        """Read the config dict; ``ModelError`` when it has no callable ``handler``."""
        if not isinstance(config, dict) or not callable(config.get("handler")):
            raise ModelError('runpod.serverless.start() needs a config with a callable '
                             '"handler" (runpod.serverless.start({"handler": handler}))')
        modifier = config.get("concurrency_modifier")
        return cls(
            handler=config["handler"],
            concurrency_modifier=modifier if callable(modifier) else None,
            return_aggregate_stream=bool(config.get("return_aggregate_stream", False)),
            refresh_worker=bool(config.get("refresh_worker", False)),
            sdk_flags=sdk_flags,
        )


def run_handler_file(path: Path, argv: Sequence[str], on_progress: ProgressHook) -> HandlerConfig:
    """Run ``path`` as ``__main__`` with ``argv`` after it; the config its ``start()`` gave.

    Raises what the file raises, and ``ModelError`` when it ran to its end without calling
    ``runpod.serverless.start``. ``ConfigurationError`` when ``runpod`` is not installed."""
    runpod = import_sdk()
    started: list[HandlerConfig] = []

    def on_start(config: dict[str, Any]) -> None:
        flags, rest = split_sdk_flags(sys.argv[1:])
        sys.argv = [sys.argv[0], *rest]
        if started:
            log.warning("runpod.serverless.start() called again; the first config is kept",
                        extra={"event": "handler_started_twice"})
            return
        started.append(HandlerConfig.from_start(config, flags))
        log.info("handler registered: %s", getattr(config["handler"], "__name__", "handler"),
                 extra={"event": "handler_registered"})

    take_over(runpod, on_start, on_progress)
    path = path.resolve()
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    sys.modules["__main__"] = module  # as under `python handler.py`: pickling by name works
    code = compile(path.read_bytes(), str(path), "exec")
    exec(code, module.__dict__)
    if not started:
        raise ModelError(f"{path.name} ran to its end without calling "
                         "runpod.serverless.start({'handler': ...})")
    return started[0]
