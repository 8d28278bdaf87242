"""Models whose start-up goes wrong, for the start-up tests:
``MODEL=tests.support.startup_models:<factory>``.

Each reports its phases (``import``, ``weights``, ``device``, ``warmup``) and logs a line with
the job API key in it (from the settings) while loading, as a client library's debug line might:
the failed start's job error must carry the log's tail without it. Then, by factory:

- ``hangs_in_python``: waits forever on an event in phase ``weights``;
- ``hangs_in_c``: a C-level ``sleep`` through ctypes in phase ``device``, slept again whenever
  a signal cuts it short (so it ignores signals and any cancellation; ctypes lets go of the
  GIL, as blocking C calls do);
- ``hangs_holding_the_gil``: the same sleep called so that it keeps the GIL (``ctypes.PyDLL``):
  no Python thread runs until it returns;
- ``load_raises``: ``OSError`` in phase ``weights``;
- ``warmup_raises``: ``RuntimeError`` in phase ``warmup``;
- ``factory_raises``: the factory itself raises (a model that reads its weights in its
  constructor, say), with the key in its message.

``PhasedModel`` (no factory: tests build it) waits at each phase for the test to let it go, so a
test can read ``/health`` and ``/metrics`` in every phase.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

from domain.ports import JobContext, StartupReport

log = logging.getLogger("tests.startup_model")

PHASES = ("import", "weights", "device", "warmup")
C_SLEEP_S = 3600


def _key(settings: Any) -> str:
    value = getattr(settings, "AI_API_KEY", None)
    return value.get_secret_value() if value is not None else "no-key"


def _libc(*, keep_gil: bool) -> Any:
    name = ctypes.util.find_library("c") or "libc.so.6"
    return ctypes.PyDLL(name) if keep_gil else ctypes.CDLL(name)


class FailingStart:
    """Goes through the phases up to ``stop_in``, then does ``what`` there."""

    def __init__(self, settings: Any, stop_in: str, what: str) -> None:
        self._key = _key(settings)
        self._stop_in = stop_in
        self._what = what

    def load(self, startup: StartupReport | None = None) -> None:
        for phase in PHASES:
            if startup is not None:
                startup.phase(phase)
            if phase == "weights":
                log.warning("fetching weights with Authorization: %s", self._key)
            if phase == self._stop_in:
                self._fail()
                return

    def _fail(self) -> None:
        if self._what == "hang":
            threading.Event().wait()
        elif self._what in ("c-sleep", "c-sleep-gil"):
            libc = _libc(keep_gil=self._what == "c-sleep-gil")
            while libc.sleep(C_SLEEP_S):  # a signal cuts sleep(3) short: sleep again
                pass
        elif self._what == "oserror":
            raise OSError(f"weights not found at /models/sd (token {self._key} refused)")
        else:
            raise RuntimeError("warm-up failed: CUDA graph capture refused the shape")

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        return job_input


def hangs_in_python(settings: Any) -> FailingStart:
    return FailingStart(settings, "weights", "hang")


def hangs_in_c(settings: Any) -> FailingStart:
    return FailingStart(settings, "device", "c-sleep")


def hangs_holding_the_gil(settings: Any) -> FailingStart:
    return FailingStart(settings, "device", "c-sleep-gil")


def load_raises(settings: Any) -> FailingStart:
    return FailingStart(settings, "weights", "oserror")


def warmup_raises(settings: Any) -> FailingStart:
    return FailingStart(settings, "warmup", "raise")


FACTORY_ERROR = "no CUDA driver found (raised in the factory)"


def factory_raises(settings: Any) -> FailingStart:
    raise RuntimeError(f"{FACTORY_ERROR}; key {_key(settings)}")


class PhasedModel:
    """Enters each phase, then waits for the test's ``release(phase)``; echoes jobs."""

    def __init__(self, phases: tuple[str, ...] = PHASES) -> None:
        self.phases = phases
        self.entered = {phase: threading.Event() for phase in phases}
        self._go = {phase: threading.Event() for phase in phases}

    def release(self, phase: str) -> None:
        self._go[phase].set()

    def load(self, startup: StartupReport | None = None) -> None:
        assert startup is not None, "the worker passes the report"
        for phase in self.phases:
            startup.phase(phase)
            self.entered[phase].set()
            self._go[phase].wait(60)

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        return job_input
