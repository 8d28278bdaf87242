"""S3 errors, translated: which are worth retrying, which say what to fix, none with a secret.

Exists so the storage adapter's callers see two kinds of error only: ``StorageUnavailable``
(transient: connection errors, timeouts, 5xx, throttling; the upload schedule retries it) and
``UploadFailed`` (permanent: a missing bucket, refused credentials, a skewed clock), each naming
the bucket and the endpoint and saying what to check.
"""

from __future__ import annotations

import re
from typing import Any

from domain.errors import PodworkerError, StorageUnavailable, UploadFailed

_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "AccountProblem",
        "403",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_CODE_PATTERN = re.compile(r"[A-Za-z0-9.]{1,64}")


def client_error(response: dict[str, Any], bucket: str, endpoint: str) -> PodworkerError:
    """A botocore ``ClientError``'s answer as our error: built from the S3 error *code* and the
    status only, never from the server's text (some S3 servers echo the access key id)."""
    raw_code = str(response.get("Error", {}).get("Code", ""))
    code = raw_code if _CODE_PATTERN.fullmatch(raw_code) else "unknown"
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    where = f"bucket '{bucket}' at {endpoint}"
    if code in _MISSING_BUCKET_CODES or code in {"404", "NotFound"}:
        # A HEAD answer has no body: a bare 404 from head_bucket means no such bucket.
        return UploadFailed(f"bucket '{bucket}' does not exist at {endpoint}")
    if code == "RequestTimeTooSkewed":  # a 403, but the keys are not to blame
        return UploadFailed(
            f"S3 at {endpoint} refused the request: this machine's clock is off "
            "by more than 15 minutes (RequestTimeTooSkewed)"
        )
    if code in _DENIED_CODES or status == 403:
        return UploadFailed(
            f"access denied to {where}: check BUCKET_ACCESS_KEY_ID and "
            f"BUCKET_SECRET_ACCESS_KEY ({code})"
        )
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return StorageUnavailable(f"S3 answered {status} {code}")
    return UploadFailed(f"S3 refused the request for {where}: {status} {code}")

def botocore_error(exc: Exception, endpoint: str) -> PodworkerError:
    """A botocore exception that got no answer (connection, credentials) as our error."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import (
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    name = type(exc).__name__
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StorageUnavailable(f"could not reach S3 ({name})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UploadFailed(
            f"no S3 credentials for {endpoint}: set BUCKET_ACCESS_KEY_ID and "
            "BUCKET_SECRET_ACCESS_KEY"
        )
    return UploadFailed(f"S3 client error talking to {endpoint} ({name})")
