"""Job ids the worker will not run (issue 26, item 14): answered with an error at their own URL
wherever the URL can carry them, never left to hang until the platform's own timeout."""

from __future__ import annotations

from tests.support.fault_kit import Rig


def test_ids_too_long_or_with_nul_or_a_line_break_are_answered_with_an_error_at_their_own_url(
    rig: Rig,
) -> None:
    odd = ["x" * 300, "nul\x00id", "line\nbreak", "tab\tand\r\nreturn", "y" * 1024]
    for job_id in odd:
        rig.api.submit_raw({"id": job_id, "input": {"n": 1}})
    fine = rig.submit({"n": "fine"})
    worker = rig.start()
    for job_id in odd:
        error = rig.wait_result(job_id)["error"]
        assert error.startswith("invalid input: job id "), error
    assert rig.wait_result(fine)["output"] == {"n": "fine"}
    assert worker.terminate() == 0
    assert rig.api.duplicates == []
    assert rig.kept_results() == [] and rig.running_marks() == []


def test_an_id_no_url_can_carry_is_dropped_with_one_short_warning_and_the_next_job_runs(
    rig: Rig,
) -> None:
    rig.api.submit_raw({"id": "z" * 5000, "input": {"n": 1}})
    fine = rig.submit({"n": "next"})
    worker = rig.start()
    assert rig.wait_result(fine)["output"] == {"n": "next"}
    warnings = [e for e in worker.events() if e.get("event") == "job_without_id"]
    assert len(warnings) == 1 and len(warnings[0]["message"]) < 400
    assert worker.terminate() == 0
