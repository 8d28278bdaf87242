"""A RunPod SDK handler file as podworker's model, in-process, on the worker's in-memory fakes.

RunPod's real SDK is not in podworker's ``.venv`` (it is in ``.venv-runpod``, where the
contract tests run it side by side with the SDK's own worker); here a small stand-in package
``runpod`` with the two names podworker takes over (``serverless.start``, whose real loop would
end the test, and ``serverless.progress_update``) shows what the adapter does with a handler.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.runpod_handler.model import HandlerModel
from adapters.runpod_handler.sdk import import_sdk, split_sdk_flags
from adapters.runpod_handler.sdk_results import HandlerFailed, Returned, check_chunk, read_return
from app.handler_command import local_job
from app.logs import RedactingFilter
from domain.errors import ConfigurationError, ModelError
from domain.job import JobResult
from domain.ports import Model
from domain.scrubbing import Scrubber
from tests.support.harness import Harness, make_harness

FAKE_SDK = {
    "runpod/__init__.py": "from runpod import serverless\n",
    "runpod/serverless/__init__.py": textwrap.dedent('''\
        def start(config):
            raise SystemExit("the SDK's own worker loop would start here")

        def progress_update(job, progress):
            raise SystemExit("the SDK's own progress thread would start here")
        '''),
    "runpod/serverless/modules/__init__.py": "",
    "runpod/serverless/modules/rp_progress.py": "from runpod.serverless import progress_update\n",
}


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The stand-in ``runpod`` importable; ``sys.argv``, ``sys.path`` and ``__main__`` put back
    afterwards (the adapter sets them as ``python handler.py`` would)."""
    root = tmp_path / "sdk"
    for name, text in FAKE_SDK.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    yield tmp_path
    for name in [m for m in sys.modules if m == "runpod" or m.startswith("runpod.")]:
        del sys.modules[name]


def handler_file(folder: Path, source: str, name: str = "handler.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def run_jobs(tmp_path: Path, model: HandlerModel, jobs: dict[str, dict[str, Any]],
             **harness: Any) -> Harness:
    h = make_harness(tmp_path, model=model, **harness).start()
    for job_id, job_input in jobs.items():
        h.api.submit(job_input, job_id=job_id)
    assert h.api.wait_for_results(len(jobs), timeout=30)
    return h


# --- what a handler returns, read as the SDK reads it ------------------------------------------
def test_a_returned_error_string_fails_the_job_with_exactly_that_string() -> None:
    assert read_return({"error": "no prompt", "partial": 1}).error == "no prompt"


def test_an_error_that_is_not_a_string_becomes_its_json_text() -> None:
    returned = read_return({"error": {"node": "KSampler", "code": 3}})
    assert returned.error == '{"node": "KSampler", "code": 3}'


def test_refresh_worker_and_a_falsy_error_are_taken_out_of_the_output() -> None:
    assert read_return({"refresh_worker": True, "error": None, "x": 1}) == Returned(
        output={"x": 1}, error=None, fresh_worker=True)
    assert read_return({"refresh_worker": False}).output is None  # nothing left: no output
    assert read_return([1, 2]).output == [1, 2]


def test_a_chunk_with_an_error_ends_the_stream_with_its_text() -> None:
    assert check_chunk({"token": "a"}) == {"token": "a"}
    with pytest.raises(HandlerFailed, match=r"^\{'code': 1\}$"):  # str(), as the SDK does
        check_chunk({"error": {"code": 1}})


def test_the_sdks_flags_are_parsed_out_and_the_handlers_own_flags_stay() -> None:
    flags, rest = split_sdk_flags(["--model_tag", "x", "--test_input", '{"input": {"a": 1}}',
                                   "--rp_log_level", "DEBUG"])
    assert rest == ["--model_tag", "x"]
    assert flags["test_input"] == {"input": {"a": 1}} and flags["rp_log_level"] == "DEBUG"
    with pytest.raises(ConfigurationError, match="--test_input is not JSON"):
        split_sdk_flags(["--test_input", "{nope"])


def test_without_the_runpod_package_the_error_says_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "runpod", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"needs RunPod's SDK.*pip install runpod"):
        import_sdk()


