"""An in-memory record of failed starts (``domain.ports.StartHistory``), for tests and for a
worker without a ``STATE_DIR`` (the local run). It records every call in ``calls``."""

from __future__ import annotations

from domain.lifecycle import FailedStarts


class InMemoryStartHistory:
    """Failed starts kept for the life of the object."""

    def __init__(self, previous: FailedStarts | None = None) -> None:
        self.record = previous or FailedStarts()
        self.calls: list[tuple[str, ...]] = []

    def failed_in_a_row(self) -> FailedStarts:
        return self.record

    def record_failure(self, phase: str, error: str) -> None:
        self.calls.append(("failure", phase, error))
        self.record = FailedStarts(self.record.count + 1, phase, error)

    def record_success(self) -> None:
        self.calls.append(("success",))
        self.record = FailedStarts()
