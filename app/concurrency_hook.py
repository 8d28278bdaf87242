"""A model's own ``concurrency(current)``, asked off the controller's thread, with a deadline.

The SDK's ``concurrency_modifier`` is the model's code: it may be slow, raise, or never return.
Called on the controller's thread, one that hangs froze the worker (no job marked running,
SIGTERM ignored until SIGKILL). Here it runs on a thread of its own ("model-concurrency"):

- ``ask(current)`` hands the question over and waits at most ``wait_s`` for the answer, so a
  quick hook's answer is used for the very next take, as before;
- a hook still busy with an earlier question is not asked again (the latest ``current`` waits
  for it) and not waited for; once it has been busy past ``wait_s`` one error says so, and the
  slots stay as last answered;
- whatever it raises is logged once and the slots stay; an answer is kept between 1 and the
  runner's maximum by the caller (``on_answer``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from domain.outputs import describe_error
from domain.ports import Clock

log = logging.getLogger("podworker.model")

WAIT_S = 0.25
"""Longest the controller waits for an answer; a slower hook's answer counts from the next take."""


class ConcurrencyHook:
    """Runs ``modifier(current)`` on its own thread; answers go to ``on_answer``."""

    def __init__(
        self,
        modifier: Callable[[int], object],
        on_answer: Callable[[int], None],
        *,
        clock: Clock,
        scrub: Callable[[str], str],
        current_slots: Callable[[], int],
        wait_s: float = WAIT_S,
    ) -> None:
        self._modifier = modifier
        self._on_answer = on_answer
        self._clock = clock
        self._scrub = scrub
        self._current_slots = current_slots
        self._wait_s = wait_s
        self._cond = threading.Condition()
        self._wanted: int | None = None
        self._busy_since: float | None = None
        self._answered = 0  # answers (or failures) so far: what ``ask`` waits to see grow
        self._failed_logged = False
        self._hung_logged = False
        self._thread: threading.Thread | None = None

    def ask(self, current: int) -> None:
        """Ask ``concurrency(current)``; wait for the answer at most ``wait_s`` (not at all
        while an earlier question is still unanswered)."""
        with self._cond:
            self._wanted = current
            if self._busy_since is not None:
                self._note_hung()
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="model-concurrency",
                                                daemon=True)
                self._thread.start()
            seen = self._answered
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._answered > seen, self._wait_s)

    def _note_hung(self) -> None:
        assert self._busy_since is not None
        waited = self._clock.now() - self._busy_since
        if waited >= self._wait_s and not self._hung_logged:
            self._hung_logged = True
            log.error("the model's concurrency() has not answered for %.1f s; keeping %d "
                      "slot(s) and not asking again until it does", waited,
                      self._current_slots(), extra={"event": "concurrency_hung"})

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted is not None)
                current, self._wanted = self._wanted, None
                self._busy_since = self._clock.now()
            assert current is not None
            try:
                answer: int | None = int(self._modifier(current))  # type: ignore[call-overload]
            except Exception as exc:  # a broken hook keeps the last answer
                answer = None
                if not self._failed_logged:
                    self._failed_logged = True
                    log.error("the model's concurrency() failed: %s; keeping %d slot(s)",
                              self._scrub(describe_error(exc)), self._current_slots(),
                              extra={"event": "concurrency_failed"})
            if answer is not None:
                self._on_answer(answer)
            with self._cond:
                self._busy_since = None
                self._hung_logged = False
                self._answered += 1
                self._cond.notify_all()
