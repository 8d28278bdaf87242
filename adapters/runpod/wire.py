"""RunPod's job API routes derived from the take URL, and small texts its adapter shows.

The platform hands a worker one take URL (``.../job-take/$ID?...``); the batch take and the
job-stop long-poll live beside it (``/job-take-batch/``, ``/job-stop/``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

PING_IDS_CHARS = 2000
"""Most characters of job ids (URL-quoted, with their commas) a ping's query carries: the
running jobs come first, and a long backlog of undelivered results no longer makes every ping
a URL that servers refuse (414)."""


def dumped(item: object) -> str:
    """``item`` as JSON text for a log excerpt (one read from a body always dumps, unless it is
    nested almost as deep as the JSON reader allows)."""
    try:
        return json.dumps(item)
    except (ValueError, RecursionError):
        return f"(a JSON {type(item).__name__} nested too deeply to show)"


def stop_url_from(take_url: str) -> str | None:
    for part in ("/job-take-batch/", "/job-take/"):
        if part in take_url:
            return take_url.replace(part, "/job-stop/", 1)
    return None


def batch_url_from(take_url: str) -> str | None:
    if "/job-take-batch/" in take_url:
        return take_url
    if "/job-take/" in take_url:
        return take_url.replace("/job-take/", "/job-take-batch/", 1)
    return None


def auth_hint(status: int) -> str:
    return " (check AI_API_KEY / RUNPOD_AI_API_KEY)" if status in (401, 403) else ""


def ping_job_ids(job_ids: Iterable[str]) -> str:
    """The ``job_id`` value of a ping: ids in the order given, as many as fit
    ``PING_IDS_CHARS`` once quoted."""
    kept: list[str] = []
    used = 0
    for job_id in job_ids:
        cost = len(quote(job_id, safe="")) + (1 if kept else 0)
        if used + cost > PING_IDS_CHARS:
            break
        kept.append(job_id)
        used += cost
    return ",".join(kept)
