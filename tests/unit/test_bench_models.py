"""The benchmark's own models load as podworker loads a user's model, and do what ``make bench``
counts on (``bench/models.py``, ``bench/sdk_handler.py``)."""

from __future__ import annotations

import asyncio
import inspect
import py_compile
from pathlib import Path

import pytest

from app.plugins import load_factory
from app.settings import Settings
from bench.models import IoAsyncModel, IoSyncModel
from domain.execution import DetachedContext

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("spec", ["bench.models:io_async", "bench.models:io_sync",
                                  "bench.models:sleepy"])
def test_each_benchmark_model_loads_through_the_model_setting(spec: str) -> None:
    model = load_factory(spec, "MODEL", Settings(_env_file=None), ("load", "run"))
    model.load()


def test_the_io_bound_models_are_one_async_and_one_sync_and_return_their_input() -> None:
    fast_async, fast_sync = IoAsyncModel(seconds=0.0), IoSyncModel(seconds=0.0)
    assert inspect.iscoroutinefunction(fast_async.run)
    assert not inspect.iscoroutinefunction(fast_sync.run)
    assert asyncio.run(fast_async.run({"i": 3}, DetachedContext())) == {"i": 3}
    assert fast_sync.run({"i": 4}, DetachedContext()) == {"i": 4}


def test_the_sdk_side_of_the_benchmark_compiles() -> None:
    py_compile.compile(str(BENCH / "sdk_handler.py"), doraise=True)
