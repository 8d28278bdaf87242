"""Settings, read once from the environment and a ``.env`` file, validated, then passed in.

Names are the seed pod worker's (``WEBHOOK_GET_WORK``, ``AI_API_KEY``, ...). Today's RunPod
platform sets ``RUNPOD_*`` names instead (``RUNPOD_WEBHOOK_GET_JOB``, ``RUNPOD_AI_API_KEY``, ...):
both are accepted. **When both are set, the seed's name wins**: it is what you set yourself,
while the ``RUNPOD_*`` value is what the platform injected. Real environment variables win over
``.env``.

Durations keep the seed's unit, milliseconds, and say so in their names' descriptions. A bad
value is reported as one line naming the variable (never echoing a secret's value) and the
process exits with code 2.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from app.model_settings import ModelSettings
from app.weights_settings import WeightsSettings
from domain.errors import ConfigurationError
from streamqueue.layout import DEFAULT_QUEUE, DEFAULT_RESULT_TTL_S, queue_name_problem

SECRET_FIELDS = frozenset(
    {"AI_API_KEY", "RUNPOD_API_KEY", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
     "REDIS_PASSWORD", "JOB_QUEUE"}  # JOB_QUEUE: a Redis URL may hold a password
)


class StorageKind(enum.StrEnum):
    """Where outputs go when they are binary (images)."""

    AUTO = "auto"  # s3 when BUCKET_ENDPOINT_URL is set, else local
    S3 = "s3"
    LOCAL = "local"  # files under OUTPUT_DIR; the reference is the file's path
    BASE64 = "base64"  # data URLs inside the result (small outputs only)


class BucketNaming(enum.StrEnum):
    """How the bucket name is chosen."""

    FIXED = "fixed"  # BUCKET_NAME as given
    MONTHLY = "monthly"  # the seed's scheme: one bucket a month named like ``11-26`` (MM-YY)


class LogFormat(enum.StrEnum):
    AUTO = "auto"  # json when not on a terminal, text on one
    JSON = "json"
    TEXT = "text"


def _env(*names: str) -> Any:
    """Field options for a setting read from ``names`` (the first one set wins)."""
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(ModelSettings, WeightsSettings):
    """Every setting podworker reads (the model's are in ``ModelSettings``, where weights and
    LoRAs come from in ``WeightsSettings``). Field descriptions
    are the README's table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        frozen=True,
    )

    # --- process ------------------------------------------------------------------------
    DEBUG: bool = Field(False, description="Log at DEBUG level (prompts and inputs included).")
    TEST_LOCAL: bool = Field(
        False,
        description="Run the jobs in TEST_INPUT_FILE with local adapters, print the results, "
        "exit. Also the mode when no take webhook is configured.",
    )
    TEST_INPUT_FILE: Path = Field(
        Path("test_inputs.json"), description="The local run's jobs (one job or a list)."
    )
    LOG_FORMAT: LogFormat = Field(LogFormat.AUTO, description="auto, json or text.")
    STATE_DIR: Path = Field(
        Path(".podworker"),
        description="Where the outbox and running-job marks are kept (must survive a restart).",
    )

    # --- lifecycle ----------------------------------------------------------------------
    EXECUTION_TIMEOUT: int = Field(
        300_000, gt=0, description="Work timeout per job (ms)."
    )
    TERMINATE_IDLE_TIME: int = Field(
        60_000, ge=0, description="Idle time before the pod deletes itself (ms); 0 = never."
    )
    WORKER_ZERO: bool = Field(False, description="This worker never deletes its pod.")
    OVERRUN_GRACE: int = Field(
        10_000,
        ge=0,
        description="How long past the work timeout a model may take to stop before the worker "
        "reports the job and exits with code 3 (ms).",
    )
    SHUTDOWN_GRACE: int = Field(
        30_000, ge=0, description="After SIGTERM, longest wait for results to be delivered (ms)."
    )
    STARTUP_TIMEOUT: int = Field(
        900_000,
        ge=0,
        description="Longest start-up, model load and warm-up included (ms); past it the worker "
        "fails one job with the reason and exits with code 8. 0 = none.",
    )
    MAX_JOBS: int = Field(
        0, ge=0, description="Jobs a worker takes before it renews itself (exit code 7); "
        "0 = never."
    )
    MAX_RSS_MB: int = Field(
        0,
        ge=0,
        description="Resident memory (MB) past which, after a job, the worker renews itself "
        "(exit code 7); 0 = no limit.",
    )
    MAX_VRAM_FRACTION: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the GPU's memory still allocated after a job past which the "
        "worker renews itself (exit code 7); 0 = no limit.",
    )

    # --- job API ------------------------------------------------------------------------
    AI_API_KEY: SecretStr | None = Field(
        None,
        validation_alias=_env("AI_API_KEY", "RUNPOD_AI_API_KEY"),
        description="Job API key, sent raw in Authorization. Also RUNPOD_AI_API_KEY.",
    )
    WEBHOOK_GET_WORK: str | None = Field(
        None,
        validation_alias=_env("WEBHOOK_GET_WORK", "RUNPOD_WEBHOOK_GET_JOB"),
        description="Take URL template ($ID = worker id). Also RUNPOD_WEBHOOK_GET_JOB.",
    )
    WEBHOOK_POST_OUTPUT: str | None = Field(
        None,
        validation_alias=_env("WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_POST_OUTPUT"),
        description="Result URL template ($ID = job id, $RUNPOD_POD_ID = worker id). "
        "Also RUNPOD_WEBHOOK_POST_OUTPUT.",
    )
    WEBHOOK_PING: str | None = Field(
        None,
        validation_alias=_env("WEBHOOK_PING", "RUNPOD_WEBHOOK_PING"),
        description="Heartbeat URL template ($RUNPOD_POD_ID = worker id). Also "
        "RUNPOD_WEBHOOK_PING.",
    )
    WEBHOOK_POST_STREAM: str | None = Field(
        None,
        validation_alias=_env("WEBHOOK_POST_STREAM", "RUNPOD_WEBHOOK_POST_STREAM"),
        description="Stream URL template ($ID = job id, $RUNPOD_POD_ID = worker id). Also "
        "RUNPOD_WEBHOOK_POST_STREAM.",
    )
    PING_INTERVAL: int = Field(
        10_000,
        gt=0,
        validation_alias=_env("PING_INTERVAL", "RUNPOD_PING_INTERVAL"),
        description="Heartbeat period (ms). Also RUNPOD_PING_INTERVAL.",
    )
    RUNPOD_POD_ID: str | None = Field(
        None, description="This worker's id (a random one when unset)."
    )
    JOB_API_TIMEOUT: int = Field(
        5_000, gt=0, description="Connect timeout, and read timeout for non-polling calls (ms)."
    )
    JOB_TAKE_TIMEOUT: int = Field(
        95_000,
        gt=0,
        description="Read timeout of a take or job-stop long-poll; longer than the server's "
        "long-poll (ms).",
    )
    MAX_UNDELIVERED: int = Field(
        256, ge=1, description="Most jobs held at once, from take to a result the job API "
        "accepted (raised to CONCURRENCY when lower): results awaiting delivery never exceed "
        "it, and a job API slow to accept results slows taking instead of piling them up."
    )
    MAX_RESULT_BYTES: int = Field(
        10_000_000,
        gt=0,
        description="Largest result body posted to the job API (bytes); larger results fail "
        "with a message to configure a bucket.",
    )

    # --- job queue on Redis Streams (a team's own cluster, instead of RunPod) --------------
    JOB_QUEUE: str | None = Field(
        None,
        repr=False,  # a Redis URL may hold a password
        description="A Redis URL (redis://HOST:6379/0, rediss:// for TLS): take jobs from the "
        "Redis Streams queue there instead of RunPod's webhooks; unset: RunPod.",
    )
    JOB_QUEUE_NAME: str = Field(
        DEFAULT_QUEUE,
        description="Redis queue: its name, which its keys start with (stream NAME:jobs, "
        "consumer group workers).",
    )
    REDIS_PASSWORD: SecretStr | None = Field(
        None, description="Redis queue: the password (wins over one in JOB_QUEUE)."
    )
    JOB_LEASE: int = Field(
        60_000,
        gt=0,
        description="Redis queue: how long a job stays with a worker that stopped renewing it "
        "before another worker takes it over (ms); at least 3 x PING_INTERVAL, whose heartbeat "
        "renews it.",
    )
    JOB_MAX_ATTEMPTS: int = Field(
        3,
        ge=1,
        description="Redis queue: most times a job is run; a job whose workers died on it that "
        "often is failed instead (the poison cap).",
    )
    JOB_RESULT_TTL: int = Field(
        DEFAULT_RESULT_TTL_S,
        gt=0,
        description="Redis queue: how long a finished job's record and result are kept (s).",
    )

    # --- pod control --------------------------------------------------------------------
    RUNPOD_API_KEY: SecretStr | None = Field(
        None, description="RunPod API key, used only to terminate this pod."
    )
    RUNPOD_API_URL: str = Field(
        "https://api.runpod.io/graphql", description="RunPod's GraphQL endpoint."
    )

    # --- storage ------------------------------------------------------------------------
    STORAGE: str = Field(
        StorageKind.AUTO.value,
        description="auto, s3, local, base64, or module:factory for your own storage.",
    )
    OUTPUT_DIR: Path = Field(Path("outputs"), description="Local storage folder.")
    BUCKET_ENDPOINT_URL: str | None = Field(None, description="S3 endpoint URL.")
    BUCKET_ACCESS_KEY_ID: SecretStr | None = Field(None, description="S3 access key id.")
    BUCKET_SECRET_ACCESS_KEY: SecretStr | None = Field(None, description="S3 secret key.")
    BUCKET_NAME: str | None = Field(
        None, description="Bucket name (required with BUCKET_NAMING=fixed)."
    )
    BUCKET_NAMING: BucketNaming = Field(
        BucketNaming.FIXED, description="fixed (BUCKET_NAME) or monthly (the seed's MM-YY)."
    )
    BUCKET_REGION: str = Field("us-east-1", description="S3 region for signing.")
    BUCKET_PUBLIC_URLS: bool = Field(
        False, description="Return plain object URLs instead of presigned ones."
    )
    BUCKET_TIMEOUT: int = Field(
        30_000, gt=0, description="Longest one S3 request may take, connect and whole answer, "
        "however slowly S3 answers (ms; each MB uploaded adds a second)."
    )
    BUCKET_URL_EXPIRY: int = Field(
        604_800, description="Presigned URL lifetime (s); 7 days at most (checked by the S3 "
        "storage, SigV4's limit)."
    )

    # --- operations ---------------------------------------------------------------------
    HEALTH_PORT: int = Field(
        0, ge=0, le=65535, description="Port of /health and /metrics; 0 = off."
    )
    HEALTH_HOST: str = Field("0.0.0.0", description="Address the health port binds.")

    # --- input limits -------------------------------------------------------------------
    MAX_INPUT_BYTES: int = Field(
        10_000_000, gt=0, description="Largest job input accepted (bytes of JSON; the "
        "platform's own /run limit, room for base64 input images)."
    )
    @field_validator(
        "WEBHOOK_GET_WORK", "WEBHOOK_POST_OUTPUT", "WEBHOOK_PING", "WEBHOOK_POST_STREAM",
        "BUCKET_ENDPOINT_URL", "MODEL_PATH", "RUNPOD_POD_ID", "BUCKET_NAME", "SD_SIZES",
        "JOB_QUEUE", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("STORAGE")
    @classmethod
    def _storage_kind_or_factory(cls, value: str) -> str:
        value = value.strip()
        if ":" in value or value in {kind.value for kind in StorageKind}:
            return value
        raise ValueError("must be auto, s3, local, base64, or module:factory")

    @field_validator("WEBHOOK_GET_WORK", "WEBHOOK_POST_OUTPUT", "WEBHOOK_PING",
                     "WEBHOOK_POST_STREAM", "RUNPOD_API_URL")
    @classmethod
    def _must_be_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("JOB_QUEUE")
    @classmethod
    def _must_be_redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a Redis URL: redis://HOST:PORT/DB, rediss:// or unix://")
        return value

    @field_validator("JOB_QUEUE_NAME")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        problem = queue_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    # --- derived ------------------------------------------------------------------------
    @property
    def local_mode(self) -> bool:
        """True for the seed's local test run: TEST_LOCAL, or no job source configured (no
        take webhook, no JOB_QUEUE)."""
        return self.TEST_LOCAL or (self.WEBHOOK_GET_WORK is None and self.JOB_QUEUE is None)

    @property
    def never_self_terminates(self) -> bool:
        """True when an idle worker never ends its pod: WORKER_ZERO, or TERMINATE_IDLE_TIME=0."""
        return self.WORKER_ZERO or self.TERMINATE_IDLE_TIME <= 0

    @property
    def queue_password(self) -> str | None:
        """The Redis queue's password: REDIS_PASSWORD, else the one in JOB_QUEUE's URL."""
        if self.REDIS_PASSWORD is not None:
            return self.REDIS_PASSWORD.get_secret_value()
        if self.JOB_QUEUE is None:
            return None
        password = urlsplit(self.JOB_QUEUE).password
        return unquote(password) if password else None


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read and validate the settings; raise ``ConfigurationError`` with one readable line."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad variable: its name, and why; never a secret's value."""
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "settings"
        field = Settings.model_fields.get(name)
        if field is not None and isinstance(field.validation_alias, str):
            name = field.validation_alias
        message = str(err["msg"]).removeprefix("Value error, ")
        hidden = name in SECRET_FIELDS or "input" not in err
        shown = "" if hidden else f" (got {err['input']!r:.60})"
        lines.append(f"invalid setting {name}{shown}: {message}")
    return "; ".join(lines)
