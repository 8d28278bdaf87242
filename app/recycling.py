"""When a worker renews itself: its wear, read where it changes, judged by the policy.

Long-running model processes decay (host memory, VRAM, file handles). The controller tells the
:class:`Recycler` what happened (jobs taken, a job done); the recycler reads the process's
memory after each job, only for the limits that are set, and asks
:func:`domain.lifecycle.recycle_reason`. A reason means: take nothing more, finish and deliver
what is held, exit with code 7 so the platform starts a fresh process.
"""

from __future__ import annotations

from domain.execution import RunningJob
from domain.lifecycle import RecyclePolicy, Wear, recycle_reason, take_budget
from domain.ports import MemoryGauge


class Recycler:
    """The worker's wear so far; each method returns the reason to renew, or None."""

    def __init__(self, policy: RecyclePolicy, memory: MemoryGauge) -> None:
        self.policy = policy
        self._memory = memory
        self.jobs_taken = 0

    def taken(self, count: int) -> str | None:
        """``count`` more jobs were taken."""
        self.jobs_taken += count
        return recycle_reason(Wear(jobs_taken=self.jobs_taken), self.policy)

    def job_done(self, running: RunningJob) -> str | None:
        """``running`` left the model: read the memory (what the job left behind)."""
        policy = self.policy
        wear = Wear(
            jobs_taken=self.jobs_taken,
            rss_bytes=self._memory.rss_bytes() if policy.max_rss_bytes else None,
            vram_fraction=self._memory.vram_fraction() if policy.max_vram_fraction else None,
            asked_by=running.job_id if running.fresh_worker_asked else None,
        )
        return recycle_reason(wear, policy)

    def take_budget(self) -> int | None:
        """Most jobs the next take may bring (None: no limit)."""
        return take_budget(self.jobs_taken, self.policy)