def test_the_local_job_is_test_input_json_with_the_sdks_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"--test_input JSON or test_input\.json"):
        local_job(None)
    (tmp_path / "test_input.json").write_text(json.dumps({"input": {"name": "Ada"}}))
    assert local_job(None) == {"id": "local_test", "input": {"name": "Ada"}}
    assert local_job({"id": "mine", "input": {}}) == {"id": "mine", "input": {}}
    with pytest.raises(ConfigurationError, match='must be a job object with an "input"'):
        local_job({"name": "Ada"})


# --- the handler file as the worker's model ------------------------------------------------------
def test_the_file_runs_as_main_with_its_flags_and_start_registers_the_handler(
    sdk: Path,
) -> None:
    path = handler_file(sdk, '''\
        import sys
        import runpod
        SEEN = {"name": __name__, "argv": list(sys.argv)}
        def handler(job):
            return {"seen": SEEN, "argv_after_start": sys.argv[1:], "job": job}
        if __name__ == "__main__":
            runpod.serverless.start({"handler": handler})
        ''')
    model: Model = HandlerModel(path, ["--model_tag", "x", "--rp_log_level", "INFO"])
    model.load()
    output = model.run({"a": 1}, _Context("job-1"))
    assert output["seen"] == {"name": "__main__",
                              "argv": [str(path), "--model_tag", "x", "--rp_log_level", "INFO"]}
    assert output["argv_after_start"] == ["--model_tag", "x"]  # start() took the SDK's flags
    assert output["job"] == {"id": "job-1", "input": {"a": 1}}


def test_a_file_that_never_calls_start_fails_the_load_saying_so(sdk: Path) -> None:
    model = HandlerModel(handler_file(sdk, "import runpod\ndef handler(job):\n    return 1\n"))
    with pytest.raises(ModelError, match=r"without calling runpod\.serverless\.start"):
        model.load()


def test_a_sync_handler_reports_progress_and_its_refresh_ends_the_worker_after_delivery(
    sdk: Path,
) -> None:
    path = handler_file(sdk, '''\
        import runpod
        from runpod.serverless import progress_update
        def handler(job):
            progress_update(job, {"step": 1})
            runpod.serverless.progress_update(job, {"step": 2})
            if job["input"].get("fail"):
                return {"error": {"why": job["input"]["fail"]}}
            return {"n": job["input"]["n"], "refresh_worker": job["input"].get("refresh", False)}
        runpod.serverless.start({"handler": handler})
        ''')
    h = run_jobs(sdk, HandlerModel(path), {"a": {"n": 1}, "b": {"fail": "no"}})
    assert h.api.results["a"] == JobResult("a", output={"n": 1})
    assert h.api.results["b"] == JobResult("b", error='{"why": "no"}')
    assert [p for j, p in h.api.progress if j == "a"][-1] == {"step": 2}
    h.api.submit({"n": 3, "refresh": True}, job_id="c")
    assert h.join(timeout=30) == 7  # it asked for a fresh worker: drained, renewed
    assert h.api.results["c"] == JobResult("c", output={"n": 3}, stop_pod=True)
    assert h.api.results["c"].to_wire() == {"output": {"n": 3}, "stopPod": True}


def test_an_async_generator_streams_aggregates_and_its_concurrency_modifier_is_asked(
    sdk: Path,
) -> None:
    path = handler_file(sdk, '''\
        import asyncio
        import runpod
        ASKED = []
        async def handler(job):
            for word in job["input"]["text"].split():
                await asyncio.sleep(0)
                yield {"word": word}
        def modifier(current):
            ASKED.append(current)
            return 3
        runpod.serverless.start({"handler": handler, "concurrency_modifier": modifier,
                                 "return_aggregate_stream": True})
        ''')
    model = HandlerModel(path)
    h = run_jobs(sdk, model, {"s": {"text": "a b"}})
    h.stop()
    assert [c for j, c in h.api.streamed if j == "s"] == [{"word": "a"}, {"word": "b"}]
    assert h.api.results["s"] == JobResult("s", output=[{"word": "a"}, {"word": "b"}],
                                           streamed=True)
    asked = sys.modules["__main__"].ASKED
    assert asked[0] == 1 and set(asked[1:]) == {3}  # given what it last answered, as the SDK
    assert h.worker.stages.runner.slots == 3


