"""Storage without a bucket: files in a local folder, or data URLs inside the result.

``LocalFolderStorage`` is the local run's storage: ``{root}/{job}/{index}.{ext}``, written
atomically (a temporary file renamed into place), the job id made safe for a path first and the
extension limited to letters and digits (as S3 keys are), so no input or model output can write
outside ``root``. ``DataUrlStorage`` inlines small outputs as base64 data URLs
for deployments without a bucket; the worker refuses results larger than the job API accepts.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from domain.errors import UploadFailed
from domain.job import Artifact, safe_name
from domain.outputs import output_file_name, store_one_by_one


class LocalFolderStorage:
    """Writes each output under ``root`` and returns the file's absolute path."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.stored: list[Path] = []

    def store_all(
        self, job_id: str, artifacts: Sequence[Artifact], first_index: int = 0
    ) -> list[str]:
        return store_one_by_one(self.store, job_id, artifacts, first_index)

    def folder_of(self, job_id: str) -> Path:
        """The folder ``job_id``'s outputs are written into."""
        return self.root / safe_name(job_id)

    def store(self, job_id: str, index: int, artifact: Artifact) -> str:
        name = output_file_name(index, artifact)
        folder = self.folder_of(job_id)
        target = folder / name
        tmp: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{index}.", suffix=".tmp")
            os.fchmod(fd, 0o644)  # an output, readable like any file the user makes (not 0600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(artifact.data)
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)  # not left behind when the rename failed
            raise UploadFailed(f"could not write output to {folder}: {exc.strerror}") from None
        self.stored.append(target)
        return str(target)


class DataUrlStorage:
    """Returns each output as a ``data:`` URL (base64), for small outputs and no bucket."""

    def store_all(
        self, job_id: str, artifacts: Sequence[Artifact], first_index: int = 0
    ) -> list[str]:
        return store_one_by_one(self.store, job_id, artifacts, first_index)

    def store(self, job_id: str, index: int, artifact: Artifact) -> str:
        encoded = base64.b64encode(artifact.data).decode("ascii")
        return f"data:{artifact.content_type};base64,{encoded}"
