"""Failed starts, kept in ``STATE_DIR`` so that a worker in a crash loop says so.

``FileStartHistory`` conforms to ``domain.ports.StartHistory``. One small JSON file,
``{root}/starts.json``: ``{"failed_in_a_row": n, "phase": ..., "error": ...}``, replaced whole
(a temporary file, fsync, rename), so a crash leaves the old record or the new one, never half
of one. A file that cannot be read (missing, torn by hand, not JSON, too large) counts as no
failed start; one that cannot be written is logged, and the start goes on: the record is a
diagnosis, never a reason to fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from domain.lifecycle import FailedStarts

log = logging.getLogger(__name__)

FILE = "starts.json"
MAX_FILE_BYTES = 64 * 1024
MAX_ERROR_CHARS = 4000


class FileStartHistory:
    """The record of failed starts in ``root`` (``STATE_DIR``)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILE

    def failed_in_a_row(self) -> FailedStarts:
        record = self._read()
        count = record.get("failed_in_a_row")
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return FailedStarts()
        phase, error = record.get("phase"), record.get("error")
        return FailedStarts(count, phase if isinstance(phase, str) else None,
                            error if isinstance(error, str) else None)

    def record_failure(self, phase: str, error: str) -> None:
        count = self.failed_in_a_row().count + 1
        self._write({"failed_in_a_row": count, "phase": phase,
                     "error": error[:MAX_ERROR_CHARS]})

    def record_success(self) -> None:
        if self.failed_in_a_row().count:
            self._write({"failed_in_a_row": 0})

    def _read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
            record = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write(self, record: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{FILE}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not record the start in %s: %s", self.path,
                        exc.strerror or exc, extra={"event": "start_history_unwritable"})
            with contextlib.suppress(OSError):
                tmp.unlink()
