"""Start-up, accounted for: which phase the model is in, how long each took, and what a user is
told when the start fails.

Why: a model that hangs or fails while loading leaves requests "in queue" while pods restart,
and nobody can say where the minutes went. Here:

- :class:`StartupPhases` times each phase: ``import`` (the model's module and factory, then
  whatever libraries its load imports), and what the model reports through the
  ``StartupReport`` port (``weights``, ``device``, ``warmup``); a model that reports nothing has
  one phase, ``load``. One log line per finished phase (``startup_phase``); ``/health``,
  ``/metrics`` and ``doctor`` read it while it runs. Thread-safe: the model's thread reports,
  the controller and the health server read.
- :class:`LogTail` keeps the last lines logged while the worker starts, so that a failed start's
  job error can show them (:func:`failure_text`), secrets scrubbed.
"""

from __future__ import annotations

import collections
import faulthandler
import inspect
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from domain.ports import Clock, StartHistory

log = logging.getLogger("podworker.startup")

GENERIC_PHASE = "load"  # the phase of a model that reports none
MAX_PHASES = 16  # a model that names a new phase at every step cannot grow the books
TAIL_LINES = 20
TAIL_LINE_CHARS = 300
MAX_FAILURE_CHARS = 4000  # the job's error: enough to read, far from the result size limit
HARD_GRACE_S = 10.0  # past the deadline, a start that stopped Python itself is ended in C

_NOT_A_NAME = re.compile(r"[^a-z0-9_]+")


def clean_phase(name: object) -> str:
    """``name`` as a phase name: lowercase letters, digits and ``_``, at most 32 characters."""
    try:
        text = str(name)
    except Exception:
        text = ""
    return _NOT_A_NAME.sub("_", text.lower()).strip("_")[:32] or "unnamed"


class StartupPhases:
    """The phases of one start, timed on ``clock``; conforms to ``domain.ports.StartupReport``.

    ``began`` is when the start began (the deadline counts from it). Reports after
    :meth:`finish` (a load that went on past its deadline) are ignored.
    """

    def __init__(self, clock: Clock, began: float | None = None) -> None:
        self._clock = clock
        self.began = clock.now() if began is None else began
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}  # finished time per phase, in first-seen order
        self._current: str | None = None
        self._since = self.began
        self._provisional = False  # the current phase is GENERIC_PHASE, until the model reports
        self.ended: float | None = None
        self.done = threading.Event()  # set by finish()

    # --- the StartupReport port (the model's thread) ------------------------------------
    def phase(self, name: str) -> None:
        """Phase ``name`` begins now; the one before ends (and is logged). Never raises."""
        name = clean_phase(name)
        with self._lock:
            if self.ended is not None:
                return
            if self._provisional:  # the model's first report: the generic phase was this one
                self._current, self._provisional = name, False
                return
            finished = self._close(self._clock.now(), name)
        _log_phase(finished)

    # --- the worker ---------------------------------------------------------------------
    def begin_load(self) -> None:
        """The model's load begins: its phase is ``load`` until the model names one."""
        self.phase(GENERIC_PHASE)
        with self._lock:
            self._provisional = self.ended is None

    def finish(self) -> float:
        """The start is over (loaded, failed or past its deadline); returns its seconds."""
        with self._lock:
            if self.ended is None:
                now = self._clock.now()
                finished = self._close(now, None)
                self.ended = now
            else:
                finished = None
            total = self.ended - self.began
        self.done.set()
        _log_phase(finished)
        return total

    # --- readers (any thread) -----------------------------------------------------------
    def current(self) -> tuple[str | None, float]:
        """The phase running now and its seconds so far; ``(None, 0.0)`` once finished."""
        with self._lock:
            if self.ended is not None or self._current is None:
                return None, 0.0
            return self._current, max(0.0, self._clock.now() - self._since)

    def seconds(self) -> dict[str, float]:
        """Seconds per phase, in the order they began; the running one counts so far."""
        with self._lock:
            seconds = dict(self._seconds)
            if self.ended is None and self._current is not None:
                running = max(0.0, self._clock.now() - self._since)
                seconds[self._current] = seconds.get(self._current, 0.0) + running
            return seconds

    def elapsed(self) -> float:
        """Seconds since the start began (until it ended)."""
        with self._lock:
            end = self._clock.now() if self.ended is None else self.ended
            return max(0.0, end - self.began)

    def summary(self) -> str:
        """``import 1.2 s, weights 3.4 s, ...`` for log lines and ``doctor``."""
        return ", ".join(f"{name} {secs:.1f} s" for name, secs in self.seconds().items())

    def _close(self, now: float, next_phase: str | None) -> tuple[str, float] | None:
        """End the current phase at ``now`` (under the lock); start ``next_phase``."""
        finished = None
        if self._current is not None:
            took = max(0.0, now - self._since)
            self._seconds[self._current] = self._seconds.get(self._current, 0.0) + took
            finished = (self._current, took)
        if next_phase is not None and (
            next_phase in self._seconds or len(self._seconds) < MAX_PHASES
        ):
            self._current, self._since = next_phase, now
        elif next_phase is not None:  # too many names: the time goes to the last phase kept
            self._since = now
        else:
            self._current = None
        return finished


