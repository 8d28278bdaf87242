"""Logs: JSON lines with the extra fields, readable text locally, secrets always redacted."""

from __future__ import annotations

import io
import json
import logging

from app.logs import configure_logging
from domain.scrubbing import Scrubber

SECRET = "sk-live-0123456789abcdef"


def test_json_lines_carry_the_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging(debug=False, fmt="json", redactor=Scrubber([]), stream=stream,
                      static={"pod_id": "pod-1"})
    logging.getLogger("podworker.test").info("job taken", extra={"job_id": "j1", "event": "e"})
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["message"] == "job taken"
    assert (entry["job_id"], entry["event"], entry["pod_id"], entry["level"]) == (
        "j1", "e", "pod-1", "info")


def test_secrets_are_redacted_from_messages_arguments_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging(debug=True, fmt="json", redactor=Scrubber([SECRET, "abc"]), stream=stream)
    log = logging.getLogger("podworker.test")
    log.info("key is %s", SECRET, extra={"url": f"https://x/?key={SECRET}"})
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom")
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count("[redacted]") >= 3
    assert Scrubber(["abc"])("abc") == "abc"  # under 4 characters: not a key, left alone


def test_a_records_own_secrets_are_redacted_too_even_where_the_worker_has_none() -> None:
    job_secret = "job-access-secret-9f8e7d"  # a job's s3Config credential, say
    stream = io.StringIO()
    configure_logging(debug=True, fmt="text", redactor=Scrubber([]), stream=stream)
    log = logging.getLogger("podworker.test")
    try:
        raise RuntimeError(f"upload refused for {job_secret}")
    except RuntimeError as exc:
        log.error("raised on %s", job_secret[:12], exc_info=exc,
                  extra={"job_id": "j", "_secrets": (job_secret,)})
    log.info("a later record without it: %s", job_secret[:12])
    first, later = stream.getvalue().split("a later record")
    assert job_secret[:6] not in first and job_secret[-6:] not in first
    assert first.count("[redacted]") >= 2 and "RuntimeError: upload refused for" in first
    assert job_secret[:12] in later  # scrubbed only where the record carries it
    assert "_secrets" not in stream.getvalue()


def test_summaries_for_debug_logs_cut_long_values_such_as_base64_images() -> None:
    from app.logs import summarize

    image = "data:image/png;base64," + "A" * 100_000
    out = summarize({"prompt": "a cat", "init": image, "list": [image] * 3})
    assert out["prompt"] == "a cat"
    assert out["init"].endswith(f"... ({len(image)} chars)") and len(out["init"]) < 300
    assert len(str(out)) < 2000
