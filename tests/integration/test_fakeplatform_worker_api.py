"""The fake platform's worker side over real HTTP on loopback: take, done, long polls, auth,
the wire. No sleeps: waits are threads joined with deadlines and the fake's ``wait_until``."""

from __future__ import annotations

import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from fakeplatform import FakeJobApiServer
from fakeplatform.cli import load_jobs
from tests.support.http_fixtures import API_KEY, WORKER_ID
from tests.support.platform_calls import AUTH, done, http, in_thread, take, untimed

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["http"]  # the fixture, used by name


# --- jobs in, results out -------------------------------------------------------------
def test_a_job_run_through_the_api_is_followed_by_status_to_completed(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    queued = http.post(f"{fake_api.url}/run", json={"input": {"prompt": "fox"}}, timeout=5)
    job_id = queued.json()["id"]
    assert queued.json() == {"id": job_id, "status": "IN_QUEUE"}
    assert http.get(f"{fake_api.url}/status/{job_id}", timeout=5).json()["status"] == "IN_QUEUE"
    assert take(http, fake_api).json() == {"id": job_id, "input": {"prompt": "fox"}}
    status = http.get(f"{fake_api.url}/v2/fake/status/{job_id}", timeout=5).json()
    assert status["status"] == "IN_PROGRESS"
    assert done(http, fake_api, job_id, {"output": [1, 2]}).status_code == 200
    final = http.get(f"{fake_api.url}/status/{job_id}", timeout=5).json()
    timing = {k: final.pop(k) for k in ("delayTime", "executionTime")}
    assert final == {"id": job_id, "status": "COMPLETED", "output": [1, 2], "workerId": WORKER_ID}
    assert all(isinstance(ms, int) and ms >= 0 for ms in timing.values())


@pytest.mark.parametrize(
    ("error", "status"), [("boom", "FAILED"), ({"message": "boom"}, "COMPLETED")]
)
def test_only_a_string_error_marks_the_job_failed_as_on_the_platform(
    fake_api: FakeJobApiServer, http: requests.Session, error: Any, status: str
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    done(http, fake_api, job_id, {"error": error})
    assert untimed(fake_api.status(job_id)) == {"id": job_id, "status": status, "error": error}


def test_a_result_sent_as_form_urlencoded_is_still_read_as_json(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    reply = done(http, fake_api, job_id, {"output": "ok"},
                 **{"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200
    assert fake_api.results == {job_id: {"output": "ok"}}


def test_run_uses_a_given_id_and_refuses_a_reused_one_or_a_body_without_input(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    first = http.post(f"{fake_api.url}/run", json={"id": "mine", "input": {}}, timeout=5)
    again = http.post(f"{fake_api.url}/run", json={"id": "mine", "input": {}}, timeout=5)
    no_input = http.post(f"{fake_api.url}/run", json={"prompt": "x"}, timeout=5)
    assert (first.status_code, first.json()["id"]) == (200, "mine")
    assert again.status_code == 409
    assert no_input.status_code == 400


def test_a_second_final_result_is_counted_as_a_duplicate_and_keeps_the_first(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    done(http, fake_api, job_id, {"output": "first"})
    done(http, fake_api, job_id, {"output": "second"})
    assert fake_api.duplicates == [job_id]
    assert fake_api.stats()["duplicates"] == 1
    assert untimed(fake_api.status(job_id)) == {
        "id": job_id, "status": "COMPLETED", "output": "first"}


def test_progress_is_recorded_in_order_shown_by_status_and_after_the_result_counts_as_late(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    for step in (1, 2):
        done(http, fake_api, job_id, {"status": "IN_PROGRESS", "output": step})
    assert untimed(fake_api.status(job_id, full=True)) == {
        "id": job_id, "status": "IN_PROGRESS", "output": 2}
    assert fake_api.status(job_id) == {"id": job_id, "status": "IN_PROGRESS"}
    done(http, fake_api, job_id, {"output": "ok"})
    done(http, fake_api, job_id, {"status": "IN_PROGRESS", "output": 3})
    assert fake_api.progress == [(job_id, 1), (job_id, 2), (job_id, 3)]
    assert fake_api.late_progress == [job_id]
    assert fake_api.duplicates == []


def test_unknown_jobs_and_routes_are_404_and_a_non_json_result_is_400(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    assert http.get(f"{fake_api.url}/status/nope", timeout=5).status_code == 404
    assert http.get(f"{fake_api.url}/nowhere", timeout=5).status_code == 404
    assert done(http, fake_api, "nope", {"output": 1}).status_code == 404
    bad = http.post(f"{fake_api.url}/v2/fake/job-done/w/{job_id}", data=b"{oops",
                    headers=AUTH, timeout=5)
    assert bad.status_code == 400
    assert fake_api.results == {}


# --- long polls -----------------------------------------------------------------------
def test_take_answers_as_soon_as_a_job_arrives_during_the_long_poll(
    http: requests.Session,
) -> None:
    with FakeJobApiServer(long_poll_s=10, api_key=API_KEY) as fake:
        started = time.monotonic()
        thread, out = in_thread(lambda: take(http, fake))
        assert fake.wait_until(lambda s: s.requests["take"] == 1)
        job_id = fake.submit({"n": 1})
        thread.join(timeout=5)
        assert out[0].json()["id"] == job_id
        assert time.monotonic() - started < 5


def test_take_answers_204_after_one_long_poll_when_no_job_arrives(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    started = time.monotonic()
    reply = take(http, fake_api, job_in_progress="0")
    assert reply.status_code == 204
    assert time.monotonic() - started >= fake_api.long_poll_s * 0.9
    assert fake_api.requests["take"] == 1


def test_batch_take_hands_out_up_to_batch_size_jobs_as_a_list(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    ids = [fake_api.submit({"n": n}) for n in range(3)]
    url = f"{fake_api.url}/v2/fake/job-take-batch/{WORKER_ID}"
    first = http.get(url, params={"batch_size": "2"}, headers=AUTH, timeout=5).json()
    second = http.get(url, params={"batch_size": "2"}, headers=AUTH, timeout=5).json()
    assert [j["id"] for j in first] == ids[:2]
    assert [j["id"] for j in second] == ids[2:]
    assert fake_api.taken == ids


def test_cancelling_a_queued_job_drops_it_and_a_running_one_is_sent_to_its_worker_only(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    running = fake_api.submit({})
    take(http, fake_api, worker="w1")
    queued = fake_api.submit({})
    assert http.post(f"{fake_api.url}/cancel/{queued}", timeout=5).json()["status"] == \
        "CANCELLED"
    assert fake_api.cancel(running) == "CANCELLED"
    assert take(http, fake_api).status_code == 204  # the cancelled queued job is gone
    stop = f"{fake_api.url}/v2/fake/job-stop/"
    assert http.get(stop + "w2", headers=AUTH, timeout=5).status_code == 204
    assert http.get(stop + "w1", headers=AUTH, timeout=5).json() == {"jobsToStop": [running]}
    assert http.get(stop + "w1", headers=AUTH, timeout=5).status_code == 204


def test_job_stop_answers_as_soon_as_a_cancel_arrives(http: requests.Session) -> None:
    with FakeJobApiServer(long_poll_s=10, api_key=API_KEY) as fake:
        job_id = fake.submit({})
        take(http, fake)
        thread, out = in_thread(lambda: http.get(
            f"{fake.url}/v2/fake/job-stop/{WORKER_ID}", headers=AUTH, timeout=10))
        assert fake.wait_until(lambda s: s.requests["stop"] == 1)
        fake.cancel(job_id)
        thread.join(timeout=5)
        assert out[0].json() == {"jobsToStop": [job_id]}


def test_stop_ends_long_polls_at_once_and_closes_kept_alive_connections(
    http: requests.Session,
) -> None:
    fake = FakeJobApiServer(long_poll_s=30).start()
    assert http.get(f"{fake.url}/stats", timeout=5).status_code == 200  # a kept-alive conn
    thread, out = in_thread(lambda: take(http.__class__(), fake))
    assert fake.wait_until(lambda s: s.requests["take"] == 1)
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 3
    assert out[0].status_code == 204
    with pytest.raises(requests.ConnectionError):
        http.get(f"{fake.url}/stats", timeout=2)


# --- auth, files, stats, speed ------------------------------------------------------
def test_job_api_endpoints_require_the_exact_api_key_but_run_and_status_do_not(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    url = f"{fake_api.url}/v2/fake/ping/{WORKER_ID}"
    assert http.get(url, timeout=5).status_code == 401
    assert http.get(url, headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=5).status_code == 401
    assert http.get(url, headers=AUTH, timeout=5).status_code == 200
    assert http.post(f"{fake_api.url}/run", json={"input": {}}, timeout=5).status_code == 200
    assert fake_api.stats()["unauthorized"] == 2
    assert len(fake_api.pings) == 1


def test_jobs_from_a_test_inputs_file_keep_their_ids_and_the_others_get_new_ones(
    tmp_path: Path
) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"input": {"a": 1}}, {"id": "x", "input": {"b": 2}}]))
    with FakeJobApiServer() as fake:
        assert load_jobs(fake, path) == ["job-1", "x"]
        assert fake.stats()["queued"] == 2


def test_stats_count_requests_by_endpoint_and_what_was_recorded(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    http.get(f"{fake_api.url}/v2/fake/ping/{WORKER_ID}?job_id={job_id}", headers=AUTH,
             timeout=5)
    done(http, fake_api, job_id, {"output": 1})
    stats = http.get(f"{fake_api.url}/stats", timeout=5).json()
    assert stats["requests"] == {"take": 1, "ping": 1, "done": 1}
    assert (stats["takes"], stats["results"], stats["pings"], stats["duplicates"]) == (1, 1, 1, 0)
    assert fake_api.pings == [(WORKER_ID, (job_id,))]


def test_hundreds_of_take_and_result_round_trips_share_one_connection_quickly(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    count = 300
    for n in range(count):
        fake_api.submit({"n": n})
    round_trips = []
    for _ in range(count):
        started = time.monotonic()
        job = take(http, fake_api).json()
        done(http, fake_api, job["id"], {"output": job["input"]})
        round_trips.append(time.monotonic() - started)
    assert len(fake_api.results) == count
    assert fake_api.stats()["connections"] == 1
    # Nagle's algorithm with delayed ACKs stalls a request ~40 ms: a round trip (two requests)
    # would take 40 to 80 ms. The median ignores the slow ones a busy machine has anyway.
    median = statistics.median(round_trips)
    assert median < 0.035, f"median round trip {median * 1000:.1f} ms: stalled by Nagle?"


def raw_exchange(fake: FakeJobApiServer, request: bytes) -> bytes:
    host, port = fake.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):  # until the server closes the connection
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_http_1_0_request_is_answered_and_its_connection_closed(
    fake_api: FakeJobApiServer,
) -> None:
    answer = raw_exchange(fake_api, b"GET /stats HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in answer
    assert b'"requests"' in answer


def test_a_malformed_header_line_is_answered_400(fake_api: FakeJobApiServer) -> None:
    answer = raw_exchange(fake_api, b"GET /stats HTTP/1.1\r\nno colon here\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 ")


