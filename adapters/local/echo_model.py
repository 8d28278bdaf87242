"""The ``echo`` model: returns its input. For tests, benchmarks and trying the worker out.

Settings make every job slow (``delay_s``) or fail (``fail``). A job's input can also ask for a
behaviour, under the key ``"_echo"`` (the key is removed from the output):

- ``{"_echo": {"sleep_ms": 200}}``: take 200 ms, checking for cancellation every 10 ms;
- ``{"_echo": {"fail": "message"}}``: raise ``RuntimeError(message)``;
- ``{"_echo": {"oom": true}}``: raise ``OutOfMemory`` as a CUDA OOM would;
- ``{"_echo": {"ignore_cancel": true, "sleep_ms": N}}``: sleep without checking cancellation
  (a model that cannot be interrupted);
- ``{"_echo": {"artifacts": 2}}``: also return two small binary outputs to be stored.
- ``{"_echo": {"progress": 3}}``: report progress 3 times.
- ``{"_echo": {"stream": 3}}``: stream 3 chunks ``{"i": n, "text": "chunk-n"}`` (the output is
  streamed; the worker posts each chunk, then the final result).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from domain.errors import InvalidInput, OutOfMemory
from domain.job import Artifact
from domain.ports import JobContext

# A valid 1x1 PNG, so stored echo artifacts open as images.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201"
    "5e5e3b6b0000000049454e44ae426082"
)


class EchoModel:
    """Returns each job's input unchanged (less ``_echo``), after an optional delay."""

    def __init__(self, *, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.loaded = 0
        self.runs = 0
        self._pause = threading.Event()  # never set: its wait() is an interruptible sleep

    def load(self) -> None:
        self.loaded += 1

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.runs += 1
        output = dict(job_input)
        directives = output.pop("_echo", None) or {}
        if not isinstance(directives, dict):
            raise InvalidInput("_echo must be an object")
        if self.fail:
            raise RuntimeError("echo model set to fail (ECHO_FAIL=true)")
        steps = int(directives.get("progress", 0) or 0)
        for step in range(1, steps + 1):
            ctx.check_cancelled()
            ctx.progress({"step": step, "of": steps})
        delay = self.delay_s + float(directives.get("sleep_ms", 0) or 0) / 1000
        if delay > 0:
            self._sleep(delay, ctx, checking=not directives.get("ignore_cancel"))
        ctx.check_cancelled()
        if directives.get("oom"):
            raise OutOfMemory("CUDA out of memory (simulated by the echo model)")
        if directives.get("fail"):
            raise RuntimeError(str(directives["fail"]))
        count = int(directives.get("artifacts", 0) or 0)
        if count:
            output["artifacts"] = [Artifact(TINY_PNG) for _ in range(count)]
        chunks = int(directives.get("stream", 0) or 0)
        if chunks:
            return _stream(chunks)
        return output

    def _sleep(self, seconds: float, ctx: JobContext, *, checking: bool) -> None:
        step = 0.01 if checking else seconds
        remaining = seconds
        while remaining > 0:
            if checking:
                ctx.check_cancelled()
            self._pause.wait(min(step, remaining))
            remaining -= step


def _stream(chunks: int) -> Iterator[dict[str, Any]]:
    for n in range(chunks):
        yield {"i": n, "text": f"chunk-{n}"}
