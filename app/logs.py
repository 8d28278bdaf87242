"""Logging: one JSON object a line in production, readable lines locally, never a secret.

``configure_logging`` installs one handler on the root logger with a filter that runs the
settings' :class:`~domain.scrubbing.Scrubber` over the message, the arguments, the exception
text and every string field: no piece of six or more characters of a secret is written. Record
attributes passed with ``extra=`` (``job_id``, ``event``, ``seconds`` ...) become JSON fields; a
record about one job may carry that job's own credentials as ``_secrets`` (never written), and
they are scrubbed too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from domain.scrubbing import Scrubber

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """Rewrites each record so no secret reaches a handler."""

    def __init__(self, redact: Scrubber) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        job_secrets = getattr(record, "_secrets", None)  # a job's own credentials (s3Config)
        scrubbers = [self._redact] if self._redact else []
        if job_secrets:  # only a record about such a job pays for a scrubber of its own
            scrubbers.append(Scrubber(job_secrets))
        if not scrubbers:
            return True

        def redact(text: str) -> str:
            for scrub in scrubbers:
                text = scrub(text)
            return text

        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every ``extra`` field."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level message (job=... key=value)`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={_shown(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and key != "event"
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        if extras:
            line += f"  ({extras})"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


def _shown(value: Any) -> str:
    """A field as a text line shows it: a string with a line break or another control character
    (an odd job id, say) is quoted and escaped, so one record stays one line."""
    text = str(value)
    return text if text.isprintable() else ascii(text)


def summarize(value: Any, *, limit: int = 200) -> Any:
    """A copy of a JSON value fit for a DEBUG log line: long strings (base64 images, huge
    prompts) are cut to ``limit`` characters with their length noted; deep nesting is cut."""

    def cut(item: Any, depth: int) -> Any:
        if isinstance(item, str):
            return item if len(item) <= limit else f"{item[:limit]}... ({len(item)} chars)"
        if depth > 6:
            return "..."
        if isinstance(item, dict):
            return {str(k)[:limit]: cut(v, depth + 1) for k, v in list(item.items())[:50]}
        if isinstance(item, list | tuple):
            return [cut(v, depth + 1) for v in item[:50]]
        return item

    return cut(value, 0)


def configure_logging(
    *,
    debug: bool,
    fmt: str,
    redactor: Scrubber,
    stream: TextIO | None = None,
    static: dict[str, Any] | None = None,
) -> None:
    """Install the one handler on the root logger (replacing earlier ones)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter(static) if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Never below WARNING, even with DEBUG=true: at DEBUG botocore logs request headers (the S3
    # access key id is in Authorization) and urllib3 logs URLs with their query strings.
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
