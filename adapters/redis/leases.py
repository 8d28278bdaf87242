"""The stream entries this worker holds, by job id: what its heartbeat renews and its result
acknowledges.

A job usually has one entry; a job id submitted twice around the client (a raw ``XADD``) can
have two, and the worker's ledger runs it once, so its one result acknowledges both. Entries
are forgotten when the job's result is in Redis, when the job was cancelled, or when another
worker took them over (the lease lapsed: this worker was too slow to renew it).

Thread-safe: the intake, post, heartbeat and job-stop threads all use it. ``lock`` is also
held by the take around its script and the recording of what it took, so a cancel read at the
same moment always finds the job it names (see ``RedisJobApi.jobs_to_stop``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Leases:
    """Job id -> the entries held for it, and the attempt (delivery count) each job is on."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._entries: dict[str, list[bytes]] = {}
        self._attempts: dict[str, int] = {}

    def hold(self, job_id: str, entry: bytes, attempt: int) -> None:
        with self.lock:
            held = self._entries.setdefault(job_id, [])
            if entry not in held:
                held.append(entry)
            self._attempts[job_id] = attempt

    def holds(self, job_id: str) -> bool:
        with self.lock:
            return job_id in self._entries

    def entries(self, job_id: str) -> list[bytes]:
        with self.lock:
            return list(self._entries.get(job_id, ()))

    def entries_of(self, job_ids: Iterable[str]) -> list[bytes]:
        with self.lock:
            return [entry for job_id in job_ids for entry in self._entries.get(job_id, ())]

    def attempt(self, job_id: str) -> int:
        with self.lock:
            return self._attempts.get(job_id, 1)

    def release(self, job_id: str) -> list[bytes]:
        """Forget ``job_id``; returns the entries that were held for it."""
        with self.lock:
            self._attempts.pop(job_id, None)
            return self._entries.pop(job_id, [])

    def drop_entries(self, entries: Iterable[bytes]) -> list[str]:
        """Forget these entries (taken over, or no longer pending); returns the job ids that
        held none of them any more."""
        gone = set(entries)
        emptied = []
        with self.lock:
            for job_id in list(self._entries):
                kept = [e for e in self._entries[job_id] if e not in gone]
                if len(kept) == len(self._entries[job_id]):
                    continue
                if kept:
                    self._entries[job_id] = kept
                else:
                    del self._entries[job_id]
                    self._attempts.pop(job_id, None)
                    emptied.append(job_id)
        return emptied
