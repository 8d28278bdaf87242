"""A streamed chunk that can never be posted (issue 26, item 4).

One chunk that was not JSON stayed at the head of the post queue, retried for ever, and nothing
else was posted for the life of the process; a ``NaN`` went out as a bare token and a 50 MB
chunk was posted whole. A chunk is now checked like a final output: one that cannot be sent is
not, the job's stream ends there and the job fails saying why, and every other job goes on.
"""

from __future__ import annotations

import pytest

from tests.support.fault_kit import Rig

MODEL = "tests.support.misbehaving_models:poisoned_stream"


@pytest.mark.parametrize(
    ("poison", "said"),
    [({"poison": "object"}, "object is not a JSON value"),
     ({"poison": "nan"}, "Out of range float values are not JSON compliant"),
     ({"poison": "colliding"}, "keys collide as JSON strings: '1'"),
     ({"poison": "big", "size": 300_000}, "over the job API's limit of 200000 bytes")],
    ids=["not-json", "nan", "colliding-keys", "too-big"],
)
def test_a_chunk_that_cannot_be_posted_fails_its_job_and_every_later_job_is_posted(
    rig: Rig, poison: dict[str, object], said: str
) -> None:
    worker = rig.start(MODEL=MODEL, MAX_RESULT_BYTES="200000")
    poisoned = rig.submit(poison)
    later = [rig.submit({}) for _ in range(3)]
    error = rig.wait_result(poisoned)["error"]
    assert error.startswith("a streamed chunk could not be sent: ") and said in error, error
    assert rig.api.jobs[poisoned].chunks == [{"ok": 1}]  # before it: sent; after it: not
    for job_id in later:
        assert "error" not in rig.wait_result(job_id)
        assert rig.api.jobs[job_id].chunks == [{"ok": 1}, {"after": 1}]
    assert worker.terminate() == 0
    rig.assert_delivered_once()
