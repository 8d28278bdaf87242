"""URL templates, ``Retry-After`` and body excerpts: the small pieces every HTTP adapter shares.

Kept apart from any one adapter so the job API, pod control and the doctor use the same rules
(ids quoted into URLs so they cannot smuggle in a placeholder or a path; error messages that
name a host, never a path or a query; excerpts short enough for a log line).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

EXCERPT_CHARS = 120
"""How much of an unreadable body a warning shows: enough to recognise it, never a whole image."""


def with_query(url: str, **params: str) -> str:
    """``url`` plus ``params``, after ``&`` when it already has a query (RunPod's templates do)."""
    if not params:
        return url
    extra = "&".join(f"{quote(k, safe='')}={quote(v, safe=',')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def fill(template: str, *, pod_id: str | None = None, job_id: str | None = None) -> str:
    """Put the URL-quoted ids in ``template`` (``$RUNPOD_POD_ID`` first, then ``$ID``).

    Quoting turns ``$`` into ``%24``, so an id can never smuggle in another placeholder, and a
    ``/``, ``?`` or ``#`` in an id stays inside its path segment (an id of ``.`` or ``..`` is
    sent as ``%2E``s so that it is not taken for a dot segment).
    """
    url = template
    if pod_id is not None:
        url = url.replace("$RUNPOD_POD_ID", _segment(pod_id))
    if job_id is not None:
        url = url.replace("$ID", _segment(job_id))
    return url


def _segment(value: str) -> str:
    quoted = quote(value, safe="")
    # "." and ".." would be resolved away as dot segments by the HTTP client.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``: what error messages name (never the path or the query)."""
    return urlsplit(url).netloc.rpartition("@")[2] or "?"


def parse_retry_after(
    value: str | None, *, date_header: str | None = None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    An HTTP date is measured from the answer's own ``Date`` header when there is one (so a skewed
    local clock does not matter), else from ``now`` (the wall clock by default). Returns None
    when absent or unreadable; never negative.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    reference = None
    if date_header:
        try:
            reference = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            reference = None
    if reference is None:
        reference = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def excerpt(data: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of a body for a log line (scrub secrets *before* cutting)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    short = text[:limit]
    shown = "".join(c if c.isprintable() else " " for c in short)
    return shown + (f"... ({len(text)} chars)" if len(text) > limit else "")
