"""Each credential goes only to its own service, and only over verified TLS.

- the job API key only to the job API (take, result, ping, job-stop), never to the RunPod API
  or the bucket; the RunPod API key only to the RunPod GraphQL URL, never to the job API or the
  bucket; the S3 keys only sign S3 requests (the secret itself is never sent);
- TLS verification stays on: every HTTP client refuses a server whose certificate it cannot
  verify (a self-signed one on loopback), and no source file turns verification off.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapters.clock import ManualClock
from adapters.http.client import HttpClient, HttpFailure
from adapters.runpod.job_api import RunPodJobApi
from adapters.runpod.pod_control import RunPodPodControl
from adapters.s3.storage import S3Storage
from domain.errors import ApiUnavailable, PodControlUnavailable, UploadFailed
from domain.job import Artifact
from fakeplatform import FakeJobApiServer
from tests.support.fault_kit import LONG_POLL_S, POD_ID, RecordingServer, Rig, s3_settings
from tests.support.http_fixtures import SleepRecorder
from tests.support.leak_check import (
    JOB_KEY,
    POD_KEY,
    S3_KEY_ID,
    S3_SECRET,
    leaks,
    pieces,
)
from tests.support.worker_process import ROOT


@pytest.fixture
def keyed_rig(tmp_path: Path) -> Iterator[Rig]:
    api = FakeJobApiServer(long_poll_s=LONG_POLL_S, api_key=JOB_KEY)
    rig = Rig(root=tmp_path, api=api.start(), api_key=JOB_KEY, pod_api_key=POD_KEY)
    try:
        yield rig
    finally:
        rig.close()


def test_each_key_is_sent_only_to_its_own_service(keyed_rig: Rig) -> None:
    rig = keyed_rig
    runpod_api = FakeJobApiServer(pod_api_key=POD_KEY).start()
    bucket = RecordingServer().start()  # answers every S3 request with 200
    try:
        worker = rig.start(
            **s3_settings(bucket.url, "outputs", S3_KEY_ID, S3_SECRET),
            RUNPOD_API_KEY=POD_KEY,
            RUNPOD_API_URL=runpod_api.graphql_url,
            TERMINATE_IDLE_TIME="1500",
            RUNPOD_PING_INTERVAL="200",
        )
        job = rig.submit({"_echo": {"artifacts": 2, "progress": 2}})
        assert len(rig.wait_result(job)["output"]["artifacts"]) == 2
        assert worker.wait(timeout=30) == 0  # idle: the pod was terminated
    finally:
        runpod_api.stop()
        bucket.stop()

    job_api_seen = rig.api.authorizations
    assert set(job_api_seen) == {(e, JOB_KEY) for e in ("take", "done", "ping", "stop")}
    assert runpod_api.authorizations == {("graphql", f"Bearer {POD_KEY}"): 1}
    assert runpod_api.terminations == [POD_ID]
    s3_requests = [c for c in bucket.captured if c.method == "PUT"]
    assert sorted(c.path for c in s3_requests) == [f"/outputs/{job}/{i}.png" for i in (0, 1)]
    for request in bucket.captured:
        sent = f"{request.method} {request.target}\n{request.headers}\n{request.body!r}"
        assert not [p for p in leaks(sent) if not p.startswith("S3 access key id")], sent
        assert f"Credential={S3_KEY_ID}/" in request.headers["authorization"]  # signed by it
    rig.assert_delivered_once()


# --- TLS -----------------------------------------------------------------------------------
def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


@pytest.fixture
def untrusted_https(tmp_path: Path) -> Iterator[tuple[RecordingServer, Path]]:
    """An HTTPS server on loopback with a self-signed certificate, and the certificate file."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = RecordingServer(tls=context).start()
    try:
        yield server, cert
    finally:
        server.stop()


def test_every_http_client_refuses_a_certificate_it_cannot_verify(
    untrusted_https: tuple[RecordingServer, Path],
) -> None:
    server, cert = untrusted_https
    url = server.url
    # the server works for a client that trusts its certificate...
    assert requests.get(f"{url}/health", verify=str(cert), timeout=5).status_code == 200
    assert [c.method for c in server.captured] == ["GET"]

    # ...and every podworker client refuses it
    job_api = RunPodJobApi(
        take_url=f"{url}/v2/x/job-take/$ID", result_url=f"{url}/v2/x/job-done/$ID",
        ping_url=None, api_key=JOB_KEY, worker_id="w", connect_timeout=5, read_timeout=5,
        take_timeout=5, clock=ManualClock(), sleep=SleepRecorder(),
    )
    with pytest.raises(ApiUnavailable, match="TLS failed"):
        job_api.take(job_in_progress=False)
    job_api.close()
    control = RunPodPodControl(f"{url}/graphql", POD_KEY, "pod-1", timeout=5,
                               sleep=SleepRecorder())
    with pytest.raises(PodControlUnavailable):
        control.terminate()
    control.close()
    storage = S3Storage(endpoint_url=url, access_key_id=S3_KEY_ID,
                        secret_access_key=S3_SECRET, bucket="outputs", sleep=SleepRecorder())
    with pytest.raises(UploadFailed, match="could not reach S3"):
        storage.store("job", 0, Artifact(b"\x89PNG"))
    storage.close()
    assert [c.method for c in server.captured] == ["GET"], "a request got past TLS unverified"


def test_the_shared_http_client_trusts_only_a_ca_bundle_it_can_name(
    untrusted_https: tuple[RecordingServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = untrusted_https
    with pytest.raises(HttpFailure, match="TLS"):
        HttpClient().request("GET", f"{server.url}/x", deadline_s=5, max_answer_bytes=100)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's own CA, as with pip or curl
    answer = HttpClient().request("GET", f"{server.url}/x", deadline_s=5, max_answer_bytes=100)
    assert answer.status == 200


INSECURE = re.compile(
    r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
    r"|disable_warnings|InsecureRequestWarning|PYTHONHTTPSVERIFY|use_ssl\s*=\s*False"
)


def test_no_source_file_turns_tls_verification_off() -> None:
    sources = [p for folder in ("app", "domain", "adapters")
               for p in sorted((ROOT / folder).rglob("*.py"))]
    sources += [ROOT / name for name in ("Dockerfile",) if (ROOT / name).exists()]
    assert len(sources) > 20
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources
             for m in INSECURE.finditer(p.read_text())]
    assert found == []


def test_the_secret_pieces_helper_finds_a_key_cut_in_two() -> None:
    """The leak check itself: a key split by a cut is still found (the check could fail)."""
    assert leaks("..." + JOB_KEY[:7] + "... (221 chars)")
    assert not leaks("job API at 127.0.0.1:8080 refused the result: 400 ***")
    assert len(pieces(S3_SECRET)) == len(S3_SECRET) - 5
