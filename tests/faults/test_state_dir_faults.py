"""The state folder failing: the disk holding the outbox journal fills up.

A full disk cannot be made for a subprocess without privileges, so this fault runs the real
``Worker`` (its controller, model, delivery and heartbeat threads) in this process, on a real
``FileOutbox`` whose journal descriptor is pointed at ``/dev/full`` once it is open: every write
to it then fails in the kernel with ``ENOSPC``, as on a full disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.outbox.journal import FileOutbox
from tests.support.harness import Harness, make_harness


def fill_the_disk(outbox: FileOutbox) -> None:
    """From now on every journal write fails with ENOSPC (the descriptor is /dev/full's)."""
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, outbox._fd)
    finally:
        os.close(full)
    with pytest.raises(OSError, match="No space left"):
        os.write(outbox._fd, b"x")


@pytest.fixture
def full_disk_worker(tmp_path: Path) -> Iterator[Harness]:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    outbox = FileOutbox(tmp_path / "state" / "outbox", fsync=False)
    harness = make_harness(tmp_path, outbox=outbox).start()
    fill_the_disk(outbox)
    try:
        yield harness
    finally:
        harness.worker.request_stop("test over")
        if harness.thread is not None:
            harness.thread.join(10)
        outbox.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_with_the_outbox_disk_full_jobs_are_still_answered_and_the_worker_keeps_running(
    full_disk_worker: Harness,
) -> None:
    api = full_disk_worker.api
    api.submit({"n": 1}, job_id="on-a-full-disk")
    answered = api.wait_for_results(1, timeout=30)
    assert full_disk_worker.thread is not None and full_disk_worker.thread.is_alive()
    assert answered, "the result was lost"
    assert api.results["on-a-full-disk"].output == {"n": 1}
