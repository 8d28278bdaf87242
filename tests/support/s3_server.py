"""A real S3-protocol server on loopback for integration tests: moto's server mode, as a process.

``s3_server`` (session) is one shared server; ``s3_bucket`` gives each test a fresh bucket on it.
Tests that stop a server or turn on authentication take their own from ``s3_server_factory``, so
the shared one is never disturbed. Start-up polls the server with a deadline (about 0.4 s).

Every client made here uses the distinctive fake credentials below, so tests can search logs
and messages for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.ports import free_port

FAKE_ACCESS_KEY_ID = "AKIAPWTESTQ7Z3X9K5M2"
FAKE_SECRET_ACCESS_KEY = "pwtest0Zq7wX3vN9kR2mL5bH8cJ4dF6gT1yS0aE"
REGION = "us-east-1"
START_DEADLINE_S = 20.0
_POLL_INTERVAL_S = 0.01
_ALLOW_ALL_S3 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class AuthUsers:
    """Credentials moto generated once authentication was turned on."""

    allowed: Credentials  # may do anything in S3
    no_policy: Credentials  # a real key with no permission at all: AccessDenied


_boto3_lock = threading.Lock()  # boto3 sessions are not thread-safe; their clients are
_boto3_sessions: list[Any] = []


def _boto3_session() -> Any:
    """One boto3 session for every helper client (call with ``_boto3_lock`` held)."""
    if not _boto3_sessions:
        import boto3.session

        _boto3_sessions.append(boto3.session.Session())
    return _boto3_sessions[0]


def _client_config() -> Any:
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=10,
    )


class S3Server:
    """One moto server process on 127.0.0.1; ``stop()`` and ``start()`` it at will.

    Restarting keeps the port (so clients built earlier reach it again) but not the data:
    moto keeps buckets in memory.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
        self._clients: dict[tuple[str, Credentials], Any] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and return once it answers HTTP (raises after the deadline)."""
        if self.running:
            return
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        pause = threading.Event()
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self._process.returncode}: {self._log_tail()}"
                )
            try:
                requests.get(f"{self.endpoint_url}/moto-api/data.json", timeout=1)
                return
            except requests.ConnectionError:
                pause.wait(_POLL_INTERVAL_S)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {START_DEADLINE_S} s")

    def stop(self) -> None:
        """Stop the process and wait until it is gone (connections are then refused)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:]

    # --- helpers ------------------------------------------------------------------------

    def client(self, service: str = "s3", credentials: Credentials | None = None) -> Any:
        """A boto3 client for this server (the fake credentials unless others are given).

        Clients are made once per service and credentials (a client costs about 60 ms)."""
        creds = credentials or Credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)
        with _boto3_lock:
            if (service, creds) not in self._clients:
                self._clients[service, creds] = _boto3_session().client(
                    service,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=creds.access_key_id,
                    aws_secret_access_key=creds.secret_access_key,
                    region_name=REGION,
                    config=_client_config(),
                )
            return self._clients[service, creds]

    def create_bucket(self, name: str | None = None, credentials: Credentials | None = None) -> str:
        """Create a bucket (a fresh unique name unless one is given) and return its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client(credentials=credentials).create_bucket(Bucket=bucket)
        return bucket

    def make_public(self, bucket: str) -> None:
        """Let anyone read ``bucket``'s objects (a bucket policy, as public buckets use)."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        self.client().put_bucket_policy(Bucket=bucket, Policy=policy)

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket``, sorted."""
        answer = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def enable_auth(self) -> AuthUsers:
        """Create two IAM users, then make the server check every request's signature and
        permissions (moto accepts any credentials until then). Returns their credentials."""
        iam = self.client("iam")
        users = []
        for name, policy in (("podworker-uploader", _ALLOW_ALL_S3), ("podworker-nobody", None)):
            iam.create_user(UserName=name)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            if policy is not None:
                iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=policy)
            users.append(Credentials(key["AccessKeyId"], key["SecretAccessKey"]))
        answer = requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=5)
        answer.raise_for_status()
        return AuthUsers(allowed=users[0], no_policy=users[1])


def start_s3_server(port: int | None = None) -> S3Server:
    """Start a server; on a port taken meanwhile, try again on another one."""
    for _ in range(3):
        server = S3Server(port)
        try:
            server.start()
            return server
        except RuntimeError:
            server.close()
            if port is not None:
                raise
    raise RuntimeError("could not start a moto server on a free port")


class S3ServerFactory:
    """Starts private servers for one test and stops them all at its end."""

    def __init__(self) -> None:
        self.servers: list[S3Server] = []

    def __call__(self) -> S3Server:
        server = start_s3_server()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server shared by the session. Never stop it: use ``s3_server_factory``."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the shared server."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_server_factory() -> Iterator[S3ServerFactory]:
    """Call it to start a private server; all are stopped when the test ends."""
    factory = S3ServerFactory()
    try:
        yield factory
    finally:
        factory.close()