def test_a_plain_async_handler_runs_and_refresh_worker_in_its_config_renews_after_its_job(
    sdk: Path,
) -> None:
    path = handler_file(sdk, '''\
        import asyncio
        import runpod
        async def handler(job):
            await asyncio.sleep(0)
            return {"double": job["input"]["n"] * 2}
        runpod.serverless.start({"handler": handler, "refresh_worker": True})
        ''')
    h = run_jobs(sdk, HandlerModel(path), {"a": {"n": 21}})
    assert h.api.results["a"] == JobResult("a", output={"double": 42}, stop_pod=True)
    assert h.join(timeout=30) == 7  # refresh_worker in the config: renewed after each job
    assert h.api.taken == ["a"]


def test_an_exception_fails_the_job_briefly_and_logs_the_traceback(
    sdk: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = handler_file(sdk, '''\
        import runpod
        def handler(job):
            raise KeyError("missing_field")
        runpod.serverless.start({"handler": handler})
        ''')
    h = run_jobs(sdk, HandlerModel(path), {"k": {}})
    h.stop()
    assert h.api.results["k"] == JobResult("k", error="KeyError: 'missing_field'")
    raised = [r for r in caplog.records if getattr(r, "event", None) == "handler_raised"]
    assert len(raised) == 1 and raised[0].job_id == "k"  # type: ignore[attr-defined]
    assert "Traceback (most recent call last)" in caplog.text
    assert 'raise KeyError("missing_field")' in caplog.text


def test_the_requests_own_s3_credentials_never_reach_its_error_or_the_log(
    sdk: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "request-secret-4b3c2d1e"
    path = handler_file(sdk, '''\
        import runpod
        def handler(job):
            config = job["s3Config"]
            if job["input"].get("returns"):
                return {"error": f"bucket refused {config['accessSecret']}"}
            raise PermissionError(f"{config['accessId']}:{config['accessSecret']} denied")
        runpod.serverless.start({"handler": handler})
        ''')
    logging.getLogger().addFilter(filter_ := RedactingFilter(Scrubber([])))
    caplog.handler.addFilter(filter_)
    try:
        h = make_harness(sdk, model=HandlerModel(path)).start()
        config = {"bucketName": "b", "accessId": "AKIAREQUEST0001", "accessSecret": secret}
        for job_id, job_input in (("raises", {}), ("returns", {"returns": True})):
            h.api.submit_raw({"id": job_id, "input": job_input, "s3Config": config})
        assert h.api.wait_for_results(2, timeout=30)
        h.stop()
    finally:
        logging.getLogger().removeFilter(filter_)
        caplog.handler.removeFilter(filter_)
    raised, returned = h.api.results["raises"].error, h.api.results["returns"].error
    assert raised is not None and raised.startswith("PermissionError: [redacted]")
    assert returned is not None and returned.startswith("bucket refused [redacted]")
    for text in (raised, returned, caplog.text):
        assert secret[:6] not in text and secret[-6:] not in text and "AKIAREQ" not in text
    assert "Traceback (most recent call last)" in caplog.text  # the traceback is still logged


def test_a_handler_worker_checks_its_env_file_and_flags_only_near_misses_of_podworkers_names(
    sdk: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.cli
    from app.handler_command import handler_main

    path = handler_file(sdk, """\
        import runpod
        runpod.serverless.start({"handler": lambda job: job["input"]})
        """)
    (sdk / "other.env").write_text("MODLE_PATH=/models\n")
    monkeypatch.setenv("WEBHOOK_GET_WORK", "http://127.0.0.1:9/take")  # a worker, not local
    served: dict[str, Any] = {}
    monkeypatch.setattr(app.cli, "serve", lambda settings, **kw: served.update(kw) or 0)

    assert handler_main(["--env-file", str(sdk / "other.env"), str(path)]) == 0

    assert served["env_file"] == str(sdk / "other.env") and served["handler"] is True


class _Context:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.updates: list[Any] = []

    def check_cancelled(self) -> None:
        return None

    def progress(self, update: Any) -> None:
        self.updates.append(update)

