"""``python -m app handler handler.py [its own flags]``: a RunPod SDK handler file, unchanged.

A Dockerfile's ``CMD ["python", "-u", "handler.py", "--model_tag", "x"]`` becomes
``CMD ["python", "-m", "app", "handler", "handler.py", "--model_tag", "x"]``: the file runs as
``__main__`` with its flags in ``sys.argv`` (``adapters.runpod_handler``), and podworker's worker
takes jobs for it. As under the SDK, with no take webhook (or with ``--test_input JSON``) it is a
local run instead: the job in ``--test_input`` or ``test_input.json`` (the SDK's file, in the
working folder) runs once, its result is printed, and the exit code says whether it succeeded.
Settings are podworker's (environment and ``.env``); ``--env-file`` may come before the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from domain.errors import ConfigurationError

USAGE = """\
usage: python -m app handler [--env-file FILE] HANDLER.py [HANDLER FLAGS ...]

Run a RunPod SDK handler file (one that calls runpod.serverless.start) unchanged, under
podworker's worker. Its own flags, and the SDK's (--test_input JSON, --rp_log_level ...), follow
the file. Without a take webhook (RUNPOD_WEBHOOK_GET_JOB), or with --test_input, the job in
--test_input or ./test_input.json runs locally and its result is printed, as the SDK does.
"""

LOCAL_TEST_INPUT = Path("test_input.json")  # the SDK's local file, in the working folder
LOCAL_JOB_ID = "local_test"  # the SDK's id for it


def handler_main(argv: list[str]) -> int:
    """Parse, load settings, build, run. Exit codes as ``run`` (README "Exit codes")."""
    env_file = ".env"
    while argv[:1] == ["--env-file"] and len(argv) > 1:
        env_file, argv = argv[1], argv[2:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    return _run(Path(argv[0]), argv[1:], env_file)


def _run(path: Path, handler_argv: list[str], env_file: str) -> int:
    from adapters.local.storage import DataUrlStorage
    from adapters.runpod_handler.model import HandlerModel
    from adapters.runpod_handler.sdk import import_sdk, split_sdk_flags
    from app.cli import leave, serve
    from app.local_run import run_local
    from app.settings import load_settings

    if not path.is_file():
        raise ConfigurationError(f"handler file {path} not found")
    settings = load_settings(env_file=env_file)
    sdk_flags, _ = split_sdk_flags(handler_argv)
    import_sdk()  # absent: one clear start-up error (exit code 2), before anything starts
    model = HandlerModel(path, handler_argv, concurrency=settings.CONCURRENCY)
    local = settings.local_mode or sdk_flags["test_input"] is not None
    if not local:  # a handler's outputs hold no Artifact: podworker's storage is never used
        return serve(settings, model=model, storage=DataUrlStorage(),  # (uploads: rp_upload)
                     env_file=env_file, handler=True)
    from app.cli import configure_for

    configure_for(settings, local=True)
    code = run_local(settings, model=model, jobs=[local_job(sdk_flags["test_input"])])
    leave(code)
    return code  # not reached


def local_job(test_input: Any) -> dict[str, Any]:
    """The local run's job: ``--test_input`` (already parsed), else ``test_input.json``; it must
    hold ``"input"``, and its id is ``local_test`` unless it names one (as in the SDK)."""
    source = "--test_input"
    if test_input is None:
        source = str(LOCAL_TEST_INPUT)
        try:
            test_input = json.loads(LOCAL_TEST_INPUT.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                "no take webhook is set (RUNPOD_WEBHOOK_GET_JOB), so this is a local run, and "
                f"it needs --test_input JSON or {LOCAL_TEST_INPUT} in {Path.cwd()}") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(test_input, dict) or test_input.get("input") is None:
        raise ConfigurationError(f'{source} must be a job object with an "input" '
                                 '({"input": {...}})')
    return {**test_input, "id": str(test_input.get("id", LOCAL_JOB_ID))}
