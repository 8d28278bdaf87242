"""The local run's job source: ``test_inputs.json``, as in the seed pod worker.

The file holds one job (``{"id": "LOCAL-TEST", "input": {...}}``) or a list of them. A job
without an id gets ``LOCAL-TEST`` (then ``LOCAL-TEST-2``, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domain.errors import ConfigurationError


def read_test_inputs(path: Path) -> list[dict[str, Any]]:
    """The jobs in ``path``; raises ``ConfigurationError`` with the reason when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"test input file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"test input file {path} is not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    jobs: list[dict[str, Any]] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConfigurationError(f"test input file {path}: job {number} is not an object")
        job = dict(item)
        if "id" not in job:
            job["id"] = "LOCAL-TEST" if number == 1 else f"LOCAL-TEST-{number}"
        jobs.append(job)
    if not jobs:
        raise ConfigurationError(f"test input file {path} holds no job")
    return jobs
