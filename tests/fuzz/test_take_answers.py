"""Fuzzed take answers through the real HTTP adapter, and fuzzed job ids through the result URL.

One loopback server answers every take with the bytes of the current example; one
``RunPodJobApi`` reads them, as the worker would. Whatever the bytes, ``take`` returns jobs it
can answer (a usable id, an object input or a ``problem``) and logs one short warning for
everything it drops, never the whole body.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.clock import ManualClock
from adapters.runpod.job_api import RunPodJobApi
from domain.job import MAX_JOB_ID_LENGTH, JobResult
from fakeplatform import FakeJobApiServer
from tests.support.fuzz_kit import (
    CASES,
    envelopes,
    fuzz_settings,
    job_ids,
    json_values,
    odd_text,
    readable_id,
)
from tests.support.replay_server import Recorded, ReplayServer

TAKE_EXAMPLES = 3000
RESULT_URL_EXAMPLES = 1000
LONGEST_WARNING = 400  # a warning shows an excerpt of a body, never the body


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    # only this test's own calls: a worker thread left by an earlier test may log here too
    me = threading.get_ident()
    handler.addFilter(lambda record: record.thread == me)
    logger = logging.getLogger("adapters.runpod.job_api")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def take_api(base: str, **extra: Any) -> RunPodJobApi:
    return RunPodJobApi(
        take_url=f"{base}/v2/fake/job-take/$ID?gpu=fake",
        result_url=f"{base}/v2/fake/job-done/$RUNPOD_POD_ID/$ID?gpu=fake",
        ping_url=None,
        api_key="fuzz-key",
        worker_id="fuzz-worker",
        connect_timeout=5,
        read_timeout=5,
        take_timeout=5,
        clock=ManualClock(),
        **extra,
    )


def body_of(envelope: Any, batch: list[Any] | None) -> bytes:
    return json.dumps(batch if batch is not None else envelope).encode()


take_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=300),  # not JSON, mostly not UTF-8
    odd_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    json_values.map(lambda value: json.dumps(value).encode()),  # JSON, mostly not an object
    envelopes().map(lambda envelope: json.dumps(envelope).encode()),
    st.lists(envelopes(), max_size=5).map(lambda batch: json.dumps(batch).encode()),
    envelopes().map(
        lambda envelope: json.dumps(envelope, ensure_ascii=False).encode("utf-16", "surrogatepass")
    ),
    envelopes().map(lambda envelope: b"\xef\xbb\xbf" + json.dumps(envelope).encode()),
    st.integers(min_value=100_000, max_value=200_000).map(  # a huge input
        lambda n: json.dumps({"id": "big", "input": {"prompt": "x" * n}}).encode()
    ),
    st.integers(min_value=900, max_value=20_000).map(lambda n: b"[" * n + b"]" * n),  # deep
    st.integers(min_value=900, max_value=1100).map(  # about as deep as the reader allows
        lambda n: b'[{"id": "deep", "input": ' + b"[" * n + b"]" * n + b"}, " + b"[" * n
        + b"]" * n + b"]"
    ),
    st.sampled_from([b"", b"  \n", b"null", b"[]", b"{}", b"NaN", b"[null]", b'{"id": ""}']),
)


def expected_items(body: bytes) -> list[Any] | None:
    """The job objects in ``body`` as JSON reads them; None when it is not JSON."""
    if not body.strip():
        return []
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if data is None:
        return []
    return data if isinstance(data, list) else [data]


def deeply_nested(body: bytes) -> bool:
    return max(body.count(b"["), body.count(b"{")) > 400


# thousands of cases through a real worker: minutes on a loaded 2-core machine (a safety net,
# not a time budget)
@pytest.mark.timeout(900)
def test_every_take_answer_gives_answerable_jobs_and_a_short_warning_for_each_drop(
    records: Records,
) -> None:
    server = ReplayServer(Recorded(204)).start()
    api = take_api(server.url)
    count = 0

    @fuzz_settings(TAKE_EXAMPLES)
    @given(body=take_bodies)
    def check(body: bytes) -> None:
        nonlocal count
        server.responses = [Recorded(200, {"Content-Type": "application/json"}, body)]
        records.records.clear()
        jobs = api.take(job_in_progress=False)  # must not raise, whatever the body

        items = expected_items(body)
        warnings = [r for r in records.records if r.levelno >= logging.WARNING]
        events = [getattr(r, "event", None) for r in warnings]
        if items is not None and events == ["take_unreadable"] and deeply_nested(body):
            # near Python's recursion limit, whether a parse fails depends on how deep in the
            # stack it runs: the adapter's parse may fail where this test's succeeded
            items = None
        for record in warnings:
            assert len(record.getMessage()) <= LONGEST_WARNING
        for job in jobs:
            assert isinstance(job.id, str) and 0 < len(job.id) <= MAX_JOB_ID_LENGTH
            assert job.id.isprintable()
            assert isinstance(job.input, dict)
            assert job.problem is None or (job.problem and job.input == {})
        if items is None:
            assert jobs == []
            assert [getattr(r, "event", None) for r in warnings] == ["take_unreadable"]
        else:
            wanted = [readable_id(item) for item in items]
            assert [job.id for job in jobs] == [i for i in wanted if i is not None]
            dropped = [r for r in warnings if getattr(r, "event", None) == "job_without_id"]
            assert len(dropped) == wanted.count(None)
        count += 1

    try:
        check()
    finally:
        api.close()
        server.stop()
    CASES["take answers (HTTP adapter, loopback)"] += count
    print(f"take answers: {count} generated cases")
    assert count >= TAKE_EXAMPLES


def test_a_result_reaches_the_url_of_its_own_job_whatever_the_job_id() -> None:
    fake = FakeJobApiServer(long_poll_s=0.05).start()
    api = take_api(fake.url)
    count = 0
    ids = job_ids.map(lambda raw: readable_id({"id": raw})).filter(lambda i: i is not None)

    @fuzz_settings(RESULT_URL_EXAMPLES)
    @given(job_id=ids)
    def check(job_id: str) -> None:
        nonlocal count
        if job_id not in fake.jobs:
            fake.submit_raw({"id": job_id, "input": {}})
        before = len(fake.results) + len(fake.duplicates)
        api.post_result(JobResult.success(job_id, {"n": count}))
        assert len(fake.results) + len(fake.duplicates) == before + 1
        assert job_id in fake.results  # under its own id: no "../" or "/" went astray
        count += 1

    try:
        check()
    finally:
        api.close()
        fake.stop()
    assert fake.unauthorized == 0
    CASES["job ids in result URLs (HTTP adapter, fake API)"] += count
    print(f"result URLs: {count} generated cases")
    assert count >= RESULT_URL_EXAMPLES