def _log_phase(finished: tuple[str, float] | None) -> None:
    if finished is not None:
        name, took = finished
        log.info("start-up phase %s took %.3f s", name, took,
                 extra={"event": "startup_phase", "phase": name, "seconds": round(took, 3)})


class LogTail(logging.Handler):
    """The last ``lines`` log lines (INFO and up), each cut to ``TAIL_LINE_CHARS`` and scrubbed
    as it is kept. Attach it to the root logger for as long as the start lasts."""

    def __init__(self, scrub: Callable[[str], str], lines: int = TAIL_LINES) -> None:
        super().__init__(logging.INFO)
        self._scrub = scrub
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
            line = self._scrub(text.replace("\n", " | "))[:TAIL_LINE_CHARS]
        except Exception:  # a hostile message must not break the start-up's books
            return
        self._lines.append(line)

    def lines(self) -> list[str]:
        return list(self._lines)

    def attach(self) -> LogTail:
        logging.getLogger().addHandler(self)
        return self

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)


def failure_text(
    *, phase: str, seconds: float, error: str, tail: list[str], scrub: Callable[[str], str]
) -> str:
    """The error a failed start puts on one job: the phase, the error, the log's last lines."""
    head = scrub(f"the worker could not start: {error} (phase {phase}, after {seconds:.1f} s)")
    if not tail:
        return head[:MAX_FAILURE_CHARS]
    lines = [scrub(line) for line in tail]
    text = head + "; last lines of the start-up log:\n" + "\n".join(lines)
    while len(text) > MAX_FAILURE_CHARS and lines:  # keep the newest lines
        lines.pop(0)
        text = head + "; last lines of the start-up log:\n" + "\n".join(lines)
    return text[:MAX_FAILURE_CHARS]


def accepts_report(load: Callable[..., object]) -> bool:
    """Whether ``load`` takes a positional argument: then it is given the ``StartupReport``."""
    try:
        parameters = inspect.signature(load).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    return any(parameter.kind in positional for parameter in parameters)


@dataclass(frozen=True)
class StartFailure:
    """Why a start failed: the phase it was in, its seconds, the error (scrubbed), and whether
    it was the deadline (``STARTUP_TIMEOUT``) rather than the load raising."""

    phase: str
    seconds: float
    error: str
    timed_out: bool


class HardDeadline:
    """The last resort behind ``STARTUP_TIMEOUT``, for the worker process (``app.cli``).

    The controller ends a start that overruns its deadline by itself, whatever the model's
    thread is doing, as long as Python runs: a load blocked in C code that releases the GIL
    (a blocking read, a sleep through ctypes, CUDA) is left behind. A C call that *holds* the
    GIL stops every Python thread, the controller's too; for that, faulthandler's own C thread
    prints every thread's traceback to stderr and ends the process with code 1, ``grace_s``
    after the deadline, unless the start ended first (``disarm_when``).
    """

    def __init__(self, timeout_s: float | None, grace_s: float = HARD_GRACE_S) -> None:
        self._at = None if not timeout_s else timeout_s + grace_s

    def arm(self) -> HardDeadline:
        if self._at is not None:
            faulthandler.dump_traceback_later(self._at, exit=True)
        return self

    def disarm(self) -> None:
        if self._at is not None:
            faulthandler.cancel_dump_traceback_later()

    def disarm_when(self, done: threading.Event) -> None:
        """Disarm once ``done`` is set (the start ended, well or not), from a daemon thread."""
        def wait_then_disarm() -> None:
            done.wait()
            self.disarm()

        threading.Thread(target=wait_then_disarm, name="startup-deadline", daemon=True).start()


def start_failed(
    startup: StartupPhases, history: StartHistory, *, error: str, timed_out: bool
) -> StartFailure:
    """End ``startup`` as failed with ``error`` (scrubbed): logged, and recorded in ``history``
    so the next start knows."""
    phase = startup.current()[0] or GENERIC_PHASE
    seconds = startup.finish()
    history.record_failure(phase, error)
    log.error("the start failed in phase %s after %.1f s: %s; one job is told why, then the "
              "worker exits", phase, seconds, error,
              extra={"event": "startup_failed", "phase": phase, "seconds": round(seconds, 3)})
    return StartFailure(phase, seconds, error, timed_out)


def earlier_failures(history: StartHistory) -> int:
    """How many starts failed in a row before this one; logged as a crash loop when any did."""
    earlier = history.failed_in_a_row()
    if earlier.count:
        log.warning("the last %d start(s) of this worker failed in a row; the last in phase %s: "
                    "%s", earlier.count, earlier.phase, earlier.error,
                    extra={"event": "crash_loop", "failed_starts": earlier.count})
    return earlier.count
