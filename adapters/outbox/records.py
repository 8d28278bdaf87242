"""The outbox journal's records: what they mean, how they are written as lines, how a journal
is read back.

One JSON object a line: ``{"put": <result>}``, ``{"remove": id}``, ``{"start": id, "starts":
n}``, ``{"finish": id}``, ``{"abandon": id}``. Reading replays them a line at a time (memory
for what is live, never for the journal's length); a line that is torn, not JSON, or not a
record that could be written again is skipped with a warning, so a result is never half-read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domain.job import JobResult

log = logging.getLogger("adapters.outbox.journal")

JOURNAL = "journal.jsonl"


class JournalState:
    """What the journal says is live: kept results (in order), start counts, running jobs."""

    def __init__(self) -> None:
        self.results: dict[str, JobResult] = {}
        self.starts: dict[str, int] = {}
        self.running: dict[str, None] = {}  # ordered set

    def apply(self, record: dict[str, Any]) -> None:
        if "put" in record:
            result = JobResult.from_json(record["put"])
            self.results.pop(result.job_id, None)
            self.results[result.job_id] = result
        elif "remove" in record:
            self.results.pop(str(record["remove"]), None)
        elif "start" in record:
            job_id = str(record["start"])
            self.starts[job_id] = int(record.get("starts", 1))
            self.running[job_id] = None
        elif "finish" in record:
            job_id = str(record["finish"])
            self.running.pop(job_id, None)
            self.starts.pop(job_id, None)
        elif "abandon" in record:
            self.running.pop(str(record["abandon"]), None)

    def records(self) -> Iterator[dict[str, Any]]:
        """The shortest journal that rebuilds this state."""
        for job_id, starts in self.starts.items():
            yield {"start": job_id, "starts": starts}
            if job_id not in self.running:
                yield {"abandon": job_id}
        for result in self.results.values():
            yield {"put": result.to_json()}


def encode(record: dict[str, Any]) -> bytes:
    try:
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON input may hold "\ud800"): UTF-8 cannot carry it, a \u escape
        # can, and it reads back as the same string.
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def read_journal(root: Path) -> JournalState:
    """Replay ``{root}/journal.jsonl`` a line at a time (read-only; no lock). Torn or foreign
    lines are skipped."""
    state = JournalState()
    path = root / JOURNAL
    try:
        journal = path.open("rb")
    except FileNotFoundError:
        return state
    with journal:
        for number, line in enumerate(journal, start=1):
            line = line.rstrip(b"\n")
            if not line:
                continue  # the line break that starts a record after a torn one
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                # a record must also be writable again (compaction) and sendable: no Infinity
                # or NaN, no nesting deeper than the JSON writer goes
                json.dumps(record, allow_nan=False)
                state.apply(record)
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                log.warning("outbox journal: skipping unreadable record %d (%s)", number,
                            type(exc).__name__, extra={"event": "outbox_torn_record"})
    return state


def peek(root: Path) -> list[JobResult]:
    """The results kept under ``root``, read without taking the lock (for tools and tests)."""
    return list(read_journal(root).results.values())
