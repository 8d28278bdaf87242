"""The botocore S3 client, configured once: retries off, checksums only where required, quiet
loggers.

boto3 is imported here, lazily (only when a bucket is configured), so a worker without one
never pays for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from domain.errors import ConfigurationError

#: Connecting to a healthy endpoint takes milliseconds; 5 s is a dead or unreachable host.
CONNECT_TIMEOUT_S = 5.0
#: Longest one S3 call may take, connect and whole answer (``BUCKET_TIMEOUT``'s default; each MB
#: sent adds a second). An image of a few MB is sent in well under a second on a pod's network;
#: 30 s leaves room for a slow server without letting a hung one hold a job for long (the retry
#: policy bounds the total to about 30 s more). Enforced by :mod:`adapters.s3.transport`.
CALL_TIMEOUT_S = 30.0

#: botocore's DEBUG output carries credentials; these loggers are kept at WARNING or above.
_SDK_LOGGERS = ("botocore", "boto3", "s3transfer")


def make_client(
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str,
) -> Any:
    """A botocore S3 client with no retries of its own, path-style addressing for custom
    endpoints, and the SDK's loggers kept quiet (at DEBUG they log credentials). It signs and
    parses; :mod:`adapters.s3.transport` sends, with the timeouts and connection pool."""
    from botocore.config import Config  # lazily: boto3 is an optional dependency
    from botocore.exceptions import InvalidRegionError

    config = Config(
        # One attempt per call: domain.waiting.STORAGE_UPLOAD does the retrying.
        retries={"mode": "standard", "total_max_attempts": 1},
        signature_version="s3v4",
        # Custom endpoints (MinIO, moto, R2...) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # botocore >= 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible servers reject; send them only where the API requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="podworker",
    )
    try:
        with _sdk_lock:
            _quiet_sdk_loggers()
            return _sdk_session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
                config=config,
            )
    except InvalidRegionError:
        raise ConfigurationError(f"invalid S3 region {region!r}") from None
    except ValueError:
        # botocore's message quotes the endpoint, which may hold user info: not shown.
        raise ConfigurationError(
            "invalid S3 endpoint URL: it must look like https://host[:port]"
        ) from None


# boto3 sessions are not thread-safe, the clients they make are. One session, used only under
# this lock, makes every client: it loads S3's service model once (about 60 ms) for all of them.
_sdk_lock = threading.Lock()
_session: Any = None


def _sdk_session() -> Any:
    """The process's boto3 session (call with ``_sdk_lock`` held)."""
    global _session
    if _session is None:
        import boto3.session

        _session = boto3.session.Session()
    return _session


def _quiet_sdk_loggers() -> None:
    """Keep the AWS SDK's loggers at WARNING or above: at DEBUG they log credentials."""
    for name in _SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        if sdk_logger.getEffectiveLevel() < logging.WARNING:
            sdk_logger.setLevel(logging.WARNING)
