"""Pod control that records the request instead of deleting anything: the local run's and the
tests', and production's when ``RUNPOD_API_KEY`` or ``RUNPOD_POD_ID`` is missing (bootstrap warns
then that an idle worker exits without deleting its pod)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RecordingPodControl:
    """Counts terminate calls in ``terminated`` and logs them; deletes nothing."""

    def __init__(self, pod_id: str = "local") -> None:
        self.pod_id = pod_id
        self.terminated = 0

    def terminate(self) -> None:
        self.terminated += 1
        log.info("pod terminate requested (local: nothing deleted)", extra={"pod_id": self.pod_id})
