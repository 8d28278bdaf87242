"""Outboxes: results kept until the job API accepts them, and marks of jobs being run.

``FileOutbox`` is the durable one: one append-only journal, ``{root}/journal.jsonl``, one JSON
record a line (``put`` a result, ``remove`` it, ``start``/``finish``/``abandon`` a running
mark). Its promises:

- **a result survives a crash of the process or of the machine** once ``put`` (or ``put_all``:
  several results, one ``write``, one ``fdatasync``) returns;
- **whole or absent**: a record torn by a crash mid-write (the last line, unterminated or not
  JSON) is skipped when the journal is read back, so a result is never half-read;
- **a failed write leaves the journal ending at a whole record**: a full disk takes the part of
  a write that fits, so the journal is cut back to where the write began; should even that
  fail, the next record starts on a line of its own, so a record never merges with the next;
- running marks (``started``) are not synced: they only have to survive the process dying,
  which the kernel's page cache guarantees, and skipping the sync keeps the job loop fast;
- the journal is replayed (read a line at a time) and compacted (rewritten with only what is
  live, atomically: a temporary file, fsync, rename, folder fsync) when opened, and again once
  it is past ``compact_bytes`` *and* more than half of it is dead, so each compaction is paid
  for by as many bytes appended since the last one (never a rewrite per write);
- **a disk too full to compact does not stop the worker**: the compaction is skipped (its
  temporary copy removed, one warning) and the journal is used as it is; a stale temporary
  copy left by a process killed mid-compaction is removed when the journal is opened;
- **one worker per folder**: the journal is locked (``flock``); a second worker on the same
  STATE_DIR (say, a network volume shared by several pods) fails at start with a clear error
  instead of sending one worker's results from another.

One journal, not a file per result: a per-job create, fsync, rename and unlink cost more than
the job itself for fast models. ``InMemoryOutbox`` (``adapters/local/outbox.py``) keeps the
same promises for the life of the process (unit tests, local runs). Both implement two ports,
``ResultOutbox`` and ``RunMarks``: one journal keeps both, so a result and its job's running
mark never disagree after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.outbox.records import JOURNAL, JournalState, encode, peek, read_journal
from domain.errors import ConfigurationError
from domain.job import Job, JobResult

__all__ = ["JOURNAL", "FileOutbox", "JournalState", "peek", "read_journal"]

log = logging.getLogger(__name__)

COMPACTION_CHUNK = 1024 * 1024
"""A compaction writes its copy in pieces of about this size (memory stays flat)."""


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short, on a full disk say)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[written:]


class FileOutbox:
    """The durable outbox: an append-only, locked, self-compacting journal under ``root``."""

    def __init__(
        self, root: Path, *, fsync: bool = True, compact_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self.root = root
        self._fsync = fsync
        self._compact_bytes = compact_bytes
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise ConfigurationError(
                f"invalid setting STATE_DIR: {root} is in use by another running worker; give "
                "each worker its own STATE_DIR (not a folder shared between pods)"
            ) from None
        with contextlib.suppress(FileNotFoundError):  # a compaction killed half-way
            os.unlink(self._tmp_path)
        self._state = read_journal(root)
        self._fd = -1
        self._size = 0
        self._compact_at = compact_bytes
        self._torn = False  # the journal may end mid-record: start the next one on a new line
        with self._lock:
            try:
                self._compact_locked()
            except OSError as exc:  # a full disk, say: deliver what is kept all the same
                self._open_as_it_is(exc)

    # --- the Outbox port ----------------------------------------------------------------
    def put(self, result: JobResult) -> None:
        self._append({"put": result.to_json()}, sync=True)

    def put_all(self, results: Sequence[JobResult]) -> None:
        """Keep several results with one write and one ``fdatasync`` (a group commit)."""
        if results:
            self._append_all([{"put": result.to_json()} for result in results], sync=True)

    def remove(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._state.results:
                return
        self._append({"remove": job_id}, sync=False)

    def pending(self) -> list[JobResult]:
        with self._lock:
            return list(self._state.results.values())

    def started(self, job: Job) -> int:
        with self._lock:
            before = self._state.starts.get(job.id, 0)
        self._append({"start": job.id, "starts": before + 1}, sync=False)
        return before

    def finished(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._state.starts and job_id not in self._state.running:
                return
        self._append({"finish": job_id}, sync=False)

    def abandoned(self, job_id: str) -> None:
        self._append({"abandon": job_id}, sync=False)

    def interrupted(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(job_id, self._state.starts.get(job_id, 1)) for job_id in self._state.running]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    # --- the journal --------------------------------------------------------------------
    @property
    def _tmp_path(self) -> Path:
        return self.root / f".{JOURNAL}.tmp"

    def _append(self, record: dict[str, Any], *, sync: bool) -> None:
        self._append_all([record], sync=sync)

    def _append_all(self, records: list[dict[str, Any]], *, sync: bool) -> None:
        """Write ``records`` in one ``write``; with ``sync``, return once they are on disk.

        The ``fdatasync`` runs outside the lock (on a duplicate of the descriptor, which a
        compaction meanwhile cannot close under it), so marks and removals from other threads
        never wait for the disk."""
        data = b"".join(encode(record) for record in records)
        with self._lock:
            self._write_whole(data)
            for record in records:
                self._state.apply(record)
            if self._size > self._compact_at and self._compact_or_skip():
                return  # the compacted journal is synced whole: done
            if not (sync and self._fsync):
                return
            fd = os.dup(self._fd)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _write_whole(self, data: bytes) -> None:
        """Append ``data``, or raise ``OSError`` with the journal ending at a whole record: a
        full disk takes the part of a write that fits, so a failed write is cut back off."""
        if self._torn:
            data = b"\n" + data
        try:
            _write_all(self._fd, data)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:  # the torn part stays: the next record starts on a line of its own
                self._torn = True
            raise
        self._size += len(data)
        self._torn = False

    def _compact_or_skip(self) -> bool:
        """Compact now; on a disk too full for the copy, go on with the journal as it is (and
        try again once it has grown as much again). Whether it compacted."""
        try:
            self._compact_locked()
        except OSError as exc:
            self._compact_at = 2 * self._size
            log.warning("outbox journal: compaction skipped (%s); the journal is used as it is",
                        exc.strerror or exc, extra={"event": "outbox_compaction_skipped"})
            return False
        return True

    def _compact_locked(self) -> None:
        """Rewrite the journal with only what is live; the temporary copy never outlives a
        failure (or an exception raised by a signal handler) half-way."""
        path = self.root / JOURNAL
        tmp = self._tmp_path
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                chunk: list[bytes] = []
                pending = 0
                for record in self._state.records():
                    line = encode(record)
                    chunk.append(line)
                    pending += len(line)
                    if pending >= COMPACTION_CHUNK:
                        _write_all(fd, b"".join(chunk))
                        size, chunk, pending = size + pending, [], 0
                if chunk:
                    _write_all(fd, b"".join(chunk))
                    size += pending
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._fsync:
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = size
        self._torn = False
        # the next compaction once the journal is past the threshold and half of it is dead:
        # it rewrites ``size`` bytes after at least ``size`` more were appended (amortised)
        self._compact_at = max(self._compact_bytes, 2 * size)

    def _open_as_it_is(self, exc: OSError) -> None:
        """The start-up compaction failed (a full disk): append to the journal as it stands."""
        log.warning("outbox journal: start-up compaction skipped (%s); the %d kept result(s) "
                    "are delivered from the journal as it is", exc.strerror or exc,
                    len(self._state.results), extra={"event": "outbox_compaction_skipped"})
        path = self.root / JOURNAL
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._compact_at = max(self._compact_bytes, 2 * self._size)
        if self._size:
            with path.open("rb") as journal:
                journal.seek(self._size - 1)
                self._torn = journal.read(1) != b"\n"
