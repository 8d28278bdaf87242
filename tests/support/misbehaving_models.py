"""Models that misbehave, for the fault suite: ``MODEL=tests.support.misbehaving_models:<factory>``.

``misbehaving`` (the factory; it gets the worker's settings) returns a model that echoes its
input, unless the input asks it to misbehave, so one worker process can run a bad job and then a
good one:

- ``{"raise": "SystemExit"}``: ``sys.exit(3)``; likewise ``"KeyboardInterrupt"``,
  ``"GeneratorExit"``, ``"BaseException"`` (a bare one), and ``"UnprintableError"`` (an
  exception whose ``__str__`` itself raises);
- ``{"leak_keys": true}``: raise ``RuntimeError`` with the job API key and the RunPod API key
  (from the settings) in its message, as a client library's error might;
- ``{"thread": true}``: start a non-daemon thread that never ends, then answer;
- ``{"sleep_s": N}``: take N seconds, checking for cancellation; with ``"ignore_cancel": true``
  without checking (a model that cannot be interrupted);
- ``{"until_abandoned": true, "late_ms": 1}``: ignore cancellation and return when the worker
  gives up on the job (its deadline plus ``OVERRUN_GRACE``, plus ``late_ms``), racing the
  worker's own timeout report.

``type_error_inside`` is a factory that takes the settings and fails with a ``TypeError`` of its
own: the worker must report that error, not call the factory again without arguments.
``hung_concurrency`` echoes, but its ``concurrency()`` hook never returns; ``loop_blocker`` is an
``async def run`` that blocks its event loop (``{"block_s": N}``, touching ``"marker"`` first);
``poisoned_stream`` streams a chunk that can never be posted (``PoisonedStream``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

FACTORY_ERROR = "the weights' dtype float7 is not supported (raised inside the factory)"


class UnprintableError(Exception):
    """An exception that cannot be described: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of UnprintableError failed")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of UnprintableError failed")


def _raise(kind: str) -> None:
    if kind == "SystemExit":
        sys.exit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "GeneratorExit":
        raise GeneratorExit
    if kind == "BaseException":
        raise BaseException("a bare BaseException from the model")
    if kind == "UnprintableError":
        raise UnprintableError
    raise ValueError(f"unknown kind {kind!r}")


def _secret_text(value: Any) -> str:
    if value is None:
        return ""
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal()) if callable(reveal) else str(value)


class MisbehavingModel:
    """Echoes its input unless asked to misbehave (module docstring)."""

    def __init__(self, settings: Any) -> None:
        self._keys = [_secret_text(getattr(settings, name, None))
                      for name in ("AI_API_KEY", "RUNPOD_API_KEY")]
        self._grace_s = float(getattr(settings, "OVERRUN_GRACE", 0)) / 1000
        self._forever = threading.Event()  # never set

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job_input: dict[str, Any], ctx: Any) -> Any:
        if "raise" in job_input:
            _raise(str(job_input["raise"]))
        if job_input.get("leak_keys"):
            raise RuntimeError("upstream refused the call: keys tried were "
                               + " and ".join(key for key in self._keys if key))
        if job_input.get("thread"):
            threading.Thread(target=self._forever.wait, name="left-behind", daemon=False).start()
        seconds = float(job_input.get("sleep_s", 0))
        if job_input.get("until_abandoned"):
            late_s = float(job_input.get("late_ms", 0)) / 1000
            seconds = max(0.0, ctx.deadline + self._grace_s + late_s - _now())
            job_input = {**job_input, "ignore_cancel": True}
        pause = threading.Event()  # never set: an interruptible sleep
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not job_input.get("ignore_cancel"):
                ctx.check_cancelled()
            pause.wait(min(left, 0.02 if not job_input.get("ignore_cancel") else left))
        return {"echo": job_input}


def _now() -> float:
    """The worker's clock (``adapters.clock.SystemClock`` reads ``time.monotonic``)."""
    return time.monotonic()


def misbehaving(settings: Any) -> MisbehavingModel:
    return MisbehavingModel(settings)


def type_error_inside(settings: Any) -> MisbehavingModel:
    raise TypeError(FACTORY_ERROR)


class HungConcurrency(MisbehavingModel):
    """A model whose ``concurrency()`` hook never returns (waiting on something that is gone)."""

    def concurrency(self, current: int) -> int:
        self._forever.wait()
        return 1


class LoopBlocker:
    """An ``async def run`` that blocks its event loop: ``time.sleep`` instead of ``await
    asyncio.sleep`` for ``block_s`` seconds, so neither a job-stop nor the work timeout can
    cancel its task until the sleep ends."""

    def load(self) -> None:
        """Nothing to load."""

    async def run(self, job_input: dict[str, Any], ctx: Any) -> Any:
        if "marker" in job_input:  # a file to touch once blocking, for a test to wait on
            Path(job_input["marker"]).touch()
        time.sleep(float(job_input.get("block_s", 0)))  # the bug this model stands for
        return {"echo": job_input}


def hung_concurrency(settings: Any) -> HungConcurrency:
    return HungConcurrency(settings)


def loop_blocker() -> LoopBlocker:
    return LoopBlocker()


class PoisonedStream:
    """A generator ``run`` yielding ``{"ok": 1}``, then the chunk its input names (``"poison"``:
    ``"object"`` (not JSON), ``"nan"``, ``"big"`` (``size`` bytes of text), ``"colliding"`` (keys
    that collide as JSON strings)), then ``{"after": 1}``; with no ``"poison"``, only the two
    good chunks."""

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job_input: dict[str, Any], ctx: Any) -> Any:
        yield {"ok": 1}
        kind = job_input.get("poison")
        if kind == "object":
            yield {"value": object()}
        elif kind == "nan":
            yield {"value": float("nan")}
        elif kind == "big":
            yield {"text": "b" * int(job_input.get("size", 1000))}
        elif kind == "colliding":
            yield {1: "one", "1": "uno"}
        yield {"after": 1}


def poisoned_stream() -> PoisonedStream:
    return PoisonedStream()
