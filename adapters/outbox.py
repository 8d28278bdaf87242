"""Outboxes: results kept until the job API accepts them, and marks of jobs being run.

``FileOutbox`` is the durable one. Each result is one JSON file, written to a temporary name,
fsynced, then renamed into place (and the folder fsynced), so after a crash (of the process or
of the machine) a result is either whole or absent, never half-written. Running-job marks live
beside it, with a count of how many times each job was started, which is what the poison-job
guard reads after a crash. File names are the job ids made safe (``domain.job.safe_name``);
the real id is inside the file.

``InMemoryOutbox`` keeps the same promises for the life of the process (unit tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from domain.job import Job, JobResult, safe_name

log = logging.getLogger(__name__)


class FileOutbox:
    """Results in ``{root}/results/*.json``, running marks in ``{root}/running/*.json``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self._results = root / "results"
        self._running = root / "running"
        self._fsync = fsync
        self._results.mkdir(parents=True, exist_ok=True)
        self._running.mkdir(parents=True, exist_ok=True)

    def put(self, result: JobResult) -> None:
        self._write(self._results / f"{safe_name(result.job_id)}.json", result.to_json())

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._results / f"{safe_name(job_id)}.json").unlink()

    def pending(self) -> list[JobResult]:
        results = []
        for path in self._sorted(self._results):
            record = self._read(path)
            if record is not None and "id" in record:
                results.append(JobResult.from_json(record))
        return results

    def started(self, job: Job) -> int:
        path = self._running / f"{safe_name(job.id)}.json"
        record = self._read(path) if path.exists() else None
        before = int(record.get("starts", 0)) if record else 0
        self._write(path, {"id": job.id, "starts": before + 1, "running": True}, sync=False)
        return before

    def finished(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._running / f"{safe_name(job_id)}.json").unlink()

    def abandoned(self, job_id: str) -> None:
        path = self._running / f"{safe_name(job_id)}.json"
        record = self._read(path) if path.exists() else None
        starts = int(record.get("starts", 1)) if record else 1
        self._write(path, {"id": job_id, "starts": starts, "running": False}, sync=False)

    def interrupted(self) -> list[tuple[str, int]]:
        out = []
        for path in self._sorted(self._running):
            record = self._read(path)
            if record is not None and "id" in record and record.get("running", True):
                out.append((str(record["id"]), int(record.get("starts", 1))))
        return out

    # --- files --------------------------------------------------------------------------
    def _write(self, path: Path, record: dict[str, object], *, sync: bool = True) -> None:
        """Write ``record`` to ``path`` atomically (temporary file, then rename).

        With ``sync`` (results) the file and its folder are fsynced, so the result survives a
        crash of the machine, not only of the process. Running marks skip that: they only have
        to survive the process dying, which the kernel's page cache already guarantees.
        """
        data = json.dumps(record, separators=(",", ":")).encode()
        tmp = path.parent / f".{path.name}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if sync and self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync and self._fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    def _sorted(folder: Path) -> list[Path]:
        paths = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("outbox: skipping unreadable %s (%s)", path.name, exc)
            return None
        return record if isinstance(record, dict) else None


class InMemoryOutbox:
    """The outbox's promises for one process's life; records ``put_count`` for tests."""

    def __init__(self) -> None:
        self._results: dict[str, JobResult] = {}
        self._starts: dict[str, int] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self.put_count = 0

    def put(self, result: JobResult) -> None:
        with self._lock:
            self._results.pop(result.job_id, None)
            self._results[result.job_id] = result
            self.put_count += 1

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._results.pop(job_id, None)

    def pending(self) -> list[JobResult]:
        with self._lock:
            return list(self._results.values())

    def started(self, job: Job) -> int:
        with self._lock:
            before = self._starts.get(job.id, 0)
            self._starts[job.id] = before + 1
            self._running.add(job.id)
            return before

    def finished(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
            self._starts.pop(job_id, None)

    def abandoned(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)

    def interrupted(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(job_id, self._starts.get(job_id, 1)) for job_id in sorted(self._running)]
